import { sealAllLogs } from '../../kernel/audit/sealer.ts';
import { sql } from 'kysely';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Type from 'typebox';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type SessionHandle, type TestApp } from '../../../test/harness.ts';
import { AppError } from '../../kernel/http/errors.ts';
import { tenantRoute } from '../../kernel/http/routes.ts';
import { TenantParams } from '../../kernel/http/schemas.ts';

// A route that writes, stages its audit event, then fails: the test of invariant 6.
const failingWrite = tenantRoute({
  method: 'POST',
  url: '/api/v1/tenants/:tenantId/test-failing-write',
  permission: 'records.write',
  schema: { summary: 'test only', params: TenantParams, response: { 200: Type.Object({}) } },
  async handler({ tx, tenantId, audit }) {
    const row = await tx.insertInto('accounts').values({ tenant_id: tenantId, name: 'doomed' }).returning('id').executeTakeFirstOrThrow();
    await audit({ action: 'account.created', target: { type: 'account', id: row.id } });
    throw new AppError('validation.failed', { detail: 'failing after the event was staged' });
  },
});

// A route whose audit event the database refuses (an outcome the schema does not allow):
// its failure must take the change down with it.
const refusedEvent = tenantRoute({
  method: 'POST',
  url: '/api/v1/tenants/:tenantId/test-refused-event',
  permission: 'records.write',
  schema: { summary: 'test only', params: TenantParams, response: { 200: Type.Object({}) } },
  async handler({ tx, tenantId, audit }) {
    await tx.insertInto('accounts').values({ tenant_id: tenantId, name: 'unrecorded' }).execute();
    await audit({ action: 'account.created', outcome: 'bogus' as never });
    return {};
  },
});

