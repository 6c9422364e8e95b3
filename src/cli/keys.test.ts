import { PGlite } from '@electric-sql/pglite';
import { spawnSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openTestDatabase, type TestDatabase } from '../../test/harness.ts';
import { openContactFields, sealContactFields } from '../features/records/contacts-crypto.ts';
import { insertContact } from '../features/records/store.ts';
import { loadConfig } from '../kernel/config/config.ts';
import { createKeyring, Keyring } from '../kernel/crypto/envelope.ts';
import { localKeyId } from '../kernel/crypto/key-provider.ts';
import { openDatabase, type Database } from '../kernel/db/database.ts';

const CLI = path.resolve(import.meta.dirname, 'main.ts');

function cli(args: string[], env: Record<string, string>) {
  const result = spawnSync(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, encoding: 'utf8', timeout: 60_000 });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

// Each command is a process that opens the database (seconds on the embedded one).
describe('customernode keys', { timeout: 120_000 }, () => {
  const oldKek = randomBytes(32).toString('hex');
  const newKek = randomBytes(32).toString('hex');
  let t: TestDatabase | undefined;
  let baseEnv: Record<string, string>;
  let query: <T>(text: string, params?: unknown[]) => Promise<T[]>;
  /** Opens the database as the server would (PGlite: the data directory, released after). */
  let withDb: <T>(kek: string, fn: (db: Database) => Promise<T>) => Promise<T>;
  let tenantId: string;
  const contactIds: string[] = [];

  beforeAll(async () => {
    t = await openTestDatabase();
    if (t.kind === 'postgres') {
      baseEnv = { ...t.env };
      query = (text, params) => t!.admin.query(text, params);
      withDb = async (_kek, fn) => fn(t!.db);
    } else {
      const dir = mkdtempSync(path.join(os.tmpdir(), 'cn-cli-keys-'));
      baseEnv = { NODE_ENV: 'test', DATA_DIR: dir };
      withDb = async (kek, fn) => {
        const pglite = await PGlite.create(path.join(dir, 'pgdata'));
        const db = await openDatabase({ config: loadConfig({ ...baseEnv, KEY_ENCRYPTION_KEY: kek }), logger: pino({ level: 'silent' }), pglite });
        try {
          return await fn(db);
        } finally {
          await db.close();
          if (!pglite.closed) await pglite.close();
        }
      };
      query = async <T,>(text: string, params?: unknown[]) => {
        const pglite = await PGlite.create(path.join(dir, 'pgdata'));
        try {
          return (await pglite.query<T>(text, params)).rows;
        } finally {
          await pglite.close();
        }
      };
    }
    tenantId = randomUUID();
    await withDb(oldKek, async (db) => {
      const keyring = createKeyring(loadConfig({ ...baseEnv, KEY_ENCRYPTION_KEY: oldKek }), { warn() {} });
      await db.systemDb({ reason: 'test seeds a tenant for key rotation' }).transaction(async (tx) => {
        await tx.insertInto('tenants').values({ id: tenantId, name: 'Rotating' }).execute();
      });
      await db.withTenant(tenantId, async (tx) => {
        const account = await tx.insertInto('accounts').values({ tenant_id: tenantId, name: 'Acme' }).returning('id').executeTakeFirstOrThrow();
        // A platform-level secret too (a user's TOTP seed is one): its key must follow a KEK rotation.
        await keyring.encryptPlatform(tx, { table: 'users', column: 'totp_secret', rowId: randomUUID() }, 'seed');
        // An SSO client secret under the same data key (the seed writes it as PUT .../sso does).
        const secret = await keyring.encrypt(tx, { tenantId, table: 'tenant_sso', column: 'client_secret', rowId: tenantId }, 'idp-secret');
        await tx.insertInto('tenant_sso').values({ tenant_id: tenantId, issuer: 'https://idp.example.com', client_id: 'c', client_secret_ct: secret, allowed_domains: [], default_role: 'member', jit_provisioning: false, enabled: true }).execute();
        for (let i = 0; i < 7; i++) {
          const id = randomUUID();
          const sealed = await sealContactFields(keyring, tx, tenantId, id, { email: `c${i}@example.com`, phone: i % 2 === 0 ? `+1415555010${i}` : null });
          await insertContact(tx, tenantId, { id, account_id: account.id, name: `Contact ${i}`, ...sealed });
          contactIds.push(id);
        }
      });
    });
  });
  afterAll(async () => {
    await t?.close();
    if (baseEnv?.DATABASE_URL === undefined && baseEnv?.DATA_DIR) rmSync(baseEnv.DATA_DIR, { recursive: true, force: true });
  });

  const contactsUnder = (kek: string) =>
    withDb(kek, async (db) => {
      const keyring = createKeyring(loadConfig({ ...baseEnv, KEY_ENCRYPTION_KEY: kek }), { warn() {} });
      return db.withTenant(tenantId, async (tx) => {
        const rows = await tx.selectFrom('contacts').select(['id', 'email', 'phone', 'email_ct', 'phone_ct']).where('tenant_id', '=', tenantId).orderBy('name').execute();
        const out = [];
        for (const row of rows) out.push({ ...(await openContactFields(keyring, tx, tenantId, row)), version: Keyring.versionOf(row.email_ct!) });
        return out;
      });
    });

  const ssoSecretUnder = (kek: string) =>
    withDb(kek, async (db) => {
      const keyring = createKeyring(loadConfig({ ...baseEnv, KEY_ENCRYPTION_KEY: kek }), { warn() {} });
      return db.withTenant(tenantId, async (tx) => {
        const row = await tx.selectFrom('tenant_sso').select('client_secret_ct').where('tenant_id', '=', tenantId).executeTakeFirstOrThrow();
        const secret = await keyring.decryptText(tx, { tenantId, table: 'tenant_sso', column: 'client_secret', rowId: tenantId }, row.client_secret_ct!);
        return { secret, version: Keyring.versionOf(row.client_secret_ct!) };
      });
    });

  it('rotate-tenant adds a data key version, re-encrypts every field under it, destroys the old one, and records it', async () => {
    const result = cli(['keys', 'rotate-tenant', '--tenant', tenantId, '--json'], { ...baseEnv, KEY_ENCRYPTION_KEY: oldKek });
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual({ tenantId, version: 2, resumed: false, reencrypted: 8, destroyedVersions: 1 });
    expect(result.stderr).toMatch(/re-encrypting contacts: 7\/7/);
    const keys = await query<{ purpose: string; version: number }>('select purpose, version from tenant_keys where tenant_id = $1 order by purpose, version', [tenantId]);
    expect(keys).toEqual([{ purpose: 'data', version: 2 }, { purpose: 'index', version: 1 }]);
    const contacts = await contactsUnder(oldKek);
    expect(contacts.map((c) => c.email)).toEqual(contacts.map((_, i) => `c${i}@example.com`));
    expect(contacts.every((c) => c.version === 2)).toBe(true);
    expect(contacts[0]!.phone).toBe('+14155550100');
    const actions = await query<{ action: string }>(`select action from audit_events where tenant_id = $1 and action like 'keys.%' order by position`, [tenantId]);
    expect(actions.map((a) => a.action)).toEqual(['keys.data_key_rotated', 'keys.data_key_retired']);
  });

  it('rotate-tenant finishes an interrupted rotation instead of starting another', async () => {
    // Interrupted: a version was added, nothing re-encrypted yet.
    await withDb(oldKek, (db) => db.withTenant(tenantId, (tx) => createKeyring(loadConfig({ ...baseEnv, KEY_ENCRYPTION_KEY: oldKek }), { warn() {} }).addDataKeyVersion(tx, tenantId)));
    const result = cli(['keys', 'rotate-tenant', '--tenant', tenantId, '--json'], { ...baseEnv, KEY_ENCRYPTION_KEY: oldKek });
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ version: 3, resumed: true, reencrypted: 8, destroyedVersions: 1 });
    expect((await contactsUnder(oldKek)).every((c) => c.version === 3)).toBe(true);
    expect(await ssoSecretUnder(oldKek)).toEqual({ secret: 'idp-secret', version: 3 });
  });

  it('rotate-kek re-wraps every tenant key under the new key-encryption key, once; the old one can then go', async () => {
    const before = await query<{ wrapped: Uint8Array }>('select wrapped from tenant_keys where tenant_id = $1 order by purpose', [tenantId]);
    const env = { ...baseEnv, KEY_ENCRYPTION_KEY: newKek, KEY_ENCRYPTION_KEYS_RETIRED: oldKek };
    const result = cli(['keys', 'rotate-kek', '--json'], env);
    expect(result.code, result.stderr).toBe(0);
    const { rewrapped, kekId } = JSON.parse(result.stdout);
    expect(kekId).toBe(localKeyId(Buffer.from(newKek, 'hex')));
    expect(rewrapped).toBeGreaterThanOrEqual(2);
    const after = await query<{ kek_id: string; wrapped: Uint8Array }>('select kek_id, wrapped from tenant_keys where tenant_id = $1 order by purpose', [tenantId]);
    expect(after.every((row) => row.kek_id === kekId)).toBe(true);
    expect((await query<{ kek_id: string }>('select kek_id from platform_keys')).every((row) => row.kek_id === kekId)).toBe(true);
    expect(Buffer.from(after[0]!.wrapped).equals(Buffer.from(before[0]!.wrapped))).toBe(false);
    // Only the new key is needed now; data itself was not touched.
    expect((await contactsUnder(newKek)).map((c) => c.email)).toContain('c3@example.com');
    expect((await ssoSecretUnder(newKek)).secret).toBe('idp-secret');
    expect(JSON.parse(cli(['keys', 'rotate-kek', '--json'], env).stdout).rewrapped).toBe(0);
    const events = await query<{ action: string }>(`select action from platform_audit_events where action = 'keys.kek_rotated'`);
    expect(events.length).toBeGreaterThanOrEqual(2);
  });

  it('refuses bad usage with exit 64', () => {
    expect(cli(['keys', 'rotate-tenant'], baseEnv).code).toBe(64);
    expect(cli(['keys', 'rotate-tenant', '--tenant', 'nope'], baseEnv).code).toBe(64);
    expect(cli(['keys', 'spin'], baseEnv).code).toBe(64);
    expect(cli(['tenants', 'delete', '--tenant', tenantId], baseEnv).code).toBe(64);
    const wrongName = cli(['tenants', 'delete', '--tenant', tenantId, '--confirm', 'Not its name'], { ...baseEnv, KEY_ENCRYPTION_KEY: newKek });
    expect(wrongName.code).toBe(64);
    expect(wrongName.stderr).toMatch(/does not match/);
  });
});
