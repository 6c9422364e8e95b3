import { sql } from 'kysely';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startTestApp, type SessionHandle, type TestApp } from '../../../test/harness.ts';
import { chainHash, GENESIS_HASH } from './chain.ts';
import { chainRecordOf, sealAllLogs, sealTenantLog, startAuditSealer, writeDueCheckpoints, type AuditSigner } from './sealer.ts';
import { loadAuditSigner } from './signing.ts';
import { verifyLogInParallel, verifyPlatformLog, verifyTenantLog } from './verify.ts';

interface Verify {
  ok: boolean;
  count: number;
  head: { seq: number; hash: string };
  firstBad?: { seq: number; id: string | null; reason: string };
}

describe('the audit hash chain', () => {
  let t: TestApp;
  let signer: AuditSigner;

  beforeAll(async () => {
    t = await startTestApp();
    signer = loadAuditSigner(t.config, { warn() {} });
  });
  afterAll(async () => t?.close());

  /** A tenant whose log holds signup events plus `accounts` account.created events, all sealed. */
  async function tenantWithLog(accounts = 6): Promise<{ owner: SessionHandle; tenantId: string; count: number }> {
    const { session: owner, tenantId } = await t.signup();
    for (let i = 0; i < accounts; i++) {
      const response = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner, body: { name: `Account ${i}` } });
      expect(response.statusCode).toBe(201);
    }
    await sealTenantLog(t.db, tenantId);
    const [row] = await t.admin.query<{ n: number }>('select count(*)::int as n from audit_events where tenant_id = $1', [tenantId]);
    return { owner, tenantId, count: row!.n };
  }

  const verify = async (owner: SessionHandle, tenantId: string): Promise<Verify> => {
    const response = await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/audit-events/verify`, as: owner });
    expect(response.statusCode).toBe(200);
    return response.json<Verify>();
  };

  /** Tampers as the tables' owner would: with the append-only triggers switched off. */
  async function tamper(script: string, params: unknown[] = []): Promise<void> {
    await t.admin.query('alter table audit_events disable trigger audit_events_append_only');
    await t.admin.query('alter table audit_seals disable trigger audit_seals_append_only');
    try {
      await t.admin.query(script, params);
    } finally {
      await t.admin.query('alter table audit_seals enable trigger audit_seals_append_only');
      await t.admin.query('alter table audit_events enable trigger audit_events_append_only');
    }
  }

  /** The SQL condition naming the event row sealed at seq (of tenant $1). */
  const eventAt = (seq: number) => `position = (select position from audit_seals where tenant_id = $1 and seq = ${seq})`;
  /** Deletes the event at seq and its seal, as a forger who wants no trace would. */
  const deleteAt = async (tenantId: string, seq: number) => {
    await tamper(`delete from audit_events where ${eventAt(seq)}`, [tenantId]);
    await tamper('delete from audit_seals where tenant_id = $1 and seq = $2', [tenantId, seq]);
  };

  const watermark = async () => BigInt((await t.admin.query<{ position: string }>('select position from audit_seal_watermark'))[0]!.position);

  const idAt = async (tenantId: string, seq: number) =>
    (await t.admin.query<{ id: string }>('select id from audit_log where tenant_id = $1 and seq = $2', [tenantId, seq]))[0]!.id;

  it('gives every event of a tenant a seq from 1 without gaps, in commit order, and an untouched chain verifies', async () => {
    const { owner, tenantId, count } = await tenantWithLog();
    const seqs = (await t.admin.query<{ seq: number }>('select seq::int as seq from audit_log where tenant_id = $1 order by seq', [tenantId])).map((r) => r.seq);
    expect(seqs).toEqual(Array.from({ length: count }, (_, i) => i + 1));
    const result = await verify(owner, tenantId);
    expect(result).toMatchObject({ ok: true, count });
    // The verify request itself was recorded? No: reading is not audited; the head is the last event.
    expect(result.head.seq).toBe(count);
    expect(result.firstBad).toBeUndefined();
  });

  it('concurrent writers of one tenant and concurrent sealers still make one gapless chain', async () => {
    const { session: owner, tenantId } = await t.signup();
    await Promise.all(
      Array.from({ length: 25 }, (_, i) => t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner, body: { name: `Parallel ${i}` } })),
    );
    await Promise.all([sealAllLogs(t.db), sealTenantLog(t.db, tenantId), sealAllLogs(t.db)]);
    const seqs = (await t.admin.query<{ seq: number }>('select seq::int as seq from audit_log where tenant_id = $1 order by seq', [tenantId])).map((r) => r.seq);
    expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => i + 1));
    expect(seqs.length).toBeGreaterThanOrEqual(26);
    expect(await verify(owner, tenantId)).toMatchObject({ ok: true, count: seqs.length });
  });

  it('detects an edited event and names its seq', async () => {
    const { owner, tenantId } = await tenantWithLog();
    const id = await idAt(tenantId, 4);
    await tamper(`update audit_events set actor_email = 'someone.else@example.com' where ${eventAt(4)}`, [tenantId]);
    expect((await verify(owner, tenantId)).firstBad).toEqual({ seq: 4, id, reason: 'hash_mismatch' });
  });

  it("serves a sealed event's metadata from the text its hash covers: an edit there is detected, the event row's own copy is never served", async () => {
    const { owner, tenantId } = await tenantWithLog();
    const served = async () => (await t.admin.query<{ metadata: unknown }>('select metadata from audit_log where tenant_id = $1 and seq = 4', [tenantId]))[0]!.metadata;
    const before = await served();
    // The copy the sealer hashed from: changing it changes nothing anyone reads.
    await tamper(`update audit_events set canonical_metadata = '{"name":"quietly changed"}' where ${eventAt(4)}`, [tenantId]);
    expect(await served()).toEqual(before);
    expect(await verify(owner, tenantId)).toMatchObject({ ok: true });
    // The sealed text is what readers get: changed, the event is named.
    const id = await idAt(tenantId, 4);
    await tamper(`update audit_seals set canonical_metadata = '{"name":"quietly changed"}' where tenant_id = $1 and seq = 4`, [tenantId]);
    expect(await served()).toEqual({ name: 'quietly changed' });
    expect((await verify(owner, tenantId)).firstBad).toEqual({ seq: 4, id, reason: 'hash_mismatch' });
  });

  it("detects a seal whose copy of the event's action or target was changed (what filtered reads find it by)", async () => {
    const { owner, tenantId } = await tenantWithLog();
    const id = await idAt(tenantId, 5);
    // Moved out of the account's history: the chain over the event itself is intact, the seal is not.
    await tamper(`update audit_seals set target_id = 'elsewhere' where tenant_id = $1 and seq = 5`, [tenantId]);
    expect((await verify(owner, tenantId)).firstBad).toEqual({ seq: 5, id, reason: 'hash_mismatch' });
    const system = t.db.systemDb({ reason: 'test: verify in JavaScript only' });
    expect((await system.transaction((tx) => verifyTenantLog(tx, tenantId, signer.publicKeys, false))).firstBad).toEqual({ seq: 5, id, reason: 'hash_mismatch' });
  });

  it('detects a deleted event, in the middle and at the end', async () => {
    const { owner, tenantId, count } = await tenantWithLog();
    await deleteAt(tenantId, 3);
    expect(await verify(owner, tenantId)).toMatchObject({ ok: false, firstBad: { seq: 3, id: null, reason: 'missing' } });

    const other = await tenantWithLog();
    await deleteAt(other.tenantId, other.count);
    expect(await verify(other.owner, other.tenantId)).toMatchObject({ ok: false, firstBad: { seq: other.count, reason: 'missing' } });
    expect(count).toBeGreaterThan(3);

    // The event row alone (its seal left behind), or the seal alone (the event left unsealed below the watermark).
    const third = await tenantWithLog();
    await tamper(`delete from audit_events where ${eventAt(2)}`, [third.tenantId]);
    expect(await verify(third.owner, third.tenantId)).toMatchObject({ ok: false, firstBad: { seq: 2, id: null, reason: 'missing' } });
    const fourth = await tenantWithLog();
    await sealAllLogs(t.db);
    await sealAllLogs(t.db); // the watermark has passed the log by now
    await tamper('delete from audit_seals where tenant_id = $1 and seq = 4', [fourth.tenantId]);
    await sealAllLogs(t.db);
    expect(await verify(fourth.owner, fourth.tenantId)).toMatchObject({ ok: false, firstBad: { seq: 4, id: null, reason: 'missing' } });
  });

  it('detects an inserted event', async () => {
    const { owner, tenantId } = await tenantWithLog();
    // Make room at seq 3 (two steps: seq is unique), then slip a forged event and its seal in.
    await tamper('update audit_seals set seq = seq + 1000000 where tenant_id = $1 and seq >= 3', [tenantId]);
    await tamper('update audit_seals set seq = seq - 999999 where tenant_id = $1 and seq > 1000000', [tenantId]);
    const forged = randomUUID();
    await tamper(
      `with e as (insert into audit_events (tenant_id, id, actor_type, action, outcome) values ($1, $2, 'system', 'account.deleted', 'success') returning position)
       insert into audit_seals (tenant_id, seq, position, action, hash, canonical_metadata) select $1, 3, position, 'account.deleted', decode(repeat('ab', 32), 'hex'), '{}' from e`,
      [tenantId, forged],
    );
    expect((await verify(owner, tenantId)).firstBad).toEqual({ seq: 3, id: forged, reason: 'hash_mismatch' });
  });

  it('the database check of the chain and the JavaScript check agree, also on the first bad event', async () => {
    const { tenantId } = await tenantWithLog(30);
    const system = t.db.systemDb({ reason: 'test: verify with and without workers' });
    const both = () => Promise.all([true, false].map((useDatabase) => system.transaction((tx) => verifyTenantLog(tx, tenantId, signer.publicKeys, useDatabase))));
    const [parallel, single] = await both();
    expect(parallel).toEqual(single);
    expect(parallel).toMatchObject({ ok: true });
    const id = await idAt(tenantId, 17);
    await tamper(`update audit_events set ip = '198.51.100.1' where ${eventAt(17)}`, [tenantId]);
    await deleteAt(tenantId, 25);
    const [brokenParallel, brokenSingle] = await both();
    expect(brokenParallel).toEqual(brokenSingle);
    expect(brokenParallel?.firstBad).toEqual({ seq: 17, id, reason: 'hash_mismatch' });
    // Sealed metadata that is no longer JSON at all: both name the event, neither fails to read.
    const third = await idAt(tenantId, 3);
    await tamper(`update audit_seals set canonical_metadata = '{not json' where tenant_id = $1 and seq = 3`, [tenantId]);
    const [garbledParallel, garbledSingle] = await both();
    expect(garbledParallel).toEqual(garbledSingle);
    expect(garbledParallel?.firstBad).toEqual({ seq: 3, id: third, reason: 'hash_mismatch' });
  });

  it('the operators\' check of many ranges at once finds what the one-transaction check finds, also across range edges', async () => {
    const { tenantId } = await tenantWithLog(30);
    const system = t.db.systemDb({ reason: 'test: verify in one transaction' });
    const single = () => system.transaction((tx) => verifyTenantLog(tx, tenantId, signer.publicKeys, false));
    // Ranges of 4 events: 30-odd events make 8 or more ranges, checked two at a time on PostgreSQL.
    const parallel = () => verifyLogInParallel(t.db, { tenantId }, signer.publicKeys, 4);
    expect(await parallel()).toEqual(await single());
    expect(await parallel()).toMatchObject({ ok: true });
    // seq 8 ends a range and 9 starts the next: the next range starts from the stored hash before it.
    const id = await idAt(tenantId, 21);
    await tamper(`update audit_events set ip = '198.51.100.7' where ${eventAt(21)}`, [tenantId]);
    expect(await parallel()).toEqual(await single());
    expect((await parallel()).firstBad).toEqual({ seq: 21, id, reason: 'hash_mismatch' });
    await deleteAt(tenantId, 9);
    expect(await parallel()).toEqual(await single());
    expect((await parallel()).firstBad).toMatchObject({ seq: 9, reason: 'missing' });
    await deleteAt(tenantId, 8);
    expect(await parallel()).toEqual(await single());
    expect((await parallel()).firstBad).toMatchObject({ seq: 8, reason: 'missing' });
    expect(await verifyLogInParallel(t.db, 'platform', signer.publicKeys, 4)).toEqual(await system.transaction((tx) => verifyPlatformLog(tx, signer.publicKeys, false)));
  });

  it('detects reordered events', async () => {
    const { owner, tenantId } = await tenantWithLog();
    const third = await idAt(tenantId, 3);
    const fourth = await idAt(tenantId, 4);
    await tamper('update audit_seals set seq = 1000000 where tenant_id = $1 and seq = 3', [tenantId]);
    await tamper('update audit_seals set seq = 3 where tenant_id = $1 and seq = 4', [tenantId]);
    await tamper('update audit_seals set seq = 4 where tenant_id = $1 and seq = 1000000', [tenantId]);
    expect(await idAt(tenantId, 4)).toBe(third);
    expect((await verify(owner, tenantId)).firstBad).toEqual({ seq: 3, id: fourth, reason: 'hash_mismatch' });
  });

  it('catches a rewrite that recomputes every later hash, at the signed checkpoint', async () => {
    const { owner, tenantId, count } = await tenantWithLog();
    await writeDueCheckpoints(t.db, signer, { everyEvents: 1, everySeconds: 3600 });
    // The forger edits seq 2 and rebuilds the chain from there, head included.
    await tamper(`update audit_seals set canonical_metadata = '{"name":"rewritten"}' where tenant_id = $1 and seq = 2`, [tenantId]);
    const rows = await t.db.systemDb({ reason: 'test: read the tampered chain' }).transaction((tx) => tx.selectFrom('audit_log').selectAll().where('tenant_id', '=', tenantId).orderBy('seq').execute());
    let hash = GENESIS_HASH;
    for (const row of rows) {
      hash = chainHash(hash, chainRecordOf('tenant', row, Number(row.seq)));
      await tamper('update audit_seals set hash = $3, canonical_metadata = $4 where tenant_id = $1 and seq = $2', [tenantId, row.seq, hash, JSON.stringify(row.metadata)]);
    }
    await t.admin.query('update audit_chain_heads set hash = $2 where tenant_id = $1', [tenantId, hash]);
    expect((await verify(owner, tenantId)).firstBad).toMatchObject({ seq: count, reason: 'checkpoint_mismatch' });
  });

  it('rejects a checkpoint whose signature does not match (a forged or edited checkpoint)', async () => {
    const { owner, tenantId } = await tenantWithLog();
    await writeDueCheckpoints(t.db, signer, { everyEvents: 1, everySeconds: 3600 });
    await t.admin.query('alter table audit_checkpoints disable trigger audit_checkpoints_append_only');
    try {
      await t.admin.query(`update audit_checkpoints set at = at - interval '1 day' where tenant_id = $1`, [tenantId]);
    } finally {
      await t.admin.query('alter table audit_checkpoints enable trigger audit_checkpoints_append_only');
    }
    expect((await verify(owner, tenantId)).firstBad).toMatchObject({ reason: 'bad_signature' });
  });

  it('the database refuses every change to an event or its seal, even by the sealer role', async () => {
    const { session: owner, tenantId } = await t.signup();
    await sealTenantLog(t.db, tenantId);
    await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner, body: { name: 'Pending' } });
    const system = t.db.systemDb({ reason: 'test: the trigger holds the sealer role too' });
    await writeDueCheckpoints(t.db, signer, { everyEvents: 1, everySeconds: 3600 });
    const refused = (statement: string) =>
      expect(system.transaction((tx) => sql.raw(statement.replaceAll('$1', `'${tenantId}'`)).execute(tx))).rejects.toMatchObject({ code: '42501' });
    await refused(`update audit_events set action = 'rewritten' where tenant_id = $1`);
    await refused(`update audit_seals set hash = '\\x00' where tenant_id = $1 and seq = 1`);
    await refused(`update audit_seals set action = 'rewritten' where tenant_id = $1`);
    await refused(`delete from audit_events where tenant_id = $1`);
    await refused(`delete from audit_seals where tenant_id = $1`);
    await refused(`delete from audit_checkpoints where tenant_id = $1`);
    await refused(`update audit_checkpoints set seq = seq + 1 where tenant_id = $1`);
    // The application role has no UPDATE or DELETE at all.
    await expect(
      t.db.withTenant(tenantId, (tx) => sql.raw(`update audit_events set action = 'x' where tenant_id = '${tenantId}'`).execute(tx)),
    ).rejects.toMatchObject({ code: '42501' });
    expect(await verify(owner, tenantId)).toMatchObject({ ok: true });
  });

  it('the platform log is one chain with the same guarantees: sealed without gaps, checkpointed, tampering named', async () => {
    for (let i = 0; i < 3; i++) {
      await t.request({ method: 'POST', url: '/api/v1/auth/login', body: { email: `nobody-${i}@platform-chain.example`, password: 'not the password at all' } });
    }
    await sealAllLogs(t.db);
    await writeDueCheckpoints(t.db, signer, { everyEvents: 1, everySeconds: 3600 });
    const system = t.db.systemDb({ reason: 'test: verify the platform chain' });
    const before = await system.transaction((tx) => verifyPlatformLog(tx, signer.publicKeys));
    expect(before).toMatchObject({ ok: true });
    const seqs = (await t.admin.query<{ seq: number }>('select seq::int as seq from platform_audit_events order by seq')).map((r) => r.seq);
    expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => i + 1));
    expect(before.count).toBe(seqs.length);
    const target = (await t.admin.query<{ id: string; seq: number }>('select id, seq::int as seq from platform_audit_events where seq = $1', [seqs[Math.floor(seqs.length / 2)]]))[0]!;
    await t.admin.query('alter table platform_audit_events disable trigger platform_audit_events_append_only');
    await t.admin.query(`update platform_audit_events set ip = '203.0.113.9' where id = $1`, [target.id]);
    await t.admin.query('alter table platform_audit_events enable trigger platform_audit_events_append_only');
    expect((await system.transaction((tx) => verifyPlatformLog(tx, signer.publicKeys))).firstBad).toEqual({ seq: target.seq, id: target.id, reason: 'hash_mismatch' });
  });

  it.skipIf(inject('testDb').kind !== 'postgres')(
    'an event that commits after later ones is still sealed: the watermark never passes a position a running transaction holds',
    async () => {
      const { session: owner, tenantId } = await t.signup();
      await sealTenantLog(t.db, tenantId);
      let slowPosition = 0n;
      const slow = new pg.Client({ connectionString: t.env.BACKUP_DATABASE_URL });
      await slow.connect();
      try {
        await slow.query('begin');
        await slow.query(`insert into audit_events (tenant_id, actor_type, action, outcome) values ($1, 'system', 'test.slow', 'success')`, [tenantId]);
        // Later events commit first and are sealed past it, in several passes.
        for (let i = 0; i < 3; i++) {
          await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner, body: { name: `Overtaking ${i}` } });
          await sealAllLogs(t.db);
        }
        const [held] = await slow.query<{ position: string }>(`select position from audit_events where tenant_id = $1 and action = 'test.slow'`, [tenantId]).then((r) => r.rows);
        slowPosition = BigInt(held!.position);
        expect(await watermark()).toBeLessThan(slowPosition);
        await slow.query('commit');
      } finally {
        await slow.end();
      }
      await sealAllLogs(t.db);
      const actions = (await t.admin.query<{ action: string; seq: number }>('select action, seq::int as seq from audit_log where tenant_id = $1 order by seq', [tenantId])).map((r) => r.action);
      expect(actions.at(-1)).toBe('test.slow');
      expect(await verify(owner, tenantId)).toMatchObject({ ok: true, count: actions.length });
      // Once that transaction has ended, the watermark moves past it (other test files' transactions may delay it a pass or two).
      for (let pass = 0; pass < 100 && (await watermark()) < slowPosition; pass++) {
        await sealAllLogs(t.db);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      expect(await watermark()).toBeGreaterThanOrEqual(slowPosition);
      const [unsealedBelow] = await t.admin.query<{ n: number }>(
        'select count(*)::int as n from audit_events e where e.tenant_id = $1 and e.position <= (select position from audit_seal_watermark) and not exists (select 1 from audit_seals s where s.position = e.position)',
        [tenantId],
      );
      expect(unsealedBelow!.n).toBe(0);
    },
  );

  it('the server loop seals a committed event within its interval and signs the moved head', async () => {
    const { session: owner, tenantId } = await t.signup();
    const stop = startAuditSealer(t.db, signer, { intervalMs: 20, everyEvents: 1, everySeconds: 3600 }, { error() {} });
    try {
      await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner, body: { name: 'Sealed by the loop' } });
      const deadline = Date.now() + 10_000;
      let sealed: { unsealed: number; checkpoints: number } = { unsealed: -1, checkpoints: 0 };
      while (Date.now() < deadline) {
        [sealed] = await t.admin.query<{ unsealed: number; checkpoints: number }>(
          `select (select count(*)::int from audit_events e where tenant_id = $1 and not exists (select 1 from audit_seals s where s.position = e.position)) as unsealed,
                  (select count(*)::int from audit_checkpoints c join audit_chain_heads h using (tenant_id) where c.tenant_id = $1 and c.seq = h.seq) as checkpoints`,
          [tenantId],
        ) as [typeof sealed];
        if (sealed.unsealed === 0 && sealed.checkpoints === 1) break;
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
      expect(sealed).toEqual({ unsealed: 0, checkpoints: 1 });
    } finally {
      stop();
    }
  });
});
