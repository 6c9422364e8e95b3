import { CompiledQuery, sql } from 'kysely';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openTestDatabase, type TestDatabase } from '../../../test/harness.ts';
import { explainPlan, type PlanNode } from '../../../test/support/plans.ts';
import { recordTenantEvent } from './record.ts';
import { chainRecordOf, SEAL_BATCH, sealAllLogs, streamLine, unsealed, watermark } from './sealer.ts';
import { loadAuditSigner } from './signing.ts';
import { verifyTenantLog } from './verify.ts';

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

describe('sealing in the database', () => {
  it('gives each event the seq, hash and stream line JavaScript gives it, for awkward strings, Unicode and numbers alike', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'cn-seal-stream-'));
    const file = path.join(dir, 'audit.jsonl');
    const t = await openTestDatabase({ AUDIT_STREAM: file });
    let closed = false;
    try {
      const tenantId = randomUUID();
      await t.admin.query('insert into tenants (id, name) values ($1, $2)', [tenantId, 'sealed in the database']);
      const awkward = ['he said "hi"', 'back\\slash', 'tab\there', 'line\nbreak', '\u0001\u001f', 'café 😀 \u2028 \u007f', 'plain', ''];
      await t.db.withTenant(tenantId, async (tx) => {
        for (const [k, text] of awkward.entries()) {
          await recordTenantEvent(
            tx,
            tenantId,
            { type: 'user', id: randomUUID(), email: text === '' ? '' : `${text}@example.com` },
            { requestId: text, ip: k % 2 === 0 ? null : text, userAgent: text },
            {
              action: `test.${k}`,
              // An empty target type leaves the stream line without a target, as in JavaScript.
              target: { type: k === 7 ? '' : 'thing', id: text },
              outcome: k % 3 === 0 ? 'denied' : 'success',
              metadata: { text, n: k, half: k + 0.5, big: 1e21, small: 1e-7, nested: { z: [true, null, text], a: -0 }, [text]: 'key' },
            },
          );
        }
      });
      const system = t.db.systemDb({ reason: 'test: compare sealing in the database with JavaScript' });
      // A second tenant in the same pass: each chain starts from its own head.
      const other = randomUUID();
      await t.admin.query('insert into tenants (id, name) values ($1, $2)', [other, 'the other tenant']);
      await t.db.withTenant(other, (tx) => recordTenantEvent(tx, other, { type: 'system', id: null }, { requestId: null, ip: null, userAgent: null }, { action: 'test.other' }));
      expect(await sealAllLogs(t.db)).toBeGreaterThanOrEqual(awkward.length + 1);
      const keys = loadAuditSigner(t.config, { warn() {} }).publicKeys;
      // JavaScript alone recomputes every hash from chain.ts's canonical text.
      for (const [tenant, count] of [[tenantId, awkward.length], [other, 1]] as const) {
        expect(await system.transaction((tx) => verifyTenantLog(tx, tenant, keys, false))).toMatchObject({ ok: true, count });
      }
      const rows = await t.admin.query<Record<string, unknown> & { seq: string; at: Date; hash: Uint8Array; canonical_metadata: string }>(
        'select * from audit_log where tenant_id = $1 order by seq',
        [tenantId],
      );
      expect(rows.map((row) => Number(row.seq))).toEqual(awkward.map((_, k) => k + 1));
      await t.close();
      closed = true;
      const lines = readFileSync(file, 'utf8').trim().split('\n');
      for (const row of rows) {
        const record = chainRecordOf('tenant', { ...row, metadata: JSON.parse(row.canonical_metadata) } as never, Number(row.seq));
        const line = lines.find((l) => (JSON.parse(l) as { id: string }).id === row.id);
        expect(JSON.parse(line!)).toEqual(JSON.parse(streamLine(record, Buffer.from(row.hash))));
      }
    } finally {
      if (!closed) await t.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
