/**
 * Verifies a chain as stored: checks the checkpoints' signatures, then goes through the
 * events in seq ranges (memory stays bounded): the database recomputes each range's hashes
 * itself (fast), and a range it finds odd is read and checked link by link in JavaScript
 * (segment.ts), which names the first bad event; then the end is compared with the head.
 * Tenant logs are read through the caller's transaction (a tenant transaction for the API,
 * the system role for the CLI); the platform log through the system role.
 */
import { Buffer } from 'node:buffer';
import type { KeyObject } from 'node:crypto';
import { sql, type RawBuilder } from 'kysely';
import { asBuffer, type Database, type Tx } from '../db/database.ts';
import { acceptCheckpoints, GENESIS_HASH, type ChainProblem, type LogName, type SignedCheckpoint, type VerifyResult } from './chain.ts';
import { AT_TEXT, canonicalSql, TENANT_COLUMN_JSON } from './canonical-sql.ts';
import { INDEX_WALK_PLANNING } from './planning.ts';
import { checkSegment } from './segment.ts';

/**
 * Events per range. Each range costs a plan and a few round trips, so ranges are long; the
 * walk holds a range's texts (about half a KiB an event), within the work_mem a check sets.
 */
const CHUNK = 20_000;

/**
 * Each event as one JSON array built by the database: one JSON.parse per row instead of
 * the driver's per-column parsing (timestamps especially), so verification keeps pace.
 * A tenant event's metadata is what audit_log serves, its seal's JCS text, sent as that text
 * (segment.ts parses it): text that is not JSON is then a bad event, not a failed read.
 */
function packedColumns(log: LogName): RawBuilder<string> {
  const metadata = log === 'tenant' ? sql`canonical_metadata` : sql`metadata`;
  return sql<string>`json_build_array(seq, id, ${AT_TEXT}, actor_type, actor_id, actor_email,
    action, target_type, target_id, outcome, ip, user_agent, request_id, ${metadata}, encode(hash, 'hex'), tenant_id, ${sealMatches(log)})::text`;
}

/**
 * The metadata a reader is served must be what the hash covers. A tenant event's is its
 * seal's JCS text itself (audit_log parses it), so only the seal's copies of action and
 * target are checked; a platform event's is its metadata column, which must equal the JCS
 * text the sealer stored beside it.
 */
function servedMatches(log: LogName): RawBuilder<boolean> {
  return log === 'tenant' ? sealMatches(log) : sql<boolean>`(canonical_metadata::jsonb = metadata)`;
}

/** A tenant event's seal keeps copies of its action and target for the filter indexes: they must still match. */
function sealMatches(log: LogName): RawBuilder<boolean> {
  return log === 'tenant'
    ? sql<boolean>`(sealed_action = action and sealed_target_type is not distinct from target_type and sealed_target_id is not distinct from target_id)`
    : sql<boolean>`true`;
}

/** The stored hash (hex) of a packed row: the link the next segment starts from. */
function storedHashOf(packed: string | undefined): string {
  if (packed === undefined) return '';
  const row = JSON.parse(packed) as unknown[];
  return typeof row[14] === 'string' ? row[14] : '';
}

interface StoredLog {
  readonly log: LogName;
  readonly tenantId: string | null;
  readonly checkpoints: readonly SignedCheckpoint[];
  readonly head: { readonly seq: number; readonly hash: Buffer } | null;
  readonly oldest: number | null;
  readonly newest: number;
  /** The packed events with seq in [from, to], in seq order. */
  rows(from: number, to: number): Promise<string[]>;
  /** The database's own check of [from, to] (see fastCheck); null when it could not run. */
  fast(from: number, to: number, previousHash: string | null, checkpointSeqs: readonly number[]): Promise<FastResult | null>;
  /** How many range checks may run at once (each then starts from the stored hash before it). */
  readonly concurrency: number;
}

