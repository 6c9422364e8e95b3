import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type SessionHandle, type TestApp } from '../../../test/harness.ts';
import { readOutbox, waitForToken } from '../../../test/support/outbox.ts';

// Threats: a de-provisioned person keeps access through a session, an API key or an old
// invitation link; an invitation reaches an address the tenant's policy does not allow; a
// request from outside the tenant's networks gets in; an admin locks everyone out by accident.
describe('member lifecycle and the tenant policy center', () => {
  let t: TestApp;
  let owner: SessionHandle;
  let tenantId: string;
  const base = () => `/api/v1/tenants/${tenantId}`;
  const events = (action: string) =>
    t.admin.query<{ target_id: string; metadata: Record<string, unknown>; outcome: string }>(
      `select target_id, canonical_metadata::jsonb as metadata, outcome from audit_events where tenant_id = $1 and action = $2 order by position`,
      [tenantId, action],
    );

  beforeAll(async () => {
    t = await startTestApp();
    ({ session: owner, tenantId } = await t.signup({ tenantName: 'Lifecycle Inc' }));
  });
  afterAll(async () => t?.close());

  describe('invitations', () => {
    it('are mailed with a single-use link, listed with their status, and a resend replaces the link (the old one stops working)', async () => {
      const { session: invitee } = await t.signup();
      const created = await t.request({ method: 'POST', url: `${base()}/invitations`, as: owner, body: { email: invitee.email.toUpperCase(), role: 'member' } });
      expect(created.statusCode).toBe(201);
      const { id, token } = created.json<{ id: string; token: string }>();
      // The mail carries the same link; the token sits in the fragment, never in a query string.
      expect(await waitForToken(t.config.dataDir, invitee.email, 'You are invited to Lifecycle Inc')).toBe(token);
      const mail = readOutbox(t.config.dataDir).find((m) => m.text.includes(token))!;
      expect(mail.text).toContain(`/invitations/accept#token=${token}`);

      const listed = (await t.request({ method: 'GET', url: `${base()}/invitations`, as: owner })).json<{ items: { id: string; status: string; email: string }[] }>();
      expect(listed.items.find((item) => item.id === id)).toMatchObject({ status: 'pending', email: invitee.email.toLowerCase() });

      const resent = await t.request({ method: 'POST', url: `${base()}/invitations/${id}/resend`, as: owner });
      expect(resent.statusCode).toBe(200);
      const fresh = resent.json<{ token: string; expiresAt: string }>();
      expect(fresh.token).not.toBe(token);
      expect(new Date(fresh.expiresAt).getTime()).toBeGreaterThan(Date.now() + 6.9 * 24 * 3_600_000);
      expect(await waitForToken(t.config.dataDir, invitee.email, 'You are invited to Lifecycle Inc', 1)).toBe(fresh.token);
      expect((await t.request({ method: 'POST', url: '/api/v1/invitations/accept', as: invitee, body: { token } })).statusCode).toBe(404);
      expect((await t.request({ method: 'POST', url: '/api/v1/invitations/accept', as: invitee, body: { token: fresh.token } })).statusCode).toBe(200);
      // Settled: neither resent nor revoked any more.
      expect((await t.request({ method: 'POST', url: `${base()}/invitations/${id}/resend`, as: owner })).json().code).toBe('invitation.not_pending');
      expect((await t.request({ method: 'DELETE', url: `${base()}/invitations/${id}`, as: owner })).statusCode).toBe(409);
      expect((await events('member.invitation_resent')).map((e) => e.target_id)).toContain(id);
    });

    it('a revoked invitation cannot be accepted; an admin can neither resend nor revoke an owner invitation; bad ids are 400/404', async () => {
      const { session: invitee } = await t.signup();
      const { id, token } = (await t.request({ method: 'POST', url: `${base()}/invitations`, as: owner, body: { email: invitee.email, role: 'viewer' } })).json<{ id: string; token: string }>();
      expect((await t.request({ method: 'DELETE', url: `${base()}/invitations/${id}`, as: owner })).statusCode).toBe(204);
      expect((await t.request({ method: 'POST', url: '/api/v1/invitations/accept', as: invitee, body: { token } })).statusCode).toBe(404);
      expect((await events('member.invitation_revoked')).map((e) => e.target_id)).toContain(id);
      const listed = (await t.request({ method: 'GET', url: `${base()}/invitations`, as: owner })).json<{ items: { id: string; status: string }[] }>();
      expect(listed.items.find((item) => item.id === id)?.status).toBe('revoked');

      const admin = await t.addMember(owner, tenantId, 'admin');
      const ownerInvite = (await t.request({ method: 'POST', url: `${base()}/invitations`, as: owner, body: { email: 'future-owner@example.com', role: 'owner' } })).json<{ id: string }>();
      expect((await t.request({ method: 'POST', url: `${base()}/invitations/${ownerInvite.id}/resend`, as: admin })).statusCode).toBe(403);
      expect((await t.request({ method: 'DELETE', url: `${base()}/invitations/${ownerInvite.id}`, as: admin })).statusCode).toBe(403);
      expect((await t.request({ method: 'DELETE', url: `${base()}/invitations/not-a-uuid`, as: owner })).statusCode).toBe(400);
      expect((await t.request({ method: 'DELETE', url: `${base()}/invitations/00000000-0000-4000-8000-000000000000`, as: owner })).statusCode).toBe(404);
    });

    it('allowedEmailDomains limits whom an invitation may address (also on resend), and the policy change is audited', async () => {
      const pending = (await t.request({ method: 'POST', url: `${base()}/invitations`, as: owner, body: { email: 'someone@elsewhere.example', role: 'viewer' } })).json<{ id: string }>();
      const set = await t.request({ method: 'PATCH', url: `${base()}/settings`, as: owner, body: { allowedEmailDomains: ['Lifecycle.Example', 'example.com'] } });
      expect(set.statusCode).toBe(200);
      expect(set.json().allowedEmailDomains).toEqual(['lifecycle.example', 'example.com']);
      const refused = await t.request({ method: 'POST', url: `${base()}/invitations`, as: owner, body: { email: 'a@gmail.example', role: 'viewer' } });
      expect(refused.statusCode).toBe(422);
      expect(refused.json().code).toBe('invitation.domain_not_allowed');
      expect((await t.request({ method: 'POST', url: `${base()}/invitations/${pending.id}/resend`, as: owner })).statusCode).toBe(422);
      expect((await t.request({ method: 'POST', url: `${base()}/invitations`, as: owner, body: { email: 'b@lifecycle.example', role: 'viewer' } })).statusCode).toBe(201);
      const changes = await events('settings.updated');
      expect(changes.at(-1)!.metadata).toMatchObject({ before: { allowedEmailDomains: [] }, after: { allowedEmailDomains: ['lifecycle.example', 'example.com'] } });
      await t.request({ method: 'PATCH', url: `${base()}/settings`, as: owner, body: { allowedEmailDomains: [] } });
    });
  });

  describe('suspension', () => {
    it("cuts access on the very next request (sessions here and the member's API keys), keeps the membership, and reactivation lets them sign in again", async () => {
      const member = await t.addMember(owner, tenantId, 'admin');
      const key = (await t.request({ method: 'POST', url: `${base()}/api-keys`, as: member, body: { name: 'their key', role: 'member' } })).json<{ key: string; id: string }>();
      const withKey = () => t.request({ method: 'GET', url: `${base()}/accounts`, headers: { authorization: `Bearer ${key.key}` } });
      expect((await withKey()).statusCode).toBe(200);
      expect((await t.request({ method: 'GET', url: `${base()}/accounts`, as: member })).statusCode).toBe(200);

      const suspended = await t.request({ method: 'POST', url: `${base()}/members/${member.userId}/suspend`, as: owner });
      expect(suspended.statusCode).toBe(200);
      expect(suspended.json()).toMatchObject({ userId: member.userId, status: 'suspended', role: 'admin' });
      // The very next request of either credential is refused: the session is told why, the key is dead.
      const refused = await t.request({ method: 'GET', url: `${base()}/accounts`, as: member });
      expect(refused.statusCode).toBe(403);
      expect(refused.json().code).toBe('member.suspended');
      expect((await withKey()).statusCode).toBe(401);
      const again = await t.login(member.email);
      expect((await t.request({ method: 'GET', url: `${base()}/accounts`, as: again })).json().code).toBe('member.suspended');
      const [denial] = (await events('access.denied')).filter((e) => e.metadata.reason === 'suspended');
      expect(denial).toBeDefined();
      // Out of their tenant list, still in the admin's member list.
      const mine = (await t.request({ method: 'GET', url: '/api/v1/tenants', as: again })).json<{ items: { id: string }[] }>();
      expect(mine.items.map((item) => item.id)).not.toContain(tenantId);
      const listed = (await t.request({ method: 'GET', url: `${base()}/members`, as: owner })).json<{ items: { userId: string; status: string }[] }>();
      expect(listed.items.find((item) => item.userId === member.userId)?.status).toBe('suspended');
      expect((await events('member.suspended')).at(-1)).toMatchObject({ target_id: member.userId, metadata: { role: 'admin', revokedKeys: 1 } });

      expect((await t.request({ method: 'POST', url: `${base()}/members/${member.userId}/suspend`, as: owner })).json().code).toBe('member.already_suspended');
      const reactivated = await t.request({ method: 'POST', url: `${base()}/members/${member.userId}/reactivate`, as: owner });
      expect(reactivated.json()).toMatchObject({ status: 'active', suspendedAt: null });
      // Sessions from before the suspension stay signed out here; a new login works.
      expect((await t.request({ method: 'GET', url: `${base()}/accounts`, as: member })).statusCode).toBe(401);
      expect((await t.request({ method: 'GET', url: `${base()}/accounts`, as: await t.login(member.email) })).statusCode).toBe(200);
      // The revoked key stays revoked.
      expect((await withKey()).statusCode).toBe(401);
      expect((await t.request({ method: 'POST', url: `${base()}/members/${member.userId}/reactivate`, as: owner })).json().code).toBe('member.not_suspended');
      expect((await events('member.reactivated')).map((e) => e.target_id)).toContain(member.userId);
    });

    it('follows the role rules: nobody suspends themselves, an admin cannot suspend an owner, the last active owner stays', async () => {
      const admin = await t.addMember(owner, tenantId, 'admin');
      expect((await t.request({ method: 'POST', url: `${base()}/members/${admin.userId}/suspend`, as: admin })).statusCode).toBe(403);
      expect((await t.request({ method: 'POST', url: `${base()}/members/${owner.userId}/suspend`, as: admin })).statusCode).toBe(403);
      const second = await t.addMember(owner, tenantId, 'owner');
      expect((await t.request({ method: 'POST', url: `${base()}/members/${second.userId}/suspend`, as: owner })).statusCode).toBe(200);
      // With the other owner suspended, the first is the last one who can act.
      const lastOwner = await t.request({ method: 'POST', url: `${base()}/members/${owner.userId}/suspend`, as: await t.login(second.email) });
      expect(lastOwner.statusCode).toBe(403); // the suspended owner cannot act at all
      const demote = await t.request({ method: 'PATCH', url: `${base()}/members/${owner.userId}`, as: owner, body: { role: 'admin' } });
      expect(demote.statusCode).toBe(403); // nobody changes their own role
      expect((await t.request({ method: 'DELETE', url: `${base()}/members/${second.userId}`, as: owner })).statusCode).toBe(204);
      expect((await t.request({ method: 'POST', url: `${base()}/members/00000000-0000-4000-8000-000000000000/suspend`, as: owner })).statusCode).toBe(404);
    });
  });

  describe('IP allow-list', () => {
    const inside = '203.0.113.20';
    const outside = '198.51.100.20';

    it('refuses to save a list that excludes the admin unless confirmed, and stores networks as PostgreSQL spells them', async () => {
      const excluded = await t.request({ method: 'PATCH', url: `${base()}/settings`, as: owner, body: { ipAllowlist: ['10.0.0.0/8'] }, remoteAddress: outside });
      expect(excluded.statusCode).toBe(409);
      expect(excluded.json().code).toBe('settings.ip_allowlist_excludes_you');
      for (const bad of [['10.0.0.0/33'], ['example.com'], ['167772161'], ['1.2.3.4', '1.2.3.4']]) {
        expect((await t.request({ method: 'PATCH', url: `${base()}/settings`, as: owner, body: { ipAllowlist: bad }, remoteAddress: inside })).statusCode, String(bad)).toBe(400);
      }
      const saved = await t.request({ method: 'PATCH', url: `${base()}/settings`, as: owner, body: { ipAllowlist: ['203.0.113.77/24', '2001:db8::1/64'] }, remoteAddress: inside });
      expect(saved.statusCode).toBe(200);
      expect(saved.json().ipAllowlist).toEqual(['203.0.113.0/24', '2001:db8::/64']);
      expect((await t.request({ method: 'GET', url: `${base()}/settings`, as: owner, remoteAddress: inside })).json().ipAllowlist).toEqual(['203.0.113.0/24', '2001:db8::/64']);
    });

    it('answers 403 access.ip_blocked to members and API keys from elsewhere, on every path (the one-round-trip read too), and records it', async () => {
      // The test harness joins members from 127.0.0.1: open the tenant for that, then close it again.
      await t.admin.query(`update tenant_settings set ip_allowlist = '{}' where tenant_id = $1`, [tenantId]);
      const member = await t.addMember(owner, tenantId, 'member');
      await t.admin.query(`update tenant_settings set ip_allowlist = '{203.0.113.0/24}' where tenant_id = $1`, [tenantId]);
      const key = (await t.request({ method: 'POST', url: `${base()}/api-keys`, as: owner, body: { name: 'ip key', role: 'member' }, remoteAddress: inside })).json<{ key: string }>();
      const account = (await t.request({ method: 'POST', url: `${base()}/accounts`, as: member, body: { name: 'Behind the wall' }, remoteAddress: inside })).json<{ id: string }>();
      for (const url of [`${base()}/accounts`, `${base()}/accounts/${account.id}`]) {
        const fromOutside = await t.request({ method: 'GET', url, as: member, remoteAddress: outside });
        expect(fromOutside.statusCode, url).toBe(403);
        expect(fromOutside.json().code).toBe('access.ip_blocked');
        expect(fromOutside.body).not.toContain('Behind the wall');
        expect((await t.request({ method: 'GET', url, as: member, remoteAddress: inside })).statusCode, url).toBe(200);
        expect((await t.request({ method: 'GET', url, as: member, remoteAddress: `::ffff:${inside}` })).statusCode, url).toBe(200);
        const keyOutside = await t.request({ method: 'GET', url, headers: { authorization: `Bearer ${key.key}` }, remoteAddress: outside });
        expect(keyOutside.json().code).toBe('access.ip_blocked');
        expect((await t.request({ method: 'GET', url, headers: { authorization: `Bearer ${key.key}` }, remoteAddress: inside })).statusCode).toBe(200);
      }
      const blocked = (await events('access.denied')).filter((e) => e.metadata.reason === 'ip_blocked');
      expect(blocked.length).toBeGreaterThanOrEqual(4);
      expect(blocked[0]!.metadata.ip).toBe(outside);
      // A stranger still learns nothing: 404, whatever the address.
      const { session: stranger } = await t.signup();
      expect((await t.request({ method: 'GET', url: `${base()}/accounts`, as: stranger, remoteAddress: outside })).statusCode).toBe(404);
      // Other tenants of the same member are not affected.
      const own = (await t.request({ method: 'GET', url: '/api/v1/tenants', as: member, remoteAddress: outside })).json<{ items: { id: string }[] }>();
      const other = own.items.find((item) => item.id !== tenantId)!;
      expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${other.id}/accounts`, as: member, remoteAddress: outside })).statusCode).toBe(200);
      // Confirmed lock-out is possible, and an empty list opens the tenant again.
      expect((await t.request({ method: 'PATCH', url: `${base()}/settings`, as: owner, body: { ipAllowlist: ['10.0.0.0/8'], confirmIpAllowlist: true }, remoteAddress: inside })).statusCode).toBe(200);
      expect((await t.request({ method: 'GET', url: `${base()}/accounts`, as: owner, remoteAddress: inside })).json().code).toBe('access.ip_blocked');
      await t.admin.query(`update tenant_settings set ip_allowlist = '{}' where tenant_id = $1`, [tenantId]);
      expect((await t.request({ method: 'GET', url: `${base()}/accounts`, as: owner, remoteAddress: outside })).statusCode).toBe(200);
    });
  });

  it('guestSharing and aiEnabled are off by default, changed only by settings.manage, and audited with before and after', async () => {
    const viewer = await t.addMember(owner, tenantId, 'viewer');
    expect((await t.request({ method: 'PATCH', url: `${base()}/settings`, as: viewer, body: { aiEnabled: true } })).statusCode).toBe(403);
    const on = await t.request({ method: 'PATCH', url: `${base()}/settings`, as: owner, body: { aiEnabled: true, guestSharing: true } });
    expect(on.json()).toMatchObject({ aiEnabled: true, guestSharing: true });
    expect((await events('settings.updated')).at(-1)!.metadata).toMatchObject({ before: { aiEnabled: false, guestSharing: false }, after: { aiEnabled: true, guestSharing: true } });
  });
});
