import { sql } from 'kysely';
import { randomUUID } from 'node:crypto';
import Type from 'typebox';
import { isUuid, type Tx } from '../../kernel/db/database.ts';
import { recordTenantEvent } from '../../kernel/audit/record.ts';
import { hashToken, isIssuedToken } from '../../kernel/crypto/tokens.ts';
import { AppError } from '../../kernel/http/errors.ts';
import { actorOf } from '../../kernel/http/principal.ts';
import { tenantRoute, userRoute, type RouteDefinition } from '../../kernel/http/routes.ts';
import { keysetPage, ListQuery, page, TenantParams } from '../../kernel/http/schemas.ts';
import { assertAccountSession } from '../identity/index.ts';
import {
  assertMayAssign,
  assertNotLastOwner,
  cutAccess,
  findManageableMember,
  findMembership,
  memberRow,
  pendingInvitation,
  removeMembership,
  reactivateMembership,
  signOutOfTenant,
  suspendMembership,
} from './members.ts';
import type { Mailer } from '../../kernel/mail/mailer.ts';
import { linkProvisionedUser } from './scim.ts';
import { invitationExpiry, mailInvitation, newInvitationToken } from './invitations.ts';
import { isPromotion, OWNER_ROLE } from '../access/index.ts';
import {
  AcceptBody,
  AcceptResponse,
  ChangeRoleBody,
  CreateTenantBody,
  Invitation,
  InvitationBody,
  InvitationParams,
  InvitationSummary,
  Member,
  MemberParams,
  Tenant,
  TenantSummary,
} from './schemas.ts';


function toMember(row: { id: string; email: string; name: string; role: string; mfa_enabled: boolean; last_login_at: Date | null; suspended_at: Date | null }) {
  return {
    userId: row.id,
    email: row.email,
    name: row.name,
    role: row.role,
    mfaEnabled: row.mfa_enabled,
    lastLoginAt: row.last_login_at ? row.last_login_at.toISOString() : null,
    status: row.suspended_at ? ('suspended' as const) : ('active' as const),
    suspendedAt: row.suspended_at ? row.suspended_at.toISOString() : null,
  };
}

function invitationStatus(row: { accepted_at: Date | null; revoked_at: Date | null; expires_at: Date }) {
  if (row.accepted_at) return 'accepted' as const;
  if (row.revoked_at) return 'revoked' as const;
  return row.expires_at.getTime() <= Date.now() ? ('expired' as const) : ('pending' as const);
}

/** The tenant's allowedEmailDomains policy (empty: any domain). */
async function assertEmailDomainAllowed(tx: Tx, tenantId: string, email: string): Promise<void> {
  const row = await tx.selectFrom('tenant_settings').select('allowed_email_domains').where('tenant_id', '=', tenantId).executeTakeFirst();
  const allowed = row?.allowed_email_domains ?? [];
  const domain = email.slice(email.lastIndexOf('@') + 1);
  if (allowed.length > 0 && !allowed.includes(domain)) {
    throw new AppError('invitation.domain_not_allowed', { detail: `Allowed domains: ${allowed.join(', ')}` });
  }
}


/** An invitation token's tenant (invitations.ts makes them), or null for anything else. */
function parseInvitationToken(token: string): { tenantId: string } | null {
  const [tenantId, secret, ...rest] = token.split('.');
  if (rest.length > 0 || !isUuid(tenantId) || secret === undefined || !isIssuedToken(secret)) return null;
  return { tenantId: tenantId.toLowerCase() };
}