interface FastResult {
  readonly n: number;
  readonly first: string | null;
  readonly last: string | null;
  readonly good: boolean | null;
  readonly last_hash: string | null;
  readonly checkpoints: Record<string, string> | null;
  /** How a tenant range was read (a platform range, by seq, counts as 'lookup'). */
  readonly read?: RangeRead;
}

/** The chain a range belongs to. */
type ChainRef = { readonly log: 'tenant'; readonly tenantId: string } | { readonly log: 'platform' };

/** The rows of that chain's table (a tenant's events are also behind row security in a tenant transaction). */
const scopeOf = (chain: ChainRef): RawBuilder<unknown> => (chain.log === 'tenant' ? sql`tenant_id = ${chain.tenantId}` : sql`true`);

/** The canonical text of each event of a range: metadata is the JCS text the sealer stored (see servedMatches). */
function rangeCanonicalSql(chain: ChainRef): RawBuilder<string> {
  return canonicalSql({
    log: chain.log,
    // A tenant range holds that tenant's events only (its scope says so): its id is one constant.
    tenant: chain.log === 'tenant' ? sql<string>`'"' || ${chain.tenantId}::uuid::text || '"'` : TENANT_COLUMN_JSON,
    seq: sql`seq`,
    metadata: sql<string>`canonical_metadata`,
  });
}

/**
 * A tenant's range is read along the position indexes (a merge of its seals and events) when
 * its events fill at least 1 / DENSE of the positions it spans, as a busy tenant's do; a
 * sparser range (a quiet tenant among busy ones) is read event by event, each found by its
 * position, so other tenants' events are never read.
 */
const DENSE = 4;

/** How a tenant range is read: merged between the positions of its first and last seals, or looked up event by event. */
type RangePlan = { readonly read: 'merge'; readonly first: string; readonly last: string } | { readonly read: 'lookup' };
type RangeRead = RangePlan['read'];

/**
 * The planner settings of one range check (set inside its savepoint and rolled back with it),
 * and for a tenant range how it is read. Plans walk indexes whatever the statistics say
 * (planning.ts), with no hash joins either; no parallel workers, as ranges already run side
 * by side; and room for the range's texts.
 */
async function planRange(tx: Tx, chain: ChainRef, from: number, to: number): Promise<RangePlan> {
  const scope = scopeOf(chain);
  const settings = sql`${INDEX_WALK_PLANNING}, set_config('enable_hashjoin', 'off', true) as hashjoin,
    set_config('max_parallel_workers_per_gather', '0', true) as workers, set_config('work_mem', '32MB', true) as work_mem`;
  if (chain.log === 'platform') {
    await sql`select ${settings}`.execute(tx);
    return { read: 'lookup' };
  }
  // A missing end seal makes the range sparse: read event by event, and the count names the gap.
  const { rows } = await sql<{ first: string | null; last: string | null; dense: boolean }>`
    with ends as (
      select (select position from audit_seals where ${scope} and seq = ${from}) as first, (select position from audit_seals where ${scope} and seq = ${to}) as last
    ), d as (select first, last, coalesce(last - first between 0 and ${DENSE * (to - from + 1) - 1}, false) as dense from ends)
    select first::text as first, last::text as last, dense, ${settings},
      set_config('enable_nestloop', case when dense then 'off' else 'on' end, true) as nestloop,
      set_config('enable_mergejoin', case when dense then 'on' else 'off' end, true) as mergejoin
    from d`.execute(tx);
  const row = rows[0];
  return row?.dense && row.first !== null && row.last !== null ? { read: 'merge', first: row.first, last: row.last } : { read: 'lookup' };
}

/**
 * The events of seqs [from, to], each with the order they are walked in ("walk"): a tenant's
 * by position (its events are sealed in position order; the check holds seq order to it), the
 * platform's by seq. A tenant's: its seals joined to their events, either
 * merged along both position indexes between the range's first and last positions (a seal
 * outside them leaves its event out, and the count then fails the range), or each event
 * looked up by its seal's position (offset 0 keeps the lookup from being turned into a join).
 */
