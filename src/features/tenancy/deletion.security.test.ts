import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type SessionHandle, type TestApp } from '../../../test/harness.ts';
import { sealTenantLog } from '../../kernel/audit/sealer.ts';
import { loadAuditSigner } from '../../kernel/audit/signing.ts';
import { verifyTenantLog } from '../../kernel/audit/verify.ts';
import { createKeyring, DecryptionError } from '../../kernel/crypto/envelope.ts';
import { GLOBAL_TABLES } from '../../kernel/db/catalog.ts';
import { deleteTenant, TENANT_AUDIT_TABLES, TENANT_DATA_TABLES } from './deletion.ts';

// Threat: a deleted customer's data lingers (in the database, or readable from a copy).
describe('deleting a tenant', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => t?.close());

  it('covers every tenant table of the live schema: each is deleted, or is the audit log that stays', async () => {
    const rows = await t.admin.query<{ name: string }>(
      `select c.relname as name from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'public' and c.relkind in ('r', 'p')`,
    );
    const tenantTables = rows.map((row) => row.name).filter((name) => !(name in GLOBAL_TABLES)).sort();
    const listed: readonly string[] = [...TENANT_DATA_TABLES, ...TENANT_AUDIT_TABLES];
    expect(tenantTables.filter((table) => !listed.includes(table))).toEqual([]);
    // Beyond the tenant tables, only the global table that records which tenant linked an IdP identity.
    expect(listed.filter((table) => !tenantTables.includes(table))).toEqual(['sso_identities']);
  });

  it('destroys the keys first, then the data; the ciphertexts are unreadable, members are out, the audit log still verifies', async () => {
    const { session: owner, tenantId } = await t.signup({ tenantName: 'Doomed' });
    const { session: neighbour, tenantId: neighbourTenant } = await t.signup({ tenantName: 'Neighbour' });
    const member: SessionHandle = await t.addMember(owner, tenantId, 'member');
    const account = (await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner, body: { name: 'Acme' } })).json<{ id: string }>();
    const contact = (await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/contacts`, as: owner, body: { accountId: account.id, name: 'Ada', email: 'ada@doomed.example', phone: '+442079460111' } })).json<{ id: string }>();
    expect((await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/api-keys`, as: owner, body: { name: 'k', role: 'viewer' } })).statusCode).toBe(201);
    const neighbourAccount = (await t.request({ method: 'POST', url: `/api/v1/tenants/${neighbourTenant}/accounts`, as: neighbour, body: { name: 'Kept' } })).json<{ id: string }>();
    // What an old copy of the database (a backup) would hold for this contact.
    const [copy] = await t.admin.query<{ email_ct: Uint8Array }>('select email_ct from contacts where id = $1', [contact.id]);

    const keyring = createKeyring(t.config, { warn() {} });
    await expect(deleteTenant(t.db, keyring, { tenantId, confirmName: 'Wrong name', actor: { type: 'system', id: null } })).rejects.toThrow(/does not match/);
    const result = await deleteTenant(t.db, keyring, { tenantId, confirmName: 'Doomed', actor: { type: 'system', id: null } });
    expect(result.keysDestroyed).toBeGreaterThanOrEqual(2); // data and index keys
    expect(result.rows).toBeGreaterThan(result.keysDestroyed);

    for (const table of TENANT_DATA_TABLES) {
      const [row] = await t.admin.query<{ n: number }>(`select count(*)::int as n from ${table} where tenant_id = $1`, [tenantId]);
      expect(row!.n, table).toBe(0);
    }
    // Crypto-shredding: the ciphertext from the copy has no key any more.
    await expect(
      t.db.withTenant(tenantId, (tx) => keyring.decrypt(tx, { tenantId, table: 'contacts', column: 'email', rowId: contact.id }, copy!.email_ct)),
    ).rejects.toBeInstanceOf(DecryptionError);

    for (const who of [owner, member]) {
      expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/accounts`, as: who })).statusCode).toBe(404);
    }
    // The neighbour is untouched.
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${neighbourTenant}/accounts/${neighbourAccount.id}`, as: neighbour })).statusCode).toBe(200);

    const [tombstone] = await t.admin.query<{ name: string; deleted_at: Date | null }>('select name, deleted_at from tenants where id = $1', [tenantId]);
    expect(tombstone).toMatchObject({ name: 'Deleted tenant' });
    expect(tombstone!.deleted_at).not.toBeNull();
    await sealTenantLog(t.db, tenantId);
    const verified = await t.db.systemDb({ reason: 'test verifies a deleted tenant log' }).transaction((tx) => verifyTenantLog(tx, tenantId, loadAuditSigner(t.config, { warn() {} }).publicKeys));
    expect(verified.ok).toBe(true);
    const [event] = await t.admin.query<{ action: string }>(`select action from platform_audit_events where action = 'tenant.deleted' and tenant_id = $1`, [tenantId]);
    expect(event).toBeDefined();
    // Deleted once: a second attempt finds nothing to delete.
    await expect(deleteTenant(t.db, keyring, { tenantId, confirmName: 'Deleted tenant', actor: { type: 'system', id: null } })).rejects.toThrow(/No such tenant/);
  });
});
