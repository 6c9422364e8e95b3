import type { Tx } from '../../kernel/db/database.ts';
import { recordPlatformEvent, recordTenantEvent, type Actor, type AuditEvent, type RequestMeta } from '../../kernel/audit/record.ts';

/**
 * An authentication event happens before any tenant is chosen: it goes to the platform
 * log and to the log of every tenant the user belongs to (API.md), so each tenant admin
 * sees their members' logins. tx must be a systemDb transaction.
 */
export async function recordAuthEvent(tx: Tx, actor: Actor, meta: RequestMeta, event: AuditEvent): Promise<void> {
  await recordPlatformEvent(tx, actor, meta, event);
  if (actor.id === null) return;
  const tenants = await tx.selectFrom('memberships').select('tenant_id').where('user_id', '=', actor.id).execute();
  for (const { tenant_id } of tenants) await recordTenantEvent(tx, tenant_id, actor, meta, event);
}
