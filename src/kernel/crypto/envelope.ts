/**
 * Envelope encryption of fields. Each tenant has a data key (AES-256-GCM, 256 bits),
 * stored only wrapped by the key provider (tenant_keys), versioned. A field's ciphertext:
 *
 *   [format 1 byte = 1][key version, 4 bytes big-endian][nonce 12][ciphertext][tag 16]
 *
 * with associated data binding the header and the field's place (tenant, table, column,
 * row id): a ciphertext copied to another row, column, table or tenant does not decrypt.
 * Nonces are random (96 bits); far below 2^32 encryptions per key version.
 *
 * Unwrapped keys live only here, as KeyObjects, in a bounded cache with a time to live;
 * they are never returned, logged or serialised.
 */
import { sql } from 'kysely';
import { createCipheriv, createDecipheriv, createHmac, createSecretKey, randomBytes, type KeyObject } from 'node:crypto';
import type { Config } from '../config/config.ts';
import { asBuffer, tenantOfTransaction, type Tx } from '../db/database.ts';
import type { KeyProvider } from './key-provider.ts';
import { loadKeyProvider } from './providers.ts';

export interface FieldPlace {
  readonly tenantId: string;
  readonly table: string;
  readonly column: string;
  readonly rowId: string;
}

/** A ciphertext that does not authenticate in its place, or whose key is gone. Never says which. */
export class DecryptionError extends Error {
  override name = 'DecryptionError';
}

const FORMAT_V1 = 1;
const HEADER_BYTES = 5;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;

const MAX_VERSION = 2 ** 31 - 1;
/** The owner name of platform-level keys (platform_keys); tenant owners are UUIDs, so never equal. */
export const PLATFORM = 'platform';

type Purpose = 'data' | 'index';

/**
 * Cached keys skip the database, and with it row-level security: so a field is encrypted or
 * decrypted only inside a transaction entered for its own tenant.
 */
function assertTenantTransaction(tx: Tx, place: FieldPlace): void {
  if (tenantOfTransaction(tx) !== place.tenantId.toLowerCase()) throw new Error('a field is encrypted or decrypted only in a transaction of its own tenant');
}

function fieldAad(header: Buffer, place: FieldPlace): Buffer {
  for (const part of [place.tenantId, place.table, place.column, place.rowId]) {
    if (part.length === 0 || part.includes('\0')) throw new Error('a field place is four non-empty names without NUL');
  }
  return Buffer.concat([header, Buffer.from(`customernode field v1\0${place.tenantId}\0${place.table}\0${place.column}\0${place.rowId}`, 'utf8')]);
}

/** The advisory lock between encrypting under a tenant's key and retiring that key's versions. */
export function keyLockName(tenantId: string): string {
  return `customernode tenant keys ${tenantId}`;
}

/** Binds a wrapped key to its owner (a tenant id or PLATFORM), purpose and version. */
export function wrapAad(owner: string, purpose: Purpose, version: number): Buffer {
  return Buffer.from(`customernode tenant key v1\0${owner}\0${purpose}\0${version}`, 'utf8');
}

/** A field ciphertext under a data key (the format above); the keyring supplies key and version. */
export function sealField(key: KeyObject, version: number, place: FieldPlace, plaintext: Buffer | string): Buffer {
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt8(FORMAT_V1, 0);
  header.writeUInt32BE(version, 1);
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(fieldAad(header, place));
  const body = Buffer.concat([cipher.update(typeof plaintext === 'string' ? Buffer.from(plaintext, 'utf8') : plaintext), cipher.final()]);
  return Buffer.concat([header, nonce, body, cipher.getAuthTag()]);
}

/** The key version a field ciphertext names, after checking its format (DecryptionError otherwise). */
export function fieldVersion(ciphertext: Buffer): number {
  if (ciphertext.length < HEADER_BYTES + NONCE_BYTES + TAG_BYTES || ciphertext.readUInt8(0) !== FORMAT_V1) {
    throw new DecryptionError('not a field ciphertext of a known format');
  }
  return ciphertext.readUInt32BE(1);
}

/** Opens a field ciphertext with the key its version names; DecryptionError if it does not authenticate in this place. */
export function openField(key: KeyObject, place: FieldPlace, ciphertext: Buffer): Buffer {
  const decipher = createDecipheriv('aes-256-gcm', key, ciphertext.subarray(HEADER_BYTES, HEADER_BYTES + NONCE_BYTES));
  decipher.setAAD(fieldAad(ciphertext.subarray(0, HEADER_BYTES), place));
  decipher.setAuthTag(ciphertext.subarray(ciphertext.length - TAG_BYTES));
  try {
    return Buffer.concat([decipher.update(ciphertext.subarray(HEADER_BYTES + NONCE_BYTES, ciphertext.length - TAG_BYTES)), decipher.final()]);
  } catch {
    throw new DecryptionError('the ciphertext does not authenticate in this place');
  }
}

interface CachedKey {
  readonly key: KeyObject;
  readonly expiresAt: number;
}

export interface KeyringOptions {
  readonly ttlMs: number;
  readonly maxEntries: number;
  /** Tests move time. */
  readonly now?: () => number;
}

