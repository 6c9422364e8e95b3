/**
 * The backup archive: named parts (a database dump, stored files) and a manifest, framed in
 * one plaintext stream that goes straight into the authenticated file encryption
 * (kernel/crypto/file-stream.ts). Nothing is written anywhere unencrypted.
 *
 *   record = 0x01 part-begin | u16 name length | name (UTF-8)
 *          | 0x02 data       | u32 length      | bytes
 *          | 0x03 part-end
 *          | 0x04 manifest   | u32 length      | JSON   (always the last record)
 *
 * The reader counts and hashes every part and checks them against the manifest at the end;
 * the encryption underneath has already refused any flipped, dropped, reordered or
 * truncated chunk. Each backup has its own random content key, wrapped by the key provider
 * (the KEK or the HSM) and bound to the backup id, so it is a key apart from every data key.
 */
import { createHash, createSecretKey, type KeyObject } from 'node:crypto';
import { once } from 'node:events';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createDecryptStream, createEncryptStream, StreamDecryptionError } from '../../kernel/crypto/file-stream.ts';

export const ARCHIVE_FORMAT = 1;
const PART_BEGIN = 1;
const DATA = 2;
const PART_END = 3;
const MANIFEST = 4;
/** Data records are at most this long, so a reader never holds more than one in memory. */
const MAX_RECORD = 4 * 1024 * 1024;

/** A backup that cannot be read as written: damaged, truncated, tampered with, or under another key. */
export class BackupIntegrityError extends Error {
  override name = 'BackupIntegrityError';
}

export interface PartSummary {
  readonly name: string;
  readonly bytes: number;
  readonly sha256: string;
}

export interface Manifest {
  readonly format: number;
  readonly id: string;
  readonly createdAt: string;
  readonly source: { readonly kind: 'embedded' | 'postgres'; readonly serverVersion: string; readonly ownerRole?: string; readonly appRole?: string };
  readonly schemaVersion: number;
  /** Rows per table in the snapshot; key tables are listed with null: keys are never in a backup. */
  readonly tables: Readonly<Record<string, number | null>>;
  readonly parts: readonly PartSummary[];
  readonly durationMs: number;
}

/** What the wrapped backup key is bound to: a descriptor with any of these changed does not unwrap. */
export interface BackupBinding {
  readonly id: string;
  readonly source: string;
  readonly schemaVersion: number;
  readonly ownerRole: string | null;
}

export function backupAad(binding: BackupBinding): Buffer {
  return Buffer.from(`customernode backup v${ARCHIVE_FORMAT}\0${binding.id}\0${binding.source}\0${binding.schemaVersion}\0${binding.ownerRole ?? ''}`, 'utf8');
}

export function archiveContext(id: string): string {
  return `backup/${id}`;
}

/**
 * Writes parts into an encrypted archive. `encrypted` is what to store: pipe it to the target
 * while adding parts (the writer waits for the target: memory stays bounded).
 */
export class ArchiveWriter {
  readonly encrypted: Readable;
  readonly #plain = new PassThrough({ highWaterMark: 1024 * 1024 });
  readonly #parts: PartSummary[] = [];
  #closed = false;

  /** key is copied: the caller may wipe its buffer at once. */
  constructor(key: Buffer, id: string) {
    const encrypt = createEncryptStream({ key: createSecretKey(key), context: archiveContext(id) });
    this.#plain.on('error', (error) => encrypt.destroy(error));
    // Whoever reads `encrypted` sees its errors; with no reader left (the target already
    // failed) an abandoned archive must not crash the process.
    encrypt.on('error', () => {});
    this.encrypted = this.#plain.pipe(encrypt);
  }

  get parts(): readonly PartSummary[] {
    return this.#parts;
  }

