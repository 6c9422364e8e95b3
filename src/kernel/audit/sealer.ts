/**
 * Seals audit events into their chains, outside the write path. A request only inserts its
 * event (with a global position, no per-tenant lock: see record.ts); the sealer then takes
 * each log's unsealed events in position order, in batches, under the log's head row lock
 * (which writers never touch), and gives each its seq and chain hash. Commit order is the
 * chain order. A tenant event's seal is a row of audit_seals (insert-only; the event row is
 * never updated); a platform event is sealed in place. Sealing runs every
 * AUDIT_SEAL_INTERVAL_MS in the server and, so readers see every event they caused, just
 * before a tenant's log is read.
 *
 * Also here: signed checkpoints of each chain head, and the operator stream lines (written
 * at sealing, so each carries its seq and hash).
 */
import { sql, type RawBuilder, type Selectable } from 'kysely';
import type { KeyObject } from 'node:crypto';
import { asBuffer, auditStreamWanted, emitAfterCommit, type Database, type Tx } from '../db/database.ts';
import type { ActorType, AuditEventsTable, Outcome, PlatformAuditEventsTable } from '../db/schema.ts';
import { canonicalSql, streamLineSql, TENANT_COLUMN_JSON } from './canonical-sql.ts';
import { chainHash, jcs, signCheckpoint, type Checkpoint, type ChainRecord, type LogName } from './chain.ts';
import { INDEX_WALK_PLANNING } from './planning.ts';

/** Events sealed per transaction: large enough to amortise, small enough to keep locks short. */
export const SEAL_BATCH = 2000;

type TenantRow = Selectable<AuditEventsTable>;
type PlatformRow = Selectable<PlatformAuditEventsTable>;

export function chainRecordOf(log: LogName, row: TenantRow | PlatformRow, seq: number): ChainRecord {
  return {
    log,
    tenantId: row.tenant_id,
    seq,
    id: row.id,
    at: new Date(row.at).toISOString(),
    actorType: row.actor_type,
    actorId: row.actor_id,
    actorEmail: row.actor_email,
    action: row.action,
    targetType: row.target_type,
    targetId: row.target_id,
    outcome: row.outcome,
    ip: row.ip,
    userAgent: row.user_agent,
    requestId: row.request_id,
    metadata: row.metadata,
  };
}

/** One line of the operator's audit stream (AUDIT_STREAM), for a SIEM (a sealed tenant event's is built by the database: canonical-sql.ts). */
export function streamLine(record: ChainRecord, hash: Buffer): string {
  return JSON.stringify({
    stream: 'audit',
    log: record.log,
    id: record.id,
    seq: record.seq,
    hash: hash.toString('hex'),
    at: record.at,
    tenantId: record.tenantId,
    actor: { type: record.actorType, id: record.actorId, ...(record.actorEmail ? { email: record.actorEmail } : {}) },
    action: record.action,
    ...(record.targetType && record.targetId ? { target: { type: record.targetType, id: record.targetId } } : {}),
    outcome: record.outcome,
    ip: record.ip,
    userAgent: record.userAgent,
    requestId: record.requestId,
    metadata: record.metadata,
  });
}

/** Events hashed between two turns of the event loop. */
const HASH_SLICE = 64;

/**
 * Hashes records onto the chain from head; returns the sealed values and the new head. It
 * yields to the event loop every HASH_SLICE events: the sealer shares the process with
 * requests, which would otherwise wait for a whole batch to be hashed.
 */
async function extend<R>(rows: readonly R[], recordOf: (row: R, seq: number) => ChainRecord, head: { seq: number; hash: Buffer }) {
  let seq = head.seq;
  let hash = head.hash;
  const sealed: { id: string; seq: number; hash: string; meta: string }[] = [];
  for (const row of rows) {
    if (sealed.length % HASH_SLICE === HASH_SLICE - 1) await new Promise(setImmediate);
    seq += 1;
    const record = recordOf(row, seq);
    const meta = jcs(record.metadata);
    hash = chainHash(hash, record, meta);
    sealed.push({ id: record.id, seq, hash: hash.toString('hex'), meta });
    const sealedHash = hash;
    emitAfterCommit(() => streamLine(record, sealedHash));
  }
  return { sealed, head: { seq, hash } };
}

