/**
 * Key rotation that touches keys only (no data): re-wrapping every tenant key under the key
 * provider's current key-encryption key, and destroying a tenant's retired data key versions.
 * Re-encrypting data under a new version is the features' part (they own the tables).
 */
import { NO_REQUEST, recordPlatformEvent, recordTenantEvent, SYSTEM_ACTOR } from '../audit/record.ts';
import { sql } from 'kysely';
import type { Database, Tx } from '../db/database.ts';
import { keyLockName, PLATFORM, wrapAad, type Keyring } from './envelope.ts';


/**
 * Re-wraps every tenant key and platform key not yet under the current KEK (the previous KEK must still be
 * configured, as retired). Idempotent and resumable: each key is one UPDATE guarded by its
 * old kek_id. Recorded in the platform log.
 */
export async function rewrapAllTenantKeys(db: Database, keyring: Keyring, onProgress?: (done: number, total: number) => void): Promise<{ rewrapped: number; kekId: string }> {
  const provider = keyring.provider;
  const system = db.systemDb({ reason: 'keys rotate-kek re-wraps every tenant key' });
  /** The key under the current KEK, with the same associated data (owner, purpose, version). */
  const rewrap = async (owner: string, row: { purpose: 'data' | 'index'; version: number; kek_id: string; wrapped: Uint8Array }) => {
    const aad = wrapAad(owner, row.purpose, row.version);
    const raw = await provider.unwrap(Buffer.from(row.wrapped), aad, row.kek_id);
    const wrapped = await provider.wrap(raw, aad);
    raw.fill(0);
    return wrapped;
  };
  const tenantKeys = await system.transaction((tx) =>
    tx.selectFrom('tenant_keys').select(['tenant_id', 'purpose', 'version', 'kek_id', 'wrapped']).where('kek_id', '<>', provider.keyId).orderBy('tenant_id').execute(),
  );
  // The platform's own keys (user-level secrets) too.
  const platformKeys = await system.transaction((tx) => tx.selectFrom('platform_keys').select(['purpose', 'version', 'kek_id', 'wrapped']).where('kek_id', '<>', provider.keyId).execute());
  const total = tenantKeys.length + platformKeys.length;
  let rewrapped = 0;
  // Each key is one UPDATE guarded by its old kek_id: a concurrent run re-wraps it once.
  for (const row of tenantKeys) {
    const wrapped = await rewrap(row.tenant_id, row);
    const result = await system.transaction((tx) =>
      tx
        .updateTable('tenant_keys')
        .set({ kek_id: provider.keyId, wrapped })
        .where('tenant_id', '=', row.tenant_id)
        .where('purpose', '=', row.purpose)
        .where('version', '=', row.version)
        .where('kek_id', '=', row.kek_id)
        .executeTakeFirst(),
    );
    rewrapped += Number(result.numUpdatedRows);
    onProgress?.(rewrapped, total);
  }
  for (const row of platformKeys) {
    const wrapped = await rewrap(PLATFORM, row);
    const result = await system.transaction((tx) =>
      tx.updateTable('platform_keys').set({ kek_id: provider.keyId, wrapped }).where('purpose', '=', row.purpose).where('version', '=', row.version).where('kek_id', '=', row.kek_id).executeTakeFirst(),
    );
    rewrapped += Number(result.numUpdatedRows);
    onProgress?.(rewrapped, total);
  }
  await system.transaction((tx) => recordPlatformEvent(tx, SYSTEM_ACTOR, NO_REQUEST, { action: 'keys.kek_rotated', metadata: { kekId: provider.keyId, rewrapped } }));
  return { rewrapped, kekId: provider.keyId };
}

/**
 * Starts a tenant's data key rotation (a new version, recorded) or, while older versions still
 * exist, resumes the unfinished one: either way, the version everything must move to.
 */
export async function startOrResumeRotation(db: Database, keyring: Keyring, tenantId: string): Promise<{ version: number; resumed: boolean }> {
  return db.withTenant(tenantId, async (tx) => {
    const versions = await tx.selectFrom('tenant_keys').select('version').where('tenant_id', '=', tenantId).where('purpose', '=', 'data').execute();
    if (versions.length > 1) return { version: Math.max(...versions.map((row) => row.version)), resumed: true };
    const version = await keyring.addDataKeyVersion(tx, tenantId);
    await recordTenantEvent(tx, tenantId, SYSTEM_ACTOR, NO_REQUEST, { action: 'keys.data_key_rotated', metadata: { version } });
    return { version, resumed: false };
  });
}

/**
 * Destroys a tenant's data key versions below keep, once nothing is encrypted under them;
 * audited in the tenant's log. It takes the tenant's key lock exclusively, so writers that
 * read an older version before the rotation began have committed (or rolled back) before it
 * counts: countStale, run in the same transaction, must find nothing, or nothing is destroyed.
 */
export async function destroyDataKeysBelow(
  db: Database,
  keyring: Keyring,
  tenantId: string,
  keep: number,
  countStale: (tx: Tx) => Promise<number>,
): Promise<number> {
  const destroyed = await db.systemDb({ reason: 'keys rotate-tenant destroys retired data key versions' }).transaction(async (tx) => {
    await sql`select pg_advisory_xact_lock(hashtext(${keyLockName(tenantId)}))`.execute(tx);
    const stale = await countStale(tx);
    if (stale > 0) throw new StaleCiphertextError(`${stale} fields are still under an older data key; run the rotation again`);
    const result = await tx.deleteFrom('tenant_keys').where('tenant_id', '=', tenantId).where('purpose', '=', 'data').where('version', '<', keep).executeTakeFirst();
    const count = Number(result.numDeletedRows);
    await recordTenantEvent(tx, tenantId, SYSTEM_ACTOR, NO_REQUEST, { action: 'keys.data_key_retired', metadata: { below: keep, destroyed: count } });
    return count;
  });
  keyring.forgetDataKeysBelow(tenantId, keep);
  return destroyed;
}

export class StaleCiphertextError extends Error {
  override name = 'StaleCiphertextError';
}
