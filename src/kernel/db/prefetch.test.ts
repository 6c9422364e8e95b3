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