interface Head {
  tenant_id: string;
  seq: string;
  hash: Uint8Array;
}

/**
 * Seals several tenants at once (a fixed number of statements however many tenants wrote):
 * lock their heads in tenant order (no deadlock between sealers), read their unsealed events
 * above `above` (the watermark, or within a drain the previous batch's last position), hash,
 * and write the seals and the heads back in one statement each. skipLocked: the background
 * loop leaves a tenant another sealer is working on for its next pass; a reader's seal waits.
 */
async function sealTenantsBatch(tx: Tx, tenantIds: readonly string[], skipLocked: boolean, above: string, upTo: string): Promise<{ sealed: number; lastPosition: string; locked: number }> {
  if (tenantIds.length === 0) return { sealed: 0, lastPosition: above, locked: 0 };
  let heads = await lockHeads(tx, tenantIds, skipLocked);
  if (heads.length < tenantIds.length) {
    // A tenant's first events (no head yet), or a head another sealer holds: create what is missing, lock again.
    await sql`
      insert into audit_chain_heads (tenant_id)
      select t.id::uuid from jsonb_array_elements_text(${JSON.stringify(tenantIds)}::jsonb) as t(id)
      where exists (select 1 from tenants where tenants.id = t.id::uuid)
      on conflict (tenant_id) do nothing`.execute(tx);
    heads = await lockHeads(tx, tenantIds, skipLocked);
  }
  if (heads.length === 0) return { sealed: 0, lastPosition: above, locked: 0 };
  const sealed = BigInt(above) >= BigInt(await legacyThrough(tx)) ? await sealInDatabase(tx, heads, above, upTo) : await sealInJavaScript(tx, heads, above, upTo);
  return { ...sealed, locked: heads.length };
}

/** The locked tenants' unsealed events in (above, upTo], a batch at most, in position order, with nothing selected yet. */
function pendingOf(tx: Tx, heads: readonly Head[], above: string, upTo: string) {
  return unsealed(
    tx,
    above,
    upTo,
    SEAL_BATCH,
    heads.map((head) => head.tenant_id),
  ).clearSelect();
}

/** The highest event written before the writer stored JCS text (migration 32) that was then unsealed; 0 if none. */
async function legacyThrough(tx: Tx): Promise<string> {
  const row = await tx.selectFrom('audit_seal_watermark').select(sql<string>`legacy_through::text`.as('through')).executeTakeFirstOrThrow();
  return row.through;
}

/**
 * Seals the locked tenants' pending events in one statement: each event's seq follows its
 * tenant's head, its hash is the chain's window aggregate over its canonical text
 * (canonical-sql.ts) from the head's hash on, and the seals and the new heads are written in
 * the same statement. The stream lines are built there too, when a stream is written.
 */
async function sealInDatabase(tx: Tx, heads: readonly Head[], above: string, upTo: string): Promise<{ sealed: number; lastPosition: string }> {
  const pending = pendingOf(tx, heads, above, upTo).selectAll('e');
  const headValues = JSON.stringify(heads.map((head) => ({ t: head.tenant_id, s: head.seq, h: asBuffer(head.hash).toString('hex') })));
  const source = { log: 'tenant' as const, tenant: TENANT_COLUMN_JSON, seq: sql`seq`, metadata: sql<string>`canonical_metadata` };
  const lines = auditStreamWanted() ? sql<string>`string_agg(${streamLineSql({ ...source, hashHex: sql<string>`encode(hash, 'hex')` })}, E'\n' order by position)` : sql<null>`null`;
  const { rows } = await sql<{ sealed: number; last: string | null; lines: string | null }>`
    with pending as (${pending}),
    numbered as (
      select e.*, h.s + row_number() over (partition by e.tenant_id order by e.position) as seq, decode(h.h, 'hex') as head
      from pending e join json_to_recordset(${headValues}::json) as h(t uuid, s bigint, h text) on h.t = e.tenant_id
    ),
    chained as (
      select n.*, cn_audit_chain(n.head, convert_to(${canonicalSql(source)}, 'UTF8')) over (partition by n.tenant_id order by n.position rows unbounded preceding) as hash
      from numbered n
    ),
    sealed as (
      insert into audit_seals (tenant_id, seq, position, action, target_type, target_id, hash, canonical_metadata)
      select tenant_id, seq, position, action, target_type, target_id, hash, canonical_metadata from chained
      returning tenant_id, seq, hash
    ),
    moved as (
      update audit_chain_heads h set seq = l.seq, hash = l.hash, sealed_at = date_trunc('milliseconds', now())
      from (select distinct on (tenant_id) tenant_id, seq, hash from sealed order by tenant_id, seq desc) l
      where h.tenant_id = l.tenant_id
    )
    select count(*)::int as sealed, max(position)::text as last, ${lines} as lines from chained`.execute(tx);
  const result = rows[0]!;
  // One text for the batch, a line per event (JSON escapes every newline inside a line):
  // written to the stream as it is, in one write, not split and written line by line.
  const text = result.lines;
  if (text) emitAfterCommit(() => text);
  return { sealed: result.sealed, lastPosition: result.last ?? above };
}

