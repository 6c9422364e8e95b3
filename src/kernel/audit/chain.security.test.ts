import { sql } from 'kysely';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startTestApp, type SessionHandle, type TestApp } from '../../../test/harness.ts';
import { asBuffer } from '../db/database.ts';
import { chainHash, GENESIS_HASH, type VerifyResult } from './chain.ts';
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

  /** Runs a statement as the tables' owner would tamper: with these tables' append-only triggers switched off. */
  async function asOwnerWithoutTriggers(tables: readonly string[], script: string, params: unknown[]): Promise<void> {
    for (const table of tables) await t.admin.query(`alter table ${table} disable trigger ${table}_append_only`);
    try {
      await t.admin.query(script, params);
    } finally {
      for (const table of [...tables].reverse()) await t.admin.query(`alter table ${table} enable trigger ${table}_append_only`);
    }
  }

  /** Tampers with a tenant log as the tables' owner would. */
  const tamper = (script: string, params: unknown[] = []) => asOwnerWithoutTriggers(['audit_events', 'audit_seals'], script, params);

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

  /** Tampers with the platform log as its table's owner would. */
  const tamperPlatform = (script: string, params: unknown[] = []) => asOwnerWithoutTriggers(['platform_audit_events'], script, params);

  /** Adds `events` platform events (failed logins, each from its own address), seals and checkpoints them; returns the platform head's seq. */
  async function platformLog(events = 4): Promise<number> {
    for (let i = 0; i < events; i++) {
      await t.request({ method: 'POST', url: '/api/v1/auth/login', body: { email: `nobody-${randomUUID()}@platform-chain.example`, password: 'not the password at all' }, remoteAddress: `198.51.100.${10 + i}` });
    }
    await sealAllLogs(t.db);
    await writeDueCheckpoints(t.db, signer, { everyEvents: 1, everySeconds: 3600 });
    const [head] = await t.admin.query<{ seq: number }>('select seq::int as seq from platform_audit_head');
    return head!.seq;
  }

  const platformIdAt = async (seq: number) => (await t.admin.query<{ id: string }>('select id from platform_audit_events where seq = $1', [seq]))[0]!.id;

  /**
   * The platform chain checked every way it is checked: in one transaction as the backup drill
   * does (by the database, and in JavaScript alone), and range by range as `audit verify
   * --platform` does (one range, and ranges of 3 side by side). They must agree; returns the result.
   */
  async function verifyPlatformEveryWay(): Promise<VerifyResult> {
    const system = t.db.systemDb({ reason: 'test: verify the platform chain every way' });
    const single = await system.transaction((tx) => verifyPlatformLog(tx, signer.publicKeys));
    expect(await system.transaction((tx) => verifyPlatformLog(tx, signer.publicKeys, false))).toEqual(single);
    expect(await verifyLogInParallel(t.db, 'platform', signer.publicKeys)).toEqual(single);
    expect(await verifyLogInParallel(t.db, 'platform', signer.publicKeys, 3)).toEqual(single);
    return single;
  }

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

  /** Makes room at seq (two steps: seq is unique), then slips a forged event and its seal (a junk hash) in; returns its id. */
  async function insertForged(tenantId: string, seq: number): Promise<string> {
    await tamper('update audit_seals set seq = seq + 1000000 where tenant_id = $1 and seq >= $2', [tenantId, seq]);
    await tamper('update audit_seals set seq = seq - 999999 where tenant_id = $1 and seq > 1000000', [tenantId]);
    const forged = randomUUID();
    await tamper(
      `with e as (insert into audit_events (tenant_id, id, actor_type, action, outcome) values ($1, $2, 'system', 'account.deleted', 'success') returning position)
       insert into audit_seals (tenant_id, seq, position, action, hash, canonical_metadata) select $1, $3, position, 'account.deleted', decode(repeat('ab', 32), 'hex'), '{}' from e`,
      [tenantId, forged, seq],
    );
    return forged;
  }

  it('detects an inserted event', async () => {
    const { owner, tenantId } = await tenantWithLog();
    const forged = await insertForged(tenantId, 3);
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

  /** verifyLogInParallel over ranges of 4 (as the CLI runs it, with small ranges), checked against both one-transaction checks; returns its result. */
  async function verifyInRanges(tenantId: string): Promise<VerifyResult> {
    const system = t.db.systemDb({ reason: 'test: verify range by range and in one transaction' });
    const result = await verifyLogInParallel(t.db, { tenantId }, signer.publicKeys, 4);
    expect(result).toEqual(await system.transaction((tx) => verifyTenantLog(tx, tenantId, signer.publicKeys, false)));
    expect(result).toEqual(await system.transaction((tx) => verifyTenantLog(tx, tenantId, signer.publicKeys)));
    return result;
  }

  it("the operators' check of many ranges at once names an inserted event as the one-transaction check does, also one hashed onto the chain at a range's end", async () => {
    const { tenantId } = await tenantWithLog(10);
    expect(await verifyInRanges(tenantId)).toMatchObject({ ok: true });
    const displaced = await idAt(tenantId, 8);
    // At seq 8, the end of the second range of 4.
    const forged = await insertForged(tenantId, 8);
    expect((await verifyInRanges(tenantId)).firstBad).toEqual({ seq: 8, id: forged, reason: 'hash_mismatch' });
    // Hashed as the sealer would have: its range checks out, and the next range, starting from
    // the forged hash, finds that the displaced event no longer links.
    const rows = await t.db
      .systemDb({ reason: 'test: hash a forged event onto the chain' })
      .transaction((tx) => tx.selectFrom('audit_log').selectAll().where('tenant_id', '=', tenantId).where('seq', 'in', ['7', '8']).orderBy('seq').execute());
    expect(rows.map((row) => row.id)).toEqual([expect.any(String), forged]);
    await tamper('update audit_seals set hash = $2 where tenant_id = $1 and seq = 8', [tenantId, chainHash(asBuffer(rows[0]!.hash), chainRecordOf('tenant', rows[1]!, 8))]);
    expect((await verifyInRanges(tenantId)).firstBad).toEqual({ seq: 9, id: displaced, reason: 'hash_mismatch' });
  });

  it("the operators' check of many ranges at once names swapped events as the one-transaction check does, across a range edge and inside a range", async () => {
    const { tenantId } = await tenantWithLog(10);
    expect(await verifyInRanges(tenantId)).toMatchObject({ ok: true });
    const swap = async (seq: number) => {
      await tamper('update audit_seals set seq = 1000000 where tenant_id = $1 and seq = $2', [tenantId, seq]);
      await tamper('update audit_seals set seq = $2 where tenant_id = $1 and seq = $3', [tenantId, seq, seq + 1]);
      await tamper('update audit_seals set seq = $2 where tenant_id = $1 and seq = 1000000', [tenantId, seq + 1]);
    };
    // 8 ends a range of 4 and 9 starts the next.
    const ninth = await idAt(tenantId, 9);
    await swap(8);
    expect(await idAt(tenantId, 8)).toBe(ninth);
    expect((await verifyInRanges(tenantId)).firstBad).toEqual({ seq: 8, id: ninth, reason: 'hash_mismatch' });
    const third = await idAt(tenantId, 3);
    await swap(2);
    expect((await verifyInRanges(tenantId)).firstBad).toEqual({ seq: 2, id: third, reason: 'hash_mismatch' });
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

  // The platform tests below put the log back as it was: there is one platform chain per database.
  it('detects a deleted platform event, in the middle and at the end, and names its seq (in the one-transaction check and the CLI range check alike)', async () => {
    for (const fromEnd of [2, 0]) {
      const head = await platformLog();
      expect(await verifyPlatformEveryWay()).toMatchObject({ ok: true, count: head });
      const seq = head - fromEnd;
      // Kept aside, to be put back once the deletion was seen.
      await t.admin.query(`create table platform_tamper_stash as select * from platform_audit_events where seq = ${seq}`);
      try {
        await tamperPlatform('delete from platform_audit_events where seq = $1', [seq]);
        expect(await verifyPlatformEveryWay()).toMatchObject({ ok: false, firstBad: { seq, id: null, reason: 'missing' } });
      } finally {
        await t.admin.query('insert into platform_audit_events select * from platform_tamper_stash on conflict do nothing');
        await t.admin.query('drop table platform_tamper_stash');
      }
      expect(await verifyPlatformEveryWay()).toMatchObject({ ok: true, count: head });
    }
  });

  it('detects an event slipped into the platform log, also one the forger hashed onto the chain: named where the chain breaks', async () => {
    const head = await platformLog();
    const seq = head - 2;
    const displaced = await platformIdAt(seq);
    const forged = randomUUID();
    // Make room at seq (two steps: seq is unique), then slip a forged, sealed-looking event in.
    await tamperPlatform('update platform_audit_events set seq = seq + 1000000 where seq >= $1', [seq]);
    await tamperPlatform('update platform_audit_events set seq = seq - 999999 where seq > 1000000');
    try {
      await t.admin.query(
        `insert into platform_audit_events (id, actor_type, action, outcome, seq, hash, sealed_at, canonical_metadata)
         values ($1, 'system', 'tenant.deleted', 'success', $2, decode(repeat('ab', 32), 'hex'), now(), '{}')`,
        [forged, seq],
      );
      expect(await verifyPlatformEveryWay()).toMatchObject({ ok: false, firstBad: { seq, id: forged, reason: 'hash_mismatch' } });
      // Hashed as the sealer would have: the forged event links, the one it displaced no longer does.
      const rows = await t.db
        .systemDb({ reason: 'test: hash a forged platform event onto the chain' })
        .transaction((tx) => tx.selectFrom('platform_audit_events').selectAll().where('seq', 'in', [String(seq - 1), String(seq)]).orderBy('seq').execute());
      expect(rows.map((row) => row.id)).toEqual([expect.any(String), forged]);
      await tamperPlatform('update platform_audit_events set hash = $2 where id = $1', [forged, chainHash(asBuffer(rows[0]!.hash!), chainRecordOf('platform', rows[1]!, seq))]);
      expect(await verifyPlatformEveryWay()).toMatchObject({ ok: false, firstBad: { seq: seq + 1, id: displaced, reason: 'hash_mismatch' } });
    } finally {
      await tamperPlatform('delete from platform_audit_events where id = $1', [forged]);
      await tamperPlatform('update platform_audit_events set seq = seq + 1000000 where seq > $1', [seq]);
      await tamperPlatform('update platform_audit_events set seq = seq - 1000001 where seq > 1000000');
    }
    expect(await platformIdAt(seq)).toBe(displaced);
    expect(await verifyPlatformEveryWay()).toMatchObject({ ok: true, count: head });
  });

  it('detects two swapped platform events and names the first', async () => {
    const head = await platformLog();
    const seq = head - 2;
    const [first, second] = [await platformIdAt(seq), await platformIdAt(seq + 1)];
    const swap = async () => {
      await tamperPlatform('update platform_audit_events set seq = 1000000 where seq = $1', [seq]);
      await tamperPlatform('update platform_audit_events set seq = $1 where seq = $2', [seq, seq + 1]);
      await tamperPlatform('update platform_audit_events set seq = $1 where seq = 1000000', [seq + 1]);
    };
    await swap();
    try {
      expect(await platformIdAt(seq + 1)).toBe(first);
      expect(await verifyPlatformEveryWay()).toMatchObject({ ok: false, firstBad: { seq, id: second, reason: 'hash_mismatch' } });
    } finally {
      await swap();
    }
    expect(await verifyPlatformEveryWay()).toMatchObject({ ok: true, count: head });
  });

  it('a sealed platform event is final: the sealer role may not change it, re-seal or unseal it, delete it or truncate the log; the application role may not either', async () => {
    await platformLog(1); // sealed by the sealer, as cn_system: the one change it may make, once
    const [event] = await t.admin.query<{ id: string; seq: number }>('select id, seq::int as seq from platform_audit_events where seq = (select seq from platform_audit_head)');
    const stored = () => t.admin.query('select * from platform_audit_events where id = $1', [event!.id]);
    const before = await stored();
    expect(before).toHaveLength(1);
    const system = t.db.systemDb({ reason: 'test: a sealed platform event is final for the sealer role' });
    const asSystem = (statement: string) => system.transaction((tx) => sql.raw(statement).execute(tx));
    const asApp = (statement: string) => t.db.withGlobal((tx) => sql.raw(statement).execute(tx));
    const itself = `where id = '${event!.id}'`;
    for (const statement of [
      `update platform_audit_events set seq = seq, hash = hash ${itself}`,
      `update platform_audit_events set seq = ${event!.seq + 1000000}, hash = decode(repeat('ab', 32), 'hex'), sealed_at = now() ${itself}`,
      `update platform_audit_events set hash = decode(repeat('00', 32), 'hex') ${itself}`,
      `update platform_audit_events set sealed_at = now() - interval '1 day' ${itself}`,
      `update platform_audit_events set canonical_metadata = '{"rewritten":true}' ${itself}`,
      `update platform_audit_events set seq = null, hash = null, sealed_at = null ${itself}`,
      `update platform_audit_events set action = 'rewritten' ${itself}`,
      `delete from platform_audit_events ${itself}`,
      'truncate platform_audit_events',
    ]) {
      await expect(asSystem(statement), `as cn_system: ${statement}`).rejects.toMatchObject({ code: '42501' });
      await expect(asApp(statement), `as the application role: ${statement}`).rejects.toMatchObject({ code: '42501' });
    }
    expect(await stored()).toEqual(before);
    expect(await verifyPlatformEveryWay()).toMatchObject({ ok: true });
  });

  it('writers may give a platform event only its content: never its id, time, position, or a seal of their own', async () => {
    const system = t.db.systemDb({ reason: 'test: what a writer may give a platform event' });
    const asSystem = (statement: string) => system.transaction((tx) => sql.raw(statement).execute(tx));
    const asApp = (statement: string) => t.db.withGlobal((tx) => sql.raw(statement).execute(tx));
    const columns = "actor_type, action, outcome";
    const values = "'anonymous', 'auth.login.failed', 'failure'";
    for (const [column, value] of [
      ['id', 'gen_random_uuid()'],
      ['at', "now() - interval '3 years'"],
      ['position', '1'],
      ['seq', '(select seq + 1 from platform_audit_head)'],
      ['hash', "decode(repeat('ab', 32), 'hex')"],
      ['sealed_at', 'now()'],
      ['canonical_metadata', "'{}'"],
    ]) {
      const statement = `insert into platform_audit_events (${columns}, ${column}) values (${values}, ${value})`;
      await expect(asSystem(statement), `as cn_system: ${column}`).rejects.toMatchObject({ code: '42501' });
      await expect(asApp(statement), `as the application role: ${column}`).rejects.toMatchObject({ code: '42501' });
    }
    // The content alone is what every writer gives.
    await asApp(`insert into platform_audit_events (${columns}, tenant_id, actor_id, actor_email, target_type, target_id, ip, user_agent, request_id, metadata) values (${values}, null, null, null, null, null, '192.0.2.1', 'test', 'req', '{}')`);
    await asSystem(`insert into platform_audit_events (${columns}) values (${values})`);
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
