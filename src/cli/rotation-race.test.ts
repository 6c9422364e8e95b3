import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { openTestDatabase, type TestDatabase } from '../../test/harness.ts';
import { contactsBelowVersion, reencryptContacts, sealContactFields } from '../features/records/contacts-crypto.ts';
import { insertContact } from '../features/records/store.ts';
import { createKeyring, Keyring } from '../kernel/crypto/envelope.ts';
import { destroyDataKeysBelow, StaleCiphertextError } from '../kernel/crypto/rotation.ts';

// Threat: a rotation destroys an old data key while a write that chose that key is still in
// flight; the row commits afterwards and can never be read again.
describe('retiring a data key version', () => {
  let t: TestDatabase;
  let keyring: Keyring;
  let tenantId: string;
  let accountId: string;

  beforeAll(async () => {
    t = await openTestDatabase();
    keyring = createKeyring(t.config, { warn() {} });
    tenantId = randomUUID();
    await t.admin.query('insert into tenants (id, name) values ($1, $2)', [tenantId, 'Race']);
    accountId = (await t.db.withTenant(tenantId, (tx) => tx.insertInto('accounts').values({ tenant_id: tenantId, name: 'Acme' }).returning('id').executeTakeFirstOrThrow())).id;
  });
  afterAll(async () => t?.close());

  const addContact = (email: string) =>
    t.db.withTenant(tenantId, async (tx) => {
      const id = randomUUID();
      await insertContact(tx, tenantId, { id, account_id: accountId, name: email, ...(await sealContactFields(keyring, tx, tenantId, id, { email })) });
    });
  const stale = (version: number) => (tx: Parameters<typeof contactsBelowVersion>[0]) => contactsBelowVersion(tx, tenantId, version);

  // PGlite runs one transaction at a time, so there the race cannot happen at all.
  it.skipIf(inject('testDb').kind !== 'postgres')('waits for a write that chose the old version, then refuses to destroy it; the next run finishes', async () => {
    await addContact('before@example.com');
    // A writer reads the newest version (1) and holds its transaction open...
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let chosen!: () => void;
    const hasChosen = new Promise<void>((resolve) => (chosen = resolve));
    const writer = t.db.withTenant(tenantId, async (tx) => {
      const id = randomUUID();
      const sealed = await sealContactFields(keyring, tx, tenantId, id, { email: 'inflight@example.com' });
      expect(Keyring.versionOf(sealed.email_ct!)).toBe(1);
      chosen();
      await held;
      await insertContact(tx, tenantId, { id, account_id: accountId, name: 'in flight', ...sealed });
    });
    await hasChosen;
    // ...while the rotation adds version 2 and re-encrypts what it can see.
    const version = await t.db.withTenant(tenantId, (tx) => keyring.addDataKeyVersion(tx, tenantId));
    setTimeout(() => release(), 300);
    await reencryptContacts(t.db, keyring, tenantId);
    await expect(destroyDataKeysBelow(t.db, keyring, tenantId, version, stale(version))).rejects.toBeInstanceOf(StaleCiphertextError);
    await writer;
    const keys = await t.admin.query<{ version: number }>(`select version from tenant_keys where tenant_id = $1 and purpose = 'data' order by version`, [tenantId]);
    expect(keys.map((row) => row.version)).toEqual([1, 2]);

    // Run again: the late row is re-encrypted, then version 1 goes.
    await reencryptContacts(t.db, keyring, tenantId);
    expect(await destroyDataKeysBelow(t.db, keyring, tenantId, version, stale(version))).toBe(1);
    const emails = await t.db.withTenant(tenantId, async (tx) => {
      const rows = await tx.selectFrom('contacts').select(['id', 'email_ct']).where('tenant_id', '=', tenantId).execute();
      return Promise.all(rows.map((row) => keyring.decryptText(tx, { tenantId, table: 'contacts', column: 'email', rowId: row.id }, row.email_ct!)));
    });
    expect(emails.sort()).toEqual(['before@example.com', 'inflight@example.com']);
  });
});
