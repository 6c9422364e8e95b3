/** Session storage: opaque 256-bit tokens, kept only as SHA-256 digests. */
import { sql } from 'kysely';
import type { Tx } from '../../kernel/db/database.ts';
import type { RequestMeta } from '../../kernel/audit/record.ts';
import { csrfTokenFor, generateToken, hashToken } from '../../kernel/crypto/tokens.ts';
import type { Authenticator, UserPrincipal } from '../../kernel/http/principal.ts';
import { assertRecentAuthentication } from './step-up.ts';

export interface IssuedSession {
  readonly id: string;
  readonly token: string;
  readonly csrfToken: string;
  readonly expiresAt: Date;
}

export async function createSession(
  tx: Tx,
  options: { userId: string; meta: RequestMeta; lifetimeHours: number; sso?: { tenantId: string; idpMfa: boolean } },
): Promise<IssuedSession> {
  const token = generateToken();
  const expiresAt = new Date(Date.now() + options.lifetimeHours * 3_600_000);
  const row = await tx
    .insertInto('sessions')
    .values({
      token_hash: hashToken(token),
      user_id: options.userId,
      expires_at: expiresAt,
      ip: options.meta.ip,
      user_agent: options.meta.userAgent,
      sso_tenant_id: options.sso?.tenantId ?? null,
      idp_mfa: options.sso?.idpMfa ?? false,
    })
    .returning('id')
    .executeTakeFirstOrThrow();
  return { id: row.id, token, csrfToken: csrfTokenFor(token), expiresAt };
}

export async function revokeSession(tx: Tx, sessionId: string): Promise<void> {
  await tx.updateTable('sessions').set({ revoked_at: sql`now()` }).where('id', '=', sessionId).where('revoked_at', 'is', null).execute();
}

/**
 * Resolves a session for routes outside a tenant: live (not revoked, not expired, used
 * within the platform idle limit), and stamps its last use at most once a minute.
 * (Tenant routes do the same inside cn_enter_tenant, with the tenant's own limit too.)
 */
export function createSessionAuthenticator(options: { idleMinutes: number }): Authenticator {
  return {
    assertRecentAuthentication,
    async resolveUser(tx, credential): Promise<UserPrincipal | null> {
      const row = await tx
        .selectFrom('sessions as s')
        .innerJoin('users as u', 'u.id', 's.user_id')
        .select(['s.id as sessionId', 'u.id as userId', 'u.email', 'u.name', 's.sso_tenant_id as ssoTenantId'])
        .where('s.token_hash', '=', hashToken(credential.token))
        .where('s.revoked_at', 'is', null)
        .where('s.expires_at', '>', sql<Date>`now()`)
        .where('s.last_seen_at', '>=', sql<Date>`now() - make_interval(mins => ${options.idleMinutes})`)
        .executeTakeFirst();
      if (row === undefined) return null;
      await tx
        .updateTable('sessions')
        .set({ last_seen_at: sql`now()` })
        .where('id', '=', row.sessionId)
        .where('last_seen_at', '<', sql<Date>`now() - interval '1 minute'`)
        .execute();
      return { kind: 'user', userId: row.userId, email: row.email, name: row.name, sessionId: row.sessionId, ssoTenantId: row.ssoTenantId };
    },
  };
}