/**
 * Seals in JavaScript: for a range that still holds events written before migration 32,
 * whose metadata is jsonb only (the database cannot give its JCS text). Events written since
 * carry their JCS text, which parses and canonicalises back to itself.
 */
async function sealInJavaScript(tx: Tx, heads: readonly Head[], above: string, upTo: string): Promise<{ sealed: number; lastPosition: string }> {
  const rows = await pendingOf(tx, heads, above, upTo).select(packedEvent().as('r')).execute();
  if (rows.length === 0) return { sealed: 0, lastPosition: above };
  const byTenant = new Map<string, Packed[]>();
  for (const { r } of rows) {
    const row = JSON.parse(r) as Packed;
    const list = byTenant.get(row[0]);
    if (list) list.push(row);
    else byTenant.set(row[0], [row]);
  }
  // Short keys: this text is most of what a pass sends.
  const seals: { t: string; s: number; p: string; a: string; y: string | null; i: string | null; h: string; m: string }[] = [];
  const nextHeads: { tenant_id: string; seq: number; hash: string }[] = [];
  let lastPosition = above;
  for (const head of heads) {
    const pending = byTenant.get(head.tenant_id);
    if (!pending) continue;
    const result = await extend(pending, packedRecord, { seq: Number(head.seq), hash: asBuffer(head.hash) });
    result.sealed.forEach((entry, k) => {
      const row = pending[k]!;
      seals.push({ t: row[0], s: entry.seq, p: row[1], a: row[7], y: row[8], i: row[9], h: entry.hash, m: entry.meta });
    });
    nextHeads.push({ tenant_id: head.tenant_id, seq: result.head.seq, hash: result.head.hash.toString('hex') });
    lastPosition = maxPosition(lastPosition, pending.at(-1)![1]);
  }
  await sql`
    insert into audit_seals (tenant_id, seq, position, action, target_type, target_id, hash, canonical_metadata)
    select v.t, v.s, v.p, v.a, v.y, v.i, decode(v.h, 'hex'), v.m
    from json_to_recordset(${JSON.stringify(seals)}::json) as v(t uuid, s bigint, p bigint, a text, y text, i text, h text, m text)`.execute(tx);
  await sql`
    update audit_chain_heads h set seq = v.seq, hash = decode(v.hash, 'hex'), sealed_at = date_trunc('milliseconds', now())
    from jsonb_to_recordset(${JSON.stringify(nextHeads)}::jsonb) as v(tenant_id uuid, seq bigint, hash text)
    where h.tenant_id = v.tenant_id`.execute(tx);
  return { sealed: rows.length, lastPosition };
}

/** Locks the chain heads of these tenants, in tenant order (no deadlock between sealers). */
async function lockHeads(tx: Tx, tenantIds: readonly string[], skipLocked: boolean): Promise<Head[]> {
  const wanted = sql`tenant_id in (select value::uuid from jsonb_array_elements_text(${JSON.stringify(tenantIds)}::jsonb))`;
  const { rows } = skipLocked
    ? await sql<Head>`select tenant_id, seq, hash from audit_chain_heads where ${wanted} order by tenant_id for update skip locked`.execute(tx)
    : await sql<Head>`select tenant_id, seq, hash from audit_chain_heads where ${wanted} order by tenant_id for update`.execute(tx);
  return rows;
}

