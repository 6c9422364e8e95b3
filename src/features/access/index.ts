import type { Authorizer } from '../../kernel/http/principal.ts';
import { can } from './policy.ts';

export { can, checkRoleAssignment, isRole, PERMISSIONS, ROLES, ROLE_PERMISSIONS } from './policy.ts';
export type { Permission, Role } from './policy.ts';

export const authorizer: Authorizer = { can };
