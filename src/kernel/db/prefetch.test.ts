import { CompiledQuery } from 'kysely';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startTestApp, type TestApp } from '../../../test/harness.ts';
import { hashToken } from '../crypto/tokens.ts';
import { literalParameters, StrictEntryRefusedError } from './database.ts';

const A = '0d6f2c51-6a0e-4b7f-9b43-3f2f1f6b9c11';
const B = 'F1E2D3C4-B5A6-4978-8899-AABBCCDDEEFF';

describe('the arguments of a prefetch read, as literals', () => {
  it('are UUIDs (lower-cased) and safe integers only, in order', () => {
    const query = CompiledQuery.raw('select $1, $2, $3', [A, 7, B]);
    expect(literalParameters(query)).toEqual([`'${A}'`, '7', `'${B.toLowerCase()}'`]);
    expect(literalParameters(CompiledQuery.raw('select 1', []))).toEqual([]);
  });

  it('refuse anything else: text, a UUID-looking injection, fractions, negative or huge numbers, null, booleans, dates', () => {
    for (const value of ['x', `${A}'; drop table accounts; --`, "a' or '1'='1", 1.5, -1, 2 ** 60, null, true, new Date()]) {
      expect(literalParameters(CompiledQuery.raw('select $1', [value])), String(value)).toBeNull();
    }
  });
});

