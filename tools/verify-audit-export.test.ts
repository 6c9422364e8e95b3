import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../test/harness.ts';
import { writeDueCheckpoints } from '../src/kernel/audit/sealer.ts';
import { loadAuditSigner } from '../src/kernel/audit/signing.ts';
import { verifyExport } from './verify-audit-export.ts';

describe('checking an audit export offline (tools/verify-audit-export.ts)', () => {
  let t: TestApp;
  let dir: string;
  let lines: string[];
  let checkpoints: string;
  let keys: string;
  const file = (name: string, content: string) => {
    const target = path.join(dir, name);
    writeFileSync(target, content);
    return target;
  };

  beforeAll(async () => {
    t = await startTestApp();
    dir = mkdtempSync(path.join(os.tmpdir(), 'cn-export-check-'));
    const { session: owner, tenantId } = await t.signup();
    const create = (name: string) => t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner, body: { name } });
    for (const name of ['one', 'two', 'three']) await create(name);
    // A checkpoint in the middle of the exported range, then more events after it.
    await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/audit-events`, as: owner });
    await writeDueCheckpoints(t.db, loadAuditSigner(t.config, { warn() {} }), { everyEvents: 1, everySeconds: 3600 });
    for (const name of ['four', 'five']) await create(name);
    const exported = await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/audit-events/export?format=jsonl`, as: owner });
    expect(exported.statusCode).toBe(200);
    lines = exported.body.trim().split('\n');
    checkpoints = (await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/audit-events/checkpoints`, as: owner })).body;
    keys = (await t.request({ method: 'GET', url: '/api/v1/audit/signing-keys' })).body;
    expect(JSON.parse(checkpoints).items.length).toBeGreaterThan(0);
  });
  afterAll(async () => {
    await t?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('verifies an untouched export from the genesis, checkpoints included, and says so with exit 0', async () => {
    const result = await verifyExport(file('ok.jsonl', `${lines.join('\n')}\n`), checkpoints, keys);
    expect(result).toMatchObject({ ok: true, count: lines.length, anchor: 'genesis' });
    const run = spawnSync(process.execPath, [path.join(import.meta.dirname, 'verify-audit-export.ts'), path.join(dir, 'ok.jsonl'), file('c.json', checkpoints), file('k.json', keys)], { encoding: 'utf8' });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`^ok: ${lines.length} events verified`));
  });

  it('names the first bad seq of an edited, a removed or a reordered line', async () => {
    const edited = lines.map((line, i) => (i === 2 ? line.replace('"outcome":"success"', '"outcome":"failure"') : line));
    expect((await verifyExport(file('edited.jsonl', edited.join('\n')), checkpoints, keys)).firstBad).toMatchObject({ seq: 3, reason: 'hash_mismatch' });
    const removed = lines.filter((_, i) => i !== 3);
    expect((await verifyExport(file('removed.jsonl', removed.join('\n')), checkpoints, keys)).firstBad).toMatchObject({ seq: 4, reason: 'missing' });
    const swapped = [...lines];
    [swapped[1], swapped[2]] = [swapped[2]!, swapped[1]!];
    expect((await verifyExport(file('swapped.jsonl', swapped.join('\n')), checkpoints, keys)).ok).toBe(false);
    const run = spawnSync(process.execPath, [path.join(import.meta.dirname, 'verify-audit-export.ts'), path.join(dir, 'edited.jsonl'), path.join(dir, 'c.json'), path.join(dir, 'k.json')], { encoding: 'utf8' });
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/first bad event at seq 3/);
  });

  it('refuses checkpoints that the published keys did not sign', async () => {
    const otherKey = generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const result = await verifyExport(file('ok2.jsonl', lines.join('\n')), checkpoints, JSON.stringify({ items: [{ publicKeyPem: otherKey }] }));
    expect(result.firstBad).toMatchObject({ reason: 'bad_signature' });
  });
});
