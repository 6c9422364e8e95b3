import S3rver from '@20minutes/s3rver';
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../../../test/harness.ts';
import { loadConfig } from '../../kernel/config/config.ts';
import { createKeyring } from '../../kernel/crypto/envelope.ts';
import { createBackup, listBackups, restoreBackup, verifyBackup, type BackupContext } from './backups.ts';
import { readKeystore } from './keystore.ts';
import { BackupNotFoundError, targetFromConfig } from './targets.ts';

// The same promises as the directory target, against a real S3-compatible server (s3rver).
describe('backups in an S3-compatible bucket', { timeout: 120_000 }, () => {
  let t: TestApp;
  let server: S3rver;
  let storage: string;
  let ctx: BackupContext;

  beforeAll(async () => {
    t = await startTestApp();
    storage = mkdtempSync(path.join(os.tmpdir(), 'cn-s3rver-'));
    // s3rver canonicalises a path-style bucket request (ListObjectsV2) without the trailing slash
    // the current AWS SDK signs, so it would refuse every listing: signatures are the SDK's
    // business, and this server only stands in for the bucket's storage semantics.
    server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: storage, allowMismatchedSignatures: true, configureBuckets: [{ name: 'cn-backups', configs: [] }] });
    const address = (await server.run()) as AddressInfo;
    const config = loadConfig({
      ...t.env,
      BACKUP_S3_BUCKET: 'cn-backups',
      BACKUP_S3_PREFIX: 'prod/',
      BACKUP_S3_ENDPOINT: `http://127.0.0.1:${address.port}`,
      BACKUP_S3_ACCESS_KEY_ID: 'S3RVER',
      BACKUP_S3_SECRET_ACCESS_KEY: 'S3RVER',
    });
    ctx = { db: t.db, config, target: targetFromConfig(config)!, provider: createKeyring(config, { warn() {} }).provider };
    const { session, tenantId } = await t.signup({ tenantName: 'In the bucket' });
    const account = (await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: session, body: { name: 'Acme' } })).json<{ id: string }>();
    await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/contacts`, as: session, body: { accountId: account.id, name: 'Ada', email: 'ada@bucket.example' } });
  });
  afterAll(async () => {
    await server?.close();
    await t?.close();
    rmSync(storage, { recursive: true, force: true });
  });

  it('writes, lists, drills and restores a backup; the keystore sits beside it, under the prefix', async () => {
    expect(ctx.target.description).toBe('bucket s3://cn-backups/prod/');
    const backup = await createBackup(ctx);
    expect((await listBackups(ctx.target)).map((b) => b.id)).toEqual([backup.id]);
    expect((await readKeystore(ctx.target, ctx.provider)).length).toBeGreaterThan(0);
    const report = await verifyBackup(ctx, backup.id);
    expect(report.ok, report.problems.join('; ')).toBe(true);
    expect(report.decryptedFields).toBeGreaterThanOrEqual(1);
    const restored = await restoreBackup(ctx, backup.id, t.newRestoreTarget(), false);
    expect(restored.rows).toBe(backup.rows);
  });

  it('an upload that fails midway leaves no object behind', async () => {
    const failing = new Readable({
      read() {
        this.push(Buffer.alloc(9 * 1024 * 1024, 1)); // past one multipart part
        this.destroy(new Error('the dump died'));
      },
    });
    await expect(ctx.target.write('backups/20260101T000000Z-0b0b0b.cnb', failing)).rejects.toThrow();
    expect((await ctx.target.list('backups')).map((object) => object.name)).not.toContain('backups/20260101T000000Z-0b0b0b.cnb');
    await expect(ctx.target.read('backups/20260101T000000Z-0b0b0b.cnb')).rejects.toBeInstanceOf(BackupNotFoundError);
  });
});
