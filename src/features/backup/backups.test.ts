import { PGlite } from '@electric-sql/pglite';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type SessionHandle, type TestApp } from '../../../test/harness.ts';
import { loadConfig, type Config } from '../../kernel/config/config.ts';
import { createKeyring } from '../../kernel/crypto/envelope.ts';
import { LocalKeyProvider } from '../../kernel/crypto/key-provider.ts';
import { deleteTenant } from '../tenancy/index.ts';
import { totpFor } from '../identity/mfa.ts';
import { createBackup, listBackups, listRestoreTests, restoreBackup, restoreTenantRecords, verifyBackup, type BackupContext } from './backups.ts';
import { reencryptContacts, contactsBelowVersion } from '../records/contacts-crypto.ts';
import { destroyDataKeysBelow, startOrResumeRotation } from '../../kernel/crypto/rotation.ts';
import { forgetTenantKeys } from './keystore.ts';
import { DirectoryTarget } from './targets.ts';

/** Runs queries against a restored database (a data directory or a PostgreSQL URL) as its superuser. */
async function inspectRestored<T>(to: string, fn: (query: <R>(text: string, params?: unknown[]) => Promise<R[]>) => Promise<T>): Promise<T> {
  if (to.startsWith('postgres')) {
    const client = new pg.Client({ connectionString: to });
    await client.connect();
    try {
      return await fn(async <R,>(text: string, params?: unknown[]) => (await client.query(text, params)).rows as R[]);
    } finally {
      await client.end();
    }
  }
  const pglite = await PGlite.create(path.join(to, 'pgdata'));
  try {
    return await fn(async <R,>(text: string, params?: unknown[]) => (await pglite.query<R>(text, params)).rows);
  } finally {
    await pglite.close();
  }
}

async function targetExists(t: TestApp, to: string): Promise<boolean> {
  if (!to.startsWith('postgres')) return existsSync(path.join(to, 'pgdata'));
  const name = new URL(to).pathname.slice(1);
  return (await t.admin.query('select 1 from pg_database where datname = $1', [name])).length === 1;
}

