/**
 * Checks one stretch of a stored chain on its own: each event's stored hash must equal
 * SHA-256(stored hash of the event before || JCS(event)), seqs must run without gaps from
 * `from` to `to`, and signed checkpoints inside the stretch must name the stored hash.
 * Because every link is checked against the stored hash before it, a stretch can be checked
 * on its own (verify.ts does so for a range the database's own check found odd): the first
 * failing stretch in seq order names the same first bad event a single pass would.
 */
import { Buffer } from 'node:buffer';
import { checkLink, type ChainProblem, type LogName } from './chain.ts';

/** One event as the database packs it (see verify.ts): JSON array text. */
type Packed = [number, string, string, string, string | null, string | null, string, string | null, string | null, string, string | null, string | null, string | null, unknown, string, string | null, boolean];

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
  let previous: Buffer = Buffer.from(task.previousHash, 'hex');
  let expected = task.from;
  let count = 0;
  for (const text of task.rows) {
    const [seq, id, at, actorType, actorId, actorEmail, action, targetType, targetId, outcome, ip, userAgent, requestId, packedMetadata, hash, tenantId, sealMatches] = JSON.parse(text) as Packed;
    // A tenant event's metadata comes as its seal's JCS text (what audit_log serves, parsed).
    const metadata = task.log === 'tenant' ? servedMetadata(packedMetadata) : packedMetadata;
    if (metadata === NOT_JSON) return { count, problem: { seq, id, reason: 'hash_mismatch' } };
    const record = { log: task.log, tenantId, seq, id, at, actorType, actorId, actorEmail, action, targetType, targetId, outcome, ip, userAgent, requestId, metadata };
    const link = checkLink({ log: task.log, tenantId: task.tenantId, expected, previous }, record, hash ? Buffer.from(hash, 'hex') : null, task.checkpoints[seq]);
    if ('problem' in link) return { count, problem: link.problem };
    // The seal's copies of action and target (what filtered reads find it by) must still be the event's.
    if (sealMatches !== true) return { count, problem: { seq, id, reason: 'hash_mismatch' } };
    previous = link.hash;
    expected += 1;
    count += 1;
  }
  if (expected <= task.to) return { count, problem: { seq: expected, id: null, reason: 'missing' } };
  return { count, problem: null };
}

const NOT_JSON = Symbol('not JSON');

/** The metadata a reader gets from a seal's stored text, or NOT_JSON if none could be read from it. */
function servedMetadata(stored: unknown): unknown {
  if (typeof stored !== 'string') return NOT_JSON;
  try {
    return JSON.parse(stored) as unknown;
  } catch {
    return NOT_JSON;
  }
}
