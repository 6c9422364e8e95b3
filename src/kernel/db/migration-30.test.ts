import { PGlite } from '@electric-sql/pglite';
import { describe, expect, it } from 'vitest';
import { chainHash, GENESIS_HASH, jcs } from '../audit/chain.ts';
import { chainRecordOf } from '../audit/sealer.ts';
import { migrateEmbedded } from './migrate.ts';

describe('migration 30 (audit seals in a table of their own)', () => {
  it('moves the seals of a log sealed under version 29 into audit_seals, keeps the chain, and starts the watermark below the first unsealed event', async () => {
    const pglite = await PGlite.create();
    try {
      await migrateEmbedded(pglite, 29);
      const { rows: tenant } = await pglite.query<{ id: string }>(`insert into tenants (name) values ('Before 30') returning id`);
      const tenantId = tenant[0]!.id;
      for (let i = 1; i <= 4; i++) {
        await pglite.query(
          `insert into audit_events (tenant_id, actor_type, action, target_type, target_id, outcome, metadata) values ($1, 'system', 'account.created', 'account', $2, 'success', $3)`,
          [tenantId, `acc-${i}`, JSON.stringify({ name: `Account ${i}`, n: i })],
        );
      }
      // Seal the first three as the version-29 sealer did: seq, hash, canonical metadata on the row.
      const { rows: events } = await pglite.query<Record<string, unknown> & { id: string; position: string; metadata: Record<string, unknown> }>(
        'select * from audit_events where tenant_id = $1 order by position',
        [tenantId],
      );
      await pglite.exec('alter table audit_events disable trigger audit_events_append_only');
      let hash = GENESIS_HASH;
      for (const [k, event] of events.slice(0, 3).entries()) {
        hash = chainHash(hash, chainRecordOf('tenant', event as never, k + 1));
        await pglite.query('update audit_events set seq = $2, hash = $3, sealed_at = now(), canonical_metadata = $4 where id = $1', [event.id, k + 1, hash, jcs(event.metadata)]);
      }
      await pglite.exec('alter table audit_events enable trigger audit_events_append_only');
      await pglite.query('insert into audit_chain_heads (tenant_id, seq, hash) values ($1, 3, $2)', [tenantId, hash]);

      expect(await migrateEmbedded(pglite)).toContain(30);

      const { rows: logged } = await pglite.query<Record<string, unknown> & { seq: string; hash: Uint8Array; sealed_action: string; action: string }>(
        'select * from audit_log where tenant_id = $1 order by seq',
        [tenantId],
      );
      expect(logged.map((row) => Number(row.seq))).toEqual([1, 2, 3]);
      let previous = GENESIS_HASH;
      for (const row of logged) {
        previous = chainHash(previous, chainRecordOf('tenant', row as never, Number(row.seq)));
        expect(Buffer.from(row.hash).equals(previous)).toBe(true);
        expect(row.sealed_action).toBe(row.action);
      }
      const { rows: mark } = await pglite.query<{ position: string }>('select position::text from audit_seal_watermark');
      expect(mark[0]!.position).toBe(String(BigInt(events[3]!.position) - 1n));
      // The event the old sealer had not reached is still waiting above the watermark, and events are never updated now.
      const { rows: waiting } = await pglite.query<{ n: number }>(
        'select count(*)::int as n from audit_events e where e.position > (select position from audit_seal_watermark) and not exists (select 1 from audit_seals s where s.position = e.position)',
      );
      expect(waiting[0]!.n).toBe(1);
      await expect(pglite.query(`update audit_events set action = 'x' where tenant_id = $1`, [tenantId])).rejects.toThrow(/append-only/);
    } finally {
      await pglite.close();
    }
  });
});