// Threats: a backup that cannot be restored when it is needed; a backup readable or
// alterable by whoever holds the storage; a restore that leaves a half-written database in use.
describe('backup and recovery', { timeout: 120_000 }, () => {
  let t: TestApp;
  let backupDir: string;
  let config: Config;
  let ctx: BackupContext;
  let owner: SessionHandle;
  let tenantId: string;
  let contactId: string;

  beforeAll(async () => {
    t = await startTestApp();
    backupDir = mkdtempSync(path.join(os.tmpdir(), 'cn-backups-'));
    config = loadConfig({ ...t.env, BACKUP_DIR: backupDir });
    ctx = { db: t.db, config, target: new DirectoryTarget(backupDir), provider: createKeyring(config, { warn() {} }).provider };
    ({ session: owner, tenantId } = await t.signup({ tenantName: 'Backed Up' }));
    const account = (await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner, body: { name: 'Acme' } })).json<{ id: string }>();
    contactId = (await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/contacts`, as: owner, body: { accountId: account.id, name: 'Ada', email: 'ada@backed.example', phone: '+442079460111' } })).json<{ id: string }>().id;
    mkdirSync(path.join(config.backup.filesDir, 'tenant'), { recursive: true });
    writeFileSync(path.join(config.backup.filesDir, 'tenant', 'report.pdf'), Buffer.from('%PDF-1.7 stored file'));
  });
  afterAll(async () => {
    await t?.close();
    rmSync(backupDir, { recursive: true, force: true });
  });

  it('restores a backup into a new target: the same rows, the stored files, verifiable audit chains, decryptable fields', async () => {
    const backup = await createBackup(ctx);
    expect(backup.files).toBe(1);
    expect((await listBackups(ctx.target)).map((b) => b.id)).toContain(backup.id);
    // No plaintext in the stored objects: neither a contact's email nor the stored file.
    for (const name of readdirSync(path.join(backupDir, 'backups'))) {
      const bytes = readFileSync(path.join(backupDir, 'backups', name));
      expect(bytes.includes('ada@backed.example'), name).toBe(false);
      expect(bytes.includes('stored file'), name).toBe(false);
      expect(statSync(path.join(backupDir, 'backups', name)).mode & 0o077).toBe(0);
    }

    const to = t.newRestoreTarget();
    const result = await restoreBackup(ctx, backup.id, to, false);
    expect(result.rows).toBe(backup.rows);
    const restored = await inspectRestored(to, async (query) => ({
      tenants: await query<{ name: string }>('select name from tenants where id = $1', [tenantId]),
      contact: await query<{ email_ct: Uint8Array | null }>('select email_ct from contacts where id = $1', [contactId]),
      keys: await query<{ n: number }>('select count(*)::int as n from tenant_keys where tenant_id = $1', [tenantId]),
      restoredEvent: await query<{ n: number }>(`select count(*)::int as n from platform_audit_events where action = 'backup.restored'`),
    }));
    expect(restored.tenants).toEqual([{ name: 'Backed Up' }]);
    expect(restored.contact[0]!.email_ct).not.toBeNull();
    expect(restored.keys[0]!.n).toBeGreaterThan(0); // from the keystore, not from the backup
    expect(restored.restoredEvent[0]!.n).toBe(1);
    const filesDir = to.startsWith('postgres') ? config.backup.filesDir : path.join(to, 'files');
    expect(readFileSync(path.join(filesDir, 'tenant', 'report.pdf'), 'utf8')).toBe('%PDF-1.7 stored file');
  });

  it('keeps keys out of every backup: the key tables are empty in the archive and restored from the keystore', async () => {
    const backup = await createBackup(ctx);
    const report = await verifyBackup({ ...ctx, target: ctx.target }, backup.id);
    expect(report.ok, report.problems.join('; ')).toBe(true);
    // Without the keystore the same backup restores, but no encrypted field opens.
    const bare = mkdtempSync(path.join(os.tmpdir(), 'cn-backups-bare-'));
    try {
      for (const dir of ['backups']) {
        mkdirSync(path.join(bare, dir));
        for (const name of readdirSync(path.join(backupDir, dir))) writeFileSync(path.join(bare, dir, name), readFileSync(path.join(backupDir, dir, name)));
      }
      const withoutKeys = await verifyBackup({ ...ctx, target: new DirectoryTarget(bare) }, backup.id);
      expect(withoutKeys.ok).toBe(true);
      expect(withoutKeys.decryptedFields).toBe(0);
      expect(withoutKeys.shreddedTenants).toBeGreaterThanOrEqual(1);
    } finally {
      rmSync(bare, { recursive: true, force: true });
    }
  });

  it('records every restore drill with its measured restore time, in restore_tests and the platform log', async () => {
    // A second-factor seed: a field under the platform's key, sampled by the drill too.
    const { session: secondFactor } = await t.signup({ tenantName: 'With MFA' });
    const { secret } = (await t.request({ method: 'POST', url: '/api/v1/auth/totp/enroll', as: secondFactor })).json<{ secret: string }>();
    expect((await t.request({ method: 'POST', url: '/api/v1/auth/totp/activate', as: secondFactor, body: { code: totpFor(secret, 'x').generate() } })).statusCode).toBe(200);
    const backup = await createBackup(ctx);
    const report = await verifyBackup(ctx, backup.id);
    expect(report.ok, report.problems.join('; ')).toBe(true);
    expect(report.decryptedFields).toBeGreaterThanOrEqual(2); // a contact's email and the seed
    expect(report.auditLogs).toBeGreaterThanOrEqual(2); // the platform log and the tenant's
    expect(report.restoreMs).toBeGreaterThan(0);
    const drills = await listRestoreTests(t.db);
    expect(drills[0]).toMatchObject({ backupId: backup.id, ok: true, restoreMs: report.restoreMs });
    const events = await t.admin.query<{ outcome: string; metadata: { backupId: string } }>(`select outcome, metadata from platform_audit_events where action = 'backup.verified' order by position desc limit 1`);
    expect(events[0]).toMatchObject({ outcome: 'success', metadata: { backupId: backup.id } });
    const created = await t.admin.query<{ n: number }>(`select count(*)::int as n from platform_audit_events where action = 'backup.created' and metadata->>'backupId' = $1`, [backup.id]);
    expect(created[0]!.n).toBe(1);
  });

  describe('a damaged backup fails with a clear error and restores nothing', () => {
    const damage: [string, (file: string, descriptor: string) => void, RegExp][] = [
      ['truncated', (file) => writeFileSync(file, readFileSync(file).subarray(0, Math.floor(readFileSync(file).length / 2))), /does not decrypt|truncated/],
      [
        'corrupted (one bit flipped)',
        (file) => {
          const bytes = readFileSync(file);
          bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
          writeFileSync(file, bytes);
        },
        /does not decrypt/,
      ],
      [
        'tampered (its descriptor claims another schema)',
        (_file, descriptor) => writeFileSync(descriptor, JSON.stringify({ ...JSON.parse(readFileSync(descriptor, 'utf8')), schemaVersion: 23 })),
        /does not unwrap/,
      ],
      [
        'swapped (another backup’s archive under this name)',
        (file) => {
          const other = readdirSync(path.dirname(file)).find((name) => name.endsWith('.cnb') && !file.endsWith(name))!;
          writeFileSync(file, readFileSync(path.join(path.dirname(file), other)));
        },
        /does not decrypt/,
      ],
    ];
    for (const [kind, spoil, message] of damage) {
      it(kind, async () => {
        const backup = await createBackup(ctx);
        const file = path.join(backupDir, 'backups', `${backup.id}.cnb`);
        spoil(file, path.join(backupDir, 'backups', `${backup.id}.json`));
        const to = t.newRestoreTarget();
        await expect(restoreBackup(ctx, backup.id, to, false)).rejects.toThrow(message);
        expect(await targetExists(t, to)).toBe(false);
        const report = await verifyBackup(ctx, backup.id);
        expect(report.ok).toBe(false);
        expect(report.problems[0]).toMatch(message);
        expect((await listRestoreTests(t.db))[0]).toMatchObject({ backupId: backup.id, ok: false });
      });
    }

    it('under the wrong key-encryption key', async () => {
      const backup = await createBackup(ctx);
      const wrongKey = { ...ctx, provider: new LocalKeyProvider(Buffer.alloc(32, 7), []) };
      const to = t.newRestoreTarget();
      await expect(restoreBackup(wrongKey, backup.id, to, false)).rejects.toThrow(/does not unwrap/);
      expect(await targetExists(t, to)).toBe(false);
    });
  });

  it('refuses a non-empty target without --force; with it, switches and keeps the replaced data', async () => {
    const backup = await createBackup(ctx);
    const to = t.newRestoreTarget();
    await restoreBackup(ctx, backup.id, to, false);
    await expect(restoreBackup(ctx, backup.id, to, false)).rejects.toThrow(/not empty|already holds a database/);
    const again = await restoreBackup(ctx, backup.id, to, true);
    expect(again.replaced).not.toBeNull();
  });

  it('shreds a deleted tenant in older backups too: its keys leave the keystore, its fields no longer decrypt', async () => {
    const { session: doomedOwner, tenantId: doomed } = await t.signup({ tenantName: 'Doomed Later' });
    const account = (await t.request({ method: 'POST', url: `/api/v1/tenants/${doomed}/accounts`, as: doomedOwner, body: { name: 'Gone' } })).json<{ id: string }>();
    expect((await t.request({ method: 'POST', url: `/api/v1/tenants/${doomed}/contacts`, as: doomedOwner, body: { accountId: account.id, name: 'Bo', email: 'bo@doomed.example' } })).statusCode).toBe(201);
    const older = await createBackup(ctx);
    const before = await verifyBackup(ctx, older.id);
    expect(before.shreddedTenants).toBe(0);

    await deleteTenant(t.db, createKeyring(config, { warn() {} }), { tenantId: doomed, confirmName: 'Doomed Later', actor: { type: 'system', id: null } });
    expect((await forgetTenantKeys(ctx.target, ctx.provider, doomed)).removed).toBeGreaterThanOrEqual(2);

    const after = await verifyBackup(ctx, older.id);
    expect(after.ok, after.problems.join('; ')).toBe(true);
    expect(after.shreddedTenants).toBe(1); // the deleted tenant's ciphertexts: no key anywhere
    const to = t.newRestoreTarget();
    await restoreBackup(ctx, older.id, to, false);
    const keys = await inspectRestored(to, (query) => query<{ n: number }>('select count(*)::int as n from tenant_keys where tenant_id = $1', [doomed]));
    expect(keys[0]!.n).toBe(0);
    // A later backup refreshes the keystore without bringing the keys back.
    await createBackup(ctx);
    expect((await forgetTenantKeys(ctx.target, ctx.provider, doomed)).removed).toBe(0);
  });

  it('a backup taken during concurrent writes restores consistent: foreign keys hold and every audit chain verifies', async () => {
    let writing = true;
    const writes = (async () => {
      let n = 0;
      while (writing) {
        const account = (await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner, body: { name: `Busy ${n}` } })).json<{ id: string }>();
        await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/contacts`, as: owner, body: { accountId: account.id, name: `C ${n}`, email: `c${n}@busy.example` } });
        n += 1;
      }
      return n;
    })();
    const backup = await createBackup(ctx);
    writing = false;
    expect(await writes).toBeGreaterThan(0);
    const report = await verifyBackup(ctx, backup.id);
    expect(report.ok, report.problems.join('; ')).toBe(true);
    const to = t.newRestoreTarget();
    await restoreBackup(ctx, backup.id, to, false);
    const orphans = await inspectRestored(to, (query) =>
      query<{ n: number }>('select count(*)::int as n from contacts c where not exists (select 1 from accounts a where a.tenant_id = c.tenant_id and a.id = c.account_id)'),
    );
    expect(orphans[0]!.n).toBe(0);
  });

  it('puts back one tenant\'s deleted records from a backup, also under a since-rotated key, touching nothing else', async () => {
    const { session: mine, tenantId: mineId } = await t.signup({ tenantName: 'Oops' });
    const { session: theirs, tenantId: theirsId } = await t.signup({ tenantName: 'Bystander' });
    const base = `/api/v1/tenants/${mineId}`;
    const lost = (await t.request({ method: 'POST', url: `${base}/accounts`, as: mine, body: { name: 'Deleted by mistake' } })).json<{ id: string }>();
    const lostContact = (await t.request({ method: 'POST', url: `${base}/contacts`, as: mine, body: { accountId: lost.id, name: 'Lost', email: 'lost@oops.example' } })).json<{ id: string }>();
    const kept = (await t.request({ method: 'POST', url: `${base}/accounts`, as: mine, body: { name: 'Kept' } })).json<{ id: string }>();
    const neighbour = (await t.request({ method: 'POST', url: `/api/v1/tenants/${theirsId}/accounts`, as: theirs, body: { name: 'Before' } })).json<{ id: string }>();
    const backup = await createBackup(ctx);

    // After the backup: the tenant's key is rotated (the old version destroyed), the records are deleted by mistake,
    // the tenant edits another record and adds a new one, and the neighbour changes its own data.
    const keyring = createKeyring(config, { warn() {} });
    const { version } = await startOrResumeRotation(t.db, keyring, mineId);
    await reencryptContacts(t.db, keyring, mineId);
    expect(await destroyDataKeysBelow(t.db, keyring, mineId, version, (tx) => contactsBelowVersion(tx, mineId, version))).toBeGreaterThanOrEqual(1);
    expect((await t.request({ method: 'DELETE', url: `${base}/contacts/${lostContact.id}`, as: mine })).statusCode).toBe(204);
    expect((await t.request({ method: 'DELETE', url: `${base}/accounts/${lost.id}`, as: mine })).statusCode).toBe(204);
    await t.request({ method: 'PATCH', url: `${base}/accounts/${kept.id}`, as: mine, body: { name: 'Kept, renamed after the backup' } });
    const added = (await t.request({ method: 'POST', url: `${base}/accounts`, as: mine, body: { name: 'Added after the backup' } })).json<{ id: string }>();
    await t.request({ method: 'PATCH', url: `/api/v1/tenants/${theirsId}/accounts/${neighbour.id}`, as: theirs, body: { name: 'After' } });

    const result = await restoreTenantRecords(ctx, backup.id, mineId);
    expect(result).toMatchObject({ accountsRestored: 1, contactsRestored: 1 });
    expect(result.keyVersionsRestored).toEqual([version - 1]);
    const contact = await t.request({ method: 'GET', url: `${base}/contacts/${lostContact.id}`, as: mine });
    expect(contact.statusCode).toBe(200);
    expect(contact.json()).toMatchObject({ email: 'lost@oops.example', accountId: lost.id });
    expect((await t.request({ method: 'GET', url: `${base}/accounts/${kept.id}`, as: mine })).json()).toMatchObject({ name: 'Kept, renamed after the backup' });
    expect((await t.request({ method: 'GET', url: `${base}/accounts/${added.id}`, as: mine })).statusCode).toBe(200);
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${theirsId}/accounts/${neighbour.id}`, as: theirs })).json()).toMatchObject({ name: 'After' });
    const events = (await t.request({ method: 'GET', url: `${base}/audit-events?action=tenant.restored`, as: mine })).json<{ items: { metadata: { backupId: string } }[] }>();
    expect(events.items[0]!.metadata.backupId).toBe(backup.id);
    // Run again: nothing is missing any more.
    expect(await restoreTenantRecords(ctx, backup.id, mineId)).toMatchObject({ accountsRestored: 0, contactsRestored: 0, keyVersionsRestored: [] });
  });
});
