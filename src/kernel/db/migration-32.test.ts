import { PGlite } from '@electric-sql/pglite';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { jcs } from '../audit/chain.ts';
import { recordTenantEvent, SYSTEM_ACTOR, NO_REQUEST } from '../audit/record.ts';
import { sealAllLogs } from '../audit/sealer.ts';
import { loadAuditSigner } from '../audit/signing.ts';
import { verifyTenantLog } from '../audit/verify.ts';
import { loadConfig } from '../config/config.ts';
import { openDatabase } from './database.ts';
import { migrateEmbedded } from './migrate.ts';

describe('migration 32 (the writer stores JCS text; the database hashes the chain)', () => {
  it('seals the events written before it, with jsonb metadata only, in JavaScript, then the rest in the database, into one chain that verifies', async () => {
    const pglite = await PGlite.create();
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'cn-migration-32-'));
    try {
      await migrateEmbedded(pglite, 31);
      const { rows: tenant } = await pglite.query<{ id: string }>(`insert into tenants (name) values ('Before 32') returning id`);
      const tenantId = tenant[0]!.id;
      // jsonb's text of this is not its JCS text ({"a": 1.50, "b": 1} against {"a":1.5,"b":1}).
      const legacy = { b: 1, a: 1.5, text: 'café "quoted"' };
      for (let i = 1; i <= 3; i++) {
        await pglite.query(`insert into audit_events (tenant_id, actor_type, action, outcome, metadata) values ($1, 'system', 'test.legacy', 'success', $2)`, [tenantId, JSON.stringify({ ...legacy, i })]);
      }
      const { rows: legacyPositions } = await pglite.query<{ position: string }>('select max(position)::text as position from audit_events');

      expect(await migrateEmbedded(pglite)).toContain(32);
      const { rows: mark } = await pglite.query<{ legacy_through: string }>('select legacy_through::text from audit_seal_watermark');
      expect(mark[0]!.legacy_through).toBe(legacyPositions[0]!.position);

      const config = loadConfig({ NODE_ENV: 'test', DATA_DIR: dataDir });
      const db = await openDatabase({ config, logger: pino({ level: 'silent' }), pglite });
      const keys = loadAuditSigner(config, { warn() {} }).publicKeys;
      const verify = (useDatabase: boolean) => db.systemDb({ reason: 'test: verify across migration 32' }).transaction((tx) => verifyTenantLog(tx, tenantId, keys, useDatabase));
      try {
        await db.withTenant(tenantId, (tx) => recordTenantEvent(tx, tenantId, SYSTEM_ACTOR, NO_REQUEST, { action: 'test.after', metadata: { b: 2, a: 0.25 } }));
        // One pass from below the legacy events: sealed in JavaScript, the new event with them.
        expect(await sealAllLogs(db)).toBe(4);
        const { rows: sealed } = await pglite.query<{ seq: string; canonical_metadata: string }>('select seq::text, canonical_metadata from audit_seals where tenant_id = $1 order by seq', [tenantId]);
        expect(sealed.map((row) => row.canonical_metadata)).toEqual([1, 2, 3].map((i) => jcs({ ...legacy, i })).concat('{"a":0.25,"b":2}'));
        // The watermark is past the legacy events now: the next events are sealed in the database.
        const { rows: after } = await pglite.query<{ past: boolean }>('select position >= legacy_through as past from audit_seal_watermark');
        expect(after[0]!.past).toBe(true);
        await db.withTenant(tenantId, (tx) => recordTenantEvent(tx, tenantId, SYSTEM_ACTOR, NO_REQUEST, { action: 'test.later', metadata: { n: 5 } }));
        expect(await sealAllLogs(db)).toBe(1);
        expect(await verify(true)).toMatchObject({ ok: true, count: 5, head: { seq: 5 } });
        expect(await verify(false)).toMatchObject({ ok: true, count: 5, head: { seq: 5 } });
        // A new event must carry its text: the jsonb column alone is refused.
        await expect(pglite.query(`insert into audit_events (tenant_id, actor_type, action, outcome, metadata, canonical_metadata) values ($1, 'system', 'test.x', 'success', '{}', null)`, [tenantId])).rejects.toThrow(
          /canonical_metadata_check/,
        );
      } finally {
        await db.close();
      }
    } finally {
      await pglite.close().catch(() => {});
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
