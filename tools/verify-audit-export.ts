#!/usr/bin/env node
/**
 * Checks a downloaded audit export on your own machine, trusting nothing but the published
 * signing keys:
 *
 *   node tools/verify-audit-export.ts audit.jsonl checkpoints.json signing-keys.json
 *
 * audit.jsonl       GET /api/v1/tenants/{id}/audit-events/export?format=jsonl
 * checkpoints.json  GET /api/v1/tenants/{id}/audit-events/checkpoints
 * signing-keys.json GET /api/v1/audit/signing-keys (better: a copy you fetched and kept earlier)
 *
 * It recomputes every hash of the chain, wants seqs without gaps, and checks each signed
 * checkpoint inside the export against the recomputed hash. Exit 0 when all holds; else 1
 * with the first bad seq. The algorithm is in src/kernel/audit/chain.ts and README "Audit log".
 */
import { createReadStream, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { Buffer } from 'node:buffer';
import { ChainVerifier, describeProblem, GENESIS_HASH, publicKeysFromPem, type ChainRecord, type SignedCheckpoint, type VerifyResult } from '../src/kernel/audit/chain.ts';

interface ExportLine {
  id: string;
  seq: number;
  at: string;
  tenantId: string;
  actor: { type: string; id: string | null; email?: string };
  action: string;
  target?: { type: string; id: string };
  outcome: string;
  ip: string | null;
  userAgent: string | null;
  requestId: string | null;
  metadata: unknown;
  hash: string;
}

interface PublishedCheckpoint {
  log: 'tenant';
  tenantId: string;
  seq: number;
  hash: string;
  at: string;
  keyId: string;
  reason: 'interval' | 'retention';
  signature: string;
}

function recordOf(line: ExportLine): ChainRecord {
  return {
    log: 'tenant',
    tenantId: line.tenantId,
    seq: line.seq,
    id: line.id,
    at: line.at,
    actorType: line.actor.type,
    actorId: line.actor.id,
    actorEmail: line.actor.email ?? null,
    action: line.action,
    targetType: line.target?.type ?? null,
    targetId: line.target?.id ?? null,
    outcome: line.outcome,
    ip: line.ip,
    userAgent: line.userAgent,
    requestId: line.requestId,
    metadata: line.metadata,
  };
}

export interface ExportCheck extends VerifyResult {
  /** Where the check started: 0 (the genesis), a retention checkpoint, or the first exported event taken as given. */
  readonly anchoredAt: number;
  readonly anchor: 'genesis' | 'checkpoint' | 'first event';
}

/** Verifies an export file (JSON lines, oldest first) against checkpoints and public keys. */
export async function verifyExport(exportPath: string, checkpointsJson: string, keysJson: string): Promise<ExportCheck> {
  const keys = publicKeysFromPem((JSON.parse(keysJson) as { items: { publicKeyPem: string }[] }).items.map((key) => key.publicKeyPem));
  const published = (JSON.parse(checkpointsJson) as { items: PublishedCheckpoint[] }).items;
  const checkpoints: SignedCheckpoint[] = published.map((c) => ({ ...c, signature: Buffer.from(c.signature, 'base64') }));
  let verifier: ChainVerifier | null = null;
  let anchor: ExportCheck['anchor'] = 'genesis';
  let anchoredAt = 0;
  const lines = createInterface({ input: createReadStream(exportPath, 'utf8'), crlfDelay: Infinity });
  for await (const text of lines) {
    if (text.trim() === '') continue;
    const line = JSON.parse(text) as ExportLine;
    const hash = /^[0-9a-f]{64}$/.test(line.hash) ? Buffer.from(line.hash, 'hex') : null;
    if (verifier === null) {
      // The start: the genesis, a signed checkpoint just before the first event, or (for an
      // export that starts mid-chain without one) the first event's own hash, taken as given.
      const before = checkpoints.find((c) => c.seq === line.seq - 1);
      if (line.seq === 1) verifier = new ChainVerifier('tenant', line.tenantId, { seq: 0, hash: GENESIS_HASH }, checkpoints, keys);
      else if (before) {
        anchor = 'checkpoint';
        anchoredAt = before.seq;
        verifier = new ChainVerifier('tenant', line.tenantId, { seq: before.seq, hash: Buffer.from(before.hash, 'hex') }, checkpoints, keys);
      } else {
        anchor = 'first event';
        anchoredAt = line.seq;
        verifier = new ChainVerifier('tenant', line.tenantId, { seq: line.seq, hash: hash ?? GENESIS_HASH }, checkpoints, keys);
        continue;
      }
    }
    if (!verifier.push(recordOf(line), hash)) break;
  }
  verifier ??= new ChainVerifier('tenant', null, { seq: 0, hash: GENESIS_HASH }, [], keys);
  // There is no head to compare with offline, and checkpoints past the export's end (events
  // written after it) are not its business: only a problem found on the walk counts.
  const failedOnTheWay = verifier.failed;
  const result = verifier.finish(null);
  return failedOnTheWay || result.ok ? { ...result, anchor, anchoredAt } : { ok: true, count: result.count, head: result.head, anchor, anchoredAt };
}

if (import.meta.main) {
  const [exportPath, checkpointsPath, keysPath] = process.argv.slice(2);
  if (!exportPath || !checkpointsPath || !keysPath) {
    process.stderr.write('usage: node tools/verify-audit-export.ts audit.jsonl checkpoints.json signing-keys.json\n');
    process.exit(64);
  }
  verifyExport(exportPath, readFileSync(checkpointsPath, 'utf8'), readFileSync(keysPath, 'utf8')).then(
    (result) => {
      if (result.ok) {
        process.stdout.write(`ok: ${result.count} events verified, from ${result.anchor} ${result.anchoredAt} to seq ${result.head.seq}\n`);
      } else {
        process.stderr.write(`BROKEN: ${describeProblem(result.firstBad!)}\n`);
        process.exit(1);
      }
    },
    (error: unknown) => {
      process.stderr.write(`cannot verify: ${error instanceof Error ? error.message : String(error)}\n`);
      process.exit(2);
    },
  );
}
