/**
 * Verifies a chain as stored: reads it in seq order in chunks (memory stays bounded) and
 * feeds ChainVerifier, which recomputes each hash and checks the signed checkpoints.
 * Tenant logs are read through the caller's transaction (a tenant transaction for the API,
 * the system role for the CLI); the platform log through the system role.
 */
import type { KeyObject } from 'node:crypto';
import type { Tx } from '../db/database.ts';
import { ChainVerifier, GENESIS_HASH, type SignedCheckpoint, type VerifyResult } from './chain.ts';
import { asBuffer, chainRecordOf } from './sealer.ts';

const CHUNK = 5000;

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
  const verifier = new ChainVerifier('tenant', tenantId, anchorFor(oldest?.seq == null ? null : Number(oldest.seq), checkpoints), checkpoints, keys);
  let after = '0';
  while (!verifier.failed) {
    const rows = await tx.selectFrom('audit_events').selectAll().where('tenant_id', '=', tenantId).where('seq', '>', after).orderBy('seq').limit(CHUNK).execute();
    for (const row of rows) if (!verifier.push(chainRecordOf('tenant', row, Number(row.seq)), row.hash && asBuffer(row.hash))) break;
    if (rows.length < CHUNK) break;
    after = rows.at(-1)!.seq!;
  }
  return verifier.finish(head ? { seq: Number(head.seq), hash: asBuffer(head.hash) } : { seq: 0, hash: GENESIS_HASH });
}

export async function verifyPlatformLog(tx: Tx, keys: ReadonlyMap<string, KeyObject>): Promise<VerifyResult> {
  const checkpoints = (await tx.selectFrom('platform_audit_checkpoints').select(['seq', 'hash', 'at', 'key_id', 'signature', 'reason']).execute()).map((row) => signed(row, null));
  const head = await tx.selectFrom('platform_audit_head').select(['seq', 'hash']).executeTakeFirstOrThrow();
  const oldest = await tx.selectFrom('platform_audit_events').select((eb) => eb.fn.min('seq').as('seq')).where('seq', 'is not', null).executeTakeFirst();
  const verifier = new ChainVerifier('platform', null, anchorFor(oldest?.seq == null ? null : Number(oldest.seq), checkpoints), checkpoints, keys);
  let after = '0';
  while (!verifier.failed) {
    const rows = await tx.selectFrom('platform_audit_events').selectAll().where('seq', '>', after).orderBy('seq').limit(CHUNK).execute();
    for (const row of rows) if (!verifier.push(chainRecordOf('platform', row, Number(row.seq)), row.hash && asBuffer(row.hash))) break;
    if (rows.length < CHUNK) break;
    after = rows.at(-1)!.seq!;
  }
  return verifier.finish({ seq: Number(head.seq), hash: asBuffer(head.hash) });
}
