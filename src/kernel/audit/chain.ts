/**
 * The audit hash chain and its signed checkpoints, as plain functions over plain values:
 * the definition. The server's verifier and the platform log's sealer use them, and so does
 * the stand-alone export checker (tools/verify-audit-export.ts) a customer runs on their own
 * machine; PostgreSQL builds the same text to seal tenant chains (canonical-sql.ts), and a
 * test holds the two equal.
 *
 *   hash(n) = SHA-256( hash(n-1) || UTF-8( JCS(record n) ) ),  hash(0) = 32 zero bytes
 *
 * JCS is the JSON Canonicalization Scheme (RFC 8785), so any language can rebuild the bytes.
 * A checkpoint is an Ed25519 signature over the JCS of {type, v, log, tenantId, seq, hash,
 * at, keyId, reason}; the public keys are published at GET /api/v1/audit/signing-keys.
 */
import canonicalize from 'canonicalize';
import { createHash, createPublicKey, hash as oneShotHash, sign, verify, type KeyObject } from 'node:crypto';

export const CHAIN_VERSION = 1;
export const GENESIS_HASH: Buffer = Buffer.alloc(32);
export type LogName = 'tenant' | 'platform';

/** One event as the chain covers it: every stored field except the sealing columns. */
export interface ChainRecord {
  readonly log: LogName;
  readonly tenantId: string | null;
  readonly seq: number;
  readonly id: string;
  /** ISO 8601 with milliseconds, UTC. */
  readonly at: string;
  readonly actorType: string;
  readonly actorId: string | null;
  readonly actorEmail: string | null;
  readonly action: string;
  readonly targetType: string | null;
  readonly targetId: string | null;
  readonly outcome: string;
  readonly ip: string | null;
  readonly userAgent: string | null;
  readonly requestId: string | null;
  readonly metadata: unknown;
}

function jcs(value: unknown): string {
  const text = canonicalize(value);
  if (text === undefined) throw new Error('value has no canonical JSON form');
  return text;
}

/** The event as a plain object: what JCS canonicalises. */
export function recordDocument(record: ChainRecord): Record<string, unknown> {
  return {
    v: CHAIN_VERSION,
    log: record.log,
    tenantId: record.tenantId,
    seq: record.seq,
    id: record.id,
    at: record.at,
    actor: { type: record.actorType, id: record.actorId, email: record.actorEmail },
    action: record.action,
    target: { type: record.targetType, id: record.targetId },
    outcome: record.outcome,
    ip: record.ip,
    userAgent: record.userAgent,
    requestId: record.requestId,
    metadata: record.metadata,
  };
}

const q = JSON.stringify;

/**
 * The bytes hashed for one event: JCS (RFC 8785) of recordDocument(record). The envelope's
 * shape is fixed, so it is written out with its keys already in JCS order and strings and
 * integers serialised as JCS does (ECMAScript JSON.stringify); only metadata, whose shape
 * varies, goes through the JCS library. A test holds this equal to JCS of the whole document.
 */
export function canonicalRecord(r: ChainRecord, metadataJcs: string = jcs(r.metadata)): string {
  if (!Number.isSafeInteger(r.seq)) throw new Error('seq must be a safe integer');
  return `{"action":${q(r.action)},"actor":{"email":${q(r.actorEmail)},"id":${q(r.actorId)},"type":${q(r.actorType)}},"at":${q(r.at)},"id":${q(r.id)},"ip":${q(r.ip)},"log":${q(r.log)},"metadata":${metadataJcs},"outcome":${q(r.outcome)},"requestId":${q(r.requestId)},"seq":${r.seq},"target":{"id":${q(r.targetId)},"type":${q(r.targetType)}},"tenantId":${q(r.tenantId)},"userAgent":${q(r.userAgent)},"v":${CHAIN_VERSION}}`;
}

/** JCS of any value (exported for the equivalence test and for checkpoint messages). */
export { jcs };

export function chainHash(previous: Buffer, record: ChainRecord, metadataJcs?: string): Buffer {
  const text = canonicalRecord(record, metadataJcs);
  const input = Buffer.allocUnsafe(previous.length + Buffer.byteLength(text, 'utf8'));
  previous.copy(input, 0);
  input.write(text, previous.length, 'utf8');
  return oneShotHash('sha256', input, 'buffer');
}