export class Keyring {
  readonly #provider: KeyProvider;
  readonly #cache = new Map<string, CachedKey>();
  readonly #ttlMs: number;
  readonly #maxEntries: number;
  readonly #now: () => number;

  constructor(provider: KeyProvider, options: KeyringOptions) {
    this.#provider = provider;
    this.#ttlMs = options.ttlMs;
    this.#maxEntries = options.maxEntries;
    this.#now = options.now ?? Date.now;
  }

  get provider(): KeyProvider {
    return this.#provider;
  }

  /** How many unwrapped keys are held now (for tests and health). */
  get cachedKeys(): number {
    return this.#cache.size;
  }

  /** Drops a tenant's unwrapped keys (after its keys are destroyed). */
  forget(tenantId: string): void {
    for (const name of this.#cache.keys()) if (name.startsWith(`${tenantId}/`)) this.#cache.delete(name);
  }

  async encrypt(tx: Tx, place: FieldPlace, plaintext: Buffer | string): Promise<Buffer> {
    assertTenantTransaction(tx, place);
    return this.#seal(tx, place.tenantId, place, plaintext);
  }

  async decrypt(tx: Tx, place: FieldPlace, stored: Uint8Array): Promise<Buffer> {
    assertTenantTransaction(tx, place);
    return this.#open(tx, place.tenantId, place, stored);
  }

  /** A platform-level field (a user's TOTP secret): the platform's data key, not a tenant's. */
  async encryptPlatform(tx: Tx, place: Omit<FieldPlace, 'tenantId'>, plaintext: Buffer | string): Promise<Buffer> {
    return this.#seal(tx, PLATFORM, { ...place, tenantId: PLATFORM }, plaintext);
  }

  async decryptPlatformText(tx: Tx, place: Omit<FieldPlace, 'tenantId'>, stored: Uint8Array): Promise<string> {
    return (await this.#open(tx, PLATFORM, { ...place, tenantId: PLATFORM }, stored)).toString('utf8');
  }

  async #seal(tx: Tx, owner: string, place: FieldPlace, plaintext: Buffer | string): Promise<Buffer> {
    const { version, key } = await this.#currentKey(tx, owner, 'data');
    return sealField(key, version, place, plaintext);
  }

  async #open(tx: Tx, owner: string, place: FieldPlace, stored: Uint8Array): Promise<Buffer> {
    const ciphertext = asBuffer(stored);
    const version = fieldVersion(ciphertext);
    const key = version >= 1 && version <= MAX_VERSION ? await this.#keyVersion(tx, owner, 'data', version) : null;
    if (!key) throw new DecryptionError('the key of this ciphertext does not exist');
    return openField(key, place, ciphertext);
  }

  /**
   * Whether a ciphertext opens in its place, without handing out the plaintext: for restore
   * drills, which check a restored copy outside any tenant's transaction.
   */
  async opens(tx: Tx, place: FieldPlace, stored: Uint8Array): Promise<boolean> {
    return this.#opensAs(tx, place.tenantId, place, stored);
  }

  /** The same for a platform-level field (a user's TOTP seed). */
  async opensPlatform(tx: Tx, place: Omit<FieldPlace, 'tenantId'>, stored: Uint8Array): Promise<boolean> {
    return this.#opensAs(tx, PLATFORM, { ...place, tenantId: PLATFORM }, stored);
  }

  async #opensAs(tx: Tx, owner: string, place: FieldPlace, stored: Uint8Array): Promise<boolean> {
    try {
      (await this.#open(tx, owner, place, stored)).fill(0);
      return true;
    } catch {
      return false;
    }
  }

  async decryptText(tx: Tx, place: FieldPlace, ciphertext: Uint8Array): Promise<string> {
    return (await this.decrypt(tx, place, ciphertext)).toString('utf8');
  }