function rangeSource(chain: ChainRef, from: number, to: number, plan: RangePlan): RawBuilder<unknown> {
  const scope = scopeOf(chain);
  if (chain.log === 'platform') return sql`(select *, seq as walk from platform_audit_events where seq between ${from} and ${to}) as logged where ${scope}`;
  const events = sql`e.id, e.at, e.actor_type, e.actor_id, e.actor_email, e.action, e.target_type, e.target_id, e.outcome, e.ip, e.user_agent, e.request_id`;
  const seals = sql`s.tenant_id, s.seq, s.position as walk, s.hash, s.canonical_metadata, s.action as sealed_action, s.target_type as sealed_target_type, s.target_id as sealed_target_id`;
  if (plan.read === 'merge') {
    return sql`(
      select ${seals}, ${events}
      from audit_seals s join audit_events e on e.tenant_id = s.tenant_id and e.position = s.position
      where s.seq between ${from} and ${to} and s.position between ${plan.first} and ${plan.last} and e.position between ${plan.first} and ${plan.last}
    ) as logged where ${scope}`;
  }
  return sql`(
    select ${seals}, ${events}
    from audit_seals s cross join lateral (select * from audit_events e where e.position = s.position and e.tenant_id = s.tenant_id offset 0) e
    where s.seq between ${from} and ${to}
  ) as logged where ${scope}`;
}

/** The database's check of [from, to]. */
function fastCheckQuery(chain: ChainRef, from: number, to: number, previousHash: string | null, checkpointSeqs: readonly number[], plan: RangePlan) {
  const table = chain.log === 'tenant' ? sql`audit_seals` : sql`platform_audit_events`;
  // Without a known previous hash (ranges checked in parallel), the first link starts from the
  // stored hash before the range, which the previous range's own check vouches for.
  const previous = previousHash === null ? sql`(select p.hash from ${table} p where ${scopeOf(chain)} and p.seq = ${from - 1})` : sql`decode(${previousHash}, 'hex')`;
  // Each event's own checks and text are worked out first (offset 0 keeps them there), so the
  // walk keeps only them for the link to the event before. Walked in position order, each
  // event must have the seq after the one before it: with the count and the ends checked,
  // that is the whole range in seq order.
  return sql<FastResult>`
    with t as (
      select walk, seq, hash,
        ${servedMatches(chain.log)} as served_ok,
        convert_to(${rangeCanonicalSql(chain)}, 'UTF8') as canonical
      from ${rangeSource(chain, from, to, plan)}
      order by walk offset 0
    ), r as (
      select seq, hash, served_ok, lag(seq) over w = seq - 1 as in_order, sha256(coalesce(lag(hash) over w, ${previous}) || canonical) as computed
      from t window w as (order by walk)
    )
    select count(*)::int as n, min(seq)::text as first, max(seq)::text as last,
      -- A NULL where the schema says NOT NULL (a forger who dropped the constraint), a missing
      -- sealed text included, leaves an event's check NULL: bad, not skipped.
      bool_and(coalesce(computed = hash and served_ok and in_order is not false, false)) as good,
      encode((array_agg(hash) filter (where seq = ${to}))[1], 'hex') as last_hash,
      jsonb_object_agg(seq::text, encode(hash, 'hex')) filter (where seq in (select value::bigint from jsonb_array_elements_text(${JSON.stringify(checkpointSeqs)}::jsonb))) as checkpoints
    from r`;
}

/**
 * Runs the database's check of one range inside a savepoint, rolled back after it: that ends
 * the range's planner settings, and a malformed stored value must not abort the transaction.
 */
