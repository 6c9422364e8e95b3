/**
 * Step-up: sensitive actions need the person behind the session to have proved who they
 * are within the last REAUTH_WINDOW_MINUTES (login, second factor or POST /auth/reauth).
 * A program's API key can never step up, so it can never perform them.
 */
import { sql } from 'kysely';
import type { Tx } from '../../kernel/db/database.ts';
import { AppError } from '../../kernel/http/errors.ts';

export const REAUTH_WINDOW_MINUTES = 15;

/**
 * A session a tenant's IdP opened speaks for that tenant only; it may not change what
 * protects the whole account (password, second factor) nor reach beyond the tenant (join
 * or create others). Otherwise one tenant's IdP, asserting a person's address, could
 * take over that person's account everywhere.
 */
export function assertAccountSession(principal: { ssoTenantId: string | null }): void {
  if (principal.ssoTenantId !== null) throw new AppError('auth.account_session_required');
}

export async function assertRecentAuthentication(tx: Tx, sessionId: string | null): Promise<void> {
  const refuse = () => new AppError('auth.reauth_required', { detail: 'Confirm your password (and code) at POST /api/v1/auth/reauth, then retry' });
  if (sessionId === null) throw refuse();
  const row = await tx
    .selectFrom('sessions')
    .select('id')
    .where('id', '=', sessionId)
    .where('authenticated_at', '>=', sql<Date>`now() - make_interval(mins => ${REAUTH_WINDOW_MINUTES})`)
    .executeTakeFirst();
  if (!row) throw refuse();
}