describe('audit log', () => {
  let t: TestApp;
  let owner: SessionHandle;
  let tenantId: string;
  const events = (query = '') => t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/audit-events${query}`, as: owner });

  beforeAll(async () => {
    t = await startTestApp({ extraRoutes: [failingWrite, refusedEvent] });
    ({ session: owner, tenantId } = await t.signup());
    for (const name of ['one', 'two', 'three']) {
      await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner, body: { name } });
    }
  });
  afterAll(async () => t?.close());

  it('lists events newest first with gapless per-tenant sequence numbers and the API.md shape', async () => {
    const body = (await events()).json();
    const seqs = body.items.map((e: { seq: number }) => e.seq);
    expect(seqs).toEqual([...seqs].sort((a, b) => b - a));
    expect(seqs.at(-1)).toBe(1);
    expect(new Set(seqs).size).toBe(seqs[0]);
    expect(body.items[0]).toEqual({
      id: expect.any(String),
      seq: seqs[0],
      at: expect.stringMatching(/Z$/),
      tenantId,
      actor: { type: 'user', id: owner.userId, email: owner.email },
      action: 'account.created',
      target: { type: 'account', id: expect.any(String) },
      outcome: 'success',
      ip: expect.any(String),
      userAgent: expect.any(String),
      metadata: {},
    });
  });

  it('filters by action, actor and time, and pages with a cursor', async () => {
    const created = (await events('?action=account.created')).json().items;
    expect(created).toHaveLength(3);
    expect((await events(`?actorId=${owner.userId}&action=auth.signup`)).json().items).toHaveLength(1);
    const future = new Date(Date.now() + 3600_000).toISOString();
    expect((await events(`?since=${future}`)).json().items).toEqual([]);
    const first = (await events('?limit=2')).json();
    const second = (await events(`?limit=2&cursor=${first.nextCursor}`)).json();
    expect(second.items[0].seq).toBe(first.items[1].seq - 1);
    const bad = await events(`?since=${future}&until=${new Date(0).toISOString()}`);
    expect(bad.statusCode).toBe(400);
  });

  it('a change that fails after staging its event leaves neither the change nor the event', async () => {
    const before = (await events('?limit=100')).json().items.length;
    const response = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/test-failing-write`, as: owner });
    expect(response.statusCode).toBe(400);
    expect(await t.admin.query(`select 1 from accounts where name = 'doomed'`)).toEqual([]);
    expect((await events('?limit=100')).json().items.length).toBe(before);
  });

  it('a change whose event the database refuses does not land either', async () => {
    const response = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/test-refused-event`, as: owner });
    expect(response.statusCode).toBe(500);
    expect(response.headers['content-type']).toMatch(/problem\+json/);
    expect(await t.admin.query(`select 1 from accounts where name = 'unrecorded'`)).toEqual([]);
    expect(await t.admin.query(`select 1 from audit_events where outcome = 'bogus'`)).toEqual([]);
    // The connection is fine afterwards.
    expect((await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner, body: { name: 'after the refusal' } })).statusCode).toBe(201);
  });

  it('the application role can insert and read audit rows but never update or delete them', async () => {
    await expect(t.db.withTenant(tenantId, (tx) => sql`update audit_events set action = 'x'`.execute(tx))).rejects.toThrow(/permission denied/);
    await expect(t.db.withTenant(tenantId, (tx) => sql`delete from audit_events`.execute(tx))).rejects.toThrow(/permission denied/);
    await expect(t.db.systemDb({ reason: 'prove the system role cannot rewrite history' }).transaction((tx) => sql`delete from audit_events`.execute(tx))).rejects.toThrow(/permission denied/);
    // Nor choose where an event goes, what it is called or when it happened, nor seal it itself,
    // nor write the jsonb metadata only events from before migration 32 have.
    for (const column of ['position', 'id', 'at', 'metadata']) {
      const value = column === 'position' ? sql`1` : column === 'id' ? sql`gen_random_uuid()` : column === 'at' ? sql`now() - interval '1 year'` : sql`'{}'::jsonb`;
      await expect(
        t.db.withTenant(tenantId, (tx) => sql`insert into audit_events (tenant_id, actor_type, action, outcome, ${sql.id(column)}) values (${tenantId}, 'system', 'forged', 'success', ${value})`.execute(tx)),
        column,
      ).rejects.toThrow(/permission denied/);
    }
    await expect(
      t.db.withTenant(tenantId, (tx) => sql`insert into audit_seals (tenant_id, seq, position, action, hash, canonical_metadata) values (${tenantId}, 999999, 1, 'forged', decode(repeat('00', 32), 'hex'), '{}')`.execute(tx)),
    ).rejects.toThrow(/permission denied/);
  });

  it('a trigger keeps audit rows append-only for every role, the tables owner and the superuser included', async () => {
    const [before] = await t.admin.query<{ n: number }>('select count(*)::int as n from audit_events where tenant_id = $1', [tenantId]);
    for (const statement of [
      `update audit_events set action = 'edited' where tenant_id = '${tenantId}'`,
      `delete from audit_events where tenant_id = '${tenantId}'`,
      'truncate audit_events',
      `update audit_seals set action = 'edited' where tenant_id = '${tenantId}'`,
      `delete from audit_seals where tenant_id = '${tenantId}'`,
      'truncate audit_seals',
      `update platform_audit_events set action = 'edited'`,
      'delete from platform_audit_events',
    ]) {
      await expect(t.admin.query(statement), statement).rejects.toThrow(/append-only/);
    }
    const [after] = await t.admin.query<{ n: number }>('select count(*)::int as n from audit_events where tenant_id = $1', [tenantId]);
    expect(after!.n).toBe(before!.n);
  });

  it("an event a request records carries that request's id as the server answered it (never an id the client sent), its address and its user agent", async () => {
    // A tenant of its own: the export below is itself an event, which other tests count.
    const { session, tenantId: traced } = await t.signup();
    const client = { 'x-request-id': 'client-chosen-request-id', 'user-agent': 'request-id-test/1.0 (audit)' };
    const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
    const created = await t.request({ method: 'POST', url: `/api/v1/tenants/${traced}/accounts`, as: session, body: { name: 'Traced' }, headers: client, remoteAddress: '192.0.2.44' });
    expect(created.statusCode).toBe(201);
    const requestId = created.headers['x-request-id'];
    expect(requestId).toMatch(uuid);
    expect(requestId).not.toBe(client['x-request-id']);
    const accountId = created.json<{ id: string }>().id;
    const recorded = `select request_id, ip, user_agent from audit_events where tenant_id = $1 and action = $2`;
    expect(await t.admin.query(`${recorded} and target_id = $3`, [traced, 'account.created', accountId])).toEqual([{ request_id: requestId, ip: '192.0.2.44', user_agent: client['user-agent'] }]);

    // As served: the list shows address and user agent, the export the request id too.
    const listed = (await t.request({ method: 'GET', url: `/api/v1/tenants/${traced}/audit-events?action=account.created`, as: session })).json<{ items: Record<string, unknown>[] }>().items;
    expect(listed).toEqual([expect.objectContaining({ target: { type: 'account', id: accountId }, ip: '192.0.2.44', userAgent: client['user-agent'] })]);
    const exported = await t.request({ method: 'GET', url: `/api/v1/tenants/${traced}/audit-events/export?format=jsonl`, as: session, headers: client, remoteAddress: '192.0.2.45' });
    expect(exported.statusCode).toBe(200);
    const lines = exported.body.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(lines.filter((line) => line.action === 'account.created')).toEqual([expect.objectContaining({ requestId, ip: '192.0.2.44', userAgent: client['user-agent'] })]);
    // The export recorded itself, with its own request's id.
    const exportId = exported.headers['x-request-id'];
    expect(exportId).toMatch(uuid);
    expect(exportId).not.toBe(requestId);
    expect(await t.admin.query(recorded, [traced, 'audit.exported'])).toEqual([{ request_id: exportId, ip: '192.0.2.45', user_agent: client['user-agent'] }]);

    // A platform event (a failed login) alike.
    const email = `nobody-${traced}@request-id.example`;
    const failed = await t.request({ method: 'POST', url: '/api/v1/auth/login', body: { email, password: 'not the password at all' }, headers: client, remoteAddress: '192.0.2.46' });
    expect(failed.statusCode).toBe(401);
    const failedId = failed.headers['x-request-id'];
    expect(failedId).toMatch(uuid);
    expect(await t.admin.query(`select request_id, ip, user_agent from platform_audit_events where action = 'auth.login.failed' and ip = '192.0.2.46'`)).toEqual([
      { request_id: failedId, ip: '192.0.2.46', user_agent: client['user-agent'] },
    ]);
  });

  it("an account's history: its events newest first, for anyone who may read it, also after deletion, without addresses", async () => {
    const viewer = await t.addMember(owner, tenantId, 'viewer');
    const accounts = `/api/v1/tenants/${tenantId}/accounts`;
    const { id } = (await t.request({ method: 'POST', url: accounts, as: owner, body: { name: 'History Inc' } })).json<{ id: string }>();
    await t.request({ method: 'PATCH', url: `${accounts}/${id}`, as: owner, body: { name: 'History Two' } });
    await t.request({ method: 'POST', url: accounts, as: owner, body: { name: 'Unrelated' } });
    // Upper case in the request: the event still names the account as its history looks it up.
    expect((await t.request({ method: 'DELETE', url: `${accounts}/${id.toUpperCase()}`, as: owner })).statusCode).toBe(204);
    const history = await t.request({ method: 'GET', url: `${accounts}/${id}/history?limit=2`, as: viewer });
    expect(history.statusCode).toBe(200);
    const page1 = history.json<{ items: { action: string; ip?: unknown; userAgent?: unknown; actor: { id: string } }[]; nextCursor: string }>();
    expect(page1.items.map((e) => e.action)).toEqual(['account.deleted', 'account.updated']);
    expect(page1.items[0]!.actor.id).toBe(owner.userId);
    expect(page1.items[0]).not.toHaveProperty('ip');
    expect(page1.items[0]).not.toHaveProperty('userAgent');
    const page2 = await t.request({ method: 'GET', url: `${accounts}/${id}/history?cursor=${page1.nextCursor}`, as: viewer });
    expect(page2.json<{ items: { action: string }[] }>().items.map((e) => e.action)).toEqual(['account.created']);
    expect((await t.request({ method: 'GET', url: `${accounts}/00000000-0000-4000-8000-000000000000/history`, as: viewer })).statusCode).toBe(404);
    const { session: outsider } = await t.signup();
    expect((await t.request({ method: 'GET', url: `${accounts}/${id}/history`, as: outsider })).statusCode).toBe(404);
  });

  it('exports the log as JSON lines and as CSV, oldest first, only this tenant, and audits the export', async () => {
    await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner, body: { name: '=HYPERLINK("http://evil"), "quoted"\nline' } });
    const { session: other, tenantId: otherTenant } = await t.signup();
    await t.request({ method: 'POST', url: `/api/v1/tenants/${otherTenant}/accounts`, as: other, body: { name: 'Other tenant account' } });
    const [{ n: count }] = (await t.admin.query<{ n: number }>('select count(*)::int as n from audit_events where tenant_id = $1', [tenantId])) as [{ n: number }];

    const jsonl = await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/audit-events/export?format=jsonl`, as: owner });
    expect(jsonl.statusCode).toBe(200);
    expect(jsonl.headers['content-type']).toMatch(/^application\/x-ndjson/);
    expect(jsonl.headers['content-disposition']).toBe(`attachment; filename="audit-${tenantId}.jsonl"`);
    const events = jsonl.body.trim().split('\n').map((line) => JSON.parse(line) as { seq: number; tenantId: string; action: string });
    expect(events).toHaveLength(count);
    expect(events.map((e) => e.seq)).toEqual(Array.from({ length: count }, (_, i) => i + 1));
    expect(events.every((e) => e.tenantId === tenantId)).toBe(true);
    expect(jsonl.body).not.toContain('Other tenant account');

    const csv = await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/audit-events/export?format=csv&since=2000-01-01T00:00:00.000Z`, as: owner });
    expect(csv.headers['content-type']).toMatch(/^text\/csv/);
    const [header, ...rows] = csv.body.split('\r\n').filter((line) => line !== '');
    expect(header).toBe('id,seq,at,actorType,actorId,actorEmail,action,targetType,targetId,outcome,ip,userAgent,requestId,metadata,hash');
    expect(rows.length).toBeGreaterThanOrEqual(count); // the JSON export is itself an event now
    const exported = await t.admin.query<{ metadata: { format: string } }>(`select canonical_metadata::jsonb as metadata from audit_events where tenant_id = $1 and action = 'audit.exported' order by position`, [tenantId]);
    expect(exported.map((e) => e.metadata.format)).toEqual(['jsonl', 'csv']);
  });

  it('a CSV field is quoted, and a formula is shown as text', async () => {
    const { csvField } = await import('../../kernel/http/csv.ts');
    expect(csvField('=HYPERLINK("x")')).toBe(`"'=HYPERLINK(""x"")"`);
    expect(csvField('plain, with comma')).toBe('"plain, with comma"');
    expect(csvField(null)).toBe('""');
    expect(csvField({ a: 1 })).toBe('"{""a"":1}"');
    for (const lead of ['+', '-', '@', '\t']) expect(csvField(`${lead}1`).startsWith(`"'`)).toBe(true);
  });

  it('exporting needs a recent authentication and audit.read; bad parameters are a clean 400', async () => {
    const url = `/api/v1/tenants/${tenantId}/audit-events/export`;
    const viewer = await t.addMember(owner, tenantId, 'viewer');
    expect((await t.request({ method: 'GET', url: `${url}?format=jsonl`, as: viewer })).statusCode).toBe(403);
    for (const query of ['', '?format=xml', '?format=csv&since=yesterday', '?format=csv&since=2030-01-01T00:00:00Z&until=2020-01-01T00:00:00Z', '?format=csv&extra=1']) {
      const response = await t.request({ method: 'GET', url: `${url}${query}`, as: owner });
      expect(response.statusCode, query).toBe(400);
    }
    // A HEAD of the export is not routed: it would record an export that never happened.
    expect((await t.request({ method: 'HEAD', url: `${url}?format=jsonl`, as: owner })).statusCode).toBe(404);
    await t.admin.query(`update sessions set authenticated_at = now() - interval '16 minutes' where user_id = $1`, [owner.userId]);
    const stale = await t.request({ method: 'GET', url: `${url}?format=jsonl`, as: owner });
    expect(stale.statusCode).toBe(403);
    expect(stale.json().code).toBe('auth.reauth_required');
    await t.admin.query(`update sessions set authenticated_at = now() where user_id = $1`, [owner.userId]);
  });

  it('members without audit.read cannot see the log', async () => {
    const member = await t.addMember(owner, tenantId, 'member');
    const response = await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/audit-events`, as: member });
    expect(response.statusCode).toBe(403);
  });
});

describe('streamed answers (readLater)', () => {
  it('a later read checks the caller again: once the session is revoked, the download stops', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const streamed = tenantRoute({
      method: 'GET',
      url: '/api/v1/tenants/:tenantId/test-streamed',
      permission: 'records.read',
      schema: { summary: 'test only', params: TenantParams, response: { 200: Type.String() } },
      async handler({ tenantId, readLater }) {
        async function* chunks(): AsyncGenerator<string> {
          yield 'first chunk\n';
          await gate;
          const rows = await readLater((tx) => tx.selectFrom('accounts').select('name').where('tenant_id', '=', tenantId).execute());
          yield `${rows.map((r) => r.name).join(',')}\n`;
        }
        return (await import('node:stream')).Readable.from(chunks());
      },
    });
    const t = await startTestApp({ extraRoutes: [streamed] });
    try {
      const { session, tenantId } = await t.signup();
      await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: session, body: { name: 'Secret after revocation' } });
      const pending = t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/test-streamed`, as: session }).catch((error: unknown) => error);
      await new Promise((resolve) => setTimeout(resolve, 100));
      await t.admin.query('update sessions set revoked_at = now() where user_id = $1', [session.userId]);
      release();
      const response = await pending;
      const body = (response as { body?: string }).body ?? '';
      expect(body).not.toContain('Secret after revocation');
    } finally {
      await t.close();
    }
  });
});

