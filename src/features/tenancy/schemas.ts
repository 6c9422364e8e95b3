import Type from 'typebox';
import { Timestamp, Uuid } from '../../kernel/http/schemas.ts';

export const RoleSchema = Type.Union([
  Type.Literal('owner'),
  Type.Literal('admin'),
  Type.Literal('member'),
  Type.Literal('viewer'),
  Type.Literal('guest'),
]);

export const TenantSummary = Type.Object({ id: Uuid, name: Type.String(), role: RoleSchema });
export const Tenant = Type.Object({ id: Uuid, name: Type.String() });
export const CreateTenantBody = Type.Object({ name: Type.String({ minLength: 1, maxLength: 200 }) }, { additionalProperties: false });

export const InvitationBody = Type.Object(
  { email: Type.String({ format: 'email', maxLength: 254 }), role: RoleSchema },
  { additionalProperties: false },
);
export const Invitation = Type.Object({ id: Uuid, email: Type.String(), role: RoleSchema, token: Type.String(), expiresAt: Timestamp });
export const AcceptBody = Type.Object({ token: Type.String({ minLength: 1, maxLength: 200 }) }, { additionalProperties: false });
export const AcceptResponse = Type.Object({ tenantId: Uuid, role: RoleSchema });

export const Member = Type.Object({
  userId: Uuid,
  email: Type.String(),
  name: Type.String(),
  role: RoleSchema,
  mfaEnabled: Type.Boolean(),
  lastLoginAt: Type.Union([Timestamp, Type.Null()]),
  status: Type.Union([Type.Literal('active'), Type.Literal('suspended')]),
  suspendedAt: Type.Union([Timestamp, Type.Null()]),
});
export const MemberParams = Type.Object({ tenantId: Uuid, userId: Uuid }, { additionalProperties: false });
export const ChangeRoleBody = Type.Object({ role: RoleSchema }, { additionalProperties: false });

export const InvitationParams = Type.Object({ tenantId: Uuid, invitationId: Uuid }, { additionalProperties: false });
export const InvitationSummary = Type.Object({
  id: Uuid,
  email: Type.String(),
  role: RoleSchema,
  status: Type.Union([Type.Literal('pending'), Type.Literal('accepted'), Type.Literal('revoked'), Type.Literal('expired')]),
  invitedBy: Uuid,
  createdAt: Timestamp,
  expiresAt: Timestamp,
  resentAt: Type.Union([Timestamp, Type.Null()]),
});
