import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type SessionHandle, type TestApp } from '../../../test/harness.ts';

// Threat: a program credential outlives its purpose or its creator, reaches another
// tenant, or carries more authority than the person who minted it.
describe('API keys', () => {
  let t: TestApp;
  let owner: SessionHandle;
  let tenantId: string;
  const keys = () => `/api/v1/tenants/${tenantId}/api-keys`;
  const withKey = (key: string, method: string, url: string, body?: unknown) =>
    t.request({ method, url, body, headers: { authorization: `Bearer ${key}` } });
  const mint = async (as: SessionHandle, role: string, tenant = tenantId) => {
    const response = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenant}/api-keys`, as, body: { name: `${role} key`, role } });
    expect(response.statusCode, response.body).toBe(201);
    return response.json() as { id: string; key: string };
  };

  beforeAll(async () => {
    t = await startTestApp();
    ({ session: owner, tenantId } = await t.signup());
  });
  afterAll(async () => t?.close());

  it('is shown once, stored only as a digest, and works without a CSRF token as its tenant', async () => {
    const { id, key } = await mint(owner, 'member');
    expect(key).toMatch(new RegExp(`^cn_${tenantId.replaceAll('-', '')}_[A-Za-z0-9_-]{43}$`));
    const list = await t.request({ method: 'GET', url: keys(), as: owner });
    expect(list.body).not.toContain(key.slice(-43));
    expect(list.json().items[0]).toMatchObject({ id, role: 'member', createdBy: owner.userId, revokedAt: null });
    const stored = await t.admin.query<{ key_hash: Buffer }>('select key_hash from api_keys where id = $1', [id]);
    expect(Buffer.from(stored[0]!.key_hash).toString('latin1')).not.toContain(key.slice(-43));
    const created = await withKey(key, 'POST', `/api/v1/tenants/${tenantId}/accounts`, { name: 'By program' });
    expect(created.statusCode).toBe(201);
    const [event] = await t.admin.query<{ actor_type: string; actor_id: string }>(
      `select actor_type, actor_id from audit_events where tenant_id = $1 and action = 'account.created' order by position desc limit 1`,
      [tenantId],
    );
    expect(event).toEqual({ actor_type: 'apikey', actor_id: id });
    const [used] = await t.admin.query<{ last_used_at: Date | null }>('select last_used_at from api_keys where id = $1', [id]);
    expect(used!.last_used_at).not.toBeNull();
  });

  it("acts only within its role, and a creator cannot mint a key above their own role", async () => {
    const { key } = await mint(owner, 'viewer');
    expect((await withKey(key, 'GET', `/api/v1/tenants/${tenantId}/accounts`)).statusCode).toBe(200);
    const write = await withKey(key, 'POST', `/api/v1/tenants/${tenantId}/accounts`, { name: 'nope' });
    expect(write.statusCode).toBe(403);
    const admin = await t.addMember(owner, tenantId, 'admin');
    const tooHigh = await t.request({ method: 'POST', url: keys(), as: admin, body: { name: 'x', role: 'owner' } });
    expect(tooHigh.statusCode).toBe(403);
  });

  it("never reaches another tenant: another tenant's path is 404", async () => {
    const { key } = await mint(owner, 'admin');
    const other = await t.signup();
    const response = await withKey(key, 'GET', `/api/v1/tenants/${other.tenantId}/accounts`);
    expect(response.statusCode).toBe(404);
    // Evidence for operators only: the other tenant's log learns nothing.
    const platform = await t.admin.query<{ actor_type: string; metadata: { keyTenantId: string } }>(
      `select actor_type, metadata from platform_audit_events where action = 'access.denied' and tenant_id = $1`,
      [other.tenantId],
    );
    expect(platform).toEqual([{ actor_type: 'apikey', metadata: expect.objectContaining({ keyTenantId: tenantId }) }]);
    expect(await t.admin.query(`select 1 from audit_events where tenant_id = $1 and action = 'access.denied'`, [other.tenantId])).toEqual([]);
    expect((await withKey(key, 'GET', `/api/v1/auth/session`)).statusCode).toBe(401);
  });

  it('a revoked or expired key fails on the very next request', async () => {
    const { id, key } = await mint(owner, 'member');
    expect((await withKey(key, 'GET', `/api/v1/tenants/${tenantId}/accounts`)).statusCode).toBe(200);
    expect((await t.request({ method: 'DELETE', url: `${keys()}/${id}`, as: owner })).statusCode).toBe(204);
    expect((await withKey(key, 'GET', `/api/v1/tenants/${tenantId}/accounts`)).statusCode).toBe(401);
    const second = await mint(owner, 'member');
    await t.admin.query(`update api_keys set expires_at = now() - interval '1 second' where id = $1`, [second.id]);
    expect((await withKey(second.key, 'GET', `/api/v1/tenants/${tenantId}/accounts`)).statusCode).toBe(401);
    const past = await t.request({ method: 'POST', url: keys(), as: owner, body: { name: 'x', role: 'member', expiresAt: new Date(Date.now() - 1000).toISOString() } });
    expect(past.statusCode).toBe(400);
  });

  it("removing the creator revokes their keys; demoting them caps their keys' authority", async () => {
    const admin = await t.addMember(owner, tenantId, 'admin');
    const { key } = await mint(admin, 'admin');
    const adminKeyWrite = () => withKey(key, 'POST', `/api/v1/tenants/${tenantId}/accounts`, { name: 'via admin key' });
    expect((await adminKeyWrite()).statusCode).toBe(201);
    await t.request({ method: 'PATCH', url: `/api/v1/tenants/${tenantId}/members/${admin.userId}`, as: owner, body: { role: 'viewer' } });
    expect((await adminKeyWrite()).statusCode).toBe(403);
    await t.request({ method: 'DELETE', url: `/api/v1/tenants/${tenantId}/members/${admin.userId}`, as: owner });
    expect((await withKey(key, 'GET', `/api/v1/tenants/${tenantId}/accounts`)).statusCode).toBe(401);
    const [row] = await t.admin.query<{ revoked_at: Date | null }>(`select revoked_at from api_keys where created_by = $1`, [admin.userId]);
    expect(row!.revoked_at).not.toBeNull();
  });

  it('a malformed Authorization header is refused, never ignored in favour of a cookie', async () => {
    for (const authorization of ['Bearer', 'Basic dXNlcjpwYXNz', `Bearer cn_${'0'.repeat(32)}_short`, 'Bearer not-a-key']) {
      const response = await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner, headers: { authorization } });
      expect(response.statusCode, authorization).toBe(401);
    }
  });
});
