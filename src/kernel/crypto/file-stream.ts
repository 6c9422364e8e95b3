/**
 * Streaming authenticated encryption for blobs (stored files, backups), in constant memory
 * for any size. The construction is the STREAM online AEAD (Hoang, Reyhanitabar, Rogaway,
 * Vizár 2015) over AES-256-GCM from node:crypto, as in Tink's streaming AEAD and age:
 *
 *   header  = "CNF1" | chunk size (u32 BE) | salt (32 random bytes) | nonce prefix (7 random bytes)
 *   key     = HKDF-SHA-256(master key, salt, "customernode file v1" | context)
 *   chunk i = AES-256-GCM(key, nonce = prefix | i (u32 BE) | last (1 byte), aad = header, plaintext i) | tag
 *
 * Every chunk but the last holds exactly `chunk size` bytes of plaintext; the last (possibly
 * empty) has the last flag set. So a flipped bit fails that chunk's tag, a reordered or
 * dropped chunk fails (the counter is in the nonce), a truncated stream lacks its last chunk,
 * and bytes after the last chunk break it (it no longer authenticates as the last). A fresh salt per stream gives a fresh key, so
 * nonces never repeat across streams. Decryption releases a chunk's plaintext only after its
 * tag verified; a consumer must still treat an error at the end as the whole stream failing.
 */
import { createCipheriv, createDecipheriv, createSecretKey, hkdfSync, randomBytes, type KeyObject } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

const MAGIC = Buffer.from('CNF1', 'ascii');
const SALT_BYTES = 32;
const PREFIX_BYTES = 7;
const TAG_BYTES = 16;
export const HEADER_BYTES = MAGIC.length + 4 + SALT_BYTES + PREFIX_BYTES;
/** 1 MiB: per-chunk costs (a cipher, a tag) stay small beside the AES work; memory stays a few chunks. */
export const DEFAULT_CHUNK_BYTES = 1024 * 1024;
const MAX_CHUNK_BYTES = 16 * 1024 * 1024;
/** The counter is 32 bits: at 64 KiB chunks, 256 TiB per stream. */
const MAX_CHUNKS = 2 ** 32 - 1;

export class StreamDecryptionError extends Error {
  override name = 'StreamDecryptionError';
}

/** The stream's own key, as a KeyObject: a cipher made from a KeyObject skips a key import per chunk (measured: a quarter of the time). */
function streamKey(master: KeyObject | Buffer, salt: Buffer, context: string): KeyObject {
  const raw = Buffer.from(hkdfSync('sha256', master, salt, Buffer.from(`customernode file v1\0${context}`, 'utf8'), 32));
  const key = createSecretKey(raw);
  raw.fill(0);
  return key;
}

function nonce(prefix: Buffer, index: number, last: boolean): Buffer {
  const value = Buffer.alloc(12);
  prefix.copy(value, 0);
  value.writeUInt32BE(index, PREFIX_BYTES);
  value.writeUInt8(last ? 1 : 0, 11);
  return value;
}

/** Collects input into fixed-size pieces without copying more than one chunk's worth at a time. */
class ChunkBuffer {
  readonly #parts: Buffer[] = [];
  #length = 0;

  get length(): number {
    return this.#length;
  }

  push(data: Buffer): void {
    if (data.length === 0) return;
    this.#parts.push(data);
    this.#length += data.length;
  }

  take(bytes: number): Buffer {
    const first = this.#parts[0];
    // The common case (input arrives in pieces at least a chunk long): no copy.
    if (first !== undefined && first.length >= bytes) {
      this.#length -= bytes;
      if (first.length === bytes) this.#parts.shift();
      else this.#parts[0] = first.subarray(bytes);
      return first.subarray(0, bytes);
    }
    const out = Buffer.allocUnsafe(bytes);
    let filled = 0;
    while (filled < bytes) {
      const head = this.#parts[0]!;
      const want = bytes - filled;
      if (head.length <= want) {
        head.copy(out, filled);
        filled += head.length;
        this.#parts.shift();
      } else {
        head.copy(out, filled, 0, want);
        this.#parts[0] = head.subarray(want);
        filled += want;
      }
    }
    this.#length -= bytes;
    return out;
  }
}

export interface StreamOptions {
  /** The master key (a tenant's data key, a backup key); each stream derives its own key from it. */
  readonly key: KeyObject | Buffer;
  /** What the stream is (say `tenant/<id>/file/<id>`): bound into the key, so a stream moved elsewhere fails. */
  readonly context: string;
  readonly chunkBytes?: number;
}