/**
 * A pending event as one JSON array text built by the database (tenant, position, then the
 * chained fields, the time already in ISO form): one JSON.parse per event instead of the
 * driver's per-column parsing.
 */
type Packed = [string, string, string, string, ActorType, string | null, string | null, string, string | null, string | null, Outcome, string | null, string | null, string | null, unknown];

function packedEvent(): RawBuilder<string> {
  return sql<string>`json_build_array(e.tenant_id, e.position::text, e.id, to_char(e.at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), e.actor_type, e.actor_id, e.actor_email,
    e.action, e.target_type, e.target_id, e.outcome, e.ip, e.user_agent, e.request_id, coalesce(e.canonical_metadata::json, e.metadata::json))::text`;
}

function packedRecord(row: Packed, seq: number): ChainRecord {
  const [tenantId, , id, at, actorType, actorId, actorEmail, action, targetType, targetId, outcome, ip, userAgent, requestId, metadata] = row;
  return { log: 'tenant', tenantId, seq, id, at, actorType, actorId, actorEmail, action, targetType, targetId, outcome, ip, userAgent, requestId, metadata };
}

function maxPosition(a: string, b: string): string {
  return BigInt(a) >= BigInt(b) ? a : b;
}

/**
 * The position at or below which every tenant event is sealed. Also fixes how the rest of the
 * transaction is planned (planning.ts), so every search for unsealed events walks the position
 * indexes in order and stops at its limit. With no statistics yet the planner once took a
 * pass's few hundred events for a third of the table and scanned all of it, and it took a
 * drain's range of a million for a few thousand and bitmap-scanned and sorted all of it for
 * every batch of 2,000. Without JIT turned off, the watermark's one-row UPDATE, whose scan
 * carries the disabled cost, was compiled for 40-130 ms every pass.
 */
export async function watermark(tx: Tx): Promise<string> {
  const { rows } = await sql<{ position: string }>`
    select w.position::text as position, ${INDEX_WALK_PLANNING} from audit_seal_watermark w`.execute(tx);
  return rows[0]!.position;
}

/**
 * Committed events in a range of positions (above, upTo] that have no seal yet, in position
 * order; of some tenants only, if named. Every search is ordered by position and limited,
 * bounds both sides by the range, and names tenants in a form no index serves, and runs after
 * watermark() has ruled out sequential and bitmap scans: so the plan always walks the
 * position indexes from `above`. (A planner that believed a tenant had few events once
 * scanned all of its million per batch through the primary key.)
 */
export function unsealed(tx: Pick<Tx, 'selectFrom'>, above: string, upTo: string, limit: number, tenantIds?: readonly string[]) {
  let query = tx
    .selectFrom('audit_events as e')
    .select(['e.tenant_id', 'e.position'])
    .where('e.position', '>', above)
    .where('e.position', '<=', upTo)
    .where(({ not, exists, selectFrom }) =>
      not(exists(selectFrom('audit_seals as s').select('s.seq').whereRef('s.position', '=', 'e.position').where('s.position', '>', above).where('s.position', '<=', upTo))),
    );
  if (tenantIds) query = query.where(sql<boolean>`(e.tenant_id in (select value::uuid from jsonb_array_elements_text(${JSON.stringify(tenantIds)}::jsonb))) is true`);
  return query.orderBy('e.position').limit(limit);
}

/**
 * The highest position no running transaction can still commit an event at, or null if not
 * known yet. An event's transaction takes its xid before its position (the column default),
 * so after reading the position sequence's last value C, a snapshot shows every transaction
 * that could hold a position up to C: with no transaction running, C is safe at once;
 * otherwise C becomes safe once the oldest running transaction is younger than that
 * snapshot's xmax, which a later pass sees. The observation is kept per database handle.
 */
const observations = new WeakMap<Database, { position: string; xmax: bigint }>();