async function fastCheck(tx: Tx, chain: ChainRef, from: number, to: number, previousHash: string | null, checkpointSeqs: readonly number[]): Promise<FastResult | null> {
  await sql`savepoint cn_verify`.execute(tx);
  try {
    const plan = await planRange(tx, chain, from, to);
    const { rows } = await fastCheckQuery(chain, from, to, previousHash, checkpointSeqs, plan).execute(tx);
    return rows[0] ? { ...rows[0], read: plan.read } : null;
  } catch {
    return null;
  } finally {
    await sql`rollback to savepoint cn_verify`.execute(tx);
    await sql`release savepoint cn_verify`.execute(tx);
  }
}

/** The database's check of one range of a tenant's log on its own, as the verifier runs it (for the tests). */
export function checkTenantRange(tx: Tx, tenantId: string, from: number, to: number, previousHash: string | null): Promise<FastResult | null> {
  return fastCheck(tx, { log: 'tenant', tenantId }, from, to, previousHash, []);
}

/** Sets the planner up for one range of a tenant's log in tx, as the verifier does, and returns its query (for the plan tests). */
export async function plannedTenantRange(tx: Tx, tenantId: string, from: number, to: number): Promise<{ read: RangeRead; query: RawBuilder<FastResult> }> {
  const chain: ChainRef = { log: 'tenant', tenantId };
  const plan = await planRange(tx, chain, from, to);
  return { read: plan.read, query: fastCheckQuery(chain, from, to, null, [], plan) };
}

async function verifyStored(stored: StoredLog, keys: ReadonlyMap<string, KeyObject>, useDatabase: boolean, chunk = CHUNK): Promise<VerifyResult> {
  const anchor = anchorFor(stored.oldest, stored.checkpoints);
  const headOf = (fallback: { seq: number; hash: Buffer }) => {
    const head = stored.head ?? fallback;
    return { seq: head.seq, hash: head.hash.toString('hex') };
  };
  const { accepted, problem: signatureProblem } = acceptCheckpoints(stored.log, stored.tenantId, anchor, stored.checkpoints, keys);
  if (signatureProblem) return { ok: false, count: 0, head: headOf(anchor), firstBad: signatureProblem };
  const checkpointHashes = new Map(accepted.map((c) => [c.seq, c.hash]));
  const upTo = Math.max(stored.newest, stored.head?.seq ?? 0);
  let count = 0;
  let previousHash = anchor.hash.toString('hex');
  let firstBad: ChainProblem | null = null;
  const ranges: [number, number][] = [];
  for (let from = anchor.seq + 1; from <= upTo; from += chunk) ranges.push([from, Math.min(from + chunk - 1, upTo)]);
  const checkpointsIn = (from: number, to: number) => [...checkpointHashes].filter(([seq]) => seq >= from && seq <= to);
  // With concurrency, that many workers check ranges in the database, each taking the next
  // range as soon as it is free (so neither waits for the other's range to be judged); the
  // results are judged in order below, and the workers stop once a range is found bad.
  const parallel = useDatabase && stored.concurrency > 1;
  const settle: ((result: FastResult | null) => void)[] = [];
  const results = ranges.map(() => new Promise<FastResult | null>((resolve) => settle.push(resolve)));
  let next = 0;
  let stopped = false;
  const workers = Array.from({ length: parallel ? stored.concurrency : 0 }, async () => {
    while (!stopped && next < ranges.length) {
      const k = next++;
      const [from, to] = ranges[k]!;
      settle[k]!(await stored.fast(from, to, k === 0 ? previousHash : null, checkpointsIn(from, to).map(([seq]) => seq)).catch(() => null));
    }
  });
  try {
    for (let k = 0; k < ranges.length && !firstBad; k++) {
      const [from, to] = ranges[k]!;
      const inRange = checkpointsIn(from, to);
      // The database checks the range itself; only a range it finds odd is read and checked here.
      const fastResult = !useDatabase ? null : await (parallel ? results[k]! : stored.fast(from, to, previousHash, inRange.map(([seq]) => seq)));
      const expected = to - from + 1;
      if (
        fastResult?.good &&
        fastResult.n === expected &&
        fastResult.first === String(from) &&
        fastResult.last === String(to) &&
        fastResult.last_hash &&
        inRange.every(([seq, hash]) => fastResult.checkpoints?.[String(seq)] === hash)
      ) {
        count += fastResult.n;
        previousHash = fastResult.last_hash;
        continue;
      }
      const rows = await stored.rows(from, to);
      const result = checkSegment({ log: stored.log, tenantId: stored.tenantId, from, to, previousHash, rows, checkpoints: Object.fromEntries(inRange) });
      count += result.count;
      firstBad = result.problem;
      previousHash = storedHashOf(rows.at(-1));
    }
  } finally {
    stopped = true;
    await Promise.all(workers);
  }
  const lastHash = previousHash;
  if (firstBad) return { ok: false, count, head: headOf(anchor), firstBad };
  const last = anchor.seq + count;
  const lastBuffer = Buffer.from(lastHash, 'hex');
  const head = stored.head;
  let problem: ChainProblem | null = null;
  // A signed checkpoint past the last event: events were cut off the end.
  if (accepted.some((c) => c.seq > last)) problem = { seq: last + 1, id: null, reason: 'missing' };
  else if (head && head.seq > last) problem = { seq: last + 1, id: null, reason: 'missing' };
  else if (head && (head.seq < last || !head.hash.equals(lastBuffer))) problem = { seq: head.seq, id: null, reason: 'head_mismatch' };
  return { ok: problem === null, count, head: headOf({ seq: last, hash: lastBuffer }), ...(problem ? { firstBad: problem } : {}) };
}

