import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { openTestDatabase, type TestDatabase } from '../../../test/harness.ts';
import { isReadOnlyStatement, READ_ONLY_COMMIT_DELAY_MS } from './pg-driver.ts';

describe('read-only statement detection', () => {
  it('counts only plain SELECTs: no writes, no row locks, no marked statements', () => {
    expect(isReadOnlyStatement('select * from accounts where id = $1')).toBe(true);
    expect(isReadOnlyStatement(`select set_config('app.tenant_id', 'x', true)`)).toBe(true);
    for (const text of [
      'insert into accounts (name) values ($1)',
      'with head as (insert into audit_heads values (1)) select 1',
      'update accounts set name = $1',
      'delete from contacts',
      'select * from memberships for update',
      'select * from memberships FOR NO KEY UPDATE',
      'select * from memberships for share',
      '/* writes */ select * from cn_enter_tenant_key($1, $2)',
    ]) {
      expect(isReadOnlyStatement(text), text).toBe(false);
    }
  });
});

// Threat: an optimisation that answers before COMMIT loses a write, or leaves connections
// idle in a transaction (holding back vacuum, blocking migrations).
describe.skipIf(inject('testDb').kind !== 'postgres')('the PostgreSQL driver', () => {
  let t: TestDatabase;
  beforeAll(async () => {
    t = await openTestDatabase({ DATABASE_POOL_SIZE: '1' });
  });
  afterAll(async () => t?.close());

  const idleInTransaction = async () =>
    (await t.admin.query<{ n: number }>(`select count(*)::int as n from pg_stat_activity where datname = current_database() and usename = 'cn_app' and state = 'idle in transaction'`))[0]!.n;

  it('a write is committed before withTenant returns', async () => {
    const tenantId = randomUUID();
    await t.db.withTenant(tenantId, async (tx) => {
      await tx.insertInto('tenants').values({ id: tenantId, name: 'durable' }).execute();
      await tx.insertInto('accounts').values({ tenant_id: tenantId, name: 'written' }).execute();
    });
    // Seen at once by another connection: it is committed, not pending.
    expect(await t.admin.query('select name from accounts where tenant_id = $1', [tenantId])).toEqual([{ name: 'written' }]);
    expect(await idleInTransaction()).toBe(0);
  });

  it('a read-only transaction defers its COMMIT briefly, then no connection stays idle in a transaction', async () => {
    const tenantId = randomUUID();
    await t.db.withTenant(tenantId, (tx) => tx.selectFrom('accounts').select('id').execute());
    expect(await idleInTransaction()).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, READ_ONLY_COMMIT_DELAY_MS * 5));
    expect(await idleInTransaction()).toBe(0);
  });

  it('the next transaction on the same connection carries the deferred COMMIT and sees its own tenant only', async () => {
    const a = randomUUID();
    const b = randomUUID();
    for (const id of [a, b]) {
      await t.db.withTenant(id, async (tx) => {
        await tx.insertInto('tenants').values({ id, name: id }).execute();
        await tx.insertInto('accounts').values({ tenant_id: id, name: `acct ${id}` }).execute();
      });
    }
    // Pool of one: every transaction below reuses the connection right after a read-only one.
    for (let i = 0; i < 5; i++) {
      const seenA = await t.db.withTenant(a, (tx) => tx.selectFrom('accounts').select('tenant_id').execute());
      const seenB = await t.db.withTenant(b, (tx) => tx.selectFrom('accounts').select('tenant_id').execute());
      expect(seenA.every((row) => row.tenant_id === a) && seenA.length === 1).toBe(true);
      expect(seenB.every((row) => row.tenant_id === b) && seenB.length === 1).toBe(true);
    }
    await t.db.withTenant(a, (tx) => tx.updateTable('accounts').set({ name: 'after reads' }).execute());
    expect(await t.admin.query('select name from accounts where tenant_id = $1', [a])).toEqual([{ name: 'after reads' }]);
  });
});
