import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openTestDatabase, type TestDatabase } from '../../../test/harness.ts';
import { recordPlatformEvent, recordTenantEvent, type Actor, type AuditEvent, type RequestMeta } from './record.ts';

// Every field distinct, so a value written to the wrong column cannot go unnoticed.
const ACTOR: Actor = { type: 'apikey', id: randomUUID(), email: 'actor@example.com' };
const META: RequestMeta = { requestId: 'request-7', ip: '203.0.113.9', userAgent: 'Agent/2.0' };
const EVENT: AuditEvent = { action: 'account.updated', target: { type: 'account', id: 'ACC-42' }, outcome: 'denied', metadata: { before: { name: 'a' }, after: { name: 'b' } } };
const COLUMNS = 'tenant_id, actor_type, actor_id, actor_email, action, target_type, target_id, outcome, ip, user_agent, request_id';
// A tenant event's metadata is stored as its JCS text (keys sorted), which the sealer hashes.
const METADATA_JCS = '{"after":{"name":"b"},"before":{"name":"a"}}';

function expected(tenantId: string | null) {
  return {
    tenant_id: tenantId,
    actor_type: 'apikey',
    actor_id: ACTOR.id,
    actor_email: 'actor@example.com',
    action: 'account.updated',
    target_type: 'account',
    target_id: 'ACC-42',
    outcome: 'denied',
    ip: '203.0.113.9',
    user_agent: 'Agent/2.0',
    request_id: 'request-7',
  };
}

describe('recording an audit event', () => {
  let t: TestDatabase;
  beforeAll(async () => {
    t = await openTestDatabase();
  });
  afterAll(async () => t?.close());

  it('stores each field of a tenant event in its own column, with the id, time and position the database gives', async () => {
    const tenantId = randomUUID();
    await t.admin.query('insert into tenants (id, name) values ($1, $2)', [tenantId, 'record test']);
    await t.db.withTenant(tenantId, (tx) => recordTenantEvent(tx, tenantId, ACTOR, META, EVENT));
    const rows = await t.admin.query(`select ${COLUMNS}, canonical_metadata, metadata, id, at, position from audit_events where tenant_id = $1`, [tenantId]);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ ...expected(tenantId), canonical_metadata: METADATA_JCS, metadata: null });
    expect(rows[0]!.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(rows[0]!.position).not.toBeNull();
  });

  it('stores each field of a platform event in its own column, with or without a tenant', async () => {
    const tenantId = randomUUID();
    const system = t.db.systemDb({ reason: 'test: record platform events' });
    await system.transaction(async (tx) => {
      await recordPlatformEvent(tx, ACTOR, META, { ...EVENT, tenantId });
      await recordPlatformEvent(tx, ACTOR, META, { ...EVENT, action: 'platform.job' });
    });
    const rows = await t.admin.query(`select ${COLUMNS}, metadata from platform_audit_events where tenant_id = $1 or (tenant_id is null and action = 'platform.job' and actor_id = $2)`, [tenantId, ACTOR.id]);
    expect(rows).toHaveLength(2);
    const metadata = { before: { name: 'a' }, after: { name: 'b' } };
    expect(rows).toContainEqual({ ...expected(tenantId), metadata });
    expect(rows).toContainEqual({ ...expected(null), action: 'platform.job', metadata });
  });

  it('stores a UUID target id in lower case, and an event without target, outcome or metadata with the defaults', async () => {
    const tenantId = randomUUID();
    const upper = randomUUID().toUpperCase();
    await t.admin.query('insert into tenants (id, name) values ($1, $2)', [tenantId, 'record defaults']);
    await t.db.withTenant(tenantId, async (tx) => {
      await recordTenantEvent(tx, tenantId, ACTOR, META, { action: 'account.deleted', target: { type: 'account', id: upper } });
      await recordTenantEvent(tx, tenantId, { type: 'system', id: null }, { requestId: null, ip: null, userAgent: null }, { action: 'settings.updated' });
    });
    const rows = await t.admin.query<{ action: string; target_type: string | null; target_id: string | null; outcome: string; canonical_metadata: string; actor_email: string | null; ip: string | null }>(
      'select action, target_type, target_id, outcome, canonical_metadata, actor_email, ip from audit_events where tenant_id = $1 order by position',
      [tenantId],
    );
    expect(rows).toEqual([
      { action: 'account.deleted', target_type: 'account', target_id: upper.toLowerCase(), outcome: 'success', canonical_metadata: '{}', actor_email: 'actor@example.com', ip: '203.0.113.9' },
      { action: 'settings.updated', target_type: null, target_id: null, outcome: 'success', canonical_metadata: '{}', actor_email: null, ip: null },
    ]);
  });
});

