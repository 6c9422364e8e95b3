/** Who is calling. Set only by the kernel's guard from a verified credential. */
import type { Tx } from '../db/database.ts';
import type { Actor } from '../audit/record.ts';

export interface UserPrincipal {
  readonly kind: 'user';
  readonly userId: string;
  readonly email: string;
  readonly name: string;
  readonly sessionId: string;
}

export interface TenantPrincipal extends UserPrincipal {
  readonly tenantId: string;
  readonly role: string;
}

/** A credential as presented: the session cookie's value. (API keys arrive with the Identity issue.) */
export interface Credential {
  readonly kind: 'session';
  readonly token: string;
}

/** Identity's side of the guard, injected by the composition root so the kernel stays feature-free. */
export interface Authenticator {
  /** One query inside the tenant transaction: the session's user and their role in tenantId (null role: not a member). */
  resolveForTenant(tx: Tx, credential: Credential, tenantId: string): Promise<(UserPrincipal & { role: string | null }) | null>;
  resolveUser(tx: Tx, credential: Credential): Promise<UserPrincipal | null>;
}

/** Access's side of the guard: the one place a role is interpreted. */
export interface Authorizer {
  can(role: string, permission: string): boolean;
}

export function actorOf(principal: UserPrincipal): Actor {
  return { type: 'user', id: principal.userId, email: principal.email };
}