async function provenPosition(db: Database, tx: Tx): Promise<{ last: string; proven: string | null }> {
  const position = await positionsHandedOut(tx);
  // A separate statement: its snapshot is taken after the sequence was read.
  const { rows: snap } = await sql<{ xmin: string; xmax: string }>`select pg_snapshot_xmin(s)::text as xmin, pg_snapshot_xmax(s)::text as xmax from pg_current_snapshot() as s`.execute(tx);
  const xmin = BigInt(snap[0]!.xmin);
  const xmax = BigInt(snap[0]!.xmax);
  if (xmin === xmax) {
    observations.delete(db);
    return { last: position, proven: position };
  }
  const earlier = observations.get(db);
  if (earlier && xmin >= earlier.xmax) {
    observations.set(db, { position, xmax });
    return { last: position, proven: earlier.position };
  }
  if (!earlier) observations.set(db, { position, xmax });
  return { last: position, proven: null };
}

/** The highest position handed out so far: every event committed by now is at or below it. */
async function positionsHandedOut(tx: Tx): Promise<string> {
  const { rows } = await sql<{ position: string | null }>`select pg_sequence_last_value('audit_event_position')::text as position`.execute(tx);
  return rows[0]?.position ?? '0';
}

/**
 * Moves the watermark up towards a proven position: to it, or to just below the lowest event
 * still unsealed there (another tenant's, skipped or left for its drain).
 */
async function raiseWatermark(tx: Tx, proven: string): Promise<void> {
  const current = await watermark(tx);
  if (BigInt(proven) <= BigInt(current)) return;
  const first = await unsealed(tx, current, proven, 1).executeTakeFirst();
  const next = first ? (BigInt(first.position) - 1n).toString() : proven;
  if (BigInt(next) <= BigInt(current)) return;
  await setWatermark(tx, next);
}

/** Moves the watermark up to position (never down: another sealer may have moved it further). */
async function setWatermark(tx: Tx, position: string): Promise<void> {
  await tx.updateTable('audit_seal_watermark').set({ position: sql`greatest(position, ${position}::bigint)` }).execute();
}

async function sealPlatformBatch(tx: Tx): Promise<number> {
  const head = await tx.selectFrom('platform_audit_head').select(['seq', 'hash']).forUpdate().executeTakeFirstOrThrow();
  const rows = await tx.selectFrom('platform_audit_events').selectAll().where('seq', 'is', null).orderBy('position').limit(SEAL_BATCH).execute();
  if (rows.length === 0) return 0;
  const { sealed, head: next } = await extend(rows, (row, seq) => chainRecordOf('platform', row, seq), { seq: Number(head.seq), hash: asBuffer(head.hash) });
  await sql`
    update platform_audit_events e set seq = v.seq, hash = decode(v.hash, 'hex'), sealed_at = date_trunc('milliseconds', now()), canonical_metadata = v.meta
    from jsonb_to_recordset(${JSON.stringify(sealed)}::jsonb) as v(id uuid, seq bigint, hash text, meta text)
    where e.id = v.id`.execute(tx);
  await tx.updateTable('platform_audit_head').set({ seq: next.seq, hash: next.hash, sealed_at: new Date() }).execute();
  return rows.length;
}

/** Where a tenant's search for unsealed events up to upTo starts (past afterPosition), or null if it has none there. */
async function pendingFrom(tx: Tx, tenantId: string, afterPosition: string, upTo: string): Promise<string | null> {
  const above = maxPosition(await watermark(tx), afterPosition);
  const row = await unsealed(tx, above, upTo, 1, [tenantId]).executeTakeFirst();
  return row === undefined ? null : above;
}

/** Seals every pending event of one tenant (waiting for another sealer if need be); returns how many. */
export async function sealTenantLog(db: Database, tenantId: string): Promise<number> {
  const system = db.systemDb({ reason: 'the audit sealer gives events their place in the hash chain' });
  let total = 0;
  let after = '0';
  let proven: string | null = null;
  // Every event committed before this call is at or below the position read first.
  let upTo = '0';
  for (;;) {
    const { sealed, lastPosition } = await system.transaction(async (tx) => {
      if (after === '0') ({ last: upTo, proven } = await provenPosition(db, tx));
      const above = await pendingFrom(tx, tenantId, after, upTo);
      return above === null ? { sealed: 0, lastPosition: after } : sealTenantsBatch(tx, [tenantId], false, above, upTo);
    });
    total += sealed;
    after = lastPosition;
    if (sealed < SEAL_BATCH) break;
  }
  // Readers seal too: let their passes move the watermark, so the next search starts higher.
  const reached: string | null = proven;
  if (reached !== null) await system.transaction((tx) => raiseWatermark(tx, reached));
  return total;
}

