import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openTestDatabase, type TestDatabase } from '../../../test/harness.ts';
import { explainPlan } from '../../../test/support/plans.ts';
import { GENESIS_HASH, jcs } from './chain.ts';
import { sealAllLogs } from './sealer.ts';
import { loadAuditSigner } from './signing.ts';
import { checkTenantRange, plannedTenantRange, verifyTenantLog } from './verify.ts';

const GENESIS = GENESIS_HASH.toString('hex');

describe("the database's own check of a range of a tenant's chain", () => {
  let t: TestDatabase;
  beforeAll(async () => {
    t = await openTestDatabase();
  });
  afterAll(async () => t?.close());

  const system = () => t.db.systemDb({ reason: 'test: check ranges of a chain in the database' });

  async function tenant(name: string): Promise<string> {
    const id = randomUUID();
    await t.admin.query('insert into tenants (id, name) values ($1, $2)', [id, name]);
    return id;
  }

  /** A busy tenant with 360 events and a quiet one with 40 among them (one in ten positions), sealed. */
  async function busyAndQuiet(): Promise<{ busy: string; quiet: string }> {
    const busy = await tenant('busy');
    const quiet = await tenant('quiet');
    await t.admin.query(
      `insert into audit_events (tenant_id, actor_type, action, target_type, target_id, outcome, ip, user_agent, canonical_metadata)
       select case when g % 10 = 0 then $2::uuid else $1::uuid end, 'system', 'test.range', 'account', 'a-' || g, 'success', '192.0.2.1', 'test', '{"n":' || g || '}'
       from generate_series(1, 400) g order by g`,
      [busy, quiet],
    );
    await sealAllLogs(t.db);
    return { busy, quiet };
  }

  const check = (tenantId: string, from: number, to: number, previousHash: string | null) => system().transaction((tx) => checkTenantRange(tx, tenantId, from, to, previousHash));

  /** Changes events or seals as their owner, with the append-only triggers off. */
  const tamper = async (script: string, params: unknown[]) => {
    await t.admin.query('alter table audit_events disable trigger audit_events_append_only');
    await t.admin.query('alter table audit_seals disable trigger audit_seals_append_only');
    try {
      await t.admin.query(script, params);
    } finally {
      await t.admin.query('alter table audit_seals enable trigger audit_seals_append_only');
      await t.admin.query('alter table audit_events enable trigger audit_events_append_only');
    }
  };

  /** The whole verification of a tenant's log, as the API runs it (or in JavaScript alone). */
  const verifyWhole = (tenantId: string, useDatabase = true) =>
    system().transaction((tx) => verifyTenantLog(tx, tenantId, loadAuditSigner(t.config, { warn() {} }).publicKeys, useDatabase));

  it('passes an untouched range by itself, merging a busy tenant along the position indexes and looking up a quiet one event by event', async () => {
    const { busy, quiet } = await busyAndQuiet();
    expect(await check(busy, 1, 360, GENESIS)).toMatchObject({ good: true, n: 360, first: '1', last: '360', read: 'merge' });
    // A range checked beside others starts from the stored hash before it.
    expect(await check(busy, 101, 200, null)).toMatchObject({ good: true, n: 100, first: '101', last: '200', read: 'merge' });
    expect(await check(quiet, 1, 40, GENESIS)).toMatchObject({ good: true, n: 40, read: 'lookup' });
    expect(await check(quiet, 11, 20, null)).toMatchObject({ good: true, n: 10, first: '11', last: '20', read: 'lookup' });
    // An edited event fails its range either way.
    await tamper(`update audit_events set ip = '198.51.100.9' where position = (select position from audit_seals where tenant_id = $1 and seq = 150)`, [busy]);
    await tamper(`update audit_events set ip = '198.51.100.9' where position = (select position from audit_seals where tenant_id = $1 and seq = 15)`, [quiet]);
    expect(await check(busy, 101, 200, null)).toMatchObject({ good: false, read: 'merge' });
    expect(await check(quiet, 11, 20, null)).toMatchObject({ good: false, read: 'lookup' });
  });

  it('fails a range with a NULL where the schema wants a value, as a forger who dropped the NOT NULL constraint could write', async () => {
    const busy = await tenant('nulls');
    await t.admin.query(
      `insert into audit_events (tenant_id, actor_type, action, outcome, canonical_metadata) select $1::uuid, 'system', 'test.nulls', 'success', '{"n":' || g || '}' from generate_series(1, 30) g order by g`,
      [busy],
    );
    await sealAllLogs(t.db);
    expect(await check(busy, 1, 30, GENESIS)).toMatchObject({ good: true, n: 30 });
    await t.admin.query('alter table audit_seals alter column canonical_metadata drop not null');
    await tamper('update audit_seals set canonical_metadata = null where tenant_id = $1 and seq = 12', [busy]);
    expect(await check(busy, 1, 30, GENESIS)).toMatchObject({ good: false });
    await t.admin.query('alter table audit_events alter column action drop not null');
    await tamper('update audit_events set action = null where position = (select position from audit_seals where tenant_id = $1 and seq = 20)', [busy]);
    expect(await check(busy, 13, 30, null)).toMatchObject({ good: false });
    // The whole verification names the first of them.
    expect((await verifyWhole(busy)).firstBad).toMatchObject({ seq: 12, reason: 'hash_mismatch' });
  });

  it('builds the canonical text of strings JSON escapes (quotes, backslashes, control characters) and of other Unicode exactly, and catches an edit that only moves an escape', async () => {
    const tenantId = await tenant('escapes');
    const awkward = ['he said "hi"', 'back\\slash', 'tab\there', 'line\nbreak', '\u0001\u001f', 'café 😀 \u2028 \u007f', 'plain'];
    for (const text of awkward) {
      await t.admin.query(
        `insert into audit_events (tenant_id, actor_type, actor_email, action, target_type, target_id, outcome, ip, user_agent, request_id, canonical_metadata)
         values ($1, 'user', $2, 'test.escape', 'account', $2, 'success', '192.0.2.1', $2, $2, $3)`,
        [tenantId, text, jcs({ text })],
      );
    }
    await sealAllLogs(t.db);
    expect(await check(tenantId, 1, awkward.length, GENESIS)).toMatchObject({ good: true, n: awkward.length });
    // The database sealed them: JavaScript's canonical text (chain.ts) gives the same hashes.
    expect(await verifyWhole(tenantId, false)).toMatchObject({ ok: true, count: awkward.length });
    // The quote escaped by hand: a text built without escaping would read the same.
    await tamper(`update audit_events set target_id = $2 where position = (select position from audit_seals where tenant_id = $1 and seq = 1)`, [tenantId, 'he said \\"hi\\"']);
    expect(await check(tenantId, 1, awkward.length, GENESIS)).toMatchObject({ good: false });
    expect((await verifyWhole(tenantId)).firstBad).toMatchObject({ seq: 1, reason: 'hash_mismatch' });
  });

  it("plans a range the same way with statistics or none: a merge along the events' position index, or a lookup per event; never a table scan", async () => {
    const { busy, quiet } = await busyAndQuiet();
    await t.admin.exec(`
      delete from pg_statistic where starelid in ('audit_events'::regclass, 'audit_seals'::regclass);
      update pg_class set reltuples = -1 where oid in ('audit_events'::regclass, 'audit_seals'::regclass);`);
    const plan = (tenantId: string, from: number, to: number) =>
      system().transaction(async (tx) => {
        const { read, query } = await plannedTenantRange(tx, tenantId, from, to);
        return { read, nodes: (await explainPlan(tx, query.compile(tx))).nodes };
      });
    const expectPlans = async () => {
      const merged = await plan(busy, 101, 300);
      expect(merged.read).toBe('merge');
      const mergedTypes = merged.nodes.map((node) => node['Node Type']);
      expect(mergedTypes).toContain('Merge Join');
      // The seals come in position order from either index (sorting a range's seals is cheap); the events from the position index.
      expect(mergedTypes.filter((type) => /Seq Scan|Bitmap|Hash|Nested Loop/.test(type))).toEqual([]);
      expect(merged.nodes.filter((node) => node['Relation Name'] === 'audit_events')).toEqual([expect.objectContaining({ 'Node Type': 'Index Scan', 'Index Name': 'audit_events_position_key' })]);

      const looked = await plan(quiet, 1, 40);
      expect(looked.read).toBe('lookup');
      const lookedTypes = looked.nodes.map((node) => node['Node Type']);
      expect(lookedTypes).toContain('Nested Loop');
      expect(lookedTypes.filter((type) => /Seq Scan|Bitmap|Hash/.test(type))).toEqual([]);
      expect(looked.nodes.filter((node) => node['Relation Name'] === 'audit_events')).toEqual([expect.objectContaining({ 'Node Type': 'Index Scan', 'Index Name': 'audit_events_position_key' })]);
    };
    await expectPlans();
    await t.admin.query('analyze audit_events, audit_seals');
    await expectPlans();
  });
});