export interface Checkpoint {
  readonly log: LogName;
  readonly tenantId: string | null;
  readonly seq: number;
  /** Hex of the chain hash at seq. */
  readonly hash: string;
  readonly at: string;
  readonly keyId: string;
  readonly reason: 'interval' | 'retention';
}

export function checkpointMessage(checkpoint: Checkpoint): string {
  return jcs({
    type: 'customernode.audit.checkpoint',
    v: CHAIN_VERSION,
    log: checkpoint.log,
    tenantId: checkpoint.tenantId,
    seq: checkpoint.seq,
    hash: checkpoint.hash,
    at: checkpoint.at,
    keyId: checkpoint.keyId,
    reason: checkpoint.reason,
  });
}

/** A key's id: the first 16 hex digits of SHA-256 over its SubjectPublicKeyInfo (DER). */
export function keyIdOf(publicKey: KeyObject): string {
  return createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 16);
}

export function signCheckpoint(privateKey: KeyObject, checkpoint: Checkpoint): Buffer {
  return sign(null, Buffer.from(checkpointMessage(checkpoint), 'utf8'), privateKey);
}

export function checkpointSignatureValid(publicKey: KeyObject, checkpoint: Checkpoint, signature: Buffer): boolean {
  try {
    return verify(null, Buffer.from(checkpointMessage(checkpoint), 'utf8'), publicKey, signature);
  } catch {
    return false;
  }
}

/** Public keys by key id, from PEM text (as published). */
export function publicKeysFromPem(pems: readonly string[]): Map<string, KeyObject> {
  const keys = new Map<string, KeyObject>();
  for (const pem of pems) {
    const key = createPublicKey(pem);
    if (key.asymmetricKeyType !== 'ed25519') throw new Error('audit signing keys are Ed25519');
    keys.set(keyIdOf(key), key);
  }
  return keys;
}

export type ProblemReason = 'hash_mismatch' | 'missing' | 'out_of_order' | 'checkpoint_mismatch' | 'bad_signature' | 'head_mismatch' | 'no_anchor';

export interface ChainProblem {
  readonly seq: number;
  readonly id: string | null;
  readonly reason: ProblemReason;
}

/** "first bad event at seq N (id X): hash mismatch", as the CLI and the export checker print it. */
export function describeProblem(problem: ChainProblem): string {
  return `first bad event at seq ${problem.seq}${problem.id ? ` (id ${problem.id})` : ''}: ${problem.reason.replaceAll('_', ' ')}`;
}

export interface VerifyResult {
  readonly ok: boolean;
  readonly count: number;
  readonly head: { readonly seq: number; readonly hash: string };
  readonly firstBad?: ChainProblem;
}

export interface SignedCheckpoint extends Checkpoint {
  readonly signature: Buffer;
}

/**
 * Checks the signatures of the checkpoints at or after the anchor (the anchor's must name
 * the anchor's hash) and returns them in seq order, or the first that fails.
 */
export function acceptCheckpoints(
  log: LogName,
  tenantId: string | null,
  anchor: { readonly seq: number; readonly hash: Buffer },
  checkpoints: readonly SignedCheckpoint[],
  keys: ReadonlyMap<string, KeyObject>,
): { accepted: SignedCheckpoint[]; problem: ChainProblem | null } {
  const accepted: SignedCheckpoint[] = [];
  for (const checkpoint of [...checkpoints].sort((a, b) => a.seq - b.seq)) {
    if (checkpoint.seq < anchor.seq) continue;
    const key = keys.get(checkpoint.keyId);
    if (!key || checkpoint.log !== log || checkpoint.tenantId !== tenantId || !checkpointSignatureValid(key, checkpoint, checkpoint.signature)) {
      return { accepted, problem: { seq: checkpoint.seq, id: null, reason: 'bad_signature' } };
    }
    if (checkpoint.seq === anchor.seq && checkpoint.hash !== anchor.hash.toString('hex')) {
      return { accepted, problem: { seq: checkpoint.seq, id: null, reason: 'checkpoint_mismatch' } };
    }
    accepted.push(checkpoint);
  }
  return { accepted, problem: null };
}

