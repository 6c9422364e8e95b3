/**
 * Where backups are kept, apart from the data: a directory outside DATA_DIR (BACKUP_DIR) or
 * an S3-compatible bucket. Objects become visible only once completely written, so an
 * interrupted backup leaves nothing that looks like a backup.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DeleteObjectCommand, GetObjectCommand, ListObjectsV2Command, NoSuchKey, S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { Config, S3Settings } from '../../kernel/config/config.ts';

export class BackupNotFoundError extends Error {
  override name = 'BackupNotFoundError';
}

export interface StoredObject {
  readonly name: string;
  readonly bytes: number;
}

export interface BackupTarget {
  readonly description: string;
  /** Stores body under name, visible only once complete; returns the stored size and SHA-256. */
  write(name: string, body: Readable): Promise<{ bytes: number; sha256: string }>;
  read(name: string): Promise<Readable>;
  list(prefix: string): Promise<StoredObject[]>;
  remove(name: string): Promise<void>;
}

/** Object names are ours (prefix/file); never a path a caller could steer elsewhere. */
export function checkObjectName(name: string): string {
  if (!/^[a-z]+\/[A-Za-z0-9][A-Za-z0-9._-]{0,200}$/.test(name) || name.includes('..')) throw new Error(`invalid object name ${JSON.stringify(name)}`);
  return name;
}

function hashing(): { transform: Transform; result: () => { bytes: number; sha256: string } } {
  const hash = createHash('sha256');
  let bytes = 0;
  const transform = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      bytes += chunk.length;
      callback(null, chunk);
    },
  });
  return { transform, result: () => ({ bytes, sha256: hash.digest('hex') }) };
}

export class DirectoryTarget implements BackupTarget {
  readonly #root: string;

  constructor(root: string) {
    this.#root = root;
  }

  get description(): string {
    return `directory ${this.#root}`;
  }

  #path(name: string): string {
    return path.join(this.#root, ...checkObjectName(name).split('/'));
  }

  async write(name: string, body: Readable): Promise<{ bytes: number; sha256: string }> {
    const final = this.#path(name);
    await mkdir(path.dirname(final), { recursive: true, mode: 0o700 });
    // Written beside the final name and renamed once synced: a crash leaves only a .partial file.
    const partial = `${final}.partial-${randomBytes(4).toString('hex')}`;
    const { transform, result } = hashing();
    try {
      await pipeline(body, transform, createWriteStream(partial, { mode: 0o600, flags: 'wx' }));
      const handle = await open(partial, 'r');
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(partial, final);
    } catch (error) {
      await rm(partial, { force: true });
      throw error;
    }
    return result();
  }

  async read(name: string): Promise<Readable> {
    const file = this.#path(name);
    try {
      await stat(file);
    } catch {
      throw new BackupNotFoundError(`${name} is not in ${this.description}`);
    }
    return createReadStream(file, { highWaterMark: 1024 * 1024 });
  }

  async list(prefix: string): Promise<StoredObject[]> {
    const dir = path.join(this.#root, prefix);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      return [];
    }
    const out: StoredObject[] = [];
    for (const name of names) {
      if (name.includes('.partial-')) continue;
      const info = await stat(path.join(dir, name)).catch(() => null);
      if (info?.isFile()) out.push({ name: `${prefix}/${name}`, bytes: info.size });
    }
    return out;
  }

  async remove(name: string): Promise<void> {
    await rm(this.#path(name), { force: true });
  }
}

/**
 * An S3-compatible bucket. Archives go up as multipart uploads, which the service makes
 * visible only once completed: an interrupted backup leaves no object (and the bucket's
 * lifecycle rule for incomplete uploads cleans the parts).
 */
export class S3Target implements BackupTarget {
  readonly #client: S3Client;
  readonly #settings: S3Settings;

  constructor(settings: S3Settings) {
    this.#settings = settings;
    this.#client = new S3Client({
      region: settings.region,
      ...(settings.endpoint ? { endpoint: settings.endpoint } : {}),
      forcePathStyle: settings.forcePathStyle,
      credentials: { accessKeyId: settings.accessKeyId, secretAccessKey: settings.secretAccessKey },
      // Checksums only where the API requires them: S3-compatible services (MinIO, Ceph, s3rver)
      // do not all accept the SDK's default trailing checksums. Integrity does not rest on them:
      // every archive is authenticated encryption, with its SHA-256 in the descriptor.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
  }

  get description(): string {
    return `bucket s3://${this.#settings.bucket}/${this.#settings.prefix}`;
  }

  #key(name: string): string {
    return `${this.#settings.prefix}${checkObjectName(name)}`;
  }

  async write(name: string, body: Readable): Promise<{ bytes: number; sha256: string }> {
    const { transform, result } = hashing();
    const upload = new Upload({
      client: this.#client,
      params: { Bucket: this.#settings.bucket, Key: this.#key(name), Body: body.pipe(transform), ContentType: 'application/octet-stream' },
      partSize: 8 * 1024 * 1024,
      queueSize: 2, // memory: at most a few parts in flight
      leavePartsOnError: false,
    });
    body.on('error', (error) => transform.destroy(error));
    await upload.done();
    return result();
  }

  async read(name: string): Promise<Readable> {
    try {
      const response = await this.#client.send(new GetObjectCommand({ Bucket: this.#settings.bucket, Key: this.#key(name) }));
      return response.Body as Readable;
    } catch (error) {
      if (error instanceof NoSuchKey || (error as { name?: string }).name === 'NoSuchKey') throw new BackupNotFoundError(`${name} is not in ${this.description}`);
      throw error;
    }
  }

  async list(prefix: string): Promise<StoredObject[]> {
    const out: StoredObject[] = [];
    let token: string | undefined;
    do {
      const page = await this.#client.send(new ListObjectsV2Command({ Bucket: this.#settings.bucket, Prefix: `${this.#settings.prefix}${prefix}/`, ContinuationToken: token }));
      for (const object of page.Contents ?? []) {
        if (object.Key) out.push({ name: object.Key.slice(this.#settings.prefix.length), bytes: object.Size ?? 0 });
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out;
  }

  async remove(name: string): Promise<void> {
    await this.#client.send(new DeleteObjectCommand({ Bucket: this.#settings.bucket, Key: this.#key(name) }));
  }
}

/** The target the configuration names (BACKUP_DIR or BACKUP_S3_BUCKET), or undefined. */
export function targetFromConfig(config: Pick<Config, 'backup'>): BackupTarget | undefined {
  if (config.backup.s3) return new S3Target(config.backup.s3);
  return config.backup.dir === undefined ? undefined : new DirectoryTarget(config.backup.dir);
}
