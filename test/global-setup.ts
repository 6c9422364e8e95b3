/**
 * One migrated template per run: a PGlite data-dir dump (embedded mode) or a PostgreSQL
 * template database (TEST_DATABASE_URL set). Each test file clones it, so files run in
 * parallel on one database server without seeing each other.
 */
import { PGlite } from '@electric-sql/pglite';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { migrateEmbedded, migratePostgres } from '../src/kernel/db/migrate.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    testDb: { kind: 'embedded'; templatePath: string } | { kind: 'postgres'; adminUrl: string; template: string; runId: string; ownerRole: string };
  }
}

export const OWNER_ROLE = 'cn_test_owner';

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const adminUrl = process.env.TEST_DATABASE_URL?.trim();
  if (!adminUrl) {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'cn-template-'));
    const pglite = await PGlite.create();
    await migrateEmbedded(pglite);
    const dump = await pglite.dumpDataDir('none');
    await pglite.close();
    const templatePath = path.join(dir, 'template.tar');
    writeFileSync(templatePath, Buffer.from(await dump.arrayBuffer()));
    project.provide('testDb', { kind: 'embedded', templatePath });
    return async () => rmSync(dir, { recursive: true, force: true });
  }

  const runId = randomBytes(4).toString('hex');
  const template = `cn_tpl_${runId}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`do $$ begin
    if not exists (select 1 from pg_roles where rolname = '${OWNER_ROLE}') then
      create role ${OWNER_ROLE} login createrole nosuperuser nobypassrls;
    end if; end $$`);
  await admin.query(`create database ${template} owner ${OWNER_ROLE}`);
  const ownerUrl = new URL(adminUrl);
  ownerUrl.username = OWNER_ROLE;
  ownerUrl.password = '';
  ownerUrl.pathname = `/${template}`;
  const ownerPool = new pg.Pool({ connectionString: ownerUrl.toString(), max: 1 });
  await migratePostgres(ownerPool, 'cn_app');
  await ownerPool.end();
  await admin.query(`alter database ${template} is_template true`);
  project.provide('testDb', { kind: 'postgres', adminUrl, template, runId, ownerRole: OWNER_ROLE });
  return async () => {
    const { rows } = await admin.query<{ datname: string }>(`select datname from pg_database where datname like $1`, [`cn_%${runId}%`]);
    for (const { datname } of rows) {
      await admin.query(`alter database ${datname} is_template false`);
      await admin.query(`drop database ${datname} with (force)`);
    }
    await admin.end();
  };
}
