import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type SessionHandle, type TestApp } from '../../../test/harness.ts';
import { waitForToken } from '../../../test/support/outbox.ts';

// Threats: a de-provisioned person keeps access; one tenant's SCIM token reads or changes
// another tenant's members; SCIM claims an account whose address the tenant does not control;
// the IdP's real request dialects are refused, so de-provisioning silently stops working.
describe('SCIM 2.0 provisioning', () => {
  let t: TestApp;
  let owner: SessionHandle;
  let tenantId: string;
  let token: string;
  const DOMAIN = `scim-${randomUUID().slice(0, 8)}.example`;
  const scim = (method: string, url: string, body?: unknown, bearer = token) =>
    t.request({ method: method as never, url: `/scim/v2${url}`, headers: { authorization: `Bearer ${bearer}`, ...(body === undefined ? {} : { 'content-type': 'application/scim+json' }) }, ...(body === undefined ? {} : { payload: JSON.stringify(body) }) });

  beforeAll(async () => {
    t = await startTestApp();
    ({ session: owner, tenantId } = await t.signup({ tenantName: 'Provisioned Inc' }));
    await t.admin.query(`insert into tenant_domains (tenant_id, domain, challenge, verified_at) values ($1, $2, 'c', now())`, [tenantId, DOMAIN]);
    const issued = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/scim-tokens`, as: owner, body: { name: 'Okta' } });
    expect(issued.statusCode).toBe(201);
    token = issued.json<{ token: string }>().token;
  });
  afterAll(async () => t?.close());

  it('requires a valid token, answers in SCIM format, and publishes its configuration', async () => {
    for (const bearer of ['', 'nonsense', `cn_scim_${tenantId}_${'x'.repeat(43)}`]) {
      const refused = await scim('GET', '/Users', undefined, bearer);
      expect(refused.statusCode).toBe(401);
      expect(refused.headers['content-type']).toMatch(/^application\/scim\+json/);
      expect(refused.json()).toMatchObject({ schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'], status: '401' });
    }
    expect((await scim('GET', '/ServiceProviderConfig')).json()).toMatchObject({ patch: { supported: true }, filter: { supported: true } });
    expect((await scim('GET', '/ResourceTypes')).json().Resources[0]).toMatchObject({ id: 'User', endpoint: '/Users' });
    expect((await scim('GET', '/Schemas')).json().Resources[0].id).toBe('urn:ietf:params:scim:schemas:core:2.0:User');
    const malformed = await scim('POST', '/Users', undefined);
    expect(malformed.statusCode).toBe(400);
    const badJson = await t.request({ method: 'POST', url: '/scim/v2/Users', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/scim+json' }, payload: '{"userName":' });
    expect(badJson.statusCode).toBe(400);
    expect(badJson.json()).toMatchObject({ status: '400', scimType: 'invalidSyntax' });
    expect((await scim('GET', '/Users?filter=title%20co%20%22x%22')).json()).toMatchObject({ status: '400', scimType: 'invalidFilter' });
  });

  it("follows Okta's sequence: look up, create, read, deactivate (access ends at once), reactivate, update", async () => {
    const email = `ada@${DOMAIN}`;
    const lookup = await scim('GET', `/Users?filter=${encodeURIComponent(`userName eq "${email}"`)}&startIndex=1&count=100`);
    expect(lookup.json()).toMatchObject({ totalResults: 0, Resources: [] });
    const created = await scim('POST', '/Users', {
      schemas: ['urn:ietf:params:scim:schemas:core:2.0:User'],
      userName: email,
      name: { givenName: 'Ada', familyName: 'Lovelace' },
      emails: [{ primary: true, value: email, type: 'work' }],
      displayName: 'Ada Lovelace',
      locale: 'en-US',
      externalId: '00u1okta',
      groups: [],
      password: 'never stored',
      active: true,
    });
    expect(created.statusCode).toBe(201);
    const user = created.json<{ id: string; active: boolean; userName: string }>();
    expect(user).toMatchObject({ userName: email, active: true, externalId: '00u1okta', name: { givenName: 'Ada' } });
    expect(created.body).not.toContain('never stored');
    expect((await scim('POST', '/Users', { userName: email })).json()).toMatchObject({ status: '409', scimType: 'uniqueness' });
    expect((await scim('GET', `/Users/${user.id}`)).json().displayName).toBe('Ada Lovelace');
    expect((await scim('GET', `/Users?filter=${encodeURIComponent('externalId eq "00u1okta"')}`)).json().totalResults).toBe(1);

    // The person signs in (a password reset is how a provisioned account gets one; here, set directly).
    await t.admin.query(`update users set password_hash = (select password_hash from users where id = $1) where id = $2`, [owner.userId, user.id]);
    const ada = await t.login(email);
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/accounts`, as: ada })).statusCode).toBe(200);

    const off = await scim('PATCH', `/Users/${user.id}`, { schemas: ['urn:ietf:params:scim:api:messages:2.0:PatchOp'], Operations: [{ op: 'replace', value: { active: false } }] });
    expect(off.json()).toMatchObject({ active: false });
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/accounts`, as: ada })).json().code).toBe('member.suspended');
    const members = (await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/members`, as: owner })).json<{ items: { userId: string; status: string }[] }>();
    expect(members.items.find((m) => m.userId === user.id)?.status).toBe('suspended');
    const [event] = await t.admin.query<{ actor_type: string }>(`select actor_type from audit_events where tenant_id = $1 and action = 'member.suspended' and target_id = $2`, [tenantId, user.id]);
    expect(event!.actor_type).toBe('scim');

    expect((await scim('PATCH', `/Users/${user.id}`, { schemas: ['urn:ietf:params:scim:api:messages:2.0:PatchOp'], Operations: [{ op: 'replace', value: { active: true } }] })).json().active).toBe(true);
    const replaced = await scim('PUT', `/Users/${user.id}`, { schemas: ['urn:ietf:params:scim:schemas:core:2.0:User'], userName: email, name: { givenName: 'Augusta', familyName: 'King' }, active: true, externalId: '00u1okta' });
    expect(replaced.json()).toMatchObject({ name: { givenName: 'Augusta', familyName: 'King' }, active: true });
    expect((await scim('PUT', `/Users/${user.id}`, { userName: `someone-else@${DOMAIN}` })).json()).toMatchObject({ status: '400', scimType: 'mutability' });
  });

  it('provisioned members get the tenant\'s scimDefaultRole, which can never be owner', async () => {
    expect((await t.request({ method: 'PATCH', url: `/api/v1/tenants/${tenantId}/settings`, as: owner, body: { scimDefaultRole: 'owner' } })).statusCode).toBe(400);
    expect((await t.request({ method: 'PATCH', url: `/api/v1/tenants/${tenantId}/settings`, as: owner, body: { scimDefaultRole: 'viewer' } })).statusCode).toBe(200);
    const created = (await scim('POST', '/Users', { userName: `viewer@${DOMAIN}` })).json<{ id: string }>();
    const [membership] = await t.admin.query<{ role: string }>(`select role from memberships where tenant_id = $1 and user_id = $2`, [tenantId, created.id]);
    expect(membership!.role).toBe('viewer');
    await t.request({ method: 'PATCH', url: `/api/v1/tenants/${tenantId}/settings`, as: owner, body: { scimDefaultRole: 'member' } });
  });

  it("follows Entra's sequence: capitalised ops, string booleans, path-based replace, then DELETE removes the membership", async () => {
    const email = `grace@${DOMAIN}`;
    expect((await scim('GET', `/Users?filter=${encodeURIComponent(`userName eq "${email}"`)}`)).json().totalResults).toBe(0);
    const created = await scim('POST', '/Users', {
      schemas: ['urn:ietf:params:scim:schemas:core:2.0:User', 'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User'],
      externalId: 'grace',
      userName: email,
      active: true,
      displayName: 'Grace Hopper',
      emails: [{ primary: true, type: 'work', value: email }],
      meta: { resourceType: 'User' },
      name: { formatted: 'Grace Hopper', familyName: 'Hopper', givenName: 'Grace' },
      'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User': { department: 'Navy' },
    });
    expect(created.statusCode).toBe(201);
    const { id } = created.json<{ id: string }>();
    const patched = await scim('PATCH', `/Users/${id}`, {
      schemas: ['urn:ietf:params:scim:api:messages:2.0:PatchOp'],
      Operations: [
        { op: 'Replace', path: 'displayName', value: 'Rear Admiral Hopper' },
        { op: 'Add', path: 'name.givenName', value: 'Grace B.' },
        { op: 'Replace', path: 'active', value: 'False' },
      ],
    });
    expect(patched.json()).toMatchObject({ displayName: 'Rear Admiral Hopper', name: { givenName: 'Grace B.' }, active: false });
    expect((await scim('PATCH', `/Users/${id}`, { Operations: [{ op: 'Replace', path: 'active', value: 'maybe' }] })).json()).toMatchObject({ status: '400' });
    expect((await scim('PATCH', `/Users/${id}`, { Operations: [{ op: 'Explode', path: 'active', value: 'True' }] })).statusCode).toBe(400);
    expect((await scim('DELETE', `/Users/${id}`)).statusCode).toBe(204);
    expect((await scim('GET', `/Users/${id}`)).json()).toMatchObject({ status: '404' });
    expect(await t.admin.query(`select 1 from memberships where tenant_id = $1 and user_id = $2`, [tenantId, id])).toEqual([]);
  });

  it('an address the tenant has not verified stays pending: invited by mail, linked (same id) when the person accepts', async () => {
    const { session: outsider } = await t.signup({ email: `linus-${randomUUID().slice(0, 6)}@elsewhere.example` });
    const created = await scim('POST', '/Users', { userName: outsider.email, name: { givenName: 'Linus' }, active: true });
    expect(created.statusCode).toBe(201);
    const { id } = created.json<{ id: string }>();
    expect(id).not.toBe(outsider.userId);
    // No membership yet: SCIM cannot attach someone's existing account on its own.
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/accounts`, as: outsider })).statusCode).toBe(404);
    const invitationToken = await waitForToken(t.config.dataDir, outsider.email, 'You are invited to Provisioned Inc');
    expect((await t.request({ method: 'POST', url: '/api/v1/invitations/accept', as: outsider, body: { token: invitationToken } })).statusCode).toBe(200);
    const after = (await scim('GET', `/Users/${id}`)).json<{ id: string; userName: string }>();
    expect(after).toMatchObject({ id, userName: outsider.email });
    expect((await scim('PATCH', `/Users/${id}`, { Operations: [{ op: 'replace', value: { active: false } }] })).json().active).toBe(false);
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/accounts`, as: outsider })).json().code).toBe('member.suspended');
  });

  it('pages users with startIndex and count, in creation order, with the total of all that match', async () => {
    const all = (await scim('GET', '/Users')).json<{ totalResults: number; Resources: { id: string }[] }>();
    expect(all.totalResults).toBe(all.Resources.length);
    expect(all.totalResults).toBeGreaterThanOrEqual(3);
    const second = (await scim('GET', '/Users?startIndex=2&count=1')).json<{ totalResults: number; startIndex: number; itemsPerPage: number; Resources: { id: string }[] }>();
    expect(second).toMatchObject({ totalResults: all.totalResults, startIndex: 2, itemsPerPage: 1 });
    expect(second.Resources.map((r) => r.id)).toEqual([all.Resources[1]!.id]);
    const beyond = (await scim('GET', `/Users?startIndex=${all.totalResults + 1}&count=10`)).json<{ totalResults: number; Resources: unknown[] }>();
    expect(beyond).toMatchObject({ totalResults: all.totalResults, Resources: [] });
    expect((await scim('GET', '/Users?count=0')).json()).toMatchObject({ totalResults: all.totalResults, itemsPerPage: 0 });
    expect((await scim('GET', '/Users?startIndex=0')).statusCode).toBe(400);
  });

  it("the tenant's IP allow-list binds the SCIM token too: calls from elsewhere get 403 and are audited", async () => {
    const inside = '203.0.113.9';
    const fromOutside = () => t.request({ method: 'GET', url: '/scim/v2/Users', headers: { authorization: `Bearer ${token}` }, remoteAddress: '198.51.100.7' });
    const fromInside = () => t.request({ method: 'GET', url: '/scim/v2/Users', headers: { authorization: `Bearer ${token}` }, remoteAddress: inside });
    expect((await fromOutside()).statusCode).toBe(200);
    const set = await t.request({ method: 'PATCH', url: `/api/v1/tenants/${tenantId}/settings`, as: owner, body: { ipAllowlist: ['203.0.113.0/24'] }, remoteAddress: inside });
    expect(set.statusCode).toBe(200);
    try {
      const refused = await fromOutside();
      expect(refused.statusCode).toBe(403);
      expect(refused.json()).toMatchObject({ schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'], status: '403' });
      expect((await fromInside()).statusCode).toBe(200);
      const [event] = await t.admin.query<{ actor_type: string; outcome: string; metadata: { reason: string; ip: string } }>(
        `select actor_type, outcome, canonical_metadata::jsonb as metadata from audit_events where tenant_id = $1 and action = 'access.denied' and actor_type = 'scim' order by position desc limit 1`,
        [tenantId],
      );
      expect(event).toMatchObject({ actor_type: 'scim', outcome: 'denied', metadata: { reason: 'ip_blocked', ip: '198.51.100.7' } });
    } finally {
      await t.request({ method: 'PATCH', url: `/api/v1/tenants/${tenantId}/settings`, as: owner, body: { ipAllowlist: [] }, remoteAddress: inside });
    }
  });

  it('a token reaches its own tenant only, never an owner, and a revoked token stops working', async () => {
    const { session: otherOwner, tenantId: other } = await t.signup({ tenantName: 'Other Co' });
    const otherToken = (await t.request({ method: 'POST', url: `/api/v1/tenants/${other}/scim-tokens`, as: otherOwner, body: {} })).json<{ token: string; id: string }>();
    const mine = (await scim('GET', '/Users')).json<{ Resources: { id: string }[] }>();
    const theirs = (await scim('GET', '/Users', undefined, otherToken.token)).json<{ Resources: { id: string; userName: string }[] }>();
    expect(theirs.Resources.map((r) => r.id)).toEqual([otherOwner.userId]);
    for (const resource of mine.Resources) {
      expect((await scim('GET', `/Users/${resource.id}`, undefined, otherToken.token)).statusCode).toBe(404);
      expect((await scim('DELETE', `/Users/${resource.id}`, undefined, otherToken.token)).statusCode).toBe(404);
    }
    // Owners are out of SCIM's reach (an admin can issue a token; admins cannot touch owners).
    expect((await scim('PATCH', `/Users/${otherOwner.userId}`, { Operations: [{ op: 'replace', path: 'active', value: false }] }, otherToken.token)).json()).toMatchObject({ status: '403' });
    expect((await scim('DELETE', `/Users/${otherOwner.userId}`, undefined, otherToken.token)).statusCode).toBe(403);
    const admin = await t.addMember(owner, tenantId, 'admin');
    const adminToken = (await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/scim-tokens`, as: admin, body: { name: 'made by an admin' } })).json<{ token: string }>();
    expect((await scim('DELETE', `/Users/${owner.userId}`, undefined, adminToken.token)).statusCode).toBe(403);
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner })).statusCode).toBe(200);
    expect((await t.request({ method: 'DELETE', url: `/api/v1/tenants/${other}/scim-tokens/${otherToken.id}`, as: otherOwner })).statusCode).toBe(204);
    expect((await scim('GET', '/Users', undefined, otherToken.token)).statusCode).toBe(401);
    // A token names its tenant: swapping the tenant part does not carry it elsewhere.
    expect((await scim('GET', '/Users', undefined, token.replace(tenantId, other))).statusCode).toBe(401);
  });
});
