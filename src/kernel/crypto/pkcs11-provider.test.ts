import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../config/config.ts';
import { KeyUnavailableError } from './key-provider.ts';
import { generatePkcs11Key, Pkcs11KeyProvider } from './pkcs11-provider.ts';
import { loadKeyProvider } from './providers.ts';

const MODULE = '/usr/lib/softhsm/libsofthsm2.so';
// CI installs softhsm2 (.ci/run) and sets REQUIRE_SOFTHSM=1, so there these tests never skip.
const available = existsSync(MODULE) || process.env.REQUIRE_SOFTHSM === '1';

describe.skipIf(!available)('the PKCS#11 key provider, against SoftHSM2', () => {
  const pin = '246810';
  const token = 'cn-test';
  let dir: string;
  let settings: { module: string; tokenLabel: string; pin: string; keyLabel: string; retiredKeyLabels: string[] };

  beforeAll(() => {
    // A token of our own in a temporary directory: SoftHSM2 reads its configuration from SOFTHSM2_CONF.
    dir = mkdtempSync(path.join(os.tmpdir(), 'cn-softhsm-'));
    mkdirSync(path.join(dir, 'tokens'));
    writeFileSync(path.join(dir, 'softhsm2.conf'), `directories.tokendir = ${path.join(dir, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\n`);
    process.env.SOFTHSM2_CONF = path.join(dir, 'softhsm2.conf');
    const init = spawnSync('softhsm2-util', ['--init-token', '--free', '--label', token, '--pin', pin, '--so-pin', '13579111'], { encoding: 'utf8', env: { ...process.env } });
    expect(init.status, init.stderr).toBe(0);
    settings = { module: MODULE, tokenLabel: token, pin, keyLabel: 'kek-1', retiredKeyLabels: [] };
    generatePkcs11Key(settings, 'kek-1');
    generatePkcs11Key(settings, 'kek-2');
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('wraps and unwraps in the token, bound to the associated data; the key never leaves it', async () => {
    const provider = new Pkcs11KeyProvider(settings);
    try {
      expect(provider.keyId).toBe('pkcs11:cn-test/kek-1');
      expect(await provider.health()).toEqual({ ok: true, detail: 'PKCS#11 key pkcs11:cn-test/kek-1' });
      const dataKey = randomBytes(32);
      const aad = Buffer.from('tenant A, data key v1');
      const wrapped = await provider.wrap(dataKey, aad);
      expect(wrapped.length).toBe(12 + 32 + 16);
      expect(wrapped.includes(dataKey)).toBe(false);
      expect(await provider.unwrap(wrapped, aad, provider.keyId)).toEqual(dataKey);
      await expect(provider.unwrap(wrapped, Buffer.from('tenant B, data key v1'), provider.keyId)).rejects.toBeInstanceOf(KeyUnavailableError);
      const flipped = Buffer.from(wrapped);
      flipped[20]! ^= 1;
      await expect(provider.unwrap(flipped, aad, provider.keyId)).rejects.toBeInstanceOf(KeyUnavailableError);
      expect(inspect(provider)).toBe('[Pkcs11KeyProvider pkcs11:cn-test/kek-1]');
    } finally {
      provider.close();
    }
  });

  it('rotates: a provider on a new key label still unwraps what the retired one wrapped', async () => {
    const old = new Pkcs11KeyProvider(settings);
    const aad = Buffer.from('rotation');
    const wrapped = await old.wrap(Buffer.alloc(32, 9), aad);
    old.close();
    const rotated = new Pkcs11KeyProvider({ ...settings, keyLabel: 'kek-2', retiredKeyLabels: ['kek-1'] });
    try {
      expect(rotated.keyId).toBe('pkcs11:cn-test/kek-2');
      expect(await rotated.unwrap(wrapped, aad, 'pkcs11:cn-test/kek-1')).toEqual(Buffer.alloc(32, 9));
      await expect(rotated.unwrap(wrapped, aad, rotated.keyId)).rejects.toBeInstanceOf(KeyUnavailableError);
    } finally {
      rotated.close();
    }
  });

  it('refuses a wrong PIN, an unknown token or key label, without echoing the PIN', () => {
    const wrongPin = 'not-the-pin-1234';
    expect(() => new Pkcs11KeyProvider({ ...settings, pin: wrongPin })).toThrow(KeyUnavailableError);
    try {
      new Pkcs11KeyProvider({ ...settings, pin: wrongPin });
    } catch (error) {
      expect((error as Error).message).not.toContain(wrongPin);
    }
    expect(() => new Pkcs11KeyProvider({ ...settings, tokenLabel: 'no-such-token' })).toThrow(/no PKCS#11 token/);
    expect(() => new Pkcs11KeyProvider({ ...settings, keyLabel: 'no-such-key' })).toThrow(/found 0/);
  });

  it('is what KEY_PROVIDER=pkcs11 configures, with the PIN from a file', async () => {
    const pinFile = path.join(dir, 'pin');
    writeFileSync(pinFile, `${pin}\n`, { mode: 0o600 });
    const config = loadConfig({ KEY_PROVIDER: 'pkcs11', PKCS11_MODULE: MODULE, PKCS11_TOKEN_LABEL: token, PKCS11_PIN_FILE: pinFile, PKCS11_KEY_LABEL: 'kek-1' });
    const provider = loadKeyProvider(config, { warn() {} });
    try {
      expect(provider.kind).toBe('pkcs11');
      expect((await provider.health()).ok).toBe(true);
    } finally {
      provider.close?.();
    }
  });
});

describe('KEY_PROVIDER=pkcs11 configuration', () => {
  it('needs the module, token, PIN and key label, and then no local key-encryption key even in production', () => {
    const base = { KEY_PROVIDER: 'pkcs11', PKCS11_MODULE: MODULE, PKCS11_TOKEN_LABEL: 't', PKCS11_PIN: 'p', PKCS11_KEY_LABEL: 'k' };
    for (const name of ['PKCS11_MODULE', 'PKCS11_TOKEN_LABEL', 'PKCS11_PIN', 'PKCS11_KEY_LABEL']) {
      const env = Object.fromEntries(Object.entries(base).filter(([key]) => key !== name));
      expect(() => loadConfig(env)).toThrow(name);
    }
    expect(loadConfig(base).keys).toMatchObject({ provider: 'pkcs11', pkcs11: { tokenLabel: 't', keyLabel: 'k', retiredKeyLabels: [] } });
    expect(() => loadConfig({ ...base, KEY_PROVIDER: 'vault' })).toThrow('KEY_PROVIDER');
  });
});