  async #write(chunk: Buffer): Promise<void> {
    if (this.#plain.destroyed) throw this.#plain.errored ?? new Error('the archive was abandoned');
    // once() rejects on 'error': a target that failed stops the writer instead of stalling it.
    if (!this.#plain.write(chunk)) await once(this.#plain, 'drain');
  }

  /** Streams one part from source; returns its size and SHA-256. */
  async addPart(name: string, source: AsyncIterable<Buffer | Uint8Array | string> | Iterable<Buffer | string>): Promise<PartSummary> {
    if (this.#closed) throw new Error('archive already finished');
    const nameBytes = Buffer.from(name, 'utf8');
    if (nameBytes.length === 0 || nameBytes.length > 0xffff) throw new RangeError('part name length');
    const begin = Buffer.alloc(3);
    begin.writeUInt8(PART_BEGIN, 0);
    begin.writeUInt16BE(nameBytes.length, 1);
    await this.#write(Buffer.concat([begin, nameBytes]));
    const hash = createHash('sha256');
    let bytes = 0;
    for await (const piece of source) {
      let data = typeof piece === 'string' ? Buffer.from(piece, 'utf8') : Buffer.isBuffer(piece) ? piece : Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
      while (data.length > 0) {
        const record = data.subarray(0, MAX_RECORD);
        data = data.subarray(record.length);
        const head = Buffer.alloc(5);
        head.writeUInt8(DATA, 0);
        head.writeUInt32BE(record.length, 1);
        await this.#write(head);
        await this.#write(record);
        hash.update(record);
        bytes += record.length;
      }
    }
    await this.#write(Buffer.from([PART_END]));
    const summary = { name, bytes, sha256: hash.digest('hex') };
    this.#parts.push(summary);
    return summary;
  }

  /** Appends the manifest (last record) and ends the stream. */
  async finish(manifest: Manifest): Promise<void> {
    this.#closed = true;
    const json = Buffer.from(JSON.stringify(manifest), 'utf8');
    const head = Buffer.alloc(5);
    head.writeUInt8(MANIFEST, 0);
    head.writeUInt32BE(json.length, 1);
    await this.#write(head);
    await this.#write(json);
    this.#plain.end();
  }

  /** Abandons the archive: the encrypted stream errors, so the target never commits it. */
  abort(error: Error): void {
    this.#closed = true;
    this.#plain.destroy(error);
  }
}

/** Exact-length reads over an async byte source. */
class ByteReader {
  readonly #source: AsyncIterator<Buffer>;
  #buffer: Buffer = Buffer.alloc(0);

  constructor(source: AsyncIterable<Buffer>) {
    this.#source = source[Symbol.asyncIterator]();
  }

  /** Up to n bytes, at least one; null at the end of the stream. */
  async some(n: number): Promise<Buffer | null> {
    if (this.#buffer.length === 0) {
      const next = await this.#source.next();
      if (next.done) return null;
      this.#buffer = next.value;
    }
    const out = this.#buffer.subarray(0, n);
    this.#buffer = this.#buffer.subarray(out.length);
    return out;
  }

  async exactly(n: number): Promise<Buffer> {
    const pieces: Buffer[] = [];
    let have = 0;
    while (have < n) {
      const piece = await this.some(n - have);
      if (piece === null) throw new BackupIntegrityError('the backup ends in the middle of a record (truncated)');
      pieces.push(piece);
      have += piece.length;
    }
    return pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces);
  }

  async atEnd(): Promise<boolean> {
    if (this.#buffer.length > 0) return false;
    const next = await this.#source.next();
    if (next.done) return true;
    this.#buffer = next.value;
    return false;
  }
}

export interface ArchivePart {
  readonly name: string;
  /** The part's bytes; must be consumed (or drained) before the next part is read. */
  readonly data: AsyncIterable<Buffer>;
}

/**
 * Reads an encrypted archive. Iterate parts(), consume each part's data, then await
 * manifest(): it resolves only if the whole archive decrypted, every part matched its size
 * and digest, and the manifest names exactly the parts that were read.
 */
export class ArchiveReader {
  readonly #reader: ByteReader;
  readonly #seen: PartSummary[] = [];
  #manifest: Manifest | undefined;
  readonly #id: string;

  /** key is copied (the stream's key is derived only once its header arrives): the caller may wipe its buffer at once. */
  constructor(encrypted: Readable, key: Buffer, id: string) {
    this.#id = id;
    const copy: KeyObject = createSecretKey(key);
    const decrypt = createDecryptStream({ key: copy, context: archiveContext(id) });
    const plain = new PassThrough({ highWaterMark: 1024 * 1024 });
    pipeline(encrypted, decrypt, plain).catch((error: unknown) => plain.destroy(error instanceof Error ? error : new Error(String(error))));
    this.#reader = new ByteReader(translateErrors(plain));
  }

  async *parts(): AsyncGenerator<ArchivePart> {
    for (;;) {
      const type = (await this.#reader.exactly(1)).readUInt8(0);
      if (type === MANIFEST) {
        const length = (await this.#reader.exactly(4)).readUInt32BE(0);
        if (length > 64 * 1024 * 1024) throw new BackupIntegrityError('the manifest record is implausibly large');
        const manifest = parseManifest((await this.#reader.exactly(length)).toString('utf8'));
        if (!(await this.#reader.atEnd())) throw new BackupIntegrityError('the backup has bytes after its manifest');
        this.#check(manifest);
        this.#manifest = manifest;
        return;
      }
      if (type !== PART_BEGIN) throw new BackupIntegrityError(`unexpected record type ${type}`);
      const nameLength = (await this.#reader.exactly(2)).readUInt16BE(0);
      const name = (await this.#reader.exactly(nameLength)).toString('utf8');
      const hash = createHash('sha256');
      let bytes = 0;
      let ended = false;
      const reader = this.#reader;
      const seen = this.#seen;
      const data = async function* (): AsyncGenerator<Buffer> {
        for (;;) {
          const kind = (await reader.exactly(1)).readUInt8(0);
          if (kind === PART_END) break;
          if (kind !== DATA) throw new BackupIntegrityError(`unexpected record type ${kind} inside part ${name}`);
          let remaining = (await reader.exactly(4)).readUInt32BE(0);
          if (remaining > MAX_RECORD) throw new BackupIntegrityError('a data record is implausibly large');
          while (remaining > 0) {
            const piece = await reader.some(remaining);
            if (piece === null) throw new BackupIntegrityError('the backup ends in the middle of a record (truncated)');
            remaining -= piece.length;
            bytes += piece.length;
            hash.update(piece);
            yield piece;
          }
        }
        ended = true;
        seen.push({ name, bytes, sha256: hash.digest('hex') });
      };
      yield { name, data: data() };
      if (!ended) throw new Error(`part ${name} was not consumed before the next`);
    }
  }

  #check(manifest: Manifest): void {
    if (manifest.id !== this.#id) throw new BackupIntegrityError('the manifest belongs to another backup');
    const expected = manifest.parts;
    if (expected.length !== this.#seen.length) throw new BackupIntegrityError('the manifest and the archive list different parts');
    for (const [index, part] of expected.entries()) {
      const seen = this.#seen[index]!;
      if (seen.name !== part.name || seen.bytes !== part.bytes || seen.sha256 !== part.sha256) {
        throw new BackupIntegrityError(`part ${part.name} does not match its size or SHA-256 in the manifest`);
      }
    }
  }

  /** The manifest, once every part was read and checked. */
  manifest(): Manifest {
    if (!this.#manifest) throw new BackupIntegrityError('the backup ended before its manifest (truncated)');
    return this.#manifest;
  }
}

async function* translateErrors(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  try {
    yield* source;
  } catch (error) {
    if (error instanceof StreamDecryptionError) throw new BackupIntegrityError(`the backup does not decrypt: ${error.message}`);
    throw error;
  }
}

function parseManifest(text: string): Manifest {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new BackupIntegrityError('the manifest is not JSON');
  }
  const m = value as Partial<Manifest> | null;
  if (!m || m.format !== ARCHIVE_FORMAT || typeof m.id !== 'string' || typeof m.schemaVersion !== 'number' || !Array.isArray(m.parts) || typeof m.tables !== 'object' || !m.source) {
    throw new BackupIntegrityError('the manifest lacks required fields or has an unknown format');
  }
  return m as Manifest;
}

/** Drains a part the caller does not need (its digest still counts). */
export async function drain(data: AsyncIterable<Buffer>): Promise<void> {
  for await (const piece of data) void piece;
}
