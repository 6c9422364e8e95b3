/**
 * Verifies a chain as stored: checks the checkpoints' signatures, then reads the events in
 * seq ranges (memory stays bounded) and checks each range's links (segment.ts), in worker
 * threads when the log is long, then compares the end with the head and the checkpoints.
 * Tenant logs are read through the caller's transaction (a tenant transaction for the API,
 * the system role for the CLI); the platform log through the system role.
 */
import { Buffer } from 'node:buffer';
import type { KeyObject } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { sql, type RawBuilder } from 'kysely';
import type { Tx } from '../db/database.ts';
import { acceptCheckpoints, GENESIS_HASH, type ChainProblem, type LogName, type SignedCheckpoint, type VerifyResult } from './chain.ts';
import { checkSegment, type SegmentResult, type SegmentTask } from './segment.ts';
import { asBuffer } from './sealer.ts';

const CHUNK = 5000;

/**
 * Each event as one JSON array built by the database: one JSON.parse per row instead of
 * the driver's per-column parsing (timestamps especially), so verification keeps pace.
 */
function packedColumns(): RawBuilder<string> {
  return sql<string>`json_build_array(seq, id, to_char(at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), actor_type, actor_id, actor_email,
    action, target_type, target_id, outcome, ip, user_agent, request_id, metadata, encode(hash, 'hex'), tenant_id)::text`;
}

/** Logs at least this long are checked by worker threads, in parallel with the reading. */
const PARALLEL_FROM = 50_000;
const WORKERS = Math.max(2, Math.min(4, availableParallelism()));

type Check = (task: SegmentTask) => Promise<SegmentResult>;

/** Worker threads that check segments; closed when the verification ends. */
function workerPool(size: number): { check: Check; close: () => Promise<void> } {
  const workers = Array.from({ length: size }, () => new Worker(new URL('./verify-worker.ts', import.meta.url)));
  const waiting = new Map<number, { resolve: (result: SegmentResult) => void; reject: (error: Error) => void }>();
  for (const worker of workers) {
    worker.on('message', (message: { id: number; result: SegmentResult }) => {
      waiting.get(message.id)?.resolve(message.result);
      waiting.delete(message.id);
    });
    worker.on('error', (error) => {
      for (const entry of waiting.values()) entry.reject(error);
      waiting.clear();
    });
  }
  let next = 0;
  return {
    check: (task) =>
      new Promise((resolve, reject) => {
        const id = next++;
        waiting.set(id, { resolve, reject });
        workers[id % workers.length]!.postMessage({ id, task });
      }),
    close: async () => {
      await Promise.all(workers.map((worker) => worker.terminate()));
    },
  };
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
}

