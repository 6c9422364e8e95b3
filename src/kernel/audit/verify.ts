/**
 * Verifies a chain as stored: reads it in seq order in chunks (memory stays bounded) and
 * feeds ChainVerifier, which recomputes each hash and checks the signed checkpoints.
 * Tenant logs are read through the caller's transaction (a tenant transaction for the API,
 * the system role for the CLI); the platform log through the system role.
 */
import type { KeyObject } from 'node:crypto';
import { sql, type RawBuilder } from 'kysely';
import type { Tx } from '../db/database.ts';
import { ChainVerifier, GENESIS_HASH, type ChainRecord, type LogName, type SignedCheckpoint, type VerifyResult } from './chain.ts';
import { asBuffer } from './sealer.ts';

const CHUNK = 5000;

/**
 * Each event as one JSON array built by the database: one JSON.parse per row instead of
 * the driver's per-column parsing (timestamps especially), so verification keeps pace.
 */
type Packed = [number, string, string, string, string | null, string | null, string, string | null, string | null, string, string | null, string | null, string | null, unknown, string];

function packedColumns(): RawBuilder<string> {
  return sql<string>`json_build_array(seq, id, to_char(at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), actor_type, actor_id, actor_email,
    action, target_type, target_id, outcome, ip, user_agent, request_id, metadata, encode(hash, 'hex'))::text`;
}

/**
 * Reads seq ranges [from, upTo] chunk by chunk, asking for the next chunk before checking
 * the current one, so the database prepares it on the other core meanwhile. Stops at the
 * first row check returns false for.
 */
async function walk<R>(from: number, upTo: number, chunk: (from: number) => Promise<{ rows: R[] }>, check: (row: R) => boolean): Promise<void> {
  let next = from <= upTo ? chunk(from) : null;
  for (let start = from; next !== null; start += CHUNK) {
    const { rows } = await next;
    next = start + CHUNK <= upTo ? chunk(start + CHUNK) : null;
    for (const row of rows) {
      if (!check(row)) {
        await next?.catch(() => undefined);
        return;
      }
    }
  }
}

function unpack(log: LogName, tenantId: string | null, text: string): { record: ChainRecord; hash: Buffer | null } {
  const [seq, id, at, actorType, actorId, actorEmail, action, targetType, targetId, outcome, ip, userAgent, requestId, metadata, hash] = JSON.parse(text) as Packed;
  return {
    record: { log, tenantId, seq, id, at, actorType, actorId, actorEmail, action, targetType, targetId, outcome, ip, userAgent, requestId, metadata },
    hash: hash ? Buffer.from(hash, 'hex') : null,
  };
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

export async function verifyTenantLog(tx: Tx, tenantId: string, keys: ReadonlyMap<string, KeyObject>): Promise<VerifyResult> {
  const checkpoints = (await tx.selectFrom('audit_checkpoints').select(['seq', 'hash', 'at', 'key_id', 'signature', 'reason']).where('tenant_id', '=', tenantId).execute()).map((row) => signed(row, tenantId));
  const head = await tx.selectFrom('audit_chain_heads').select(['seq', 'hash']).where('tenant_id', '=', tenantId).executeTakeFirst();
  const oldest = await tx.selectFrom('audit_events').select((eb) => eb.fn.min('seq').as('seq')).where('tenant_id', '=', tenantId).where('seq', 'is not', null).executeTakeFirst();
  const anchor = anchorFor(oldest?.seq == null ? null : Number(oldest.seq), checkpoints);
  const verifier = new ChainVerifier('tenant', tenantId, anchor, checkpoints, keys);
  // Read by seq ranges (not "seq > x limit n", which the planner may answer by sorting
  // everything after x for every chunk) up to the highest seq stored or claimed.
  const last = await tx.selectFrom('audit_events').select((eb) => eb.fn.max('seq').as('seq')).where('tenant_id', '=', tenantId).executeTakeFirst();
  const upTo = Math.max(Number(last?.seq ?? 0), Number(head?.seq ?? 0));
  const chunk = (from: number) => sql<{ r: string }>`select ${packedColumns()} as r from audit_events where tenant_id = ${tenantId} and seq between ${from} and ${from + CHUNK - 1} order by seq`.execute(tx);
  await walk(anchor.seq + 1, upTo, chunk, (row) => {
    // The row's own tenant is not in the packed array: the query asked for this tenant only.
    const { record, hash } = unpack('tenant', tenantId, row.r);
    return verifier.push(record, hash);
  });
  return verifier.finish(head ? { seq: Number(head.seq), hash: asBuffer(head.hash) } : { seq: 0, hash: GENESIS_HASH });
}

export async function verifyPlatformLog(tx: Tx, keys: ReadonlyMap<string, KeyObject>): Promise<VerifyResult> {
  const checkpoints = (await tx.selectFrom('platform_audit_checkpoints').select(['seq', 'hash', 'at', 'key_id', 'signature', 'reason']).execute()).map((row) => signed(row, null));
  const head = await tx.selectFrom('platform_audit_head').select(['seq', 'hash']).executeTakeFirstOrThrow();
  const oldest = await tx.selectFrom('platform_audit_events').select((eb) => eb.fn.min('seq').as('seq')).where('seq', 'is not', null).executeTakeFirst();
  const anchor = anchorFor(oldest?.seq == null ? null : Number(oldest.seq), checkpoints);
  const verifier = new ChainVerifier('platform', null, anchor, checkpoints, keys);
  const last = await tx.selectFrom('platform_audit_events').select((eb) => eb.fn.max('seq').as('seq')).executeTakeFirst();
  const upTo = Math.max(Number(last?.seq ?? 0), Number(head.seq));
  const chunk = (from: number) => sql<{ r: string; tenant_id: string | null }>`select ${packedColumns()} as r, tenant_id from platform_audit_events where seq between ${from} and ${from + CHUNK - 1} order by seq`.execute(tx);
  await walk(anchor.seq + 1, upTo, chunk, (row) => {
    const { record, hash } = unpack('platform', row.tenant_id, row.r);
    return verifier.push(record, hash);
  });
  return verifier.finish({ seq: Number(head.seq), hash: asBuffer(head.hash) });
}