export async function sealPlatformLog(db: Database): Promise<number> {
  const system = db.systemDb({ reason: 'the audit sealer gives platform events their place in the hash chain' });
  let total = 0;
  for (;;) {
    const sealed = await system.transaction(sealPlatformBatch);
    total += sealed;
    if (sealed < SEAL_BATCH) return total;
  }
}

/**
 * Seals every log with pending events: all tenants in one batch, the usual case. A backlog
 * bigger than a batch (after an outage, say) is drained tenant by tenant, each drain walking
 * forward in position order.
 */
export async function sealAllLogs(db: Database): Promise<number> {
  const system = db.systemDb({ reason: 'the audit sealer seals every log with pending events' });
  // One transaction for the usual pass: a fixed handful of statements however many tenants wrote.
  const pass = await system.transaction(async (tx) => {
    // First, while this transaction has no id of its own.
    const { last, proven } = await provenPosition(db, tx);
    const above = await watermark(tx);
    // Which tenants to lock; the events themselves are read again once their heads are locked,
    // so none another sealer sealed meanwhile is sealed twice.
    // (Each tenant once, with how many it has: a row per event cost the sealer more than hashing it.)
    const { rows: pending } = await sql<{ tenant_id: string; n: number }>`
      select p.tenant_id, count(*)::int as n from (${unsealed(tx, above, last, SEAL_BATCH)}) p group by p.tenant_id`.execute(tx);
    const tenants = pending.map((row) => row.tenant_id);
    const { sealed, locked } = await sealTenantsBatch(tx, tenants, true, above, last);
    // The search saw every event up to the proven position: if it was not cut short and no
    // tenant was left to another sealer, all of them are sealed now.
    const complete = pending.reduce((sum, row) => sum + row.n, 0) < SEAL_BATCH && locked === tenants.length;
    if (proven !== null && complete) await setWatermark(tx, proven);
    const platform = await tx.selectFrom('platform_audit_events').select('position').where('seq', 'is', null).limit(1).executeTakeFirst();
    return { sealed, tenants, proven: complete ? null : proven, platformPending: platform !== undefined };
  });
  let total = pass.sealed;
  if (pass.platformPending) total += await sealPlatformLog(db);
  if (pass.sealed === SEAL_BATCH) for (const tenantId of pass.tenants) total += await sealTenantLog(db, tenantId);
  const { proven } = pass;
  if (proven !== null) await system.transaction((tx) => raiseWatermark(tx, proven));
  return total;
}

/** The key that signs checkpoints, and every public key a checkpoint may have been signed with. */
export interface AuditSigner {
  readonly privateKey: KeyObject;
  readonly keyId: string;
  /** By key id: the current key and retired ones (AUDIT_VERIFY_KEYS_FILE). */
  readonly publicKeys: ReadonlyMap<string, KeyObject>;
}

export interface CheckpointPolicy {
  /** A checkpoint once the head is this many events past the last one... */
  readonly everyEvents: number;
  /** ...or this many seconds after the last one, if the head moved at all. */
  readonly everySeconds: number;
}

/** bytea arrives as a Buffer from pg and as a Uint8Array from PGlite. */

function nowMs(): Date {
  return new Date(Math.floor(Date.now()));
}

/** Writes a signed checkpoint of a tenant chain at seq (whose hash is given). */
export async function writeTenantCheckpoint(tx: Tx, signer: AuditSigner, tenantId: string, seq: number, hash: Buffer, reason: Checkpoint['reason']): Promise<Checkpoint> {
  const checkpoint: Checkpoint = { log: 'tenant', tenantId, seq, hash: hash.toString('hex'), at: nowMs().toISOString(), keyId: signer.keyId, reason };
  await tx
    .insertInto('audit_checkpoints')
    .values({ tenant_id: tenantId, seq, hash, at: new Date(checkpoint.at), key_id: signer.keyId, signature: signCheckpoint(signer.privateKey, checkpoint), reason })
    .onConflict((oc) => oc.columns(['tenant_id', 'seq', 'reason']).doNothing())
    .execute();
  return checkpoint;
}

