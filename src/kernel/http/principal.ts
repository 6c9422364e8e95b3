/** Who is calling. Set only by the kernel's guard from a verified credential. */
import type { Tx } from '../db/database.ts';
import type { Actor } from '../audit/record.ts';

export interface UserPrincipal {
  readonly kind: 'user';
  readonly userId: string;
  readonly email: string;
  readonly name: string;
  readonly sessionId: string;
  /** Set when a tenant's IdP opened this session: it then speaks for that tenant only. */
  readonly ssoTenantId: string | null;
}

/** A caller inside one tenant: a member (by session) or an API key of the tenant. */
export interface TenantPrincipal {
  readonly kind: 'user' | 'apikey';
  readonly tenantId: string;
  /** The accountable person: the member, or the key's creator. */
  readonly userId: string;
  readonly email: string;
  readonly name: string;
  /** The role that decides; for a key, the key's role (the guard also checks its creator's). */
  readonly role: string;
  readonly sessionId: string | null;
  readonly apiKeyId: string | null;
}

/** A credential as presented: the session cookie, or an API key (which names its tenant). */
export type Credential =
  | { readonly kind: 'session'; readonly token: string }
  | { readonly kind: 'apikey'; readonly token: string; readonly tenantId: string };

/**
 * Identity's side of the guard for routes outside a tenant, injected by the composition
 * root. (Tenant routes resolve the caller inside their tenant transaction.)
 */
export interface Authenticator {
  resolveUser(tx: Tx, credential: Credential & { kind: 'session' }): Promise<UserPrincipal | null>;
  /** Step-up: throws auth.reauth_required unless the session proved who it is recently (an API key never has). */
  assertRecentAuthentication(tx: Tx, sessionId: string | null): Promise<void>;
}

/** Access's side of the guard: the one place a role is interpreted. */
export interface Authorizer {
  can(role: string, permission: string): boolean;
  /** Every role that holds permission (the strict tenant entry checks membership in this list). */
  rolesWith(permission: string): readonly string[];
  /** Whether this role keeps a password (+ second factor) login where the tenant requires SSO. */
  isBreakGlassRole(role: string): boolean;
}

export function actorOf(principal: UserPrincipal | TenantPrincipal): Actor {
  if (principal.kind === 'apikey') return { type: 'apikey', id: principal.apiKeyId };
  return { type: 'user', id: principal.userId, email: principal.email };
}