export function tenancyRoutes(options: { mailer: Mailer; appUrl: string }): RouteDefinition[] {
  const inviterOf = (principal: { name: string; email: string }) => `${principal.name} (${principal.email})`;
  return [
    userRoute({
      method: 'GET',
      url: '/api/v1/tenants',
      schema: { summary: 'Tenants the caller belongs to', tags: ['tenancy'], querystring: ListQuery, response: { 200: page(TenantSummary) } },
      async handler({ db, principal, query }) {
        return db.withGlobal(
          (tx) => {
            let builder = tx
              .selectFrom('memberships as m')
              .innerJoin('tenants as t', 't.id', 'm.tenant_id')
              .select(['t.id', 't.name', 'm.role', 'm.created_at'])
              .where('m.user_id', '=', principal.userId)
              .where('m.suspended_at', 'is', null);
            // A session from a tenant's IdP speaks for that tenant only.
            if (principal.ssoTenantId !== null) builder = builder.where('m.tenant_id', '=', principal.ssoTenantId);
            return keysetPage(builder, query, { by: ['m.created_at', 't.id'] }, (row) => ({ id: row.id, name: row.name, role: row.role }));
          },
          { userId: principal.userId },
        );
      },
    }),

    userRoute({
      method: 'POST',
      url: '/api/v1/tenants',
      status: 201,
      schema: { summary: 'Create a tenant; the caller becomes its owner', tags: ['tenancy'], body: CreateTenantBody, response: { 201: Tenant } },
      async handler({ db, principal, body, meta, renewSession }) {
        assertAccountSession(principal);
        const tenantId = randomUUID();
        return db.withTenant(tenantId, async (tx) => {
          await renewSession(tx);
          const tenant = await tx.insertInto('tenants').values({ id: tenantId, name: body.name.trim() }).returning(['id', 'name']).executeTakeFirstOrThrow();
          await tx.insertInto('memberships').values({ tenant_id: tenantId, user_id: principal.userId, role: OWNER_ROLE }).execute();
          await recordTenantEvent(tx, tenantId, actorOf(principal), meta, { action: 'tenant.created', target: { type: 'tenant', id: tenantId } });
          return tenant;
        });
      },
    }),

    tenantRoute({
      method: 'POST',
      url: '/api/v1/tenants/:tenantId/invitations',
      permission: 'members.manage',
      status: 201,
      schema: { summary: 'Invite someone by email', tags: ['members'], params: TenantParams, body: InvitationBody, response: { 201: Invitation } },
      async handler({ tx, tenantId, principal, body, audit, request }) {
        assertMayAssign({ actorRole: principal.role, targetCurrentRole: null, targetNewRole: body.role, isSelf: false });
        const email = body.email.trim().toLowerCase();
        await assertEmailDomainAllowed(tx, tenantId, email);
        const token = newInvitationToken(tenantId);
        const row = await tx
          .insertInto('invitations')
          .values({
            tenant_id: tenantId,
            email,
            role: body.role,
            token_hash: hashToken(token),
            invited_by: principal.userId,
            expires_at: invitationExpiry(),
          })
          .returning(['id', 'email', 'role', 'expires_at'])
          .executeTakeFirstOrThrow();
        await audit({ action: 'member.invited', target: { type: 'invitation', id: row.id }, metadata: { email, role: body.role } });
        await mailInvitation(options, tx, { tenantId, inviter: inviterOf(principal), email, token, expiresAt: row.expires_at }, request.log);
        return { id: row.id, email: row.email, role: row.role, token, expiresAt: row.expires_at.toISOString() };
      },
    }),

    tenantRoute({
      method: 'GET',
      url: '/api/v1/tenants/:tenantId/invitations',
      permission: 'members.read',
      schema: { summary: 'Invitations of the tenant, newest first, with their status', tags: ['members'], params: TenantParams, querystring: ListQuery, response: { 200: page(InvitationSummary) } },
      async handler({ tx, tenantId, query }) {
        const builder = tx
          .selectFrom('invitations')
          .select(['id', 'email', 'role', 'invited_by', 'created_at', 'expires_at', 'accepted_at', 'revoked_at', 'resent_at'])
          .where('tenant_id', '=', tenantId);
        return keysetPage(builder, query, { by: ['created_at', 'id'], newestFirst: true }, (row) => ({
          id: row.id,
          email: row.email,
          role: row.role,
          status: invitationStatus(row),
          invitedBy: row.invited_by,
          createdAt: row.created_at.toISOString(),
          expiresAt: row.expires_at.toISOString(),
          resentAt: row.resent_at ? row.resent_at.toISOString() : null,
        }));
      },
    }),

    tenantRoute({
      method: 'POST',
      url: '/api/v1/tenants/:tenantId/invitations/:invitationId/resend',
      permission: 'members.manage',
      schema: {
        summary: 'Resend an invitation: a new link, valid 7 days from now; the old link stops working',
        tags: ['members'],
        params: InvitationParams,
        response: { 200: Invitation },
      },
      async handler({ tx, tenantId, principal, params, audit, request }) {
        const invitation = await pendingInvitation(tx, tenantId, params.invitationId);
        assertMayAssign({ actorRole: principal.role, targetCurrentRole: null, targetNewRole: invitation.role, isSelf: false });
        await assertEmailDomainAllowed(tx, tenantId, invitation.email);
        const token = newInvitationToken(tenantId);
        const row = await tx
          .updateTable('invitations')
          .set({ token_hash: hashToken(token), expires_at: invitationExpiry(), resent_at: sql`now()` })
          .where('tenant_id', '=', tenantId)
          .where('id', '=', invitation.id)
          .returning(['id', 'email', 'role', 'expires_at'])
          .executeTakeFirstOrThrow();
        await audit({ action: 'member.invitation_resent', target: { type: 'invitation', id: row.id }, metadata: { email: row.email, role: row.role } });
        await mailInvitation(options, tx, { tenantId, inviter: inviterOf(principal), email: row.email, token, expiresAt: row.expires_at }, request.log);
        return { id: row.id, email: row.email, role: row.role, token, expiresAt: row.expires_at.toISOString() };
      },
    }),

    tenantRoute({
      method: 'DELETE',
      url: '/api/v1/tenants/:tenantId/invitations/:invitationId',
      permission: 'members.manage',
      status: 204,
      schema: { summary: 'Revoke a pending invitation: its link stops working', tags: ['members'], params: InvitationParams, response: { 204: Type.Null() } },
      async handler({ tx, tenantId, principal, params, audit }) {
        const invitation = await pendingInvitation(tx, tenantId, params.invitationId);
        // Whoever could not have issued it (an admin and an owner's invitation) cannot revoke it either.
        assertMayAssign({ actorRole: principal.role, targetCurrentRole: null, targetNewRole: invitation.role, isSelf: false });
        await tx.updateTable('invitations').set({ revoked_at: sql`now()` }).where('tenant_id', '=', tenantId).where('id', '=', invitation.id).execute();
        await audit({ action: 'member.invitation_revoked', target: { type: 'invitation', id: invitation.id }, metadata: { email: invitation.email, role: invitation.role } });
      },
    }),

    userRoute({
      method: 'POST',
      url: '/api/v1/invitations/accept',
      schema: { summary: 'Accept an invitation addressed to your email', tags: ['members'], body: AcceptBody, response: { 200: AcceptResponse } },
      async handler({ db, principal, body, meta, renewSession }) {
        assertAccountSession(principal);
        const parsed = parseInvitationToken(body.token);
        if (parsed === null) throw new AppError('not_found');
        return db.withTenant(parsed.tenantId, async (tx) => {
          const invitation = await tx
            .selectFrom('invitations')
            .select(['id', 'email', 'role', 'expires_at', 'accepted_at', 'revoked_at'])
            .where('tenant_id', '=', parsed.tenantId)
            .where('token_hash', '=', hashToken(body.token))
            .forUpdate()
            .executeTakeFirst();
          // Anyone but the invited address, and any used token, sees the same 404.
          if (!invitation || invitation.accepted_at !== null || invitation.revoked_at !== null || invitation.email !== principal.email) throw new AppError('not_found');
          if (invitation.expires_at.getTime() <= Date.now()) throw new AppError('invitation.expired');
          if (await findMembership(tx, parsed.tenantId, principal.userId)) throw new AppError('member.already_member');
          await tx.insertInto('memberships').values({ tenant_id: parsed.tenantId, user_id: principal.userId, role: invitation.role }).execute();
          // An invitation SCIM made for a pending user: the SCIM resource now names this account.
          await linkProvisionedUser(tx, parsed.tenantId, invitation.id, principal.userId);
          await tx
            .updateTable('invitations')
            .set({ accepted_at: sql`now()`, accepted_by: principal.userId })
            .where('tenant_id', '=', parsed.tenantId)
            .where('id', '=', invitation.id)
            .execute();
          await recordTenantEvent(tx, parsed.tenantId, actorOf(principal), meta, {
            action: 'member.joined',
            target: { type: 'user', id: principal.userId },
            metadata: { role: invitation.role, invitationId: invitation.id },
          });
          await renewSession(tx);
          return { tenantId: parsed.tenantId, role: invitation.role };
        });
      },
    }),

    tenantRoute({
      method: 'GET',
      url: '/api/v1/tenants/:tenantId/members',
      permission: 'members.read',
      schema: { summary: 'Members of the tenant', tags: ['members'], params: TenantParams, querystring: ListQuery, response: { 200: page(Member) } },
      async handler({ tx, tenantId, query }) {
        const builder = memberRow(tx, tenantId);
        return keysetPage(builder, query, { by: ['m.created_at', 'm.user_id'] }, toMember);
      },
    }),

    tenantRoute({
      method: 'PATCH',
      url: '/api/v1/tenants/:tenantId/members/:userId',
      permission: 'members.manage',
      schema: { summary: "Change a member's role", tags: ['members'], params: MemberParams, body: ChangeRoleBody, response: { 200: Member } },
      async handler({ tx, tenantId, principal, params, body, audit }) {
        const target = await findManageableMember(tx, { tenantId, actor: principal, targetUserId: params.userId, newRole: body.role, selfCounts: true });
        if (target.role === OWNER_ROLE && body.role !== OWNER_ROLE) await assertNotLastOwner(tx, tenantId, params.userId);
        await tx.updateTable('memberships').set({ role: body.role }).where('tenant_id', '=', tenantId).where('user_id', '=', params.userId).execute();
        // More authority comes with a new session token (no fixation): the member signs in again here.
        const promoted = isPromotion(target.role, body.role);
        if (promoted) await signOutOfTenant(tx, tenantId, params.userId);
        await audit({ action: 'member.role_changed', target: { type: 'user', id: params.userId }, metadata: { before: target.role, after: body.role, signedOut: promoted } });
        const row = await memberRow(tx, tenantId).where('m.user_id', '=', params.userId).executeTakeFirstOrThrow();
        return toMember(row);
      },
    }),

    tenantRoute({
      method: 'POST',
      url: '/api/v1/tenants/:tenantId/members/:userId/revoke-sessions',
      permission: 'members.manage',
      status: 204,
      schema: { summary: "Sign a member out of this tenant: their current sessions stop working here", tags: ['members'], params: MemberParams, response: { 204: Type.Null() } },
      async handler({ tx, tenantId, principal, params, audit }) {
        // Signing yourself out of a tenant is allowed; the owner rules still apply.
        await findManageableMember(tx, { tenantId, actor: principal, targetUserId: params.userId, newRole: null, selfCounts: false });
        await signOutOfTenant(tx, tenantId, params.userId);
        await audit({ action: 'member.sessions_revoked', target: { type: 'user', id: params.userId } });
      },
    }),

    tenantRoute({
      method: 'DELETE',
      url: '/api/v1/tenants/:tenantId/members/:userId',
      permission: 'members.manage',
      status: 204,
      schema: { summary: 'Remove a member; their access ends on their next request', tags: ['members'], params: MemberParams, response: { 204: Type.Null() } },
      async handler({ tx, tenantId, principal, params, audit }) {
        const target = await findManageableMember(tx, { tenantId, actor: principal, targetUserId: params.userId, newRole: null, selfCounts: true });
        if (target.role === OWNER_ROLE) await assertNotLastOwner(tx, tenantId, params.userId);
        // Same transaction: their sessions here and the keys they created stop working with their membership.
        const { revokedKeys } = await removeMembership(tx, tenantId, params.userId);
        await audit({ action: 'member.removed', target: { type: 'user', id: params.userId }, metadata: { role: target.role, revokedKeys } });
      },
    }),

    tenantRoute({
      method: 'POST',
      url: '/api/v1/tenants/:tenantId/members/:userId/suspend',
      permission: 'members.manage',
      schema: {
        summary: "Suspend a member: the membership stays, access ends on their next request (sessions here and the API keys they created are revoked)",
        tags: ['members'],
        params: MemberParams,
        response: { 200: Member },
      },
      async handler({ tx, tenantId, principal, params, audit }) {
        if (params.userId.toLowerCase() === principal.userId) throw new AppError('access.forbidden', { detail: 'You cannot suspend yourself' });
        const target = await findManageableMember(tx, { tenantId, actor: principal, targetUserId: params.userId, newRole: null, selfCounts: true });
        if (target.suspended) throw new AppError('member.already_suspended');
        if (target.role === OWNER_ROLE) await assertNotLastOwner(tx, tenantId, params.userId);
        await suspendMembership(tx, tenantId, params.userId, principal.userId);
        const { revokedKeys } = await cutAccess(tx, tenantId, params.userId);
        await audit({ action: 'member.suspended', target: { type: 'user', id: params.userId }, metadata: { role: target.role, revokedKeys } });
        return toMember(await memberRow(tx, tenantId).where('m.user_id', '=', params.userId).executeTakeFirstOrThrow());
      },
    }),

    tenantRoute({
      method: 'POST',
      url: '/api/v1/tenants/:tenantId/members/:userId/reactivate',
      permission: 'members.manage',
      schema: {
        summary: 'Reactivate a suspended member (they sign in again; revoked API keys stay revoked)',
        tags: ['members'],
        params: MemberParams,
        response: { 200: Member },
      },
      async handler({ tx, tenantId, principal, params, audit }) {
        const target = await findManageableMember(tx, { tenantId, actor: principal, targetUserId: params.userId, newRole: null, selfCounts: true });
        if (!target.suspended) throw new AppError('member.not_suspended');
        await reactivateMembership(tx, tenantId, params.userId);
        await audit({ action: 'member.reactivated', target: { type: 'user', id: params.userId }, metadata: { role: target.role } });
        return toMember(await memberRow(tx, tenantId).where('m.user_id', '=', params.userId).executeTakeFirstOrThrow());
      },
    }),
  ];
}
