/**
 * Encryption benchmarks (issue: encryption and keys), each a ratio against raw node:crypto
 * AES-256-GCM doing the same work in the same run, alternated in short slices so neighbour
 * load hits both sides alike:
 *
 *  - field: seal + open of a 1 KiB value through our field format (header, associated data
 *    of tenant/table/column/row, fresh nonce) with an unwrapped key, against a bare
 *    AES-256-GCM encrypt + decrypt of the same 1 KiB with a fresh nonce. Target >= 0.7.
 *  - stream: our chunked STREAM encryption of 256 MiB through a pipeline, against one
 *    AES-256-GCM cipher fed the same chunks through the same pipeline. Target >= 0.8.
 *  - contact reads (HTTP, in run.ts): GET .../contacts/{id} of contacts with an encrypted
 *    email and phone, against contacts without them. Target >= 0.85.
 */
import autocannon, { type AutocannonRequest } from 'autocannon';
import { createCipheriv, createDecipheriv, createSecretKey, randomBytes, randomUUID } from 'node:crypto';
import { Readable, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { openField, sealField } from '../src/kernel/crypto/envelope.ts';
import { createDecryptStream, createEncryptStream } from '../src/kernel/crypto/file-stream.ts';

export const FIELD_TARGET = 0.7;
export const STREAM_TARGET = 0.8;
export const CONTACT_READ_TARGET = 0.85;

export interface FieldResult {
  readonly ours: number;
  readonly raw: number;
  readonly ratio: number;
}

/** How many times fn ran in ms milliseconds (in batches of 64, to keep the clock out of it). */
function spin(fn: () => void, ms: number): number {
  const end = performance.now() + ms;
  let count = 0;
  while (performance.now() < end) {
    for (let i = 0; i < 64; i++) fn();
    count += 64;
  }
  return count;
}

export function measureFieldCrypto(seconds = 3): FieldResult {
  const key = createSecretKey(randomBytes(32));
  const value = randomBytes(1024);
  const place = { tenantId: randomUUID(), table: 'contacts', column: 'email', rowId: randomUUID() };
  const ours = () => {
    openField(key, place, sealField(key, 1, place, value));
  };
  const raw = () => {
    const nonce = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', key, nonce);
    const body = Buffer.concat([cipher.update(value), cipher.final()]);
    const tag = cipher.getAuthTag();
    const decipher = createDecipheriv('aes-256-gcm', key, nonce);
    decipher.setAuthTag(tag);
    Buffer.concat([decipher.update(body), decipher.final()]);
  };
  spin(ours, 200);
  spin(raw, 200);
  const slice = 250;
  let oursOps = 0;
  let rawOps = 0;
  let elapsed = 0;
  while (elapsed < seconds * 1000) {
    oursOps += spin(ours, slice);
    rawOps += spin(raw, slice);
    elapsed += 2 * slice;
  }
  const time = elapsed / 2 / 1000;
  return { ours: oursOps / time, raw: rawOps / time, ratio: oursOps / rawOps };
}

export interface StreamResult {
  readonly encryptMBps: number;
  readonly rawMBps: number;
  readonly ratio: number;
  readonly decryptMBps: number;
}

function source(totalBytes: number, blockBytes: number): Readable {
  const block = randomBytes(blockBytes);
  let produced = 0;
  return new Readable({
    read() {
      if (produced >= totalBytes) return void this.push(null);
      produced += blockBytes;
      this.push(block);
    },
  });
}

function sink(onData?: (chunk: Buffer) => void): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, done) {
      onData?.(chunk);
      done();
    },
  });
}

async function timed(run: () => Promise<void>): Promise<number> {
  const started = performance.now();
  await run();
  return (performance.now() - started) / 1000;
}

export async function measureStreamCrypto(totalMiB = 256, rounds = 3): Promise<StreamResult> {
  const key = randomBytes(32);
  const total = totalMiB * 1024 * 1024;
  const block = 1024 * 1024;
  const rawCipher = () => {
    const cipher = createCipheriv('aes-256-gcm', key, randomBytes(12));
    return new Transform({
      transform(chunk: Buffer, _encoding, done) {
        done(null, cipher.update(chunk));
      },
      flush(done) {
        this.push(cipher.final());
        this.push(cipher.getAuthTag());
        done();
      },
    });
  };
  let ours = 0;
  let raw = 0;
  let decrypt = 0;
  for (let round = 0; round < rounds; round++) {
    ours += await timed(() => pipeline(source(total, block), createEncryptStream({ key, context: 'bench' }), sink()));
    raw += await timed(() => pipeline(source(total, block), rawCipher(), sink()));
    const sealed: Buffer[] = [];
    await pipeline(source(64 * 1024 * 1024, block), createEncryptStream({ key, context: 'bench' }), sink((chunk) => sealed.push(chunk)));
    decrypt += await timed(() => pipeline(Readable.from(sealed), createDecryptStream({ key, context: 'bench' }), sink()));
  }
  const mb = totalMiB * rounds;
  return { encryptMBps: mb / ours, rawMBps: mb / raw, ratio: raw / ours, decryptMBps: (64 * rounds) / decrypt };
}

