/**
 * The one place roles are interpreted: the role -> permission table of API.md and the
 * rules about who may grant which role. Nothing else compares role names.
 */
import type { Role } from '../../kernel/db/schema.ts';

export const ROLES = ['owner', 'admin', 'member', 'viewer', 'guest'] as const satisfies readonly Role[];
export type { Role };

export const PERMISSIONS = [
  'records.read',
  'records.write',
  'members.read',
  'members.manage',
  'settings.read',
  'settings.manage',
  'apikeys.manage',
  'sso.manage',
  'sso.configure',
  'integrations.manage',
  'audit.read',
  'alerts.read',
  'alerts.manage',
  'tenant.delete',
  'tenant.export',
  'security.report',
] as const;
export type Permission = (typeof PERMISSIONS)[number];

// Everyone in a tenant, guests too, can report what looks wrong.
const GUEST: readonly Permission[] = ['security.report'];
const VIEWER: readonly Permission[] = [...GUEST, 'records.read'];
const MEMBER: readonly Permission[] = [...VIEWER, 'records.write'];
const ADMIN: readonly Permission[] = [
  ...MEMBER,
  'members.read',
  'members.manage',
  'settings.read',
  'settings.manage',
  'apikeys.manage',
  'sso.manage',
  'integrations.manage',
  'audit.read',
  'alerts.read',
  'alerts.manage',
];
// sso.configure: choosing the identity provider. It vouches for every account in the tenant's
// verified domains, owners' included, so an admin who could choose it could sign in as an owner.
const OWNER: readonly Permission[] = [...ADMIN, 'sso.configure', 'tenant.delete', 'tenant.export'];

export const ROLE_PERMISSIONS: Readonly<Record<Role, ReadonlySet<Permission>>> = Object.freeze({
  owner: new Set(OWNER),
  admin: new Set(ADMIN),
  member: new Set(MEMBER),
  viewer: new Set(VIEWER),
  // Guests reach only rooms shared with them (the Sharing capability), no tenant-wide data.
  guest: new Set(GUEST),
});

/** The role a tenant's creator gets, and that a tenant must always have at least one holder of. */
export const OWNER_ROLE: Role = 'owner';

/** Higher rank: more authority. Used only for "nobody grants above their own role". */
const RANK: Readonly<Record<Role, number>> = { owner: 4, admin: 3, member: 2, viewer: 1, guest: 0 };

export function isRole(value: unknown): value is Role {
  return typeof value === 'string' && (ROLES as readonly string[]).includes(value);
}

export function can(role: string, permission: string): boolean {
  return isRole(role) && (ROLE_PERMISSIONS[role] as ReadonlySet<string>).has(permission);
}

export function rolesWith(permission: string): readonly Role[] {
  return ROLES.filter((role) => can(role, permission));
}

/** Owners keep a password + MFA login into a tenant that requires SSO, so an IdP outage cannot lock the tenant out. */
export const BREAK_GLASS_ROLES: readonly Role[] = ['owner'];

export function isBreakGlassRole(role: string): boolean {
  return (BREAK_GLASS_ROLES as readonly string[]).includes(role);
}

/** Roles whose grant is itself a security event (the alert rules watch for it); they also hear of alerts. */
export const PRIVILEGED_ROLES: readonly Role[] = ['owner', 'admin'];

/** Roles a tenant's identity provider may hand out (SCIM defaults and group mappings): never a break-glass role. */
export const IDP_ASSIGNABLE_ROLES: readonly Role[] = ROLES.filter((role) => !BREAK_GLASS_ROLES.includes(role));

export function isPrivilegedRole(role: unknown): boolean {
  return (PRIVILEGED_ROLES as readonly unknown[]).includes(role);
}

/** A change that gives the member more authority than before. */
export function isPromotion(before: Role, after: Role): boolean {
  return RANK[after] > RANK[before];
}

export type RoleChangeDenial = 'above_own_role' | 'owner_protected' | 'own_role' | null;

/**
 * Whether actorRole may give targetNewRole to a member currently holding targetCurrentRole
 * (null for a new member). Owners may do anything; an admin cannot touch owners or
 * grant owner; nobody grants above their own role or changes their own role.
 */
export function checkRoleAssignment(options: {
  actorRole: Role;
  targetCurrentRole: Role | null;
  targetNewRole: Role | null;
  isSelf: boolean;
}): RoleChangeDenial {
  const { actorRole, targetCurrentRole, targetNewRole, isSelf } = options;
  if (isSelf && targetNewRole !== null) return 'own_role';
  if (actorRole !== 'owner' && targetCurrentRole === 'owner') return 'owner_protected';
  if (targetNewRole !== null && RANK[targetNewRole] > RANK[actorRole]) return 'above_own_role';
  return null;
}
