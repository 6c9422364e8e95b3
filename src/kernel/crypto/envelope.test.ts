import { randomBytes, randomUUID } from 'node:crypto';
import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../../../test/harness.ts';
import { DecryptionError, Keyring, type FieldPlace } from './envelope.ts';
import { KeyUnavailableError, LocalKeyProvider, type KeyProvider } from './key-provider.ts';

describe('envelope encryption of fields', () => {
  let t: TestApp;
  const kek = randomBytes(32);
  const provider = new LocalKeyProvider(kek);
  const keyring = new Keyring(provider, { ttlMs: 60_000, maxEntries: 100 });

  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => t?.close());

  const tenant = async () => (await t.signup()).tenantId;
  const place = (tenantId: string, overrides: Partial<FieldPlace> = {}): FieldPlace => ({ tenantId, table: 'contacts', column: 'email', rowId: randomUUID(), ...overrides });
  const encrypt = (where: FieldPlace, value: string, ring = keyring) => t.db.withTenant(where.tenantId, (tx) => ring.encrypt(tx, where, value));
  const decrypt = (where: FieldPlace, ciphertext: Buffer, ring = keyring) => t.db.withTenant(where.tenantId, (tx) => ring.decryptText(tx, where, ciphertext));

  it('round-trips a value under a per-tenant data key stored only wrapped, with a fresh nonce each time', async () => {
    const tenantId = await tenant();
    const where = place(tenantId);
    const ciphertext = await encrypt(where, 'ada@example.com');
    expect(ciphertext.includes(Buffer.from('ada@example.com'))).toBe(false);
    expect(ciphertext[0]).toBe(1); // format
    expect(ciphertext.readUInt32BE(1)).toBe(1); // key version
    expect(ciphertext.length).toBe(5 + 12 + 'ada@example.com'.length + 16);
    expect(await decrypt(where, ciphertext)).toBe('ada@example.com');
    expect((await encrypt(where, 'ada@example.com')).equals(ciphertext)).toBe(false);

    const keys = await t.admin.query<{ purpose: string; version: number; kek_id: string; wrapped: Buffer }>('select purpose, version, kek_id, wrapped from tenant_keys where tenant_id = $1', [tenantId]);
    expect(keys).toHaveLength(1);
    expect(keys[0]).toMatchObject({ purpose: 'data', version: 1, kek_id: provider.keyId });
    expect(keys[0]!.wrapped.length).toBe(12 + 32 + 16);
  });

  it('refuses a ciphertext moved to another row, column, table or tenant', async () => {
    const tenantId = await tenant();
    const otherTenant = await tenant();
    const where = place(tenantId);
    const ciphertext = await encrypt(where, '+44 20 7946 0000');
    for (const moved of [{ rowId: randomUUID() }, { column: 'phone' }, { table: 'accounts' }]) {
      await expect(decrypt({ ...where, ...moved }, ciphertext)).rejects.toBeInstanceOf(DecryptionError);
    }
    // Into the other tenant: its own key (after it has one) does not authenticate it...
    await encrypt(place(otherTenant), 'x');
    await expect(decrypt({ ...where, tenantId: otherTenant }, ciphertext)).rejects.toBeInstanceOf(DecryptionError);
    // ...and inside the other tenant's transaction the first tenant's key is never used, cached or not.
    await expect(t.db.withTenant(otherTenant, (tx) => keyring.decrypt(tx, where, ciphertext))).rejects.toThrow(/transaction of its own tenant/);
    await expect(t.db.withGlobal((tx) => keyring.decrypt(tx, where, ciphertext))).rejects.toThrow(/transaction of its own tenant/);
  });

  it('detects a flipped bit anywhere, truncation and an unknown format or key version', async () => {
    const tenantId = await tenant();
    const where = place(tenantId);
    const ciphertext = await encrypt(where, 'sensitive');
    for (let at = 0; at < ciphertext.length; at++) {
      const flipped = Buffer.from(ciphertext);
      flipped[at]! ^= 0x80;
      await expect(decrypt(where, flipped)).rejects.toBeInstanceOf(DecryptionError);
    }
    for (const cut of [0, 5, 20, ciphertext.length - 1]) await expect(decrypt(where, ciphertext.subarray(0, cut))).rejects.toBeInstanceOf(DecryptionError);
  });

  it('does not unwrap a data key copied into another tenant, nor with another key-encryption key', async () => {
    const a = await tenant();
    const b = await tenant();
    const whereA = place(a);
    const whereB = place(b);
    await encrypt(whereA, 'a');
    const ciphertextB = await encrypt(whereB, 'b');
    // The database owner swaps B's wrapped key for A's: unwrapping is bound to the tenant.
    await t.admin.query(`update tenant_keys set wrapped = (select wrapped from tenant_keys where tenant_id = $1) where tenant_id = $2`, [a, b]);
    const fresh = new Keyring(provider, { ttlMs: 60_000, maxEntries: 100 });
    await expect(decrypt(whereB, ciphertextB, fresh)).rejects.toBeInstanceOf(KeyUnavailableError);
    const stranger = new Keyring(new LocalKeyProvider(randomBytes(32)), { ttlMs: 60_000, maxEntries: 100 });
    await expect(decrypt(whereA, await encrypt(whereA, 'a'), stranger)).rejects.toThrow(/not configured/);
  });

  it('keeps unwrapped keys in a bounded cache that expires, and never prints them', async () => {
    let now = 0;
    let unwraps = 0;
    const counting: KeyProvider = {
      kind: provider.kind,
      keyId: provider.keyId,
      wrap: (key, aad) => provider.wrap(key, aad),
      unwrap: (wrapped, aad, keyId) => {
        unwraps += 1;
        return provider.unwrap(wrapped, aad, keyId);
      },
      health: () => provider.health(),
    };
    const ring = new Keyring(counting, { ttlMs: 1000, maxEntries: 2, now: () => now });
    const tenants = [await tenant(), await tenant(), await tenant()];
    const sealed = [];
    for (const tenantId of tenants) sealed.push({ where: place(tenantId), ciphertext: await encrypt(place(tenantId), 'warm', ring) });
    expect(ring.cachedKeys).toBe(2);
    const before = unwraps;
    const last = sealed[2]!;
    await expect(decrypt(last.where, last.ciphertext, ring)).rejects.toBeInstanceOf(DecryptionError); // another row: still uses the cached key
    expect(unwraps).toBe(before);
    now += 1001;
    await encrypt(last.where, 'again', ring);
    expect(unwraps).toBe(before + 1);

    for (const text of [JSON.stringify({ ring }), inspect(ring, { depth: 10, showHidden: true })]) {
      expect(text).not.toContain(kek.toString('hex'));
      expect(text).not.toMatch(/[0-9a-f]{64}/);
    }
  });

  it("destroying a tenant's keys makes its ciphertexts unreadable (crypto-shredding)", async () => {
    const tenantId = await tenant();
    const where = place(tenantId);
    const ciphertext = await encrypt(where, 'forget me');
    await t.admin.query('delete from tenant_keys where tenant_id = $1', [tenantId]);
    keyring.forget(tenantId);
    await expect(t.db.withTenant(tenantId, (tx) => keyring.decrypt(tx, where, ciphertext))).rejects.toBeInstanceOf(DecryptionError);
  });
});
