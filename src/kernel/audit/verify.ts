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
import { checkSegment } from './segment.ts';

const CHUNK = 5000;

/**
 * Each event as one JSON array built by the database: one JSON.parse per row instead of
 * the driver's per-column parsing (timestamps especially), so verification keeps pace.
 */
function packedColumns(log: LogName): RawBuilder<string> {
  return sql<string>`json_build_array(seq, id, to_char(at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), actor_type, actor_id, actor_email,
    action, target_type, target_id, outcome, ip, user_agent, request_id, metadata, encode(hash, 'hex'), tenant_id, ${sealMatches(log)})::text`;
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
}

/**
 * The canonical event text (chain.ts), built by PostgreSQL: to_json escapes strings as
 * JSON.stringify does; metadata is the JCS text the sealer stored beside it, which must
 * equal metadata itself. Anything this finds odd is checked again in JavaScript, which has
 * the last word, so a difference between the two encodings can only cost time.
 */
function canonicalSql(log: LogName): RawBuilder<string> {
  const tenant = log === 'tenant' ? sql`'"' || tenant_id::text || '"'` : sql`coalesce('"' || tenant_id::text || '"', 'null')`;
  return sql<string>`'{"action":' || to_json(action)::text || ',"actor":{"email":' || coalesce(to_json(actor_email)::text, 'null')
    || ',"id":' || coalesce(to_json(actor_id::text)::text, 'null') || ',"type":' || to_json(actor_type)::text
    || '},"at":"' || to_char(at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') || '","id":"' || id::text
    || '","ip":' || coalesce(to_json(ip)::text, 'null') || ',"log":"' || ${log}::text || '","metadata":' || canonical_metadata
    || ',"outcome":' || to_json(outcome)::text || ',"requestId":' || coalesce(to_json(request_id)::text, 'null') || ',"seq":' || seq::text
    || ',"target":{"id":' || coalesce(to_json(target_id)::text, 'null') || ',"type":' || coalesce(to_json(target_type)::text, 'null')
    || '},"tenantId":' || ${tenant} || ',"userAgent":' || coalesce(to_json(user_agent)::text, 'null') || ',"v":1}'`;
}

/**
 * The events of seqs [from, to]. A tenant's: the range's seals (the CTE "seals" of fastCheck)
 * joined to their events, with the events' position range spelled out, so the database reads
 * that stretch of events in one sweep instead of looking each one up on its own.
 */
function rangeSource(log: LogName, scope: RawBuilder<unknown>, from: number, to: number): RawBuilder<unknown> {
  if (log === 'platform') return sql`platform_audit_events where ${scope} and seq between ${from} and ${to}`;
  return sql`(
    select s.tenant_id, s.seq, e.id, e.at, e.actor_type, e.actor_id, e.actor_email, e.action, e.target_type, e.target_id, e.outcome, e.ip,
      e.user_agent, e.request_id, e.metadata, s.hash, s.canonical_metadata, s.action as sealed_action, s.target_type as sealed_target_type, s.target_id as sealed_target_id
    from seals s join audit_events e on e.tenant_id = s.tenant_id and e.position = s.position
    where e.position between (select min(position) from seals) and (select max(position) from seals)
  ) as logged where ${scope}`;
}

/** Runs the database's check of one range inside a savepoint (a malformed stored value must not abort the transaction). */
async function fastCheck(tx: Tx, log: LogName, scope: RawBuilder<unknown>, from: number, to: number, previousHash: string | null, checkpointSeqs: readonly number[]): Promise<FastResult | null> {
  const table = log === 'tenant' ? sql`audit_log` : sql`platform_audit_events`;
  // Without a known previous hash (ranges checked in parallel), the first link starts from the
  // stored hash before the range, which the previous range's own check vouches for.
  const previous = previousHash === null ? sql`(select p.hash from ${table} p where ${scope} and p.seq = ${from - 1})` : sql`decode(${previousHash}, 'hex')`;
  await sql`savepoint cn_verify`.execute(tx);
  try {
    const { rows } = await sql<FastResult>`
      with ${log === 'tenant' ? sql`seals as materialized (select * from audit_seals where ${scope} and seq between ${from} and ${to}),` : sql``}
      r as (
        select seq, hash,
          canonical_metadata is not null and canonical_metadata::jsonb = metadata and ${sealMatches(log)} as meta_ok,
          sha256(coalesce(lag(hash) over (order by seq), ${previous}) || convert_to(${canonicalSql(log)}, 'UTF8')) as computed
        from ${rangeSource(log, scope, from, to)}
      )
      select count(*)::int as n, min(seq)::text as first, max(seq)::text as last, bool_and(computed = hash and meta_ok) as good,
        encode((array_agg(hash order by seq desc))[1], 'hex') as last_hash,
        jsonb_object_agg(seq::text, encode(hash, 'hex')) filter (where seq in (select value::bigint from jsonb_array_elements_text(${JSON.stringify(checkpointSeqs)}::jsonb))) as checkpoints
      from r`.execute(tx);
    await sql`release savepoint cn_verify`.execute(tx);
    return rows[0] ?? null;
  } catch {
    await sql`rollback to savepoint cn_verify`.execute(tx);
    return null;
  }
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
  // With concurrency, the next ranges' database checks are already running while this one is judged.
  const pending: (Promise<FastResult | null> | undefined)[] = [];
  const launch = (k: number) => {
    if (!useDatabase || stored.concurrency <= 1 || k >= ranges.length || pending[k]) return;
    const [from, to] = ranges[k]!;
    pending[k] = stored.fast(from, to, k === 0 ? previousHash : null, checkpointsIn(from, to).map(([seq]) => seq));
    pending[k].catch(() => {}); // judged in order below
  };
  for (let k = 0; k < ranges.length && !firstBad; k++) {
    for (let ahead = k; ahead < k + stored.concurrency; ahead++) launch(ahead);
    const [from, to] = ranges[k]!;
    const inRange = checkpointsIn(from, to);
    // The database checks the range itself; only a range it finds odd is read and checked here.
    const fast = !useDatabase ? null : (pending[k] ?? stored.fast(from, to, previousHash, inRange.map(([seq]) => seq)));
    pending[k] = undefined;
    const fastResult = await fast;
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
  const bounds = await tx
    .selectFrom('audit_log')
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
    fast: (from, to, previousHash, seqs) => run((rangeTx) => fastCheck(rangeTx, 'tenant', sql`tenant_id = ${tenantId}`, from, to, previousHash, seqs)),
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
    fast: (from, to, previousHash, seqs) => run((rangeTx) => fastCheck(rangeTx, 'platform', sql`true`, from, to, previousHash, seqs)),
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