/**
 * The checks of one event against the link before it (the one place they live; the
 * verifier below and segment.ts both walk with it): it belongs to this chain, has the next
 * seq, its stored hash is SHA-256(previous || JCS(event)), and a checkpoint at its seq names
 * that hash. Returns the event's hash, or the problem.
 */
export function checkLink(
  at: { readonly log: LogName; readonly tenantId: string | null; readonly expected: number; readonly previous: Buffer },
  record: ChainRecord,
  storedHash: Buffer | null,
  checkpointHash: string | undefined,
): { readonly hash: Buffer } | { readonly problem: ChainProblem } {
  // A tenant chain holds only that tenant's events (platform events may name a tenant).
  if (record.log !== at.log || (at.log === 'tenant' && record.tenantId !== at.tenantId)) return { problem: { seq: record.seq, id: record.id, reason: 'hash_mismatch' } };
  if (record.seq > at.expected) return { problem: { seq: at.expected, id: null, reason: 'missing' } };
  if (record.seq < at.expected) return { problem: { seq: record.seq, id: record.id, reason: 'out_of_order' } };
  const hash = chainHash(at.previous, record);
  if (storedHash === null || !hash.equals(storedHash)) return { problem: { seq: record.seq, id: record.id, reason: 'hash_mismatch' } };
  if (checkpointHash !== undefined && checkpointHash !== hash.toString('hex')) return { problem: { seq: record.seq, id: record.id, reason: 'checkpoint_mismatch' } };
  return { hash };
}

/**
 * Walks a chain in seq order and stops at the first problem. It starts from `anchor` (the
 * genesis, or the retention checkpoint just before the oldest kept event), recomputes
 * every hash, wants seqs without gaps, and checks each signed checkpoint on the way.
 */
export class ChainVerifier {
  private expected: number;
  private previous: Buffer;
  private count = 0;
  private problem: ChainProblem | null = null;
  private readonly checkpoints = new Map<number, SignedCheckpoint>();
  private readonly log: LogName;
  private readonly tenantId: string | null;

  constructor(log: LogName, tenantId: string | null, anchor: { readonly seq: number; readonly hash: Buffer }, checkpoints: readonly SignedCheckpoint[], keys: ReadonlyMap<string, KeyObject>) {
    this.log = log;
    this.tenantId = tenantId;
    this.expected = anchor.seq + 1;
    this.previous = anchor.hash;
    const checked = acceptCheckpoints(log, tenantId, anchor, checkpoints, keys);
    if (checked.problem) this.fail(checked.problem);
    for (const checkpoint of checked.accepted) this.checkpoints.set(checkpoint.seq, checkpoint);
  }

  get failed(): boolean {
    return this.problem !== null;
  }

  private fail(problem: ChainProblem): false {
    this.problem ??= problem;
    return false;
  }

  /** Feeds the next event (with its stored hash); false once a problem was found. */
  push(record: ChainRecord, storedHash: Buffer | null): boolean {
    if (this.problem) return false;
    const link = checkLink({ log: this.log, tenantId: this.tenantId, expected: this.expected, previous: this.previous }, record, storedHash, this.checkpoints.get(record.seq)?.hash);
    if ('problem' in link) return this.fail(link.problem);
    this.previous = link.hash;
    this.expected += 1;
    this.count += 1;
    return true;
  }

  /** Ends the walk against the head the log claims; events past the head are not expected. */
  finish(head: { readonly seq: number; readonly hash: Buffer } | null): VerifyResult {
    const last = this.expected - 1;
    if (!this.problem) {
      // A signed checkpoint past the last event: events were cut off the end.
      const beyond = [...this.checkpoints.keys()].find((seq) => seq > last);
      if (beyond !== undefined) this.fail({ seq: last + 1, id: null, reason: 'missing' });
      else if (head && head.seq > last) this.fail({ seq: last + 1, id: null, reason: 'missing' });
      else if (head && (head.seq < last || !head.hash.equals(this.previous))) this.fail({ seq: head.seq, id: null, reason: 'head_mismatch' });
    }
    const headValue = head ?? { seq: last, hash: this.previous };
    return {
      ok: this.problem === null,
      count: this.count,
      head: { seq: headValue.seq, hash: headValue.hash.toString('hex') },
      ...(this.problem ? { firstBad: this.problem } : {}),
    };
  }
}