interface CheckpointRow {
  seq: string;
  hash: Uint8Array;
  at: Date;
  key_id: string;
  signature: Uint8Array;
  reason: 'interval' | 'retention';
}

function signed(row: CheckpointRow, tenantId: string | null): SignedCheckpoint {
  return {
    log: tenantId === null ? 'platform' : 'tenant',
    tenantId,
    seq: Number(row.seq),
    hash: asBuffer(row.hash).toString('hex'),
    at: new Date(row.at).toISOString(),
    keyId: row.key_id,
    reason: row.reason,
    signature: asBuffer(row.signature),
  };
}

/**
 * Where the walk starts: the genesis, or (after a retention purge) the newest signed
 * retention checkpoint below the oldest kept event. A gap after it is then reported as missing.
 */
function anchorFor(oldest: number | null, checkpoints: readonly SignedCheckpoint[]): { seq: number; hash: Buffer } {
  if (oldest === null || oldest <= 1) return { seq: 0, hash: GENESIS_HASH };
  // Only a retention checkpoint marks a legitimate cut: events deleted up to an ordinary one are missing.
  const cut = checkpoints.filter((c) => c.reason === 'retention' && c.seq < oldest).sort((a, b) => b.seq - a.seq)[0];
  return cut ? { seq: cut.seq, hash: Buffer.from(cut.hash, 'hex') } : { seq: 0, hash: GENESIS_HASH };
}

/** Where range reads run: the caller's transaction, or (in parallel) transactions of their own. */
type RangeRunner = <T>(fn: (tx: Tx) => Promise<T>) => Promise<T>;

