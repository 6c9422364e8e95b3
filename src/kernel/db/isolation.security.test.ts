import { sql } from 'kysely';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { openTestDatabase, type TestDatabase } from '../../../test/harness.ts';
import pino from 'pino';
import { loadConfig } from '../config/config.ts';
import { openDatabase, type Tx } from './database.ts';

// Threat: a query that forgets its tenant filter, or writes another tenant's id, crosses tenants.
// Row-level security must stop it at the database, whatever the application code does.
describe('tenant isolation at the database', () => {
  let t: TestDatabase;
  const tenantA = randomUUID();
  const tenantB = randomUUID();

  async function seed(tenantId: string, name: string) {
    return t.db.withTenant(tenantId, async (tx) => {
      await tx.insertInto('tenants').values({ id: tenantId, name }).execute();
      const account = await tx.insertInto('accounts').values({ tenant_id: tenantId, name: `${name} account` }).returning('id').executeTakeFirstOrThrow();
      await tx.insertInto('contacts').values({ tenant_id: tenantId, account_id: account.id, name: `${name} contact`, email: null, phone: null }).execute();
      return account.id;
    });
  }

  let accountB: string;
  beforeAll(async () => {
    t = await openTestDatabase();
    await seed(tenantA, 'A');
    accountB = await seed(tenantB, 'B');
  });
  afterAll(async () => t?.close());

  it('runs as a role that is not superuser, has no BYPASSRLS and owns no table', async () => {
    const [role] = await t.db.withTenant(tenantA, async (tx) =>
      (await sql<{ user: string; rolsuper: boolean; rolbypassrls: boolean; owns: boolean }>`
        select current_user as user, r.rolsuper, r.rolbypassrls,
          exists (select 1 from pg_tables where schemaname = 'public' and tableowner = current_user) as owns
        from pg_roles r where r.rolname = current_user`.execute(tx)).rows,
    );
    expect(role).toEqual({ user: 'cn_app', rolsuper: false, rolbypassrls: false, owns: false });
  });

  it('an unfiltered select inside withTenant(A) returns only A rows', async () => {
    const rows = await t.db.withTenant(tenantA, async (tx) => (await sql<{ tenant_id: string; name: string }>`select * from contacts`.execute(tx)).rows);
    expect(rows.length).toBe(1);
    expect(rows.every((row) => row.tenant_id === tenantA)).toBe(true);
    const accounts = await t.db.withTenant(tenantA, (tx) => tx.selectFrom('accounts').selectAll().execute());
    expect(accounts.map((a) => a.tenant_id)).toEqual([tenantA]);
    // Both tenants' rows exist: the filter came from RLS, not from an empty table.
    expect((await t.admin.query<{ n: number }>('select count(*)::int as n from contacts'))[0]!.n).toBe(2);
  });

  it("inserting a row with B's tenant_id inside withTenant(A) is rejected", async () => {
    await expect(
      t.db.withTenant(tenantA, (tx) => tx.insertInto('accounts').values({ tenant_id: tenantB, name: 'smuggled' }).execute()),
    ).rejects.toThrow(/row-level security/);
  });

  it("moving A's row to B by update is rejected, and B's rows cannot be updated or deleted from A", async () => {
    await expect(
      t.db.withTenant(tenantA, (tx) => tx.updateTable('accounts').set({ tenant_id: tenantB }).execute()),
    ).rejects.toThrow(/row-level security/);
    const updated = await t.db.withTenant(tenantA, (tx) => tx.updateTable('accounts').set({ name: 'pwned' }).where('id', '=', accountB).executeTakeFirst());
    expect(updated.numUpdatedRows).toBe(0n);
    const deleted = await t.db.withTenant(tenantA, (tx) => tx.deleteFrom('contacts').where('tenant_id', '=', tenantB).executeTakeFirst());
    expect(deleted.numDeletedRows).toBe(0n);
    const [b] = await t.admin.query<{ name: string }>('select name from accounts where id = $1', [accountB]);
    expect(b!.name).toBe('B account');
  });

  it('the application role cannot switch row security off to escape', async () => {
    await expect(
      t.db.withTenant(tenantA, async (tx) => {
        await sql`set local row_security = off`.execute(tx);
        return sql`select * from contacts`.execute(tx);
      }),
    ).rejects.toThrow(/row-level security/);
  });

  it('without a tenant (withGlobal) tenant tables show no rows', async () => {
    const rows = await t.db.withGlobal((tx) => tx.selectFrom('contacts').selectAll().execute());
    expect(rows).toEqual([]);
  });

  it('the tenant setting does not outlive its transaction on a reused connection', async () => {
    await t.db.withTenant(tenantA, (tx) => tx.selectFrom('accounts').select('id').execute());
    const setting = await t.db.withGlobal(async (tx) => (await sql<{ v: string | null }>`select current_setting('app.tenant_id', true) as v`.execute(tx)).rows[0]!.v);
    expect(setting ?? '').toBe('');
  });

  it('a handle kept past its transaction cannot run queries', async () => {
    let leaked: Tx | undefined;
    await t.db.withTenant(tenantA, async (tx) => {
      leaked = tx;
    });
    await expect(leaked!.selectFrom('accounts').selectAll().execute()).rejects.toThrow();
  });

  it('systemDb needs a stated reason', () => {
    // eslint-disable-next-line customernode/system-db-reason -- the refusal of an empty reason is what is tested
    expect(() => t.db.systemDb({ reason: '' })).toThrow(/reason/);
  });

  it('a non-UUID tenant id never reaches the database', async () => {
    await expect(t.db.withTenant("x' or true --", async () => 1)).rejects.toThrow(/UUID/);
  });
});

describe('transaction nesting', () => {
  it('opening a transaction inside another fails fast instead of deadlocking', async () => {
    const t = await openTestDatabase();
    try {
      const tenant = randomUUID();
      await expect(t.db.withTenant(tenant, () => t.db.withGlobal(async () => 1))).rejects.toThrow(/inside another/);
      await expect(t.db.withGlobal(() => t.db.systemDb({ reason: 'nesting test only' }).transaction(async () => 1))).rejects.toThrow(/inside another/);
      // Sequential transactions remain fine.
      expect(await t.db.withGlobal(async () => 1)).toBe(1);
    } finally {
      await t.close();
    }
  });
});

describe('privileged application role', () => {
  // Threat: a deployment connects the app as the table owner (or a superuser) and RLS silently stops applying.
  // PGlite has no login roles: there the kernel itself sets the role of every transaction.
  it.skipIf(inject('testDb').kind !== 'postgres')('the server refuses to start when its application role owns the tables', async () => {
    const t = await openTestDatabase();
    try {
      const owner = new URL(t.config.databaseUrl!).username;
      const config = loadConfig({ ...t.env, DATABASE_APP_USER: owner });
      await expect(openDatabase({ config, logger: pino({ level: 'silent' }) })).rejects.toThrow(/Refusing to start/);
    } finally {
      await t.close();
    }
  });
});
