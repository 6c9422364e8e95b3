import { sql } from 'kysely';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../../../test/harness.ts';
import { recordTenantEvent, SYSTEM_ACTOR } from '../../kernel/audit/record.ts';
import { sealTenantLog, writeDueCheckpoints, writeTenantCheckpoint, type AuditSigner } from '../../kernel/audit/sealer.ts';
import { asBuffer } from '../../kernel/db/database.ts';
import { loadAuditSigner } from '../../kernel/audit/signing.ts';
import { verifyTenantLog } from '../../kernel/audit/verify.ts';
import { purgeExpiredAuditEvents, startRetentionPurge } from './retention.ts';

describe('audit retention', () => {
  let t: TestApp;
  let signer: AuditSigner;

  beforeAll(async () => {
    t = await startTestApp();
    signer = loadAuditSigner(t.config, { warn() {} });
  });
  afterAll(async () => t?.close());

  /** A tenant whose chain starts with `old` events `ageDays` old, followed by `young` events of today. */
  async function tenantWithHistory(options: { old: number; ageDays: number; young: number; retentionDays?: number }): Promise<string> {
    const tenantId = randomUUID();
    await t.admin.query('insert into tenants (id, name) values ($1, $2)', [tenantId, 'Retention']);
    if (options.retentionDays) await t.admin.query('insert into tenant_settings (tenant_id, audit_retention_days) values ($1, $2)', [tenantId, options.retentionDays]);
    // Inserted unsealed, as the application would have written them back then; then sealed.
    await t.admin.query(
      `insert into audit_events (tenant_id, actor_type, action, outcome, at, canonical_metadata)
       select $1, 'system', 'test.old', 'success', date_trunc('milliseconds', now()) - make_interval(days => $3::int) + g * interval '1 second', '{"g":' || g || '}'
       from generate_series(1, $2::int) g`,
      [tenantId, options.old, options.ageDays],
    );
    await sealTenantLog(t.db, tenantId);
    for (let i = 0; i < options.young; i++) {
      await t.db.withTenant(tenantId, (tx) => recordTenantEvent(tx, tenantId, SYSTEM_ACTOR, { requestId: null, ip: null, userAgent: null }, { action: 'test.young', metadata: { i } }));
    }
    await sealTenantLog(t.db, tenantId);
    return tenantId;
  }

  const verify = (tenantId: string) => t.db.systemDb({ reason: 'test: verify a tenant chain' }).transaction((tx) => verifyTenantLog(tx, tenantId, signer.publicKeys));
  const seqs = async (tenantId: string) => (await t.admin.query<{ seq: number }>('select seq::int as seq from audit_log where tenant_id = $1 order by seq', [tenantId])).map((r) => r.seq);

  it('purges only events past retention, signs a retention checkpoint at the cut, records the purge, and the rest still verifies', async () => {
    const tenantId = await tenantWithHistory({ old: 8, ageDays: 400, young: 3 });
    const reports = await purgeExpiredAuditEvents(t.db, signer);
    expect(reports.filter((r) => r.tenantId === tenantId)).toEqual([{ tenantId, throughSeq: 8, deleted: 8, retentionDays: 365 }]);
    await sealTenantLog(t.db, tenantId);
    expect(await seqs(tenantId)).toEqual([9, 10, 11, 12]); // three young events and the purge's own event
    const [checkpoint] = await t.admin.query<{ seq: number; reason: string }>(`select seq::int as seq, reason from audit_checkpoints where tenant_id = $1`, [tenantId]);
    expect(checkpoint).toEqual({ seq: 8, reason: 'retention' });
    expect(await verify(tenantId)).toMatchObject({ ok: true, count: 4, head: { seq: 12 } });
    const [purged] = await t.admin.query<{ actor_type: string; metadata: unknown }>(`select actor_type, canonical_metadata::jsonb as metadata from audit_events where tenant_id = $1 and action = 'audit.purged'`, [tenantId]);
    expect(purged).toEqual({ actor_type: 'system', metadata: { throughSeq: 8, deleted: 8, retentionDays: 365, checkpointSeq: 8 } });
    const platform = await t.admin.query(`select 1 from platform_audit_events where tenant_id = $1 and action = 'audit.purged'`, [tenantId]);
    expect(platform).toHaveLength(1);
    // Nothing more has expired: a second pass leaves the tenant alone.
    expect((await purgeExpiredAuditEvents(t.db, signer)).filter((r) => r.tenantId === tenantId)).toEqual([]);
  });

  it('the scheduled purge runs on its own and logs what it purged', async () => {
    const tenantId = await tenantWithHistory({ old: 4, ageDays: 400, young: 1 });
    const infos: object[] = [];
    const errors: object[] = [];
    const stop = startRetentionPurge(t.db, signer, 60, { info: (o) => infos.push(o), error: (o) => errors.push(o) }, 10);
    try {
      await expect.poll(() => infos, { timeout: 10_000 }).toContainEqual({ tenantId, throughSeq: 4, deleted: 4, retentionDays: 365 });
      expect(errors).toEqual([]);
      expect((await seqs(tenantId))[0]).toBe(5); // the expired four are gone
    } finally {
      stop();
    }
  });

  it("keeps events for the tenant's longer retention", async () => {
    const tenantId = await tenantWithHistory({ old: 4, ageDays: 400, young: 1, retentionDays: 500 });
    expect((await purgeExpiredAuditEvents(t.db, signer)).filter((r) => r.tenantId === tenantId)).toEqual([]);
    expect(await seqs(tenantId)).toEqual([1, 2, 3, 4, 5]);
  });

  it('the database refuses a purge within retention or without a signed retention checkpoint at the cut, and only the system role may ask', async () => {
    const tenantId = await tenantWithHistory({ old: 3, ageDays: 30, young: 1 });
    const system = t.db.systemDb({ reason: 'test: call the purge function directly' });
    const purge = (through: number) => system.transaction((tx) => sql`select cn_audit_purge(${tenantId}::uuid, ${through}::bigint)`.execute(tx));
    await expect(purge(3)).rejects.toMatchObject({ code: 'CN409' }); // no retention checkpoint at 3
    await system.transaction(async (tx) => {
      const row = await tx.selectFrom('audit_seals').select('hash').where('tenant_id', '=', tenantId).where('seq', '=', '3').executeTakeFirstOrThrow();
      await writeTenantCheckpoint(tx, signer, tenantId, 3, asBuffer(row.hash), 'retention');
    });
    await expect(purge(3)).rejects.toMatchObject({ code: 'CN409' }); // 30 days old: within every allowed retention
    await expect(t.db.withTenant(tenantId, (tx) => sql`select cn_audit_purge(${tenantId}::uuid, 3::bigint)`.execute(tx))).rejects.toMatchObject({ code: '42501' });
    // Not even the tables' owner can store a retention under 90 days.
    await expect(t.admin.query('insert into tenant_settings (tenant_id, audit_retention_days) values ($1, 10)', [tenantId])).rejects.toMatchObject({ code: '23514' });
    expect(await seqs(tenantId)).toEqual([1, 2, 3, 4]);
  });

  it('events deleted up to an ordinary (interval) checkpoint are reported missing: only a retention cut is a legitimate start', async () => {
    const tenantId = await tenantWithHistory({ old: 0, ageDays: 0, young: 6 });
    await writeDueCheckpoints(t.db, signer, { everyEvents: 1, everySeconds: 3600 });
    await t.admin.query('alter table audit_events disable trigger audit_events_append_only');
    await t.admin.query('alter table audit_seals disable trigger audit_seals_append_only');
    await t.admin.query('delete from audit_events e using audit_seals s where s.tenant_id = $1 and s.seq <= 6 and e.position = s.position', [tenantId]);
    await t.admin.query('delete from audit_seals where tenant_id = $1 and seq <= 6', [tenantId]);
    await t.admin.query('alter table audit_seals enable trigger audit_seals_append_only');
    await t.admin.query('alter table audit_events enable trigger audit_events_append_only');
    await t.db.withTenant(tenantId, (tx) => recordTenantEvent(tx, tenantId, SYSTEM_ACTOR, { requestId: null, ip: null, userAgent: null }, { action: 'test.after' }));
    await sealTenantLog(t.db, tenantId);
    expect((await verify(tenantId)).firstBad).toEqual({ seq: 1, id: null, reason: 'missing' });
  });
});
