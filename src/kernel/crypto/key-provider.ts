/**
 * Key providers: whatever holds the key-encryption key (KEK) that wraps each tenant's data
 * keys. The application never sees a provider's KEK through this interface, only wrap and
 * unwrap, so a provider backed by a hardware module or a cloud KMS plugs in behind it.
 *
 * The local provider keeps its KEK in process memory, from KEY_ENCRYPTION_KEY(_FILE);
 * wrapping is AES-256-GCM (node:crypto) with a random 96-bit nonce and the caller's
 * associated data, so a wrapped key copied to another tenant or version does not unwrap.
 */
import { createCipheriv, createDecipheriv, createSecretKey, hash, randomBytes, type KeyObject } from 'node:crypto';
import { readOrCreateKeyFile } from './dev-key-file.ts';

export interface KeyProvider {
  /** What kind of provider this is (shown by health checks and the CLI). */
  readonly kind: string;
  /** The id of the KEK that wrap() uses now; stored beside every wrapped key. */
  readonly keyId: string;
  /** Wraps a data key; aad binds the result to its owner (tenant, version). */
  wrap(dataKey: Buffer, aad: Buffer): Promise<Buffer>;
  /** Unwraps with the KEK named keyId (the current one or a retired one); throws if it does not authenticate. */
  unwrap(wrapped: Buffer, aad: Buffer, keyId: string): Promise<Buffer>;
  /** Whether the provider can wrap and unwrap right now. */
  health(): Promise<{ readonly ok: boolean; readonly detail: string }>;
  /** Releases a hardware session, if the provider holds one. */
  close?(): void;
}

export class KeyUnavailableError extends Error {
  override name = 'KeyUnavailableError';
}

/** A provider's health: wrap and unwrap a random key; any failure is reported, not thrown. */
export async function roundTripHealth(provider: KeyProvider, detail: string): Promise<{ ok: boolean; detail: string }> {
  try {
    const probe = randomBytes(32);
    const aad = Buffer.from('health');
    const ok = (await provider.unwrap(await provider.wrap(probe, aad), aad, provider.keyId)).equals(probe);
    return { ok, detail: ok ? detail : 'wrap/unwrap round trip failed' };
  } catch (error) {
    return { ok: false, detail: error instanceof Error ? error.message : String(error) };
  }
}

const NONCE_BYTES = 12;
const TAG_BYTES = 16;

/** A KEK's id: a digest of it, domain-separated; reveals nothing useful about a 256-bit random key. */
export function localKeyId(kek: Buffer): string {
  return `local:${hash('sha256', Buffer.concat([Buffer.from('customernode kek id v1\0'), kek]), 'hex').slice(0, 16)}`;
}

export class LocalKeyProvider implements KeyProvider {
  readonly kind = 'local';
  readonly keyId: string;
  readonly #keks: ReadonlyMap<string, KeyObject>;

  constructor(kek: Buffer, retired: readonly Buffer[] = []) {
    if (kek.length !== 32) throw new Error('a key-encryption key is 32 bytes');
    this.keyId = localKeyId(kek);
    const keks = new Map<string, KeyObject>();
    for (const key of [kek, ...retired]) keks.set(localKeyId(key), createSecretKey(key));
    this.#keks = keks;
  }

  async wrap(dataKey: Buffer, aad: Buffer): Promise<Buffer> {
    const nonce = randomBytes(NONCE_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.#keks.get(this.keyId)!, nonce);
    cipher.setAAD(aad);
    const body = Buffer.concat([cipher.update(dataKey), cipher.final()]);
    return Buffer.concat([nonce, body, cipher.getAuthTag()]);
  }

  async unwrap(wrapped: Buffer, aad: Buffer, keyId: string): Promise<Buffer> {
    const kek = this.#keks.get(keyId);
    if (!kek) throw new KeyUnavailableError(`the key-encryption key ${keyId} is not configured (KEY_ENCRYPTION_KEY, KEY_ENCRYPTION_KEYS_RETIRED)`);
    if (wrapped.length < NONCE_BYTES + TAG_BYTES + 1) throw new KeyUnavailableError('a wrapped key is too short');
    const decipher = createDecipheriv('aes-256-gcm', kek, wrapped.subarray(0, NONCE_BYTES));
    decipher.setAAD(aad);
    decipher.setAuthTag(wrapped.subarray(wrapped.length - TAG_BYTES));
    try {
      return Buffer.concat([decipher.update(wrapped.subarray(NONCE_BYTES, wrapped.length - TAG_BYTES)), decipher.final()]);
    } catch {
      throw new KeyUnavailableError('a wrapped key did not authenticate (wrong key-encryption key, owner or tampering)');
    }
  }

  health(): Promise<{ ok: boolean; detail: string }> {
    return roundTripHealth(this, `local key-encryption key ${this.keyId}`);
  }

  /** Never serialised or printed with its keys. */
  toJSON(): string {
    return `[LocalKeyProvider ${this.keyId}]`;
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toJSON();
  }
}

const DEV_KEK_FILE = 'key-encryption-key';

/** The development KEK under DATA_DIR/keys (0600), made on first use; production never gets here (config refuses). */
export function developmentKek(dataDir: string, log: { warn(object: object, message: string): void }): Buffer {
  const { file, content } = readOrCreateKeyFile(dataDir, DEV_KEK_FILE, () => `${randomBytes(32).toString('hex')}\n`);
  if (!/^[0-9a-f]{64}$/.test(content)) throw new Error(`${file} does not hold a 256-bit key in hex`);
  log.warn({ file }, 'DEVELOPMENT key-encryption key in use: it lies beside the data it protects; set KEY_ENCRYPTION_KEY (or a hardware key provider) in production');
  return Buffer.from(content, 'hex');
}
