import type { Authorizer } from '../../kernel/http/principal.ts';
import { can, isBreakGlassRole, rolesWith } from './policy.ts';

export { BREAK_GLASS_ROLES, IDP_ASSIGNABLE_ROLES, OWNER_ROLE, PRIVILEGED_ROLES, isPrivilegedRole, can, checkRoleAssignment, isBreakGlassRole, isPromotion, isRole, PERMISSIONS, ROLES, ROLE_PERMISSIONS } from './policy.ts';
export type { Permission, Role } from './policy.ts';

export const authorizer: Authorizer = { can, isBreakGlassRole, rolesWith };