describe('the operator audit stream (AUDIT_STREAM)', () => {
  it('writes every committed event as one JSON line, tenant and platform alike, and nothing of a rolled-back change', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'cn-audit-stream-'));
    const file = path.join(dir, 'audit.jsonl');
    const t = await startTestApp({ env: { AUDIT_STREAM: file }, extraRoutes: [failingWrite] });
    let closed = false;
    try {
      const { session, tenantId } = await t.signup();
      const created = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: session, body: { name: 'Streamed' } });
      expect((await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/test-failing-write`, as: session })).statusCode).toBe(400);
      await t.request({ method: 'POST', url: '/api/v1/auth/login', body: { email: 'nobody-streamed@example.com', password: 'wrong password here' } });
      await sealAllLogs(t.db); // the sealer writes the stream lines, each with its seq and hash
      const [row] = await t.admin.query<{ id: string; seq: number; hash: string }>(`select id, seq::int as seq, encode(hash, 'hex') as hash from audit_log where action = 'account.created' and tenant_id = $1`, [tenantId]);
      await t.close(); // flushes and closes the stream
      closed = true;
      const lines = readFileSync(file, 'utf8').trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
      const account = lines.find((l) => l.action === 'account.created');
      expect(account).toMatchObject({ stream: 'audit', log: 'tenant', tenantId, target: { type: 'account', id: created.json().id }, actor: { type: 'user', id: session.userId }, outcome: 'success' });
      expect(account).toMatchObject({ id: row!.id, seq: row!.seq, hash: row!.hash });
      expect(lines.filter((l) => l.action === 'account.created')).toHaveLength(1); // the doomed write's event never left
      expect(lines.some((l) => l.log === 'platform' && l.action === 'auth.login.failed')).toBe(true);
      expect(JSON.stringify(lines)).not.toContain('wrong password here');
    } finally {
      if (!closed) await t.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a stream that cannot be written does not take the server down: the database still keeps the event', async () => {
    const t = await startTestApp({ env: { AUDIT_STREAM: '/nonexistent-directory-for-cn-tests/audit.jsonl' } });
    try {
      const { session, tenantId } = await t.signup();
      const created = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: session, body: { name: 'Kept anyway' } });
      expect(created.statusCode).toBe(201);
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect((await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: session, body: { name: 'And again' } })).statusCode).toBe(201);
      const rows = await t.admin.query(`select 1 from audit_events where tenant_id = $1 and action = 'account.created'`, [tenantId]);
      expect(rows).toHaveLength(2);
    } finally {
      await t.close();
    }
  });
});
