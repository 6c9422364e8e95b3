/**
 * Deleting a tenant: crypto-shredding first (its data and index keys are destroyed, so every
 * ciphertext of the tenant, wherever a copy survives, is unreadable without them), then its
 * data, in one transaction. The tenants row stays as a tombstone, with its audit log, which
 * other rows reference and which stays verifiable until the retention purge removes it.
 */
import { NO_REQUEST, recordPlatformEvent, recordTenantEvent, type Actor } from '../../kernel/audit/record.ts';
import type { Keyring } from '../../kernel/crypto/envelope.ts';
import type { Database } from '../../kernel/db/database.ts';
import { AppError } from '../../kernel/http/errors.ts';

/**
 * Every tenant-owned table but the audit log's, children before parents, plus sso_identities
 * (global, but each link names the tenant whose IdP made it). The deletion test holds this
 * list against the live catalog, so a new tenant table cannot be forgotten here.
 */
export const TENANT_DATA_TABLES = [
  'tenant_keys',
  'scim_group_members',
  'scim_groups',
  'scim_users',
  'scim_tokens',
  'access_review_entries',
  'access_reviews',
  'webhook_deliveries',
  'webhook_cursors',
  'webhooks',
  'integrations',
  'contacts',
  'accounts',
  'api_keys',
  'invitations',
  'sso_break_glass',
  'sso_logins',
  'sso_identities',
  'tenant_sso',
  'tenant_domains',
  'security_alerts',
  'alert_cursors',
  'tenant_session_revocations',
  'tenant_settings',
  'memberships',
] as const;

/** Tenant tables that stay: the audit log and its chain, until retention. */
export const TENANT_AUDIT_TABLES = ['audit_events', 'audit_seals', 'audit_chain_heads', 'audit_checkpoints'] as const;


type DeleteOptions = { tenantId: string; confirmName: string; actor: Actor };
type Deleted = { rows: number; keysDestroyed: number };

/** Deletes now (operators), or with onlyIfDue only when an owner's scheduled deletion is due (null otherwise). */
export async function deleteTenant(db: Database, keyring: Keyring, options: DeleteOptions & { onlyIfDue?: false }): Promise<Deleted>;
export async function deleteTenant(db: Database, keyring: Keyring, options: DeleteOptions & { onlyIfDue: true }): Promise<Deleted | null>;
export async function deleteTenant(
  db: Database,
  keyring: Keyring,
  options: DeleteOptions & { onlyIfDue?: boolean },
): Promise<Deleted | null> {
  const { tenantId } = options;
  const result = await db.systemDb({ reason: 'delete a tenant: destroy its keys, then its data' }).transaction(async (tx) => {
    const tenant = await tx.selectFrom('tenants').select(['name', 'deleted_at', 'deletion_due_at']).where('id', '=', tenantId).forUpdate().executeTakeFirst();
    if (!tenant || tenant.deleted_at !== null) throw new AppError('not_found', { detail: 'No such tenant' });
    // The owners' scheduled deletion: only when still due under this lock (a cancellation may have won).
    if (options.onlyIfDue && (tenant.deletion_due_at === null || tenant.deletion_due_at.getTime() > Date.now())) return null;
    // The name typed back: deleting the wrong tenant cannot be undone.
    if (options.confirmName !== tenant.name) throw new AppError('validation.failed', { detail: 'The confirmation does not match the tenant name' });
    let rows = 0;
    let keysDestroyed = 0;
    for (const table of TENANT_DATA_TABLES) {
      const deleted = Number((await tx.deleteFrom(table).where('tenant_id', '=', tenantId).executeTakeFirst()).numDeletedRows);
      if (table === 'tenant_keys') keysDestroyed = deleted;
      rows += deleted;
    }
    // Sessions its IdP opened reach only this tenant: they end with it.
    rows += Number((await tx.deleteFrom('sessions').where('sso_tenant_id', '=', tenantId).executeTakeFirst()).numDeletedRows);
    await tx.updateTable('tenants').set({ name: 'Deleted tenant', deleted_at: new Date() }).where('id', '=', tenantId).execute();
    const event = { action: 'tenant.deleted', target: { type: 'tenant', id: tenantId }, metadata: { rows, keysDestroyed } };
    await recordTenantEvent(tx, tenantId, options.actor, NO_REQUEST, event);
    await recordPlatformEvent(tx, options.actor, NO_REQUEST, { ...event, tenantId });
    return { rows, keysDestroyed };
  });
  if (result !== null) keyring.forget(tenantId);
  return result;
}
