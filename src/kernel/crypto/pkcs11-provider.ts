/**
 * A key provider whose key-encryption key never leaves a PKCS#11 token (an HSM; SoftHSM2 in
 * tests). Data keys are wrapped by the token itself: AES-256-GCM (CKM_AES_GCM) under a
 * non-extractable AES key found by label, with a random 96-bit IV and the caller's associated
 * data. The wrapped form is IV (12) | ciphertext | tag (16), the same shape as the local
 * provider's, so the keyring does not care which provider made it.
 *
 * pkcs11js calls are synchronous and a session serves one operation at a time: Node runs them
 * one after another on its one thread, and the keyring's cache keeps them rare.
 */
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import type * as Pkcs11 from 'pkcs11js';
import type { AesGCM, Handle, Mechanism } from 'pkcs11js';
import type { Pkcs11Settings } from '../config/config.ts';
import { KeyUnavailableError, roundTripHealth, type KeyProvider } from './key-provider.ts';

type Pkcs11Module = typeof Pkcs11;

/** The native addon, loaded only when a PKCS#11 provider is configured (a local setup never needs it). */
function loadPkcs11(): Pkcs11Module {
  return createRequire(import.meta.url)('pkcs11js') as Pkcs11Module;
}

const IV_BYTES = 12;
const TAG_BYTES = 16;

type Pkcs11Instance = InstanceType<Pkcs11Module['PKCS11']>;

/** The slot of the token with this label (token labels are blank-padded to 32 bytes). */
function slotOf(module: Pkcs11Instance, tokenLabel: string): Handle {
  const slot = module.C_GetSlotList(true).find((candidate) => module.C_GetTokenInfo(candidate).label.replace(/[\s\0]+$/, '') === tokenLabel);
  if (slot === undefined) throw new KeyUnavailableError(`no PKCS#11 token labelled "${tokenLabel}"`);
  return slot;
}

export class Pkcs11KeyProvider implements KeyProvider {
  readonly kind = 'pkcs11';
  readonly keyId: string;
  readonly #lib: Pkcs11Module;
  readonly #module: Pkcs11Instance;
  readonly #session: Handle;
  readonly #tokenLabel: string;
  readonly #keys = new Map<string, Handle>();
  #closed = false;

  constructor(settings: Pkcs11Settings) {
    const pkcs11js = loadPkcs11();
    this.#lib = pkcs11js;
    this.#module = new pkcs11js.PKCS11();
    this.#module.load(settings.module);
    this.#module.C_Initialize();
    try {
      const slot = slotOf(this.#module, settings.tokenLabel);
      this.#tokenLabel = settings.tokenLabel;
      this.#session = this.#module.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
      try {
        this.#module.C_Login(this.#session, pkcs11js.CKU_USER, settings.pin);
      } catch {
        // Never echo the PIN or the library's message about it.
        throw new KeyUnavailableError(`the PKCS#11 token "${settings.tokenLabel}" refused the PIN`);
      }
      for (const label of [settings.keyLabel, ...settings.retiredKeyLabels]) this.#keys.set(this.#idOf(label), this.#findKey(label));
      this.keyId = this.#idOf(settings.keyLabel);
    } catch (error) {
      this.#module.C_Finalize();
      throw error;
    }
  }

  #idOf(keyLabel: string): string {
    return `pkcs11:${this.#tokenLabel}/${keyLabel}`;
  }

  #findKey(label: string): Handle {
    this.#module.C_FindObjectsInit(this.#session, [
      { type: this.#lib.CKA_CLASS, value: this.#lib.CKO_SECRET_KEY },
      { type: this.#lib.CKA_KEY_TYPE, value: this.#lib.CKK_AES },
      { type: this.#lib.CKA_LABEL, value: label },
    ]);
    const found = this.#module.C_FindObjects(this.#session, 2);
    this.#module.C_FindObjectsFinal(this.#session);
    if (found.length !== 1) throw new KeyUnavailableError(`expected one AES key labelled "${label}" in token "${this.#tokenLabel}", found ${found.length}`);
    return found[0]!;
  }

  #gcm(iv: Buffer, aad: Buffer): Mechanism {
    return { mechanism: this.#lib.CKM_AES_GCM, parameter: { type: this.#lib.CK_PARAMS_AES_GCM, iv, aad, ivBits: IV_BYTES * 8, tagBits: TAG_BYTES * 8 } as AesGCM };
  }

  async wrap(dataKey: Buffer, aad: Buffer): Promise<Buffer> {
    if (this.#closed) throw new KeyUnavailableError('the PKCS#11 provider is closed');
    const iv = randomBytes(IV_BYTES);
    this.#module.C_EncryptInit(this.#session, this.#gcm(iv, aad), this.#keys.get(this.keyId)!);
    const sealed = this.#module.C_Encrypt(this.#session, dataKey, Buffer.alloc(dataKey.length + TAG_BYTES));
    return Buffer.concat([iv, sealed]);
  }

  async unwrap(wrapped: Buffer, aad: Buffer, keyId: string): Promise<Buffer> {
    if (this.#closed) throw new KeyUnavailableError('the PKCS#11 provider is closed');
    const key = this.#keys.get(keyId);
    if (key === undefined) throw new KeyUnavailableError(`the key-encryption key ${keyId} is not configured (PKCS11_KEY_LABEL, PKCS11_RETIRED_KEY_LABELS)`);
    if (wrapped.length < IV_BYTES + TAG_BYTES + 1) throw new KeyUnavailableError('a wrapped key is too short');
    try {
      this.#module.C_DecryptInit(this.#session, this.#gcm(wrapped.subarray(0, IV_BYTES), aad), key);
      return Buffer.from(this.#module.C_Decrypt(this.#session, wrapped.subarray(IV_BYTES), Buffer.alloc(wrapped.length)));
    } catch {
      throw new KeyUnavailableError('a wrapped key did not authenticate (wrong key-encryption key, owner or tampering)');
    }
  }

  health(): Promise<{ ok: boolean; detail: string }> {
    return roundTripHealth(this, `PKCS#11 key ${this.keyId}`);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#module.C_Logout(this.#session);
      this.#module.C_CloseSession(this.#session);
    } finally {
      this.#module.C_Finalize();
    }
  }

  toJSON(): string {
    return `[Pkcs11KeyProvider ${this.keyId}]`;
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toJSON();
  }
}

/**
 * Makes a non-extractable AES-256 key in a token, for encryption only (operators may use their
 * HSM's own tools instead; tests use this). Returns its label.
 */
export function generatePkcs11Key(settings: Omit<Pkcs11Settings, 'keyLabel' | 'retiredKeyLabels'>, label: string): string {
  const pkcs11js = loadPkcs11();
  const module = new pkcs11js.PKCS11();
  module.load(settings.module);
  module.C_Initialize();
  try {
    const slot = slotOf(module, settings.tokenLabel);
    const session = module.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    module.C_Login(session, pkcs11js.CKU_USER, settings.pin);
    module.C_GenerateKey(session, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
      { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
      { type: pkcs11js.CKA_LABEL, value: label },
      { type: pkcs11js.CKA_TOKEN, value: true },
      { type: pkcs11js.CKA_PRIVATE, value: true },
      { type: pkcs11js.CKA_SENSITIVE, value: true },
      { type: pkcs11js.CKA_EXTRACTABLE, value: false },
      { type: pkcs11js.CKA_ENCRYPT, value: true },
      { type: pkcs11js.CKA_DECRYPT, value: true },
    ]);
    module.C_Logout(session);
    module.C_CloseSession(session);
    return label;
  } finally {
    module.C_Finalize();
  }
}
