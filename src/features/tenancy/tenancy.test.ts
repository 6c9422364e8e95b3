import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type SessionHandle, type TestApp } from '../../../test/harness.ts';

describe('tenants, invitations and members', () => {
  let t: TestApp;
  let owner: SessionHandle;
  let tenantId: string;
  const members = (id = tenantId) => `/api/v1/tenants/${id}/members`;

  beforeAll(async () => {
    t = await startTestApp();
    ({ session: owner, tenantId } = await t.signup({ tenantName: 'Main' }));
  });
  afterAll(async () => t?.close());

  it('creates a tenant owned by the caller and lists it', async () => {
    const created = await t.request({ method: 'POST', url: '/api/v1/tenants', as: owner, body: { name: 'Second' } });
    expect(created.statusCode).toBe(201);
    const list = await t.request({ method: 'GET', url: '/api/v1/tenants', as: owner });
    expect(list.json()).toEqual({
      items: [
        { id: tenantId, name: 'Main', role: 'owner' },
        { id: created.json().id, name: 'Second', role: 'owner' },
      ],
      nextCursor: null,
    });
  });

  it('many concurrent tenant creations all succeed (no transaction waits on another from inside)', async () => {
    const { session } = await t.signup();
    // One session per request: creating a tenant renews the session's token, so requests
    // still in flight with the old token of the same session would be refused (by design).
    const sessions = [];
    for (let i = 0; i < 12; i++) sessions.push(await t.login(session.email));
    const responses = await Promise.all(
      sessions.map((as, i) => t.request({ method: 'POST', url: '/api/v1/tenants', as, body: { name: `Parallel ${i}` } })),
    );
    expect(responses.map((r) => r.statusCode)).toEqual(Array(12).fill(201));
    const list = await t.request({ method: 'GET', url: '/api/v1/tenants?limit=100', as: session });
    expect(list.json().items).toHaveLength(13);
  });

  it('an invitation is accepted once, only by the invited email, and makes a member with that role', async () => {
    const { session: invitee } = await t.signup();
    const { session: stranger } = await t.signup();
    const invite = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/invitations`, as: owner, body: { email: invitee.email.toUpperCase(), role: 'viewer' } });
    expect(invite.statusCode).toBe(201);
    const { token, expiresAt } = invite.json();
    expect(new Date(expiresAt).getTime()).toBeGreaterThan(Date.now() + 6 * 24 * 3600_000);
    const byStranger = await t.request({ method: 'POST', url: '/api/v1/invitations/accept', as: stranger, body: { token } });
    expect(byStranger.statusCode).toBe(404);
    const accepted = await t.request({ method: 'POST', url: '/api/v1/invitations/accept', as: invitee, body: { token } });
    expect(accepted.json()).toEqual({ tenantId, role: 'viewer' });
    const again = await t.request({ method: 'POST', url: '/api/v1/invitations/accept', as: invitee, body: { token } });
    expect(again.statusCode).toBe(404);
    const forged = await t.request({ method: 'POST', url: '/api/v1/invitations/accept', as: invitee, body: { token: `${token.slice(0, -2)}xx` } });
    expect(forged.statusCode).toBe(404);
    const list = await t.request({ method: 'GET', url: members(), as: owner });
    expect(list.json().items).toEqual(
      expect.arrayContaining([expect.objectContaining({ userId: invitee.userId, role: 'viewer', mfaEnabled: false })]),
    );
    const stored = await t.admin.query<{ token_hash: Buffer }>('select token_hash from invitations where tenant_id = $1', [tenantId]);
    expect(stored.every((row) => !Buffer.from(row.token_hash).toString('latin1').includes(token))).toBe(true);
  });

  it('an expired invitation is refused', async () => {
    const { session: late } = await t.signup();
    const invite = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/invitations`, as: owner, body: { email: late.email, role: 'member' } });
    await t.admin.query(`update invitations set expires_at = now() - interval '1 minute' where id = $1`, [invite.json().id]);
    const response = await t.request({ method: 'POST', url: '/api/v1/invitations/accept', as: late, body: { token: invite.json().token } });
    expect(response.statusCode).toBe(410);
    expect(response.json().code).toBe('invitation.expired');
  });

  it('role rules: no grant above your own, admins cannot touch owners, nobody changes their own role', async () => {
    const admin = await t.addMember(owner, tenantId, 'admin');
    const member = await t.addMember(owner, tenantId, 'member');
    const inviteOwner = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/invitations`, as: admin, body: { email: 'x@example.com', role: 'owner' } });
    expect(inviteOwner.statusCode).toBe(403);
    const demoteOwner = await t.request({ method: 'PATCH', url: `${members()}/${owner.userId}`, as: admin, body: { role: 'member' } });
    expect(demoteOwner.statusCode).toBe(403);
    const removeOwner = await t.request({ method: 'DELETE', url: `${members()}/${owner.userId}`, as: admin });
    expect(removeOwner.statusCode).toBe(403);
    const selfPromote = await t.request({ method: 'PATCH', url: `${members()}/${admin.userId}`, as: admin, body: { role: 'owner' } });
    expect(selfPromote.statusCode).toBe(403);
    // Each refusal is evidence in the tenant log, though the refused change rolled back.
    const denials = await t.admin.query<{ metadata: { reason: string } }>(
      `select canonical_metadata::jsonb as metadata from audit_events where tenant_id = $1 and action = 'access.denied' and actor_id = $2 order by position`,
      [tenantId, admin.userId],
    );
    expect(denials.map((d) => d.metadata.reason)).toEqual([
      'You cannot grant a role above your own',
      'Only an owner can change or remove an owner',
      'Only an owner can change or remove an owner',
      'You cannot change your own role',
    ]);
    const promote = await t.request({ method: 'PATCH', url: `${members()}/${member.userId}`, as: admin, body: { role: 'admin' } });
    expect(promote.statusCode).toBe(200);
    expect(promote.json().role).toBe('admin');
    const byMember = await t.request({ method: 'GET', url: members(), as: await t.addMember(owner, tenantId, 'member') });
    expect(byMember.statusCode).toBe(403);
    const [event] = await t.admin.query<{ metadata: { before: string; after: string; signedOut: boolean } }>(
      `select canonical_metadata::jsonb as metadata from audit_events where tenant_id = $1 and action = 'member.role_changed' order by position desc limit 1`,
      [tenantId],
    );
    expect(event!.metadata).toEqual({ before: 'member', after: 'admin', signedOut: true });
  });

  it('the last owner can be neither demoted nor removed', async () => {
    const { session: solo, tenantId: soloTenant } = await t.signup();
    await t.addMember(solo, soloTenant, 'admin');
    const demote = await t.request({ method: 'DELETE', url: `${members(soloTenant)}/${solo.userId}`, as: solo });
    expect(demote.statusCode).toBe(409);
    expect(demote.json().code).toBe('member.last_owner');
    const second = await t.addMember(solo, soloTenant, 'owner');
    const leave = await t.request({ method: 'DELETE', url: `${members(soloTenant)}/${solo.userId}`, as: second });
    expect(leave.statusCode).toBe(204);
  });

  it("an admin can sign a member out of this tenant only: other tenants keep working, a new login works here", async () => {
    const member = await t.addMember(owner, tenantId, 'member');
    const ownTenant = (await t.request({ method: 'GET', url: '/api/v1/tenants', as: member })).json().items.find((x: { id: string }) => x.id !== tenantId).id;
    const admin = await t.addMember(owner, tenantId, 'admin');
    const revoke = await t.request({ method: 'POST', url: `${members()}/${member.userId}/revoke-sessions`, as: admin });
    expect(revoke.statusCode).toBe(204);
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/accounts`, as: member })).statusCode).toBe(401);
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${ownTenant}/accounts`, as: member })).statusCode).toBe(200);
    const again = await t.login(member.email);
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/accounts`, as: again })).statusCode).toBe(200);
    expect((await t.request({ method: 'POST', url: `${members()}/${owner.userId}/revoke-sessions`, as: admin })).statusCode).toBe(403);
  });

  it("a removed member loses access on the very next request", async () => {
    const member = await t.addMember(owner, tenantId, 'member');
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/accounts`, as: member })).statusCode).toBe(200);
    const removed = await t.request({ method: 'DELETE', url: `${members()}/${member.userId}`, as: owner });
    expect(removed.statusCode).toBe(204);
    const next = await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/accounts`, as: member });
    expect(next.statusCode).toBe(404);
    const platform = await t.admin.query<{ action: string; tenant_id: string }>(
      `select action, tenant_id from platform_audit_events where actor_id = $1 and action = 'access.denied'`,
      [member.userId],
    );
    expect(platform).toEqual([{ action: 'access.denied', tenant_id: tenantId }]);
  });

  it('a member lacking the permission gets 403 and the denial lands in the tenant log', async () => {
    const viewer = await t.addMember(owner, tenantId, 'viewer');
    const response = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: viewer, body: { name: 'nope' } });
    expect(response.statusCode).toBe(403);
    expect(response.json().code).toBe('access.forbidden');
    const [event] = await t.admin.query<{ outcome: string; metadata: { permission: string } }>(
      `select outcome, canonical_metadata::jsonb as metadata from audit_events where tenant_id = $1 and action = 'access.denied' and actor_id = $2`,
      [tenantId, viewer.userId],
    );
    expect(event).toMatchObject({ outcome: 'denied', metadata: { permission: 'records.write' } });
  });
});