export function fieldLine(result: FieldResult): string {
  return `field encrypt+decrypt of 1 KiB: ${Math.round(result.ours).toLocaleString('en-US')} ops/s against raw AES-256-GCM ${Math.round(result.raw).toLocaleString('en-US')} ops/s = ${result.ratio.toFixed(2)} (target >= ${FIELD_TARGET}: ${result.ratio >= FIELD_TARGET ? 'met' : 'NOT met'})`;
}

export function streamLine(result: StreamResult): string {
  return `file stream encryption: ${result.encryptMBps.toFixed(0)} MB/s against raw AES-256-GCM ${result.rawMBps.toFixed(0)} MB/s = ${result.ratio.toFixed(2)} (target >= ${STREAM_TARGET}: ${result.ratio >= STREAM_TARGET ? 'met' : 'NOT met'}); decryption ${result.decryptMBps.toFixed(0)} MB/s`;
}

export interface ContactReadResult {
  readonly plain: number;
  readonly encrypted: number;
  readonly ratio: number;
  readonly contacts: number;
}

/**
 * GET .../contacts/{id} for contacts with an encrypted email and phone against contacts
 * without either, through the real app (the same route, guard and transaction), alternated.
 */
export async function measureContactReads(options: {
  readonly baseUrl: string;
  readonly cookie: string;
  readonly csrfToken: string;
  readonly tenantId: string;
  readonly connections: number;
  readonly seconds: number;
  readonly rounds: number;
  readonly log: (line: string) => void;
}): Promise<ContactReadResult> {
  const { baseUrl, cookie, csrfToken, tenantId } = options;
  const post = async (url: string, body: unknown) => {
    const response = await fetch(`${baseUrl}${url}`, { method: 'POST', headers: { cookie, 'x-csrf-token': csrfToken, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    if (response.status !== 201) throw new Error(`POST ${url}: ${response.status} ${await response.text()}`);
    return (await response.json()) as { id: string };
  };
  const account = await post(`/api/v1/tenants/${tenantId}/accounts`, { name: 'Contacts bench' });
  const perKind = 300;
  const plain: string[] = [];
  const encrypted: string[] = [];
  for (let i = 0; i < perKind; i++) {
    plain.push((await post(`/api/v1/tenants/${tenantId}/contacts`, { accountId: account.id, name: `Plain ${i}` })).id);
    encrypted.push((await post(`/api/v1/tenants/${tenantId}/contacts`, { accountId: account.id, name: `Sealed ${i}`, email: `contact-${i}@example.com`, phone: `+1415555${String(1000 + i).padStart(4, '0')}` })).id);
  }
  const run = async (ids: string[], seconds: number) => {
    const paths = ids.map((id) => `/api/v1/tenants/${tenantId}/contacts/${id}`);
    const result = await autocannon({
      url: baseUrl,
      connections: options.connections,
      duration: seconds,
      headers: { cookie },
      requests: [{ method: 'GET', setupRequest: (request: AutocannonRequest) => ((request.path = paths[Math.floor(Math.random() * paths.length)]!), request) }],
    });
    if (result.non2xx > 0 || result.errors > 0) throw new Error(`contact reads: ${result.non2xx} non-2xx, ${result.errors} errors`);
    return result.requests.average;
  };
  let bestPlain = 0;
  let bestEncrypted = 0;
  for (let round = 1; round <= options.rounds; round++) {
    await run(plain, 2);
    bestPlain = Math.max(bestPlain, await run(plain, options.seconds));
    await run(encrypted, 2);
    bestEncrypted = Math.max(bestEncrypted, await run(encrypted, options.seconds));
    options.log(`contact reads round ${round}: without encrypted fields ${Math.round(bestPlain)} req/s, with ${Math.round(bestEncrypted)} req/s (best so far)`);
  }
  return { plain: bestPlain, encrypted: bestEncrypted, ratio: bestEncrypted / bestPlain, contacts: 2 * perKind };
}

export function contactReadLine(result: ContactReadResult): string {
  return `contact reads with an encrypted email and phone: ${Math.round(result.encrypted).toLocaleString('en-US')} req/s against ${Math.round(result.plain).toLocaleString('en-US')} req/s without = ${result.ratio.toFixed(2)} (target >= ${CONTACT_READ_TARGET}: ${result.ratio >= CONTACT_READ_TARGET ? 'met' : 'NOT met'})`;
}