describe("the audit event table's own guarantees", () => {
  let t: TestDatabase;
  beforeAll(async () => {
    t = await openTestDatabase();
  });
  afterAll(async () => t?.close());

  const system = () => t.db.systemDb({ reason: "test: the audit table's guarantees" });

  it('refuses an event of a tenant that does not exist, from any role that may write events', async () => {
    const nobody = randomUUID();
    await expect(system().transaction((tx) => recordTenantEvent(tx, nobody, ACTOR, META, EVENT))).rejects.toThrow(/row-level security/);
    const [count] = await t.admin.query<{ n: number }>('select count(*)::int as n from audit_events where tenant_id = $1', [nobody]);
    expect(count!.n).toBe(0);
    // A tenant created in the same transaction is there for its first event.
    const fresh = randomUUID();
    await system().transaction(async (tx) => {
      await tx.insertInto('tenants').values({ id: fresh, name: 'created with its first event' }).execute();
      await recordTenantEvent(tx, fresh, ACTOR, META, EVENT);
    });
    const [recorded] = await t.admin.query<{ n: number }>('select count(*)::int as n from audit_events where tenant_id = $1', [fresh]);
    expect(recorded!.n).toBe(1);
  });

  it('never lets a tenant be deleted, the tables owner included: its events keep their tenant', async () => {
    const tenantId = randomUUID();
    await t.admin.query('insert into tenants (id, name) values ($1, $2)', [tenantId, 'kept']);
    await t.db.withTenant(tenantId, (tx) => recordTenantEvent(tx, tenantId, ACTOR, META, EVENT));
    await expect(t.admin.query('delete from tenants where id = $1', [tenantId])).rejects.toThrow(/never deleted/);
    await expect(system().transaction((tx) => tx.deleteFrom('tenants').where('id', '=', tenantId).execute())).rejects.toThrow(/never deleted/);
    await expect(t.admin.query('truncate tenants cascade')).rejects.toThrow(/never deleted/);
    const [kept] = await t.admin.query<{ n: number }>('select count(*)::int as n from tenants where id = $1', [tenantId]);
    expect(kept!.n).toBe(1);
  });

  it('refuses an actor type or outcome outside the known ones', async () => {
    const tenantId = randomUUID();
    await t.admin.query('insert into tenants (id, name) values ($1, $2)', [tenantId, 'checked']);
    await expect(t.db.withTenant(tenantId, (tx) => recordTenantEvent(tx, tenantId, { ...ACTOR, type: 'robot' as never }, META, EVENT))).rejects.toThrow(/cn_audit_actor_type/);
    await expect(t.db.withTenant(tenantId, (tx) => recordTenantEvent(tx, tenantId, ACTOR, META, { ...EVENT, outcome: 'maybe' as never }))).rejects.toThrow(/cn_audit_outcome/);
    const system = t.db.systemDb({ reason: 'test: platform events are checked alike' });
    await expect(system.transaction((tx) => recordPlatformEvent(tx, { ...ACTOR, type: 'robot' as never }, META, EVENT))).rejects.toThrow(/cn_audit_actor_type/);
  });

  it('gives new events time-ordered ids (UUIDv7), unique and in the order they were written', async () => {
    const tenantId = randomUUID();
    await t.admin.query('insert into tenants (id, name) values ($1, $2)', [tenantId, 'ordered ids']);
    for (let i = 0; i < 5; i++) {
      await t.db.withTenant(tenantId, (tx) => recordTenantEvent(tx, tenantId, ACTOR, META, EVENT));
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    const rows = await t.admin.query<{ id: string; at: Date }>('select id, at from audit_events where tenant_id = $1 order by position', [tenantId]);
    expect(rows.map((row) => row.id[14])).toEqual(['7', '7', '7', '7', '7']);
    expect(rows.map((row) => row.id)).toEqual([...rows.map((row) => row.id)].sort());
    expect(new Set(rows.map((row) => row.id)).size).toBe(5);
    // The first 48 bits are the time in milliseconds, within a second of the event's own.
    for (const row of rows) expect(Math.abs(parseInt(row.id.replaceAll('-', '').slice(0, 12), 16) - row.at.getTime())).toBeLessThan(1000);
  });
});
