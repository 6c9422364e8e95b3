import { randomBytes } from 'node:crypto';
import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../config/config.ts';
import { KeyUnavailableError, LocalKeyProvider, localKeyId } from './key-provider.ts';
import { loadKeyProvider } from './providers.ts';

describe('the local key provider', () => {
  const aad = Buffer.from('tenant A, data key v1');

  it('wraps a data key so that only the same key-encryption key and associated data unwrap it', async () => {
    const kek = randomBytes(32);
    const provider = new LocalKeyProvider(kek);
    const dataKey = randomBytes(32);
    const wrapped = await provider.wrap(dataKey, aad);
    expect(wrapped.includes(dataKey)).toBe(false);
    expect(await provider.unwrap(wrapped, aad, provider.keyId)).toEqual(dataKey);
    // Random nonces: wrapping twice gives different blobs.
    expect((await provider.wrap(dataKey, aad)).equals(wrapped)).toBe(false);

    await expect(provider.unwrap(wrapped, Buffer.from('tenant B, data key v1'), provider.keyId)).rejects.toBeInstanceOf(KeyUnavailableError);
    for (const at of [0, 12, wrapped.length - 1]) {
      const flipped = Buffer.from(wrapped);
      flipped[at]! ^= 1;
      await expect(provider.unwrap(flipped, aad, provider.keyId)).rejects.toBeInstanceOf(KeyUnavailableError);
    }
    await expect(provider.unwrap(wrapped.subarray(0, 20), aad, provider.keyId)).rejects.toBeInstanceOf(KeyUnavailableError);

    const other = new LocalKeyProvider(randomBytes(32));
    await expect(other.unwrap(wrapped, aad, provider.keyId)).rejects.toThrow(/not configured/);
    await expect(other.unwrap(wrapped, aad, other.keyId)).rejects.toBeInstanceOf(KeyUnavailableError);
  });

  it('after a rotation still unwraps with the retired key, and wraps only with the new one', async () => {
    const old = randomBytes(32);
    const wrapped = await new LocalKeyProvider(old).wrap(Buffer.alloc(32, 1), aad);
    const rotated = new LocalKeyProvider(randomBytes(32), [old]);
    expect(rotated.keyId).not.toBe(localKeyId(old));
    expect(await rotated.unwrap(wrapped, aad, localKeyId(old))).toEqual(Buffer.alloc(32, 1));
    const rewrapped = await rotated.wrap(Buffer.alloc(32, 1), aad);
    await expect(new LocalKeyProvider(old).unwrap(rewrapped, aad, rotated.keyId)).rejects.toThrow(/not configured/);
    expect(await rotated.health()).toEqual({ ok: true, detail: `local key-encryption key ${rotated.keyId}` });
  });

  it('never prints or serialises its key-encryption key', () => {
    const kek = randomBytes(32);
    const provider = new LocalKeyProvider(kek);
    for (const text of [JSON.stringify({ provider }), inspect(provider, { depth: 5, showHidden: true }), String(provider)]) {
      expect(text).not.toContain(kek.toString('hex'));
      expect(text).not.toContain(kek.toString('base64'));
    }
  });

  it('in development makes one key file under DATA_DIR/keys, owner-only, kept across restarts, and warns', async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'cn-kek-'));
    const warnings: string[] = [];
    const log = { warn: (_object: object, message: string) => warnings.push(message) };
    const config = loadConfig({ DATA_DIR: dataDir });
    const first = loadKeyProvider(config, log);
    const second = loadKeyProvider(config, log);
    expect(second.keyId).toBe(first.keyId);
    expect(statSync(path.join(dataDir, 'keys', 'key-encryption-key')).mode & 0o777).toBe(0o600);
    expect(warnings[0]).toMatch(/DEVELOPMENT key-encryption key/);
    const wrapped = await first.wrap(Buffer.alloc(32, 2), aad);
    expect(await second.unwrap(wrapped, aad, first.keyId)).toEqual(Buffer.alloc(32, 2));

    const configured = loadKeyProvider(loadConfig({ DATA_DIR: dataDir, KEY_ENCRYPTION_KEY: 'cd'.repeat(32) }), log);
    expect(configured.keyId).toBe(localKeyId(Buffer.from('cd'.repeat(32), 'hex')));
    expect(warnings).toHaveLength(2);
  });
});
