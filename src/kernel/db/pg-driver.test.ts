import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { openTestDatabase, type TestDatabase } from '../../../test/harness.ts';
import { recordTenantEvent, type AuditEvent, type RequestMeta } from '../audit/record.ts';
import { CompiledQuery, Kysely } from 'kysely';
import { deferUntilCommit, isReadOnlyStatement, LazyBeginPostgresDialect, READ_ONLY_COMMIT_DELAY_MS } from './pg-driver.ts';

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

  // Threat: an event that rides the COMMIT is lost, lands without its change, or is mangled on the way.
  describe('audit events sent with the COMMIT', () => {
    const META: RequestMeta = { requestId: 'req-1', ip: '203.0.113.9', userAgent: 'agent' };
    const ACTOR = { type: 'system' as const, id: null };
    let sent = 0;
    const clientPrototype = pg.Client.prototype as unknown as { query: (...args: unknown[]) => unknown };
    const original = clientPrototype.query;
    beforeAll(() => {
      clientPrototype.query = function counted(this: unknown, ...args: unknown[]) {
        sent += 1;
        return original.apply(this, args);
      };
    });
    afterAll(() => {
      clientPrototype.query = original;
    });
    const newTenant = async () => {
      const id = randomUUID();
      await t.admin.query('insert into tenants (id, name) values ($1, $2)', [id, 'deferred events']);
      return id;
    };
    const writeAccount = (tenantId: string, name: string, event?: AuditEvent) =>
      t.db.withTenant(tenantId, async (tx) => {
        await tx.insertInto('accounts').values({ tenant_id: tenantId, name }).execute();
        if (event) await recordTenantEvent(tx, tenantId, ACTOR, META, event);
      });
    const events = (tenantId: string) =>
      t.admin.query<{ action: string; metadata: unknown; user_agent: string | null; actor_email: string | null }>(
        'select action, canonical_metadata::jsonb as metadata, user_agent, actor_email from audit_events where tenant_id = $1 order by position',
        [tenantId],
      );

    it('an audited write takes no more round trips than the same write without its event, and both land', async () => {
      const tenantId = await newTenant();
      // Warm up: statements are prepared once per connection.
      await writeAccount(tenantId, 'warm', { action: 'account.created' });
      await new Promise((resolve) => setTimeout(resolve, READ_ONLY_COMMIT_DELAY_MS * 3));
      sent = 0;
      await writeAccount(tenantId, 'plain');
      const plain = sent;
      sent = 0;
      await writeAccount(tenantId, 'audited', { action: 'account.created', metadata: { name: 'audited' } });
      expect(sent).toBe(plain);
      expect((await t.admin.query<{ name: string }>('select name from accounts where tenant_id = $1 order by name', [tenantId])).map((r) => r.name)).toEqual([
        'audited',
        'plain',
        'warm',
      ]);
      expect((await events(tenantId)).map((e) => e.action)).toEqual(['account.created', 'account.created']);
    });

    it('an event that fails at the COMMIT rolls its change back, and a change that fails after its event leaves neither', async () => {
      const tenantId = await newTenant();
      // outcome has a CHECK constraint: the deferred insert fails inside the COMMIT's message.
      await expect(writeAccount(tenantId, 'doomed', { action: 'account.created', outcome: 'bogus' as never })).rejects.toThrow(/check constraint/);
      await expect(
        t.db.withTenant(tenantId, async (tx) => {
          await recordTenantEvent(tx, tenantId, ACTOR, META, { action: 'account.created' });
          await tx.insertInto('accounts').values({ tenant_id: tenantId, name: null as never }).execute();
        }),
      ).rejects.toThrow(/not-null|null value/);
      await expect(
        t.db.withTenant(tenantId, async (tx) => {
          await tx.insertInto('accounts').values({ tenant_id: tenantId, name: 'thrown' }).execute();
          await recordTenantEvent(tx, tenantId, ACTOR, META, { action: 'account.created' });
          throw new Error('the change failed after its event');
        }),
      ).rejects.toThrow('the change failed after its event');
      expect(await t.admin.query('select id from accounts where tenant_id = $1', [tenantId])).toEqual([]);
      expect(await events(tenantId)).toEqual([]);
      // The connection (pool of one) is usable afterwards.
      await writeAccount(tenantId, 'after', { action: 'account.created' });
      expect(await events(tenantId)).toHaveLength(1);
    });

    it('a statement after the event in the same transaction sees it', async () => {
      const tenantId = await newTenant();
      const seen = await t.db.withTenant(tenantId, async (tx) => {
        await recordTenantEvent(tx, tenantId, ACTOR, META, { action: 'account.created' });
        return tx.selectFrom('audit_events').select('action').execute();
      });
      expect(seen).toEqual([{ action: 'account.created' }]);
    });

    it('stores quotes, backslashes, parameter-like text and any Unicode exactly as given', async () => {
      const tenantId = await newTenant();
      const awkward = { quote: "it's", backslash: 'C:\\temp\\', marker: '$1 $$ $2', sql: "'); drop table accounts; --", text: 'ünïcødé 😀 \u2028' };
      await t.db.withTenant(tenantId, (tx) =>
        recordTenantEvent(tx, tenantId, { type: 'user', id: null, email: "o'brien@example.com" }, { ...META, userAgent: 'Agent\\1.0 "quoted"' }, {
          action: 'account.created',
          metadata: awkward,
        }),
      );
      expect(await events(tenantId)).toEqual([{ action: 'account.created', metadata: awkward, user_agent: 'Agent\\1.0 "quoted"', actor_email: "o'brien@example.com" }]);
    });
  });

  // Threat: the pipelined COMMIT (Bind/Execute of the held inserts, COMMIT, one Sync) commits
  // part of a transaction, reports a rolled-back one as committed, or garbles a value.
  describe('the pipelined COMMIT, on the driver alone', () => {
    let pool: pg.Pool;
    let kysely: Kysely<unknown>;
    const INSERT = 'insert into "pipeline_probe" ("id", "flag", "n", "note") values ($1, $2, $3, $4)';
    const held = (values: unknown[]) => deferUntilCommit(CompiledQuery.raw(INSERT, values));
    const rows = () => t.admin.query<{ id: number; flag: boolean | null; n: string | null; note: string | null }>('select id, flag, n, note from pipeline_probe order by id');
    beforeAll(async () => {
      await t.admin.exec('create table pipeline_probe (id int primary key, flag boolean, n bigint, note text); grant all on pipeline_probe to public');
      pool = new pg.Pool({ connectionString: t.config.databaseUrl, max: 1 });
      kysely = new Kysely<unknown>({ dialect: new LazyBeginPostgresDialect(pool) });
    });
    afterAll(async () => kysely?.destroy());

    it('a transaction of held inserts alone, after a read-only one, sends that COMMIT, BEGIN, the inserts and its COMMIT, and all of it lands', async () => {
      await kysely.transaction().execute((tx) => tx.executeQuery(CompiledQuery.raw('select 1', [])));
      // The read-only transaction's COMMIT is still pending: it goes first in the pipeline.
      await kysely.transaction().execute(async (tx) => {
        await tx.executeQuery(held([1, true, -5, "it's $1"]));
        await tx.executeQuery(held([2, false, 9007199254740991, null]));
      });
      expect(await rows()).toEqual([
        { id: 1, flag: true, n: '-5', note: "it's $1" },
        { id: 2, flag: false, n: '9007199254740991', note: null },
      ]);
      expect(await idleInTransaction()).toBe(0);
    });

    it('a held insert that fails rejects the COMMIT and rolls back the whole transaction; the connection stays usable', async () => {
      await expect(
        kysely.transaction().execute(async (tx) => {
          await tx.executeQuery(CompiledQuery.raw('insert into pipeline_probe (id, note) values (3, $1)', ['sent at once']));
          await tx.executeQuery(held([4, null, null, 'held, fine']));
          await tx.executeQuery(held([1, null, null, 'held, a duplicate key']));
        }),
      ).rejects.toThrow(/duplicate key/);
      expect((await rows()).map((row) => row.id)).toEqual([1, 2]);
      await kysely.transaction().execute((tx) => tx.executeQuery(held([5, null, null, 'after'])));
      expect((await rows()).map((row) => row.id)).toEqual([1, 2, 5]);
    });

    it('a value no literal could carry (a NUL) is sent at once, not held, and fails there', async () => {
      await expect(kysely.transaction().execute((tx) => tx.executeQuery(held([6, null, null, 'nul \0 inside'])))).rejects.toThrow(/0x00/);
      expect((await rows()).map((row) => row.id)).toEqual([1, 2, 5]);
    });
  });
});
