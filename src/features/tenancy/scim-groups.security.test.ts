import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startTestApp, type SessionHandle, type TestApp } from '../../../test/harness.ts';

// Threats: an IdP group (or whoever controls the IdP) grants owner, or touches an owner; a
// person removed from an admin group keeps admin; one tenant's token reads or fills another
// tenant's groups; Okta's and Entra's real PatchOp dialects are refused, so group pushes
// silently stop and roles drift from the IdP.
describe('SCIM 2.0 Groups and the roles they carry', () => {
  let t: TestApp;
  let owner: SessionHandle;
  let tenantId: string;
  let token: string;
  const DOMAIN = `groups-${randomUUID().slice(0, 8)}.example`;
  const PATCH_OP = 'urn:ietf:params:scim:api:messages:2.0:PatchOp';
  const scim = (method: string, url: string, body?: unknown, bearer = token) =>
    t.request({ method: method as never, url: `/scim/v2${url}`, headers: { authorization: `Bearer ${bearer}`, ...(body === undefined ? {} : { 'content-type': 'application/scim+json' }) }, ...(body === undefined ? {} : { payload: JSON.stringify(body) }) });
  const role = async (userId: string) => (await t.admin.query<{ role: string }>('select role from memberships where tenant_id = $1 and user_id = $2', [tenantId, userId]))[0]?.role;
  const provision = async (local: string) => {
    const created = await scim('POST', '/Users', { userName: `${local}@${DOMAIN}`, name: { givenName: local }, active: true });
    expect(created.statusCode).toBe(201);
    return created.json<{ id: string }>().id;
  };
  const mapGroup = (groupId: string, mapped: string | null, as = owner) => t.request({ method: 'PATCH', url: `/api/v1/tenants/${tenantId}/scim-groups/${groupId}`, as, body: { role: mapped } });

  beforeAll(async () => {
    t = await startTestApp();
    ({ session: owner, tenantId } = await t.signup({ tenantName: 'Grouped Inc' }));
    await t.admin.query(`insert into tenant_domains (tenant_id, domain, challenge, verified_at) values ($1, $2, 'c', now())`, [tenantId, DOMAIN]);
    token = (await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/scim-tokens`, as: owner, body: { name: 'IdP' } })).json<{ token: string }>().token;
  });
  afterAll(async () => t?.close());

  it('publishes Group in its resource types and schemas', async () => {
    expect((await scim('GET', '/ResourceTypes')).json().Resources.map((r: { id: string; endpoint: string }) => [r.id, r.endpoint])).toEqual([
      ['User', '/Users'],
      ['Group', '/Groups'],
    ]);
    expect((await scim('GET', '/Schemas')).json().Resources.map((r: { id: string }) => r.id)).toContain('urn:ietf:params:scim:schemas:core:2.0:Group');
  });

  it("follows Okta's sequence: look up, create with members, rename, add, remove by filter, replace with PUT, delete", async () => {
    const ada = await provision('ada');
    const bob = await provision('bob');
    const lookup = await scim('GET', `/Groups?filter=${encodeURIComponent('displayName eq "Engineering"')}&startIndex=1&count=100`);
    expect(lookup.json()).toMatchObject({ totalResults: 0, Resources: [] });
    const created = await scim('POST', '/Groups', { schemas: ['urn:ietf:params:scim:schemas:core:2.0:Group'], displayName: 'Engineering', members: [{ value: ada, display: 'ada' }] });
    expect(created.statusCode).toBe(201);
    const group = created.json<{ id: string; members: { value: string; type: string }[] }>();
    expect(group.members).toEqual([expect.objectContaining({ value: ada, type: 'User' })]);
    expect((await scim('POST', '/Groups', { displayName: 'ENGINEERING' })).json()).toMatchObject({ status: '409', scimType: 'uniqueness' });

    // Okta renames with a path-less replace carrying id and displayName.
    expect((await scim('PATCH', `/Groups/${group.id}`, { schemas: [PATCH_OP], Operations: [{ op: 'replace', value: { id: group.id, displayName: 'Eng' } }] })).statusCode).toBe(204);
    expect((await scim('PATCH', `/Groups/${group.id}`, { schemas: [PATCH_OP], Operations: [{ op: 'add', path: 'members', value: [{ value: bob, display: 'bob' }] }] })).statusCode).toBe(204);
    let read = (await scim('GET', `/Groups/${group.id}`)).json<{ displayName: string; members: { value: string }[] }>();
    expect(read.displayName).toBe('Eng');
    expect(read.members.map((m) => m.value).sort()).toEqual([ada, bob].sort());
    expect((await scim('PATCH', `/Groups/${group.id}`, { schemas: [PATCH_OP], Operations: [{ op: 'remove', path: `members[value eq "${ada}"]` }] })).statusCode).toBe(204);
    read = (await scim('GET', `/Groups/${group.id}`)).json();
    expect(read.members.map((m) => m.value)).toEqual([bob]);

    const put = await scim('PUT', `/Groups/${group.id}`, { schemas: ['urn:ietf:params:scim:schemas:core:2.0:Group'], id: group.id, displayName: 'Engineering', members: [{ value: ada }] });
    expect(put.json()).toMatchObject({ displayName: 'Engineering', members: [{ value: ada }] });
    // The User resource lists its groups (read-only).
    expect((await scim('GET', `/Users/${ada}`)).json().groups).toEqual([expect.objectContaining({ value: group.id, display: 'Engineering' })]);
    expect((await scim('GET', `/Users?filter=${encodeURIComponent(`userName eq "bob@${DOMAIN}"`)}`)).json().Resources[0].groups).toEqual([]);
    expect((await scim('DELETE', `/Groups/${group.id}`)).statusCode).toBe(204);
    expect((await scim('GET', `/Groups/${group.id}`)).json()).toMatchObject({ status: '404' });
    const events = await t.admin.query<{ action: string; actor_type: string }>(`select action, actor_type from audit_events where tenant_id = $1 and target_id = $2 order by position`, [tenantId, group.id]);
    expect(events.map((e) => e.action)).toEqual(['scim_group.created', 'scim_group.updated', 'scim_group.updated', 'scim_group.updated', 'scim_group.updated', 'scim_group.deleted']);
    expect(new Set(events.map((e) => e.actor_type))).toEqual(new Set(['scim']));
  });

  it("follows Entra's sequence: filtered lookups without members, capitalised Add and Remove with values, Replace of displayName", async () => {
    const cy = await provision('cy');
    const created = await scim('POST', '/Groups', { schemas: ['urn:ietf:params:scim:schemas:core:2.0:Group'], externalId: 'entra-1', displayName: 'Sales', members: [] });
    const { id } = created.json<{ id: string }>();
    const found = (await scim('GET', `/Groups?filter=${encodeURIComponent('displayName eq "Sales"')}&excludedAttributes=members`)).json<{ Resources: Record<string, unknown>[] }>();
    expect(found.Resources).toHaveLength(1);
    expect(found.Resources[0]).not.toHaveProperty('members');
    expect((await scim('GET', `/Groups?filter=${encodeURIComponent('externalId eq "entra-1"')}`)).json().totalResults).toBe(1);
    expect((await scim('PATCH', `/Groups/${id}`, { schemas: [PATCH_OP], Operations: [{ op: 'Add', path: 'members', value: [{ value: cy }] }] })).statusCode).toBe(204);
    const member = `id eq "${id}" and members[value eq "${cy}"]`;
    expect((await scim('GET', `/Groups?filter=${encodeURIComponent(member)}&excludedAttributes=members`)).json().totalResults).toBe(1);
    expect((await scim('PATCH', `/Groups/${id}`, { schemas: [PATCH_OP], Operations: [{ op: 'Remove', path: 'members', value: [{ value: cy }] }] })).statusCode).toBe(204);
    expect((await scim('GET', `/Groups?filter=${encodeURIComponent(member)}`)).json().totalResults).toBe(0);
    expect((await scim('PATCH', `/Groups/${id}`, { schemas: [PATCH_OP], Operations: [{ op: 'Replace', path: 'displayName', value: 'Sales EMEA' }] })).statusCode).toBe(204);
    expect((await scim('GET', `/Groups/${id}?excludedAttributes=members`)).json()).toMatchObject({ displayName: 'Sales EMEA', externalId: 'entra-1' });
  });

  it('a mapped group sets its members\' role (admin at most), a promotion signs them out, leaving returns them to scimDefaultRole, owners are never touched', async () => {
    const dee = await provision('dee');
    const eve = await provision('eve');
    const group = (await scim('POST', '/Groups', { displayName: 'CN Admins', members: [{ value: dee }, { value: owner.userId }] })).json<{ id: string }>();
    expect(await role(dee)).toBe('member'); // unmapped: a group alone carries no role

    expect((await mapGroup(group.id, 'owner')).statusCode).toBe(400);
    await t.admin.query(`update users set password_hash = (select password_hash from users where id = $1) where id = $2`, [owner.userId, dee]);
    const deeSession = await t.login(`dee@${DOMAIN}`);
    const mapped = await mapGroup(group.id, 'admin');
    expect(mapped.json()).toMatchObject({ id: group.id, displayName: 'CN Admins', role: 'admin', members: 2 });
    expect(await role(dee)).toBe('admin');
    expect(await role(owner.userId)).toBe('owner');
    // More authority comes with a new session here.
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/accounts`, as: deeSession })).statusCode).toBe(401);
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner })).statusCode).toBe(200);

    // Joining the mapped group by PATCH promotes at once; leaving it demotes to the default.
    await scim('PATCH', `/Groups/${group.id}`, { schemas: [PATCH_OP], Operations: [{ op: 'add', path: 'members', value: [{ value: eve }] }] });
    expect(await role(eve)).toBe('admin');
    await scim('PATCH', `/Groups/${group.id}`, { schemas: [PATCH_OP], Operations: [{ op: 'remove', path: `members[value eq "${eve}"]` }] });
    expect(await role(eve)).toBe('member');

    // The highest mapped group wins; unmapping and deleting return members to the default.
    const viewers = (await scim('POST', '/Groups', { displayName: 'Readers', members: [{ value: dee }, { value: eve }] })).json<{ id: string }>();
    await mapGroup(viewers.id, 'viewer');
    expect([await role(dee), await role(eve)]).toEqual(['admin', 'viewer']);
    expect((await mapGroup(group.id, null)).json().role).toBeNull();
    expect(await role(dee)).toBe('viewer');
    await scim('DELETE', `/Groups/${viewers.id}`);
    expect([await role(dee), await role(eve)]).toEqual(['member', 'member']);
    expect(await role(owner.userId)).toBe('owner');

    const changes = await t.admin.query<{ metadata: { before: string; after: string; via: string } }>(
      `select canonical_metadata::jsonb as metadata from audit_events where tenant_id = $1 and action = 'member.role_changed' and target_id = $2 order by position`,
      [tenantId, dee],
    );
    expect(changes.map((c) => [c.metadata.before, c.metadata.after, c.metadata.via])).toEqual([
      ['member', 'admin', 'scim'],
      ['admin', 'viewer', 'scim'],
      ['viewer', 'member', 'scim'],
    ]);
    const mappings = await t.admin.query<{ actor_id: string; metadata: { before: string | null; after: string | null } }>(
      `select actor_id, canonical_metadata::jsonb as metadata from audit_events where tenant_id = $1 and action = 'scim_group.role_mapped' and target_id = $2 order by position`,
      [tenantId, group.id],
    );
    expect(mappings.map((m) => [m.actor_id, m.metadata.before, m.metadata.after])).toEqual([
      [owner.userId, null, 'admin'],
      [owner.userId, 'admin', null],
    ]);
  });

  it("a pending resource's invitation carries its mapped role, so accepting gives the role the IdP decided", async () => {
    const email = `frank-${randomUUID().slice(0, 6)}@elsewhere.example`;
    const pending = (await scim('POST', '/Users', { userName: email })).json<{ id: string }>();
    const group = (await scim('POST', '/Groups', { displayName: 'Viewers only', members: [{ value: pending.id }] })).json<{ id: string }>();
    await mapGroup(group.id, 'viewer');
    const [invitation] = await t.admin.query<{ role: string }>(`select i.role from invitations i join scim_users s on s.invitation_id = i.id where s.tenant_id = $1 and s.id = $2`, [tenantId, pending.id]);
    expect(invitation!.role).toBe('viewer');
  });

  it('refuses bad group input with SCIM errors and changes nothing', async () => {
    const gus = await provision('gus');
    const { id } = (await scim('POST', '/Groups', { displayName: 'Stable', members: [{ value: gus }] })).json<{ id: string }>();
    const before = (await scim('GET', `/Groups/${id}`)).json();
    const refusals: [string, string, unknown, string][] = [
      ['POST', '/Groups', {}, 'invalidValue'],
      ['POST', '/Groups', { displayName: 'x'.repeat(201) }, 'invalidValue'],
      ['POST', '/Groups', { displayName: 'Unknown member', members: [{ value: randomUUID() }] }, 'invalidValue'],
      ['POST', '/Groups', { displayName: 'Not an id', members: [{ value: 'robert"); drop table users' }] }, 'invalidValue'],
      ['PATCH', `/Groups/${id}`, { Operations: [{ op: 'add', path: 'members', value: [{ value: randomUUID() }] }] }, 'invalidValue'],
      ['PATCH', `/Groups/${id}`, { Operations: [{ op: 'replace', path: 'owner', value: 'me' }] }, 'invalidPath'],
      ['PATCH', `/Groups/${id}`, { Operations: [{ op: 'add', path: `members[value eq "${gus}"]`, value: 'x' }] }, 'invalidPath'],
      ['PATCH', `/Groups/${id}`, { Operations: [{ op: 'remove', path: 'displayName' }] }, 'mutability'],
      ['PATCH', `/Groups/${id}`, { Operations: [{ op: 'move', path: 'members' }] }, 'invalidSyntax'],
      ['PATCH', `/Groups/${id}`, { Operations: [{ op: 'replace', path: 'displayName', value: 'Engineering' }, { op: 'add', path: 'members', value: [{ value: 7 }] }] }, 'invalidValue'],
      ['PUT', `/Groups/${id}`, { members: [] }, 'invalidValue'],
    ];
    for (const [method, url, body, scimType] of refusals) {
      const response = await scim(method, url, body);
      expect(response.statusCode, `${method} ${url} ${JSON.stringify(body)}`).toBe(400);
      expect(response.json()).toMatchObject({ schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'], scimType });
    }
    expect((await scim('GET', `/Groups?filter=${encodeURIComponent('members co "x"')}`)).json()).toMatchObject({ status: '400', scimType: 'invalidFilter' });
    const huge = await scim('PATCH', `/Groups/${id}`, { Operations: [{ op: 'add', path: 'members', value: Array.from({ length: 10_001 }, () => ({ value: randomUUID() })) }] });
    expect(huge.json()).toMatchObject({ status: '400', scimType: 'invalidValue' });
    const badJson = await t.request({ method: 'POST', url: '/scim/v2/Groups', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/scim+json' }, payload: '{"displayName":' });
    expect(badJson.json()).toMatchObject({ status: '400', scimType: 'invalidSyntax' });
    expect((await scim('GET', `/Groups/${id}`)).json()).toEqual(before);
    expect((await scim('GET', '/Groups/not-a-uuid')).statusCode).toBe(404);
    expect((await mapGroup(randomUUID(), 'viewer')).statusCode).toBe(404);
  });

  it("a token reaches its own tenant's groups only and cannot put another tenant's people in them; only admins map groups", async () => {
    const { session: otherOwner, tenantId: other } = await t.signup({ tenantName: 'Other Groups Co' });
    const otherToken = (await t.request({ method: 'POST', url: `/api/v1/tenants/${other}/scim-tokens`, as: otherOwner, body: {} })).json<{ token: string }>().token;
    const hal = await provision('hal');
    const mine = (await scim('POST', '/Groups', { displayName: 'Mine', members: [{ value: hal }] })).json<{ id: string }>();
    expect((await scim('GET', '/Groups', undefined, otherToken)).json().totalResults).toBe(0);
    for (const [method, body] of [['GET'], ['DELETE'], ['PUT', { displayName: 'Taken' }], ['PATCH', { Operations: [{ op: 'add', path: 'members', value: [{ value: otherOwner.userId }] }] }]] as const) {
      expect((await scim(method, `/Groups/${mine.id}`, body, otherToken)).statusCode).toBe(404);
    }
    // Their group cannot hold our member, nor ours theirs.
    expect((await scim('POST', '/Groups', { displayName: 'Theirs', members: [{ value: hal }] }, otherToken)).statusCode).toBe(400);
    expect((await scim('PATCH', `/Groups/${mine.id}`, { Operations: [{ op: 'add', path: 'members', value: [{ value: otherOwner.userId }] }] })).statusCode).toBe(400);
    expect((await t.request({ method: 'PATCH', url: `/api/v1/tenants/${other}/scim-groups/${mine.id}`, as: otherOwner, body: { role: 'admin' } })).statusCode).toBe(404);
    const member = await t.addMember(owner, tenantId, 'member');
    expect((await mapGroup(mine.id, 'admin', member)).statusCode).toBe(403);
    expect(await role(hal)).toBe('member');
    const listed = (await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/scim-groups`, as: owner })).json<{ items: { id: string }[] }>();
    expect(listed.items.map((g) => g.id)).toContain(mine.id);
  });

  it('a group of thousands is filled by PATCH, mapped (every role moves, promotions sign out) and emptied by PUT; one request names at most 10,000 members', async () => {
    const tag = randomUUID().slice(0, 8);
    const rows = await t.admin.query<{ id: string }>(
      `with u as (insert into users (email, name, password_hash) select 'bulk-' || g || '-${tag}@' || $2, 'Bulk ' || g, '!no-password' from generate_series(1, 6000) g returning id)
       insert into memberships (tenant_id, user_id, role) select $1, id, 'member' from u returning user_id as id`,
      [tenantId, DOMAIN],
    );
    const { id } = (await scim('POST', '/Groups', { displayName: `Everyone ${tag}` })).json<{ id: string }>();
    expect((await scim('PATCH', `/Groups/${id}`, { Operations: [{ op: 'add', path: 'members', value: rows.map((r) => ({ value: r.id })) }] })).statusCode).toBe(204);
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/scim-groups`, as: owner })).json<{ items: { id: string; members: number }[] }>().items.find((g) => g.id === id)?.members).toBe(6000);
    // Mapping it moves every member's role in a few statements (promotions sign them all out).
    expect((await mapGroup(id, 'viewer')).statusCode).toBe(200);
    const [viewers] = await t.admin.query<{ n: string }>(`select count(*) as n from memberships where tenant_id = $1 and role = 'viewer' and user_id = any($2::uuid[])`, [tenantId, rows.map((r) => r.id)]);
    expect(Number(viewers!.n)).toBe(6000);
    expect((await mapGroup(id, 'admin')).statusCode).toBe(200);
    const [revoked] = await t.admin.query<{ n: string }>(`select count(*) as n from tenant_session_revocations where tenant_id = $1 and user_id = any($2::uuid[])`, [tenantId, rows.map((r) => r.id)]);
    expect(Number(revoked!.n)).toBe(6000);
    expect((await scim('PUT', `/Groups/${id}`, { displayName: `Everyone ${tag}`, members: [] })).json().members).toEqual([]);
    const [back] = await t.admin.query<{ n: string }>(`select count(*) as n from memberships where tenant_id = $1 and role = 'member' and user_id = any($2::uuid[])`, [tenantId, rows.map((r) => r.id)]);
    expect(Number(back!.n)).toBe(6000);
    expect(await t.admin.query('select 1 from scim_group_members where tenant_id = $1 and group_id = $2', [tenantId, id])).toEqual([]);
  });

  it("Entra's removal of a user it already deleted is accepted with the rest of the PatchOp; a member filter naming no UUID is a 400, not a crash", async () => {
    const gone = await provision('gone');
    const group = (await scim('POST', '/Groups', { displayName: 'Leavers', members: [{ value: gone }] })).json<{ id: string }>();
    expect((await scim('DELETE', `/Users/${gone}`)).statusCode).toBe(204);
    const patched = await scim('PATCH', `/Groups/${group.id}`, { schemas: [PATCH_OP], Operations: [{ op: 'Remove', path: 'members', value: [{ value: gone }] }, { op: 'Replace', path: 'displayName', value: 'Leavers 2' }] });
    expect(patched.statusCode).toBe(204);
    expect((await scim('GET', `/Groups/${group.id}`)).json()).toMatchObject({ displayName: 'Leavers 2', members: [] });
    expect((await scim('PATCH', `/Groups/${group.id}`, { Operations: [{ op: 'remove', path: 'members[value eq "okta-abc"]' }] })).json()).toMatchObject({ status: '400', scimType: 'invalidValue' });
    expect((await scim('GET', `/Groups?filter=${encodeURIComponent('id eq "x" and members[value eq "okta-abc"]')}`)).json()).toMatchObject({ totalResults: 0 });
    // Nothing changed is recorded as nothing: no empty update events.
    const before = await t.admin.query(`select 1 from audit_events where tenant_id = $1 and target_id = $2`, [tenantId, group.id]);
    expect((await scim('PATCH', `/Groups/${group.id}`, { Operations: [{ op: 'replace', path: 'displayName', value: 'Leavers 2' }] })).statusCode).toBe(204);
    expect(await t.admin.query(`select 1 from audit_events where tenant_id = $1 and target_id = $2`, [tenantId, group.id])).toHaveLength(before.length);
  });

  it('refuses control characters, NUL in filters and absurd paging with 400s, never a 500', async () => {
    for (const [method, url, body] of [
      ['POST', '/Groups', { displayName: 'a\u0000b' }],
      ['POST', '/Groups', { displayName: 'tab\there' }],
      ['POST', '/Users', { userName: `nul@${DOMAIN}`, name: { givenName: 'a\u0000b' } }],
      ['GET', `/Users?filter=${encodeURIComponent('userName eq "a\u0000b"')}`, undefined],
      ['GET', '/Users?startIndex=100000000000000000000', undefined],
      ['GET', '/Groups?startIndex=9223372036854775808', undefined],
      ['GET', '/Users?count=1e21', undefined],
    ] as const) {
      const response = await scim(method, url, body);
      expect(response.statusCode, `${method} ${url}`).toBe(400);
      expect(response.json()).toMatchObject({ schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'], status: '400' });
    }
  });

  it("an admin's mapping never changes the admin's own role (nobody changes their own role), and an invitation's role change says what it was", async () => {
    const admin = await t.addMember(owner, tenantId, 'admin');
    const pendingEmail = `pending-${randomUUID().slice(0, 6)}@elsewhere.example`;
    const pending = (await scim('POST', '/Users', { userName: pendingEmail })).json<{ id: string }>();
    const group = (await scim('POST', '/Groups', { displayName: 'Self and pending', members: [{ value: admin.userId }, { value: pending.id }] })).json<{ id: string }>();
    expect((await mapGroup(group.id, 'viewer', admin)).statusCode).toBe(200);
    expect(await role(admin.userId)).toBe('admin');
    const [event] = await t.admin.query<{ metadata: { before: string; after: string } }>(
      `select e.canonical_metadata::jsonb as metadata from audit_events e join scim_users s on s.invitation_id::text = e.target_id where e.tenant_id = $1 and e.action = 'member.role_changed' and s.id = $2`,
      [tenantId, pending.id],
    );
    expect(event!.metadata).toMatchObject({ before: 'member', after: 'viewer' });
  });

  it.skipIf(inject('testDb').kind !== 'postgres')('concurrent group changes never leave a stale role: leaving the admin group while another group is mapped ends on the right role', async () => {
    const uma = await provision('uma');
    const admins = (await scim('POST', '/Groups', { displayName: 'Race admins', members: [{ value: uma }] })).json<{ id: string }>();
    const readers = (await scim('POST', '/Groups', { displayName: 'Race readers', members: [{ value: uma }] })).json<{ id: string }>();
    await mapGroup(admins.id, 'admin');
    expect(await role(uma)).toBe('admin');
    // Hold her membership row so the SCIM removal stalls mid-sync while the mapping runs.
    const locker = new pg.Client({ connectionString: t.env.BACKUP_DATABASE_URL });
    await locker.connect();
    try {
      await locker.query('begin');
      await locker.query('select 1 from memberships where tenant_id = $1 and user_id = $2 for update', [tenantId, uma]);
      const leaving = scim('PATCH', `/Groups/${admins.id}`, { schemas: [PATCH_OP], Operations: [{ op: 'remove', path: `members[value eq "${uma}"]` }] });
      await new Promise((resolve) => setTimeout(resolve, 300));
      const mapping = mapGroup(readers.id, 'viewer');
      await new Promise((resolve) => setTimeout(resolve, 300));
      await locker.query('commit');
      expect([(await leaving).statusCode, (await mapping).statusCode]).toEqual([204, 200]);
    } finally {
      await locker.end();
    }
    expect(await role(uma)).toBe('viewer');
  });

  it('removing a member in the app forgets their SCIM resource and group places, so the IdP can provision them again', async () => {
    const ivy = await provision('ivy');
    const group = (await scim('POST', '/Groups', { displayName: 'Ivy league', members: [{ value: ivy }] })).json<{ id: string }>();
    expect((await t.request({ method: 'DELETE', url: `/api/v1/tenants/${tenantId}/members/${ivy}`, as: owner })).statusCode).toBe(204);
    expect((await scim('GET', `/Groups/${group.id}`)).json().members).toEqual([]);
    expect(await t.admin.query('select 1 from scim_group_members where tenant_id = $1 and member_id = $2', [tenantId, ivy])).toEqual([]);
    const again = await scim('POST', '/Users', { userName: `ivy@${DOMAIN}` });
    expect(again.statusCode).toBe(201);
    expect(await role(ivy)).toBe('member');
  });
});
