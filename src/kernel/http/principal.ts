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

/**
 * Identity's side of the guard for routes outside a tenant, injected by the composition
 * root. (Tenant routes resolve the session inside their tenant transaction: withTenantSession.)
 */
export interface Authenticator {
  resolveUser(tx: Tx, credential: Credential): Promise<UserPrincipal | null>;
}

/** Access's side of the guard: the one place a role is interpreted. */
export interface Authorizer {
  can(role: string, permission: string): boolean;
}

export function actorOf(principal: UserPrincipal): Actor {
  return { type: 'user', id: principal.userId, email: principal.email };
}
