/**
 * A contact's email and phone are personal data: stored only as field ciphertexts under the
 * tenant's data key, bound to their row and column, plus a blind index of the normalised
 * email for exact lookups (GET .../contacts?email=). Plaintext exists only in memory.
 */
import type { Database, Tx } from '../../kernel/db/database.ts';
import { Keyring } from '../../kernel/crypto/envelope.ts';
import * as store from './store.ts';

const place = (tenantId: string, rowId: string, column: 'email' | 'phone') => ({ tenantId, table: 'contacts', column, rowId });

export function emailIndex(keyring: Keyring, tx: Tx, tenantId: string, email: string): Promise<Buffer> {
  return keyring.blindIndex(tx, { tenantId, table: 'contacts', column: 'email' }, email);
}

/** The sealed columns for the fields given (undefined: leave as is; null: clear). */
export async function sealContactFields(
  keyring: Keyring,
  tx: Tx,
  tenantId: string,
  rowId: string,
  fields: { email?: string | null; phone?: string | null },
): Promise<store.SealedContactFields> {
  const sealed: store.SealedContactFields = {};
  if (fields.email !== undefined) {
    sealed.email_ct = fields.email === null ? null : await keyring.encrypt(tx, place(tenantId, rowId, 'email'), fields.email);
    sealed.email_index = fields.email === null ? null : await emailIndex(keyring, tx, tenantId, fields.email);
  }
  if (fields.phone !== undefined) sealed.phone_ct = fields.phone === null ? null : await keyring.encrypt(tx, place(tenantId, rowId, 'phone'), fields.phone);
  return sealed;
}

interface StoredContact {
  readonly id: string;
  readonly email: string | null;
  readonly phone: string | null;
  readonly email_ct: Buffer | null;
  readonly phone_ct: Buffer | null;
}

/** Email and phone in the clear, from the ciphertexts (or the plaintext of a row the backfill has not reached). */
export async function openContactFields(keyring: Keyring, tx: Tx, tenantId: string, row: StoredContact): Promise<{ email: string | null; phone: string | null }> {
  return {
    email: row.email_ct ? await keyring.decryptText(tx, place(tenantId, row.id, 'email'), row.email_ct) : row.email,
    phone: row.phone_ct ? await keyring.decryptText(tx, place(tenantId, row.id, 'phone'), row.phone_ct) : row.phone,
  };
}

/**
 * Encrypts the plaintext left in rows written before migration 20, tenant by tenant, in
 * batches (each in its tenant's transaction, rows locked). Idempotent; returns the rows done.
 */
export async function encryptLegacyContacts(db: Database, keyring: Keyring): Promise<number> {
  const tenants = await db.systemDb({ reason: 'find tenants whose contacts still hold plaintext' }).transaction((tx) =>
    tx.selectFrom('contacts').select('tenant_id').distinct().where((eb) => eb.or([eb('email', 'is not', null), eb('phone', 'is not', null)])).execute(),
  );
  let done = 0;
  for (const { tenant_id: tenantId } of tenants) {
    for (;;) {
      const batch = await db.withTenant(tenantId, async (tx) => {
        const rows = await store.legacyPlaintextContacts(tx, tenantId, 500);
        for (const row of rows) {
          const sealed = await sealContactFields(keyring, tx, tenantId, row.id, {
            ...(row.email !== null ? { email: row.email } : {}),
            ...(row.phone !== null ? { phone: row.phone } : {}),
          });
          await store.writeSealedFields(tx, tenantId, row.id, sealed);
        }
        return rows.length;
      });
      done += batch;
      if (batch < 500) break;
    }
  }
  return done;
}

/**
 * Re-encrypts a tenant's contact fields still under a data key older than the newest
 * (after `keys rotate-tenant` added one). Keyset batches, each in its own tenant transaction
 * with the rows locked: resumable and idempotent (fields already on the newest version are
 * skipped); reads keep working throughout, as older versions stay until this is done.
 */
export async function reencryptContacts(
  db: Database,
  keyring: Keyring,
  tenantId: string,
  onProgress?: (done: number, total: number) => void,
): Promise<{ reencrypted: number; version: number }> {
  const { version, total } = await db.withTenant(tenantId, async (tx) => ({
    version: await keyring.currentDataKeyVersion(tx, tenantId),
    total: Number((await tx.selectFrom('contacts').select((eb) => eb.fn.countAll().as('n')).where('tenant_id', '=', tenantId).executeTakeFirstOrThrow()).n),
  }));
  const stale = (ct: Uint8Array | null) => ct !== null && Keyring.versionOf(ct) < version;
  let after: string | undefined;
  let seen = 0;
  let reencrypted = 0;
  for (;;) {
    const batch = await db.withTenant(tenantId, async (tx) => {
      const rows = await store.contactsAfter(tx, tenantId, after, 500);
      for (const row of rows) {
        if (!stale(row.email_ct) && !stale(row.phone_ct)) continue;
        const open = await openContactFields(keyring, tx, tenantId, { ...row, email: null, phone: null });
        const sealed: store.SealedContactFields = {};
        if (stale(row.email_ct)) sealed.email_ct = await keyring.encrypt(tx, place(tenantId, row.id, 'email'), open.email!);
        if (stale(row.phone_ct)) sealed.phone_ct = await keyring.encrypt(tx, place(tenantId, row.id, 'phone'), open.phone!);
        await store.writeSealedFields(tx, tenantId, row.id, sealed);
        reencrypted += 1;
      }
      return rows;
    });
    seen += batch.length;
    onProgress?.(Math.min(seen, total), total);
    if (batch.length < 500) break;
    after = batch.at(-1)!.id;
  }
  return { reencrypted, version };
}

/** How many of the tenant's contacts still hold a field under a data key older than version (any transaction that sees them). */
export async function contactsBelowVersion(tx: Tx, tenantId: string, version: number): Promise<number> {
  return store.countContactsBelowVersion(tx, tenantId, version);
}