  /**
   * A blind index: HMAC-SHA-256 of the value under the tenant's index key (its own key, never
   * the data key), domain-separated by field. Equal values give equal indexes within a tenant
   * and nothing across tenants; the index key is not rotated (every index would change).
   */
  async blindIndex(tx: Tx, place: Omit<FieldPlace, 'rowId'>, value: string): Promise<Buffer> {
    assertTenantTransaction(tx, { ...place, rowId: '-' });
    const key = (await this.#keyVersion(tx, place.tenantId, 'index', 1)) ?? (await this.#currentKey(tx, place.tenantId, 'index')).key;
    return createHmac('sha256', key).update(`customernode blind index v1\0${place.table}\0${place.column}\0`, 'utf8').update(value, 'utf8').digest();
  }

  /** The version of the tenant's newest data key (0: none yet). */
  async currentDataKeyVersion(tx: Tx, tenantId: string): Promise<number> {
    assertTenantTransaction(tx, { tenantId, table: '-', column: '-', rowId: '-' });
    const row = await tx.selectFrom('tenant_keys').select((eb) => eb.fn.max('version').as('version')).where('tenant_id', '=', tenantId).where('purpose', '=', 'data').executeTakeFirst();
    return Number(row?.version ?? 0);
  }

  /** Adds a data key version (rotation): new ciphertexts use it; older versions still decrypt. */
  async addDataKeyVersion(tx: Tx, tenantId: string): Promise<number> {
    const version = (await this.currentDataKeyVersion(tx, tenantId)) + 1;
    await tx.insertInto('tenant_keys').values({ tenant_id: tenantId, ...(await this.#newWrappedKey(tenantId, 'data', version)) }).execute();
    return version;
  }

  /** A fresh random key, wrapped for its owner, purpose and version: the row to store (the raw key is wiped). */
  async #newWrappedKey(owner: string, purpose: Purpose, version: number) {
    const raw = randomBytes(32);
    const wrapped = await this.#provider.wrap(raw, wrapAad(owner, purpose, version));
    raw.fill(0);
    return { purpose, version, kek_id: this.#provider.keyId, wrapped };
  }

  /** Forgets unwrapped data keys below a version (their rows were just destroyed). */
  forgetDataKeysBelow(tenantId: string, keep: number): void {
    for (let version = 1; version < keep; version++) this.#cache.delete(`${tenantId}/data/${version}`);
  }

  /** The key version a field ciphertext was made with. */
  static versionOf(ciphertext: Uint8Array): number {
    try {
      return fieldVersion(asBuffer(ciphertext));
    } catch {
      return 0; // not a field ciphertext: counts as under no current key
    }
  }

  /** The tenant's newest key of a purpose; made (version 1) on first use. */
  async #currentKey(tx: Tx, owner: string, purpose: Purpose): Promise<{ version: number; key: KeyObject }> {
    const newest = owner === PLATFORM
      ? await tx.selectFrom('platform_keys').select(['version', 'kek_id', 'wrapped']).where('purpose', '=', purpose).orderBy('version', 'desc').limit(1).executeTakeFirst()
      : await tx
          .selectFrom('tenant_keys')
          // Held until this transaction ends: retiring a version waits for writers that may still use it.
          .select(['version', 'kek_id', 'wrapped', sql<string>`pg_advisory_xact_lock_shared(hashtext(${keyLockName(owner)}))::text`.as('locked')])
          .where('tenant_id', '=', owner)
          .where('purpose', '=', purpose)
          .orderBy('version', 'desc')
          .limit(1)
          .executeTakeFirst();
    if (newest) return { version: newest.version, key: await this.#unwrapCached(owner, purpose, newest.version, newest.kek_id, newest.wrapped) };
    // Two first uses at once: one insert wins, both then use the winner's key.
    const values = await this.#newWrappedKey(owner, purpose, 1);
    if (owner === PLATFORM) await tx.insertInto('platform_keys').values(values).onConflict((oc) => oc.doNothing()).execute();
    else await tx.insertInto('tenant_keys').values({ tenant_id: owner, ...values }).onConflict((oc) => oc.doNothing()).execute();
    return this.#currentKey(tx, owner, purpose);
  }

  async #keyVersion(tx: Tx, owner: string, purpose: Purpose, version: number): Promise<KeyObject | null> {
    const cached = this.#cached(`${owner}/${purpose}/${version}`);
    if (cached) return cached;
    const row = owner === PLATFORM
      ? await tx.selectFrom('platform_keys').select(['kek_id', 'wrapped']).where('purpose', '=', purpose).where('version', '=', version).executeTakeFirst()
      : await tx
          .selectFrom('tenant_keys')
          .select(['kek_id', 'wrapped'])
          .where('tenant_id', '=', owner)
          .where('purpose', '=', purpose)
          .where('version', '=', version)
          .executeTakeFirst();
    return row ? this.#unwrapCached(owner, purpose, version, row.kek_id, row.wrapped) : null;
  }

  #cached(name: string): KeyObject | null {
    const entry = this.#cache.get(name);
    if (!entry) return null;
    this.#cache.delete(name);
    if (entry.expiresAt <= this.#now()) return null;
    this.#cache.set(name, entry); // most recently used last
    return entry.key;
  }

  async #unwrapCached(owner: string, purpose: Purpose, version: number, kekId: string, wrapped: Uint8Array): Promise<KeyObject> {
    const name = `${owner}/${purpose}/${version}`;
    const cached = this.#cached(name);
    if (cached) return cached;
    const raw = await this.#provider.unwrap(asBuffer(wrapped), wrapAad(owner, purpose, version), kekId);
    const key = createSecretKey(raw);
    raw.fill(0);
    this.#cache.set(name, { key, expiresAt: this.#now() + this.#ttlMs });
    while (this.#cache.size > this.#maxEntries) this.#cache.delete(this.#cache.keys().next().value!);
    return key;
  }

  toJSON(): string {
    return `[Keyring ${this.#provider.keyId}, ${this.#cache.size} keys cached]`;
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toJSON();
  }
}

/** The keyring the configuration describes (main.ts and buildApp; tests may hand in their own). */
export function createKeyring(config: Pick<Config, 'keys' | 'dataDir'>, log: { warn(object: object, message: string): void }): Keyring {
  return new Keyring(loadKeyProvider(config, log), { ttlMs: config.keys.cacheSeconds * 1000, maxEntries: config.keys.cacheEntries });
}