// Threat: the read that travels with the tenant entry runs for someone the guard would refuse.
describe('the strict tenant entry (PostgreSQL sends the read along with it)', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => t?.close());

  const tokenHash = (cookie: string) => hashToken(cookie.split('=')[1]!);
  const accountRead = (tenantId: string, id: string) =>
    t.db.compiler.selectFrom('accounts').select(['id', 'name']).where('tenant_id', '=', tenantId).where('id', '=', id).compile();

  it.skipIf(inject('testDb').kind !== 'postgres')('answers the read only for a caller whose role may; refuses everyone else before the read runs', async () => {
    const { session: owner, tenantId } = await t.signup();
    const { session: outsider } = await t.signup();
    const created = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner, body: { name: 'Prefetched' } });
    const query = accountRead(tenantId, created.json().id);
    const run = (hash: Buffer, roles: string[]) =>
      t.db.withTenantSession(tenantId, hash, 30, async (_tx, caller, rows) => ({ caller, rows }), { roles, query });

    const allowed = await run(tokenHash(owner.cookie), ['owner', 'admin']);
    expect(allowed.caller?.role).toBe('owner');
    expect(allowed.rows).toEqual([{ id: created.json().id, name: 'Prefetched' }]);

    await expect(run(tokenHash(owner.cookie), ['viewer'])).rejects.toBeInstanceOf(StrictEntryRefusedError);
    await expect(run(tokenHash(outsider.cookie), ['owner', 'admin', 'member', 'viewer'])).rejects.toBeInstanceOf(StrictEntryRefusedError);
    await expect(run(Buffer.alloc(32), ['owner'])).rejects.toBeInstanceOf(StrictEntryRefusedError);
    // A refused message leaves the connection usable, and the read prepared once keeps answering.
    for (let i = 0; i < 12; i++) expect((await run(tokenHash(owner.cookie), ['owner'])).rows).toHaveLength(1);
  });

  it.skipIf(inject('testDb').kind !== 'postgres')(
    'refuses, before the read runs, an idle, revoked or other-tenant SSO session and a member short of the tenant MFA or SSO rule',
    async () => {
      const { session: owner, tenantId } = await t.signup();
      const { tenantId: otherTenant } = await t.signup();
      const member = await t.addMember(owner, tenantId, 'member');
      const created = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner, body: { name: 'Guarded' } });
      const query = accountRead(tenantId, created.json().id);
      const run = () =>
        t.db.withTenantSession(tenantId, tokenHash(member.cookie), 30, async (_tx, caller, rows) => ({ caller, rows }), { roles: ['owner', 'admin', 'member'], query });
      const refused = () => expect(run()).rejects.toBeInstanceOf(StrictEntryRefusedError);
      const session = `user_id = '${member.userId}'`;
      // A tenant has a settings row once an admin first saves one.
      const settings = async (values: string) => {
        await t.admin.query(`insert into tenant_settings (tenant_id) values ($1) on conflict (tenant_id) do nothing`, [tenantId]);
        await t.admin.query(`update tenant_settings set ${values} where tenant_id = $1`, [tenantId]);
      };
      expect((await run()).rows).toHaveLength(1);

      await t.admin.query(`update sessions set last_seen_at = now() - interval '31 minutes' where ${session}`);
      await refused();
      // The tenant's own idle limit, shorter than the platform's, counts too.
      await t.admin.query(`update sessions set last_seen_at = now() - interval '6 minutes' where ${session}`);
      await settings('session_idle_minutes = 5');
      await refused();
      await settings('session_idle_minutes = 60');
      expect((await run()).rows).toHaveLength(1);

      await t.admin.query(`insert into tenant_session_revocations (tenant_id, user_id, revoked_before) values ($1, $2, now())`, [tenantId, member.userId]);
      await refused();
      await t.admin.query(`delete from tenant_session_revocations where tenant_id = $1`, [tenantId]);

      await t.admin.query(`update sessions set sso_tenant_id = $1 where ${session}`, [otherTenant]);
      await refused();
      await t.admin.query(`update sessions set sso_tenant_id = null where ${session}`);

      await settings('require_mfa = true');
      await refused();
      await settings('require_mfa = false, require_sso = true');
      await refused();
      await settings('require_sso = false');

      await t.admin.query(`update sessions set revoked_at = now() where ${session}`);
      await refused();
    },
  );

  it.skipIf(inject('testDb').kind !== 'postgres')('stamps a session it lets in once a minute, never one it refuses', async () => {
    const { session: owner, tenantId } = await t.signup();
    const created = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner, body: { name: 'Stamped' } });
    const query = accountRead(tenantId, created.json().id);
    const run = (roles: string[]) => t.db.withTenantSession(tenantId, tokenHash(owner.cookie), 30, async (_tx, _caller, rows) => rows, { roles, query });
    const minutesAgo = async () =>
      Number((await t.admin.query<{ m: string }>(`select extract(epoch from now() - last_seen_at) / 60 as m from sessions where user_id = $1`, [owner.userId]))[0]!.m);

    await t.admin.query(`update sessions set last_seen_at = now() - interval '10 minutes' where user_id = $1`, [owner.userId]);
    await expect(run(['viewer'])).rejects.toBeInstanceOf(StrictEntryRefusedError);
    expect(await minutesAgo()).toBeGreaterThan(9);
    expect(await run(['owner'])).toHaveLength(1);
    // The stamp commits with the read-only transaction's deferred COMMIT (pg-driver.ts).
    await expect.poll(minutesAgo).toBeLessThan(1);
    // Not due: a read within the minute leaves the stamp alone.
    await t.admin.query(`update sessions set last_seen_at = now() - interval '30 seconds' where user_id = $1`, [owner.userId]);
    expect(await run(['owner'])).toHaveLength(1);
    expect(await minutesAgo()).toBeGreaterThan(0.4);
  });

  it("keeps each membership's copy of the tenant's sign-out equal to the record, for a re-added member too", async () => {
    const { session: owner, tenantId } = await t.signup();
    const member = await t.addMember(owner, tenantId, 'member');
    const copy = async () =>
      (await t.admin.query<{ signed_out_before: Date | null }>(`select signed_out_before from memberships where tenant_id = $1 and user_id = $2`, [tenantId, member.userId]))[0]
        ?.signed_out_before ?? null;
    const record = async () =>
      (await t.admin.query<{ revoked_before: Date }>(`select revoked_before from tenant_session_revocations where tenant_id = $1 and user_id = $2`, [tenantId, member.userId]))[0]
        ?.revoked_before ?? null;
    expect(await copy()).toBeNull();
    await t.admin.query(`insert into tenant_session_revocations (tenant_id, user_id, revoked_before) values ($1, $2, now() - interval '1 hour')`, [tenantId, member.userId]);
    expect(await copy()).toEqual(await record());
    await t.admin.query(`update tenant_session_revocations set revoked_before = now() where tenant_id = $1 and user_id = $2`, [tenantId, member.userId]);
    expect(await copy()).toEqual(await record());
    // Removed, then added again: the sign-out still applies to the sessions from before.
    await t.admin.query(`delete from memberships where tenant_id = $1 and user_id = $2`, [tenantId, member.userId]);
    await t.admin.query(`insert into memberships (tenant_id, user_id, role) values ($1, $2, 'member')`, [tenantId, member.userId]);
    expect(await copy()).toEqual(await record());
    expect(await copy()).not.toBeNull();
    await t.admin.query(`delete from tenant_session_revocations where tenant_id = $1 and user_id = $2`, [tenantId, member.userId]);
    expect(await copy()).toBeNull();
  });

  it('the query compiler given to prefetch builders compiles but can never run a query', async () => {
    const query = t.db.compiler.selectFrom('accounts').select('id').where('id', '=', A);
    expect(query.compile().sql).toBe('select "id" from "accounts" where "id" = $1');
    await expect(query.execute()).rejects.toThrow(/cannot run queries/);
  });

  it('the read routes answer the same on every path: member 200, outsider 404 and audited, viewer 200, unknown id 404', async () => {
    const { session: owner, tenantId } = await t.signup();
    const { session: outsider } = await t.signup();
    const viewer = await t.addMember(owner, tenantId, 'viewer');
    const account = (await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner, body: { name: 'Read me' } })).json<{ id: string }>();
    const url = `/api/v1/tenants/${tenantId}/accounts/${account.id}`;
    expect((await t.request({ method: 'GET', url, as: owner })).json().name).toBe('Read me');
    expect((await t.request({ method: 'GET', url, as: viewer })).statusCode).toBe(200);
    const refused = await t.request({ method: 'GET', url, as: outsider });
    expect(refused.statusCode).toBe(404);
    expect(refused.body).not.toContain('Read me');
    const [denial] = await t.admin.query(`select 1 from platform_audit_events where action = 'access.denied' and actor_id = $1 and tenant_id = $2`, [outsider.userId, tenantId]);
    expect(denial).toBeDefined();
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/accounts/00000000-0000-4000-8000-000000000000`, as: owner })).statusCode).toBe(404);
  });
});