/** Signs the head of every chain that is due for a checkpoint; returns how many were written. */
export async function writeDueCheckpoints(db: Database, signer: AuditSigner, policy: CheckpointPolicy): Promise<number> {
  const system = db.systemDb({ reason: 'the audit sealer signs checkpoints of every chain head' });
  return system.transaction(async (tx) => {
    const { rows: tenants } = await sql<{ tenant_id: string; seq: string; hash: Buffer }>`
      select h.tenant_id, h.seq, h.hash
      from audit_chain_heads h
      left join lateral (select c.seq, c.at from audit_checkpoints c where c.tenant_id = h.tenant_id order by c.seq desc limit 1) last on true
      where h.seq > coalesce(last.seq, 0)
        and (h.seq - coalesce(last.seq, 0) >= ${policy.everyEvents}
             or coalesce(last.at, '-infinity') <= now() - make_interval(secs => ${policy.everySeconds}))`.execute(tx);
    for (const head of tenants) await writeTenantCheckpoint(tx, signer, head.tenant_id, Number(head.seq), asBuffer(head.hash), 'interval');
    const { rows: platform } = await sql<{ seq: string; hash: Buffer }>`
      select h.seq, h.hash
      from platform_audit_head h
      left join lateral (select c.seq, c.at from platform_audit_checkpoints c order by c.seq desc limit 1) last on true
      where h.seq > coalesce(last.seq, 0)
        and (h.seq - coalesce(last.seq, 0) >= ${policy.everyEvents}
             or coalesce(last.at, '-infinity') <= now() - make_interval(secs => ${policy.everySeconds}))`.execute(tx);
    for (const head of platform) {
      const hash = asBuffer(head.hash);
      const checkpoint: Checkpoint = { log: 'platform', tenantId: null, seq: Number(head.seq), hash: hash.toString('hex'), at: nowMs().toISOString(), keyId: signer.keyId, reason: 'interval' };
      await tx
        .insertInto('platform_audit_checkpoints')
        .values({ seq: checkpoint.seq, hash, at: new Date(checkpoint.at), key_id: signer.keyId, signature: signCheckpoint(signer.privateKey, checkpoint), reason: 'interval' })
        .onConflict((oc) => oc.columns(['seq', 'reason']).doNothing())
        .execute();
    }
    return tenants.length + platform.length;
  });
}

/** The sealing loop's options as the server's settings give them (AUDIT_SEAL_INTERVAL_MS, AUDIT_CHECKPOINT_*). */
export function sealerOptionsOf(audit: { readonly sealIntervalMs: number; readonly checkpointEvents: number; readonly checkpointSeconds: number }): { readonly intervalMs: number } & CheckpointPolicy {
  return { intervalMs: audit.sealIntervalMs, everyEvents: audit.checkpointEvents, everySeconds: audit.checkpointSeconds };
}

/**
 * The server's sealing loop: every intervalMs, seal all pending events, then sign the heads
 * that are due. So an event is sealed at most about one interval (plus one batch) after it
 * commits; bench/run.ts measures that delay. A failing pass is logged and retried.
 */
export function startAuditSealer(
  db: Database,
  signer: AuditSigner,
  options: { readonly intervalMs: number } & CheckpointPolicy,
  log: { error(object: object, message: string): void },
): () => void {
  let running = false;
  let checkedAt = 0;
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    sealAllLogs(db)
      .then(async () => {
        // Finding the due heads reads every chain head: once a second is plenty.
        if (Date.now() - checkedAt < 1000) return;
        checkedAt = Date.now();
        await writeDueCheckpoints(db, signer, options);
      })
      .catch((error: unknown) => log.error({ err: error instanceof Error ? { message: error.message } : String(error) }, 'audit sealing failed; retrying'))
      .finally(() => {
        running = false;
      });
  }, options.intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