async function verifyStored(stored: StoredLog, keys: ReadonlyMap<string, KeyObject>, parallelFrom: number): Promise<VerifyResult> {
  const anchor = anchorFor(stored.oldest, stored.checkpoints);
  const headOf = (fallback: { seq: number; hash: Buffer }) => {
    const head = stored.head ?? fallback;
    return { seq: head.seq, hash: head.hash.toString('hex') };
  };
  const { accepted, problem: signatureProblem } = acceptCheckpoints(stored.log, stored.tenantId, anchor, stored.checkpoints, keys);
  if (signatureProblem) return { ok: false, count: 0, head: headOf(anchor), firstBad: signatureProblem };
  const checkpointHashes = new Map(accepted.map((c) => [c.seq, c.hash]));
  const upTo = Math.max(stored.newest, stored.head?.seq ?? 0);
  const pool = upTo - anchor.seq >= parallelFrom ? workerPool(WORKERS) : null;
  const check: Check = pool ? pool.check : async (task) => checkSegment(task);
  let count = 0;
  let lastHash = anchor.hash.toString('hex');
  let firstBad: ChainProblem | null = null;
  try {
    // Segments are read one after another (the next read overlaps the checks in flight) and
    // their results taken in seq order; at most WORKERS * 2 are in flight at once.
    const inFlight: Promise<SegmentResult>[] = [];
    let previousHash = lastHash;
    let from = anchor.seq + 1;
    const takeOne = async () => {
      const result = await inFlight.shift()!;
      count += result.count;
      if (result.problem) firstBad ??= result.problem;
    };
    while (from <= upTo && !firstBad) {
      const to = Math.min(from + CHUNK - 1, upTo);
      const rows = await stored.rows(from, to);
      const checkpoints: Record<number, string> = {};
      for (const [seq, hash] of checkpointHashes) if (seq >= from && seq <= to) checkpoints[seq] = hash;
      inFlight.push(check({ log: stored.log, tenantId: stored.tenantId, from, to, previousHash, rows, checkpoints }));
      previousHash = storedHashOf(rows.at(-1));
      from = to + 1;
      while (inFlight.length >= WORKERS * 2 || (inFlight.length > 0 && firstBad)) await takeOne();
    }
    while (inFlight.length > 0) await takeOne();
    lastHash = previousHash;
  } finally {
    await pool?.close();
  }
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

/** parallelFrom: from how many events on worker threads check the segments (tests lower it). */
export async function verifyTenantLog(tx: Tx, tenantId: string, keys: ReadonlyMap<string, KeyObject>, parallelFrom = PARALLEL_FROM): Promise<VerifyResult> {
  const checkpoints = (await tx.selectFrom('audit_checkpoints').select(['seq', 'hash', 'at', 'key_id', 'signature', 'reason']).where('tenant_id', '=', tenantId).execute()).map((row) => signed(row, tenantId));
  const head = await tx.selectFrom('audit_chain_heads').select(['seq', 'hash']).where('tenant_id', '=', tenantId).executeTakeFirst();
  const bounds = await tx
    .selectFrom('audit_events')
    .select((eb) => [eb.fn.min('seq').as('oldest'), eb.fn.max('seq').as('newest')])
    .where('tenant_id', '=', tenantId)
    .where('seq', 'is not', null)
    .executeTakeFirst();
  return verifyStored(
    {
      log: 'tenant',
      tenantId,
      checkpoints,
      head: head ? { seq: Number(head.seq), hash: asBuffer(head.hash) } : { seq: 0, hash: GENESIS_HASH },
      oldest: bounds?.oldest == null ? null : Number(bounds.oldest),
      newest: Number(bounds?.newest ?? 0),
      rows: async (from, to) =>
        (await sql<{ r: string }>`select ${packedColumns()} as r from audit_events where tenant_id = ${tenantId} and seq between ${from} and ${to} order by seq`.execute(tx)).rows.map((row) => row.r),
    },
    keys,
    parallelFrom,
  );
}

export async function verifyPlatformLog(tx: Tx, keys: ReadonlyMap<string, KeyObject>, parallelFrom = PARALLEL_FROM): Promise<VerifyResult> {
  const checkpoints = (await tx.selectFrom('platform_audit_checkpoints').select(['seq', 'hash', 'at', 'key_id', 'signature', 'reason']).execute()).map((row) => signed(row, null));
  const head = await tx.selectFrom('platform_audit_head').select(['seq', 'hash']).executeTakeFirstOrThrow();
  const bounds = await tx
    .selectFrom('platform_audit_events')
    .select((eb) => [eb.fn.min('seq').as('oldest'), eb.fn.max('seq').as('newest')])
    .where('seq', 'is not', null)
    .executeTakeFirst();
  return verifyStored(
    {
      log: 'platform',
      tenantId: null,
      checkpoints,
      head: { seq: Number(head.seq), hash: asBuffer(head.hash) },
      oldest: bounds?.oldest == null ? null : Number(bounds.oldest),
      newest: Number(bounds?.newest ?? 0),
      rows: async (from, to) => (await sql<{ r: string }>`select ${packedColumns()} as r from platform_audit_events where seq between ${from} and ${to} order by seq`.execute(tx)).rows.map((row) => row.r),
    },
    keys,
    parallelFrom,
  );
}
