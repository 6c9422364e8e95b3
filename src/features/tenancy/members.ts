/** Membership rules that need the database: the last owner, role assignment, removal. */
import { sql } from 'kysely';
import type { Tx } from '../../kernel/db/database.ts';
import { AppError } from '../../kernel/http/errors.ts';
import { checkRoleAssignment, OWNER_ROLE, type Role } from '../access/index.ts';
import { revokeKeysCreatedBy } from '../identity/index.ts';

const DENIAL_DETAIL = {
  own_role: 'You cannot change your own role',
  owner_protected: 'Only an owner can change or remove an owner',
  above_own_role: 'You cannot grant a role above your own',
} as const;

export function assertMayAssign(options: { actorRole: string; targetCurrentRole: Role | null; targetNewRole: Role | null; isSelf: boolean }): void {
  const denial = checkRoleAssignment({ ...options, actorRole: options.actorRole as Role });
  if (denial !== null) throw new AppError('access.forbidden', { detail: DENIAL_DETAIL[denial] });
}

/** Locks the tenant's owner rows and refuses if userId is the only owner (no race between two demotions). */
export async function assertNotLastOwner(tx: Tx, tenantId: string, userId: string): Promise<void> {
  // Owners who can still act: a suspended owner does not count.
  const owners = await tx
    .selectFrom('memberships')
    .select('user_id')
    .where('tenant_id', '=', tenantId)
    .where('role', '=', OWNER_ROLE)
    .where('suspended_at', 'is', null)
    .forUpdate()
    .execute();
  if (owners.length <= 1 && owners.some((owner) => owner.user_id === userId)) throw new AppError('member.last_owner');
}

export async function findMembership(tx: Tx, tenantId: string, userId: string): Promise<{ role: Role; suspended: boolean } | undefined> {
  const row = await tx
    .selectFrom('memberships')
    .select(['role', 'suspended_at'])
    .where('tenant_id', '=', tenantId)
    .where('user_id', '=', userId)
    .executeTakeFirst();
  return row ? { role: row.role, suspended: row.suspended_at !== null } : undefined;
}

export async function suspendMembership(tx: Tx, tenantId: string, userId: string, by: string): Promise<void> {
  await tx.updateTable('memberships').set({ suspended_at: sql`now()`, suspended_by: by }).where('tenant_id', '=', tenantId).where('user_id', '=', userId).execute();
}

export async function reactivateMembership(tx: Tx, tenantId: string, userId: string): Promise<void> {
  await tx.updateTable('memberships').set({ suspended_at: null, suspended_by: null }).where('tenant_id', '=', tenantId).where('user_id', '=', userId).execute();
}

/** An invitation that can still be accepted, resent or revoked (404 when there is none; 409 when it is settled). */
export async function pendingInvitation(tx: Tx, tenantId: string, id: string) {
  const invitation = await tx
    .selectFrom('invitations')
    .select(['id', 'email', 'role', 'accepted_at', 'revoked_at'])
    .where('tenant_id', '=', tenantId)
    .where('id', '=', id)
    .forUpdate()
    .executeTakeFirst();
  if (!invitation) throw new AppError('not_found');
  if (invitation.accepted_at !== null || invitation.revoked_at !== null) throw new AppError('invitation.not_pending');
  return invitation;
}

export function memberRow(tx: Tx, tenantId: string) {
  return tx
    .selectFrom('memberships as m')
    .innerJoin('users as u', 'u.id', 'm.user_id')
    .select(['m.user_id as id', 'm.created_at', 'u.email', 'u.name', 'm.role', 'u.mfa_enabled', 'u.last_login_at', 'm.suspended_at'])
    .where('m.tenant_id', '=', tenantId);
}

export const now = () => sql<Date>`now()`;

/**
 * The member a management action targets, once the role rules let the actor act on them
 * (404 when not a member here, 403 when the rules refuse).
 */
export async function findManageableMember(
  tx: Tx,
  options: { tenantId: string; actor: { role: string; userId: string }; targetUserId: string; newRole: Role | null; selfCounts: boolean },
): Promise<{ role: Role; suspended: boolean }> {
  const target = await findMembership(tx, options.tenantId, options.targetUserId);
  if (!target) throw new AppError('not_found');
  assertMayAssign({
    actorRole: options.actor.role,
    targetCurrentRole: target.role,
    targetNewRole: options.newRole,
    isSelf: options.selfCounts && options.targetUserId === options.actor.userId,
  });
  return target;
}

/** Everything that stops a member's access here, in the caller's transaction: sessions for this tenant and the API keys they created. */
export async function cutAccess(tx: Tx, tenantId: string, userId: string): Promise<{ revokedKeys: number }> {
  await signOutOfTenant(tx, tenantId, userId);
  // Guest shares are revoked here too once rooms exist (they are not built yet).
  return { revokedKeys: await revokeKeysCreatedBy(tx, tenantId, userId) };
}

/**
 * Ends a membership: the row, the person's SCIM resource and group places here (so the IdP can
 * provision them afresh), and, through cutAccess, their sessions here and the keys they created.
 */
export async function removeMembership(tx: Tx, tenantId: string, userId: string): Promise<{ revokedKeys: number }> {
  await tx.deleteFrom('memberships').where('tenant_id', '=', tenantId).where('user_id', '=', userId).execute();
  const resources = await tx.deleteFrom('scim_users').where('tenant_id', '=', tenantId).where('user_id', '=', userId).returning('id').execute();
  await tx
    .deleteFrom('scim_group_members')
    .where('tenant_id', '=', tenantId)
    .where('member_id', 'in', [userId, ...resources.map((r) => r.id)])
    .execute();
  return cutAccess(tx, tenantId, userId);
}

/** Sessions the user (or users) hold now stop counting in this tenant (they sign in again to return). */
export async function signOutOfTenant(tx: Tx, tenantId: string, userIds: string | readonly string[]): Promise<void> {
  const ids = typeof userIds === 'string' ? [userIds] : userIds;
  // In slices: a group mapping can sign out thousands at once, and a statement's parameters are limited.
  for (let i = 0; i < ids.length; i += 5000) {
    await tx
      .insertInto('tenant_session_revocations')
      .values(ids.slice(i, i + 5000).map((user_id) => ({ tenant_id: tenantId, user_id, revoked_before: sql`now()` })))
      .onConflict((oc) => oc.columns(['tenant_id', 'user_id']).doUpdateSet({ revoked_before: sql`now()` }))
      .execute();
  }
}
