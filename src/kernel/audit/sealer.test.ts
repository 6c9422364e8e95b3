import { CompiledQuery, sql } from 'kysely';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openTestDatabase, type TestDatabase } from '../../../test/harness.ts';
import { explainPlan, type PlanNode } from '../../../test/support/plans.ts';
import { SEAL_BATCH, sealAllLogs, unsealed, watermark } from './sealer.ts';

describe("the sealer's search for unsealed events", () => {
  let t: TestDatabase;
  beforeAll(async () => {
    t = await openTestDatabase();
  });
  afterAll(async () => t?.close());

  /** The plans of both searches (all tenants; one tenant) as the sealer runs them, in a sealer transaction. */
  async function searchPlans(tenantId: string): Promise<PlanNode[][]> {
    const system = t.db.systemDb({ reason: 'test: plan the searches for unsealed events' });
    return system.transaction(async (tx) => {
      const above = await watermark(tx);
      const { rows: last } = await sql<{ upTo: string }>`select pg_sequence_last_value('audit_event_position')::text as "upTo"`.execute(tx);
      const plans: PlanNode[][] = [];
      for (const search of [unsealed(tx, above, last[0]!.upTo, SEAL_BATCH), unsealed(tx, above, last[0]!.upTo, SEAL_BATCH, [tenantId])]) {
        plans.push((await explainPlan(tx, search.compile())).nodes);
      }
      return plans;
    });
  }

  /** An ordered walk of the position index that stops at the limit: no table scan, no bitmap, nothing sorted. */
  function expectOrderedWalk(plan: PlanNode[]): void {
    expect(plan.map((node) => node['Node Type']).filter((type) => /Seq Scan|Bitmap|Sort/.test(type))).toEqual([]);
    expect(plan.find((node) => node['Relation Name'] === 'audit_events')).toMatchObject({ 'Node Type': 'Index Scan', 'Index Name': 'audit_events_position_key' });
  }

  const append = (tenantId: string, count: number) =>
    t.admin.query(`insert into audit_events (tenant_id, actor_type, action, outcome) select $1, 'system', 'test.plan', 'success' from generate_series(1, ${count})`, [tenantId]);

  it('walks the position index in order whatever the statistics say: none yet, or far fewer events than there are', async () => {
    const tenantId = randomUUID();
    await t.admin.query('insert into tenants (id, name) values ($1, $2)', [tenantId, 'plan test']);
    await append(tenantId, 3000);
    await sealAllLogs(t.db);
    await append(tenantId, 50);
    // No statistics at all, as in a new or just restored database: the planner once took a
    // pass's few events for a third of the table and scanned it whole.
    await t.admin.exec(`
      delete from pg_statistic where starelid in ('audit_events'::regclass, 'audit_seals'::regclass);
      update pg_class set reltuples = -1 where oid in ('audit_events'::regclass, 'audit_seals'::regclass);`);
    for (const plan of await searchPlans(tenantId)) expectOrderedWalk(plan);
    // Statistics from before a burst, as when a backlog is drained: it once took a range of a
    // million for a few thousand and bitmap-scanned and sorted all of it for every batch.
    await t.admin.query('analyze audit_events, audit_seals');
    await append(tenantId, 20_000);
    for (const plan of await searchPlans(tenantId)) expectOrderedWalk(plan);
  });

  it('does not JIT-compile its one-row statements, whose scans carry the cost of a disabled plan', async () => {
    const system = t.db.systemDb({ reason: 'test: plan the watermark update' });
    const plan = await system.transaction(async (tx) => {
      await watermark(tx);
      return (await explainPlan(tx, CompiledQuery.raw('update audit_seal_watermark set position = greatest(position, 0)'))).text;
    });
    expect(plan).toContain('Seq Scan');
    expect(plan).not.toContain('JIT');
  });
});
