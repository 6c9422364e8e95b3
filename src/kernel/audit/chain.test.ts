import { Buffer } from 'node:buffer';
import { createHash, generateKeyPairSync, randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { canonicalRecord, chainHash, ChainVerifier, checkpointSignatureValid, GENESIS_HASH, jcs, keyIdOf, recordDocument, signCheckpoint, type ChainRecord, type Checkpoint } from './chain.ts';

const STRINGS = ['', 'plain', 'quote " and backslash \\', 'line\nbreak\ttab\u0001', 'ünïcödé', '😀 emoji', '\u2028\u2029', '</script>'];
const pick = <T>(items: readonly T[], i: number): T => items[i % items.length]!;

function record(i: number): ChainRecord {
  return {
    log: i % 5 === 0 ? 'platform' : 'tenant',
    tenantId: i % 7 === 0 ? null : randomUUID(),
    seq: 1 + i * 7919,
    id: randomUUID(),
    at: new Date(1_700_000_000_000 + i * 1234).toISOString(),
    actorType: pick(['user', 'apikey', 'system', 'anonymous'], i),
    actorId: i % 3 === 0 ? null : randomUUID(),
    actorEmail: i % 4 === 0 ? null : `${pick(STRINGS, i)}@example.com`,
    action: pick(['account.created', 'auth.login.failed', 'settings.updated'], i),
    targetType: i % 2 === 0 ? null : 'account',
    targetId: i % 2 === 0 ? null : pick(STRINGS, i + 1),
    outcome: pick(['success', 'denied', 'failure'], i),
    ip: i % 6 === 0 ? null : '203.0.113.7',
    userAgent: pick(STRINGS, i + 2),
    requestId: i % 8 === 0 ? null : randomUUID(),
    metadata: { b: pick(STRINGS, i), a: [1, 2.5, -0, 1e21, 1e-7, true, null, { z: 1, y: pick(STRINGS, i + 3) }], n: i, nested: { before: { role: 'member' }, after: { role: 'admin' } } },
  };
}

describe('the chain encoding', () => {
  it('writes exactly the RFC 8785 (JCS) form of the whole event, for awkward strings and numbers too', () => {
    for (let i = 0; i < 500; i++) {
      const r = record(i);
      expect(canonicalRecord(r)).toBe(jcs(recordDocument(r)));
    }
  });

  it('hashes the previous hash and the UTF-8 bytes of that text, for multi-byte text too, link after link', () => {
    let previous = GENESIS_HASH;
    for (let i = 0; i < 500; i++) {
      const r = record(i);
      const expected = createHash('sha256').update(previous).update(Buffer.from(jcs(recordDocument(r)), 'utf8')).digest();
      previous = chainHash(previous, r);
      expect(previous.equals(expected)).toBe(true);
    }
  });

  it('has a fixed known answer, so a change to the format cannot slip through', () => {
    const r: ChainRecord = {
      log: 'tenant', tenantId: '00000000-0000-4000-8000-000000000001', seq: 1, id: '00000000-0000-4000-8000-000000000002', at: '2026-01-02T03:04:05.678Z',
      actorType: 'user', actorId: '00000000-0000-4000-8000-000000000003', actorEmail: 'ada@example.com', action: 'account.created', targetType: 'account',
      targetId: '00000000-0000-4000-8000-000000000004', outcome: 'success', ip: '192.0.2.1', userAgent: 'curl/8', requestId: 'req-1', metadata: { name: 'Acme' },
    };
    expect(canonicalRecord(r)).toBe(
      '{"action":"account.created","actor":{"email":"ada@example.com","id":"00000000-0000-4000-8000-000000000003","type":"user"},"at":"2026-01-02T03:04:05.678Z","id":"00000000-0000-4000-8000-000000000002","ip":"192.0.2.1","log":"tenant","metadata":{"name":"Acme"},"outcome":"success","requestId":"req-1","seq":1,"target":{"id":"00000000-0000-4000-8000-000000000004","type":"account"},"tenantId":"00000000-0000-4000-8000-000000000001","userAgent":"curl/8","v":1}',
    );
    expect(chainHash(GENESIS_HASH, r).toString('hex')).toBe(KNOWN_HASH);
  });

  it('verifies a chain and names the first bad seq; a checkpoint signed by another key is refused', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const records = Array.from({ length: 10 }, (_, i) => ({ ...record(i), log: 'tenant' as const, tenantId: 'tenant-1', seq: i + 1 }));
    const hashes: Buffer[] = [];
    let hash = GENESIS_HASH;
    for (const r of records) hashes.push((hash = chainHash(hash, r)));
    const checkpoint: Checkpoint = { log: 'tenant', tenantId: 'tenant-1', seq: 5, hash: hashes[4]!.toString('hex'), at: new Date().toISOString(), keyId: keyIdOf(publicKey), reason: 'interval' };
    const signature = signCheckpoint(privateKey, checkpoint);
    expect(checkpointSignatureValid(publicKey, checkpoint, signature)).toBe(true);
    const keys = new Map([[keyIdOf(publicKey), publicKey]]);
    const run = (rs: ChainRecord[], hs: Buffer[], signed = signature) => {
      const verifier = new ChainVerifier('tenant', 'tenant-1', { seq: 0, hash: GENESIS_HASH }, [{ ...checkpoint, signature: signed }], keys);
      rs.forEach((r, i) => verifier.push(r, hs[i]!));
      return verifier.finish({ seq: 10, hash: hashes[9]! });
    };
    expect(run(records, hashes)).toMatchObject({ ok: true, count: 10 });
    const edited = records.map((r, i) => (i === 6 ? { ...r, outcome: 'denied' } : r));
    expect(run(edited, hashes).firstBad).toEqual({ seq: 7, id: records[6]!.id, reason: 'hash_mismatch' });
    expect(run(records.filter((_, i) => i !== 2), hashes.filter((_, i) => i !== 2)).firstBad).toEqual({ seq: 3, id: null, reason: 'missing' });
    const forged = signCheckpoint(generateKeyPairSync('ed25519').privateKey, checkpoint);
    expect(run(records, hashes, forged).firstBad).toEqual({ seq: 5, id: null, reason: 'bad_signature' });
  });
});

const KNOWN_HASH = '3ac4f3e81c28ac991a78edab071544b8bc733af286bdcc975f45c65f1904fd16';