export function createEncryptStream(options: StreamOptions): Transform {
  const chunkBytes = options.chunkBytes ?? DEFAULT_CHUNK_BYTES;
  if (!Number.isInteger(chunkBytes) || chunkBytes < 1 || chunkBytes > MAX_CHUNK_BYTES) throw new RangeError('chunk size out of range');
  const salt = randomBytes(SALT_BYTES);
  const prefix = randomBytes(PREFIX_BYTES);
  const header = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(header, 0);
  header.writeUInt32BE(chunkBytes, MAGIC.length);
  salt.copy(header, MAGIC.length + 4);
  prefix.copy(header, MAGIC.length + 4 + SALT_BYTES);
  const key = streamKey(options.key, salt, options.context);
  const pending = new ChunkBuffer();
  let index = 0;

  /** A sealed chunk as its pieces (body, tag): pushed one after the other, never copied together. */
  const seal = (plaintext: Buffer, last: boolean): Buffer[] => {
    if (index > MAX_CHUNKS) throw new RangeError('stream too long for one key');
    const cipher = createCipheriv('aes-256-gcm', key, nonce(prefix, index, last));
    cipher.setAAD(header);
    const body = cipher.update(plaintext);
    cipher.final(); // GCM produces no bytes here; it computes the tag
    index += 1;
    return [body, cipher.getAuthTag()];
  };

  return new Transform({
    construct(callback) {
      this.push(header);
      callback();
    },
    transform(data: Buffer, _encoding, callback: TransformCallback) {
      try {
        pending.push(data);
        // Keep at least one byte back: the last chunk must carry the last flag, even when the input is an exact multiple.
        while (pending.length > chunkBytes) for (const piece of seal(pending.take(chunkBytes), false)) this.push(piece);
        callback();
      } catch (error) {
        callback(error as Error);
      }
    },
    flush(callback: TransformCallback) {
      try {
        for (const piece of seal(pending.take(pending.length), true)) this.push(piece);
        callback();
      } catch (error) {
        callback(error as Error);
      }
    },
  });
}

export function createDecryptStream(options: StreamOptions): Transform {
  const pending = new ChunkBuffer();
  let header: Buffer | null = null;
  let key: KeyObject | null = null;
  let prefix: Buffer | null = null;
  let sealedChunkBytes = 0;
  let index = 0;

  const open = (sealed: Buffer, last: boolean): Buffer => {
    const decipher = createDecipheriv('aes-256-gcm', key!, nonce(prefix!, index, last));
    decipher.setAAD(header!);
    decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
    try {
      const plaintext = decipher.update(sealed.subarray(0, sealed.length - TAG_BYTES));
      decipher.final(); // throws unless the tag verifies; only then is plaintext released
      index += 1;
      return plaintext;
    } catch {
      throw new StreamDecryptionError(`chunk ${index} does not authenticate (wrong key or context, tampered, reordered or truncated)`);
    }
  };

  const readHeader = (): void => {
    header = pending.take(HEADER_BYTES);
    if (!header.subarray(0, MAGIC.length).equals(MAGIC)) throw new StreamDecryptionError('not an encrypted stream of a known format');
    const chunkBytes = header.readUInt32BE(MAGIC.length);
    if (chunkBytes < 1 || chunkBytes > MAX_CHUNK_BYTES) throw new StreamDecryptionError('the stream header is corrupt');
    sealedChunkBytes = chunkBytes + TAG_BYTES;
    key = streamKey(options.key, header.subarray(MAGIC.length + 4, MAGIC.length + 4 + SALT_BYTES), options.context);
    prefix = header.subarray(MAGIC.length + 4 + SALT_BYTES);
  };

  return new Transform({
    transform(data: Buffer, _encoding, callback: TransformCallback) {
      try {
        pending.push(data);
        if (!header && pending.length >= HEADER_BYTES) readHeader();
        // A full-size chunk is not the last while more bytes follow it.
        while (header && pending.length > sealedChunkBytes) this.push(open(pending.take(sealedChunkBytes), false));
        callback();
      } catch (error) {
        callback(error as Error);
      }
    },
    flush(callback: TransformCallback) {
      try {
        if (!header) throw new StreamDecryptionError('the stream is truncated (no header)');
        if (pending.length < TAG_BYTES) throw new StreamDecryptionError('the stream is truncated (no last chunk)');
        // Whatever is left is the last chunk: bytes appended after the real last chunk make its tag fail.
        this.push(open(pending.take(pending.length), true));
        callback();
      } catch (error) {
        callback(error as Error);
      }
    },
  });
}
