import { createHash, randomBytes } from 'node:crypto';
import { Readable, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { createDecryptStream, createEncryptStream, HEADER_BYTES, StreamDecryptionError } from './file-stream.ts';

const key = randomBytes(32);
const context = 'tenant/t1/file/f1';

async function collect(source: Readable | Buffer[], ...transforms: NodeJS.ReadWriteStream[]): Promise<Buffer> {
  const parts: Buffer[] = [];
  await pipeline(Array.isArray(source) ? Readable.from(source) : source, ...(transforms as [NodeJS.ReadWriteStream]), new Writable({
    write(chunk: Buffer, _encoding, done) {
      parts.push(chunk);
      done();
    },
  }));
  return Buffer.concat(parts);
}

const encrypt = (plaintext: Buffer, chunkBytes = 64, pieces = 7) => collect(split(plaintext, pieces), createEncryptStream({ key, context, chunkBytes }));
const decrypt = (sealed: Buffer, options: { key?: Buffer; context?: string } = {}, pieces = 5) =>
  collect(split(sealed, pieces), createDecryptStream({ key: options.key ?? key, context: options.context ?? context }));

/** Feeds data in uneven pieces, as a socket or file would. */
function split(data: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < data.length; at += size) out.push(data.subarray(at, at + size));
  return out.length === 0 ? [] : out;
}

describe('streaming file encryption', () => {
  it('round-trips any length: empty, shorter than a chunk, exact multiples, and uneven input pieces', async () => {
    for (const length of [0, 1, 63, 64, 65, 128, 1000, 64 * 17]) {
      const plaintext = randomBytes(length);
      const sealed = await encrypt(plaintext);
      // Header, then full chunks of 64 + 16, then a last chunk of 1..64 (0 only for empty input) + 16.
      const chunks = length === 0 ? 1 : Math.ceil(length / 64);
      expect(sealed.length).toBe(HEADER_BYTES + length + 16 * chunks);
      expect(await decrypt(sealed)).toEqual(plaintext);
    }
  });

  it('detects a flipped bit anywhere, truncation at any point, reordered or dropped chunks and appended bytes', async () => {
    const plaintext = randomBytes(64 * 4 + 10);
    const sealed = await encrypt(plaintext);
    for (let at = 0; at < sealed.length; at += 7) {
      const flipped = Buffer.from(sealed);
      flipped[at]! ^= 0x01;
      await expect(decrypt(flipped)).rejects.toBeInstanceOf(StreamDecryptionError);
    }
    for (const cut of [0, 10, HEADER_BYTES, HEADER_BYTES + 80, HEADER_BYTES + 80 * 4, sealed.length - 1]) {
      await expect(decrypt(sealed.subarray(0, cut))).rejects.toBeInstanceOf(StreamDecryptionError);
    }
    const header = sealed.subarray(0, HEADER_BYTES);
    const chunk = (i: number) => sealed.subarray(HEADER_BYTES + 80 * i, HEADER_BYTES + 80 * (i + 1));
    const last = sealed.subarray(HEADER_BYTES + 80 * 4);
    await expect(decrypt(Buffer.concat([header, chunk(1), chunk(0), chunk(2), chunk(3), last]))).rejects.toBeInstanceOf(StreamDecryptionError);
    await expect(decrypt(Buffer.concat([header, chunk(0), chunk(2), chunk(3), last]))).rejects.toBeInstanceOf(StreamDecryptionError);
    // Without its last chunk, the stream ends on a chunk that was not sealed as the last.
    await expect(decrypt(Buffer.concat([header, chunk(0), chunk(1), chunk(2), chunk(3)]))).rejects.toBeInstanceOf(StreamDecryptionError);
    await expect(decrypt(Buffer.concat([sealed, Buffer.from([0])]))).rejects.toBeInstanceOf(StreamDecryptionError);
    await expect(decrypt(Buffer.concat([sealed, sealed]))).rejects.toBeInstanceOf(StreamDecryptionError);
  });

  it('refuses another key or another context, and never repeats a key stream for the same input', async () => {
    const plaintext = randomBytes(200);
    const sealed = await encrypt(plaintext);
    await expect(decrypt(sealed, { key: randomBytes(32) })).rejects.toBeInstanceOf(StreamDecryptionError);
    await expect(decrypt(sealed, { context: 'tenant/t2/file/f1' })).rejects.toBeInstanceOf(StreamDecryptionError);
    const again = await encrypt(plaintext);
    expect(again.subarray(HEADER_BYTES).equals(sealed.subarray(HEADER_BYTES))).toBe(false);
  });

  it('encrypts and decrypts 1 GiB generated on the fly in constant memory', { timeout: 120_000 }, async () => {
    const total = 1024 ** 3;
    const piece = 1024 * 1024;
    let produced = 0;
    const block = randomBytes(piece);
    const source = new Readable({
      read() {
        if (produced >= total) return void this.push(null);
        // A different block each time (the counter in its first bytes), without holding them.
        const next = Buffer.from(block);
        next.writeUInt32BE(produced / piece, 0);
        produced += piece;
        this.push(next);
      },
    });
    const sourceDigest = createHash('sha256');
    const outputDigest = createHash('sha256');
    let outputBytes = 0;
    let peakRss = 0;
    const before = process.memoryUsage().rss;
    const watch = setInterval(() => {
      peakRss = Math.max(peakRss, process.memoryUsage().rss);
    }, 20);
    try {
      await pipeline(
        source,
        new Transform({
          transform(chunk: Buffer, _encoding, done) {
            sourceDigest.update(chunk);
            done(null, chunk);
          },
        }),
        createEncryptStream({ key, context }),
        createDecryptStream({ key, context }),
        new Writable({
          write(chunk: Buffer, _encoding, done) {
            outputDigest.update(chunk);
            outputBytes += chunk.length;
            done();
          },
        }),
      );
    } finally {
      clearInterval(watch);
    }
    expect(outputBytes).toBe(total);
    expect(outputDigest.digest('hex')).toBe(sourceDigest.digest('hex'));
    // Streams hold a few chunks at a time; 1 GiB passing through must not show up in memory.
    expect(peakRss - before).toBeLessThan(128 * 1024 * 1024);
  });
});
