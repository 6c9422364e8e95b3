/**
 * A tenant's SSO client secret is stored only encrypted under the tenant's data key, bound to
 * the tenant's row: opening it, re-encrypting it after a key rotation, and encrypting secrets
 * stored in the clear before migration 21.
 */
import type { Selectable } from 'kysely';
import { Keyring } from '../../kernel/crypto/envelope.ts';
import type { Database, Tx } from '../../kernel/db/database.ts';
import type { TenantSsoTable } from '../../kernel/db/schema.ts';

export type StoredSso = Omit<Selectable<TenantSsoTable>, 'tenant_id'>;
/** What an admin may see of a configuration: everything but the secret. */
export type SsoView = Omit<StoredSso, 'client_secret' | 'client_secret_ct'>;
/** A configuration with its client secret decrypted (in memory only). */
export type SsoRow = SsoView & { readonly client_secret: string };

const secretPlace = (tenantId: string) => ({ tenantId, table: 'tenant_sso', column: 'client_secret', rowId: tenantId });

export function sealSsoSecret(keyring: Keyring, tx: Tx, tenantId: string, secret: string): Promise<Buffer> {
  return keyring.encrypt(tx, secretPlace(tenantId), secret);
}

/** The stored configuration with its client secret decrypted (in memory only). */
export async function openSso(keyring: Keyring, tx: Tx, tenantId: string, stored: StoredSso): Promise<SsoRow> {
  const { client_secret_ct: sealed, client_secret: legacy, ...rest } = stored;
  // A secret stored before migration 21 reads from its plaintext until the backfill at start reaches it.
  const secret = sealed ? await keyring.decryptText(tx, secretPlace(tenantId), sealed) : legacy;
  if (secret === null) throw new Error('an SSO configuration without a client secret');
  return { ...rest, client_secret: secret };
}

/**
 * After a data key rotation: re-encrypts the tenant's client secret under the newest version.
 * Returns how many secrets were re-encrypted (0 or 1); idempotent.
 */
export async function reencryptSsoSecret(db: Database, keyring: Keyring, tenantId: string): Promise<{ reencrypted: number }> {
  return db.withTenant(tenantId, async (tx) => {
    const version = await keyring.currentDataKeyVersion(tx, tenantId);
    const row = await tx.selectFrom('tenant_sso').select('client_secret_ct').where('tenant_id', '=', tenantId).forUpdate().executeTakeFirst();
    if (!row?.client_secret_ct || Keyring.versionOf(row.client_secret_ct) >= version) return { reencrypted: 0 };
    const secret = await keyring.decryptText(tx, secretPlace(tenantId), row.client_secret_ct);
    await tx.updateTable('tenant_sso').set({ client_secret_ct: await sealSsoSecret(keyring, tx, tenantId, secret) }).where('tenant_id', '=', tenantId).execute();
    return { reencrypted: 1 };
  });
}

/** Whether the tenant's client secret is still under a data key older than version (0 or 1). */
export async function ssoSecretsBelowVersion(tx: Tx, tenantId: string, version: number): Promise<number> {
  const row = await tx.selectFrom('tenant_sso').select('client_secret_ct').where('tenant_id', '=', tenantId).executeTakeFirst();
  return row?.client_secret_ct && Keyring.versionOf(row.client_secret_ct) < version ? 1 : 0;
}

/** Encrypts SSO client secrets stored in the clear before migration 21. Idempotent; returns the tenants done. */
export async function encryptLegacySsoSecrets(db: Database, keyring: Keyring): Promise<number> {
  const tenants = await db.systemDb({ reason: 'find SSO client secrets stored before field encryption' }).transaction((tx) =>
    tx.selectFrom('tenant_sso').select('tenant_id').where('client_secret', 'is not', null).execute(),
  );
  for (const { tenant_id: tenantId } of tenants) {
    await db.withTenant(tenantId, async (tx) => {
      const row = await tx.selectFrom('tenant_sso').select('client_secret').where('tenant_id', '=', tenantId).where('client_secret', 'is not', null).forUpdate().executeTakeFirst();
      if (!row?.client_secret) return;
      const sealed = await sealSsoSecret(keyring, tx, tenantId, row.client_secret);
      await tx.updateTable('tenant_sso').set({ client_secret: null, client_secret_ct: sealed }).where('tenant_id', '=', tenantId).execute();
    });
  }
  return tenants.length;
}