async function tenantStored(tx: Tx, tenantId: string, run: RangeRunner, concurrency: number): Promise<StoredLog> {
  const checkpoints = (await tx.selectFrom('audit_checkpoints').select(['seq', 'hash', 'at', 'key_id', 'signature', 'reason']).where('tenant_id', '=', tenantId).execute()).map((row) => signed(row, tenantId));
  const head = await tx.selectFrom('audit_chain_heads').select(['seq', 'hash']).where('tenant_id', '=', tenantId).executeTakeFirst();
  // From the seals alone (their primary key answers it): a seal whose event is gone is then
  // inside the walk, which reports the event missing.
  const bounds = await tx
    .selectFrom('audit_seals')
    .select((eb) => [eb.fn.min('seq').as('oldest'), eb.fn.max('seq').as('newest')])
    .where('tenant_id', '=', tenantId)
    .executeTakeFirst();
  return {
    log: 'tenant',
    tenantId,
    checkpoints,
    head: head ? { seq: Number(head.seq), hash: asBuffer(head.hash) } : { seq: 0, hash: GENESIS_HASH },
    oldest: bounds?.oldest == null ? null : Number(bounds.oldest),
    newest: Number(bounds?.newest ?? 0),
    rows: (from, to) =>
      run(async (rangeTx) => (await sql<{ r: string }>`select ${packedColumns('tenant')} as r from audit_log where tenant_id = ${tenantId} and seq between ${from} and ${to} order by seq`.execute(rangeTx)).rows.map((row) => row.r)),
    fast: (from, to, previousHash, seqs) => run((rangeTx) => fastCheck(rangeTx, { log: 'tenant', tenantId }, from, to, previousHash, seqs)),
    concurrency,
  };
}

async function platformStored(tx: Tx, run: RangeRunner, concurrency: number): Promise<StoredLog> {
  const checkpoints = (await tx.selectFrom('platform_audit_checkpoints').select(['seq', 'hash', 'at', 'key_id', 'signature', 'reason']).execute()).map((row) => signed(row, null));
  const head = await tx.selectFrom('platform_audit_head').select(['seq', 'hash']).executeTakeFirstOrThrow();
  const bounds = await tx
    .selectFrom('platform_audit_events')
    .select((eb) => [eb.fn.min('seq').as('oldest'), eb.fn.max('seq').as('newest')])
    .where('seq', 'is not', null)
    .executeTakeFirst();
  return {
    log: 'platform',
    tenantId: null,
    checkpoints,
    head: { seq: Number(head.seq), hash: asBuffer(head.hash) },
    oldest: bounds?.oldest == null ? null : Number(bounds.oldest),
    newest: Number(bounds?.newest ?? 0),
    rows: (from, to) => run(async (rangeTx) => (await sql<{ r: string }>`select ${packedColumns('platform')} as r from platform_audit_events where seq between ${from} and ${to} order by seq`.execute(rangeTx)).rows.map((row) => row.r)),
    fast: (from, to, previousHash, seqs) => run((rangeTx) => fastCheck(rangeTx, { log: 'platform' }, from, to, previousHash, seqs)),
    concurrency,
  };
}

/** useDatabase: false checks every range in JavaScript only (tests compare the two). */
export async function verifyTenantLog(tx: Tx, tenantId: string, keys: ReadonlyMap<string, KeyObject>, useDatabase = true): Promise<VerifyResult> {
  return verifyStored(await tenantStored(tx, tenantId, (fn) => fn(tx), 1), keys, useDatabase);
}

export async function verifyPlatformLog(tx: Tx, keys: ReadonlyMap<string, KeyObject>, useDatabase = true): Promise<VerifyResult> {
  return verifyStored(await platformStored(tx, (fn) => fn(tx), 1), keys, useDatabase);
}

/**
 * The same check for operators (the CLI): on PostgreSQL the database checks PARALLEL_RANGES
 * ranges at once, each in a transaction of the system role (sealed events never change, and the
 * walk stops at the head read first). Embedded: one session, so one range at a time.
 */
const PARALLEL_RANGES = 2;

/** chunk: events per range (tests make ranges small to have many). */
export async function verifyLogInParallel(db: Database, log: { tenantId: string } | 'platform', keys: ReadonlyMap<string, KeyObject>, chunk = CHUNK): Promise<VerifyResult> {
  const system = db.systemDb({ reason: 'audit verification checks a chain range by range' });
  const concurrency = db.kind === 'postgres' ? PARALLEL_RANGES : 1;
  const run: RangeRunner = (fn) => system.transaction(fn);
  const stored = await system.transaction((tx) => (log === 'platform' ? platformStored(tx, run, concurrency) : tenantStored(tx, log.tenantId, run, concurrency)));
  return verifyStored(stored, keys, true, chunk);
}
