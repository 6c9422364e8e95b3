/**
 * Checks one stretch of a stored chain on its own: each event's stored hash must equal
 * SHA-256(stored hash of the event before || JCS(event)), seqs must run without gaps from
 * `from` to `to`, and signed checkpoints inside the stretch must name the stored hash.
 * Because every link is checked against the stored hash before it, a stretch can be checked
 * on its own (verify.ts does so for a range the database's own check found odd): the first
 * failing stretch in seq order names the same first bad event a single pass would.
 */
import { Buffer } from 'node:buffer';
import { chainHash, type ChainProblem, type LogName } from './chain.ts';

/** One event as the database packs it (see verify.ts): JSON array text. */
type Packed = [number, string, string, string, string | null, string | null, string, string | null, string | null, string, string | null, string | null, string | null, unknown, string, string | null];

export interface SegmentTask {
  readonly log: LogName;
  /** The tenant whose chain this is; null for the platform log. */
  readonly tenantId: string | null;
  readonly from: number;
  readonly to: number;
  /** Hex of the stored hash of event from - 1 (or of the anchor). */
  readonly previousHash: string;
  readonly rows: readonly string[];
  /** Hex hashes of the verified checkpoints inside [from, to], by seq. */
  readonly checkpoints: Readonly<Record<number, string>>;
}

export interface SegmentResult {
  readonly count: number;
  readonly problem: ChainProblem | null;
}

export function checkSegment(task: SegmentTask): SegmentResult {
  let previous = Buffer.from(task.previousHash, 'hex');
  let expected = task.from;
  let count = 0;
  for (const text of task.rows) {
    const [seq, id, at, actorType, actorId, actorEmail, action, targetType, targetId, outcome, ip, userAgent, requestId, metadata, hash, tenantId] = JSON.parse(text) as Packed;
    if (seq > expected) return { count, problem: { seq: expected, id: null, reason: 'missing' } };
    if (seq < expected) return { count, problem: { seq, id, reason: 'out_of_order' } };
    // A tenant chain holds only that tenant's events (platform events may name a tenant).
    if (task.log === 'tenant' && tenantId !== task.tenantId) return { count, problem: { seq, id, reason: 'hash_mismatch' } };
    const computed = chainHash(previous, { log: task.log, tenantId, seq, id, at, actorType, actorId, actorEmail, action, targetType, targetId, outcome, ip, userAgent, requestId, metadata });
    const stored = hash ? Buffer.from(hash, 'hex') : null;
    if (!stored || !computed.equals(stored)) return { count, problem: { seq, id, reason: 'hash_mismatch' } };
    const checkpoint = task.checkpoints[seq];
    if (checkpoint !== undefined && checkpoint !== hash) return { count, problem: { seq, id, reason: 'checkpoint_mismatch' } };
    previous = stored;
    expected += 1;
    count += 1;
  }
  if (expected <= task.to) return { count, problem: { seq: expected, id: null, reason: 'missing' } };
  return { count, problem: null };
}
