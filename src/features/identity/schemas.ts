import Type from 'typebox';
import { Uuid } from '../../kernel/http/schemas.ts';

const Email = Type.String({ format: 'email', maxLength: 254 });
// The policy (12..128 characters) is checked in code so that it answers auth.weak_password;
// the schema only bounds the work argon2 may be asked to do.
const Password = Type.String({ minLength: 1, maxLength: 1024 });

export const User = Type.Object({ id: Uuid, email: Type.String(), name: Type.String() });

export const SignupBody = Type.Object(
  {
    email: Email,
    password: Password,
    name: Type.String({ minLength: 1, maxLength: 200 }),
    tenantName: Type.String({ minLength: 1, maxLength: 200 }),
  },
  { additionalProperties: false },
);

export const SignupResponse = Type.Object({
  user: User,
  tenant: Type.Object({ id: Uuid, name: Type.String() }),
  csrfToken: Type.String(),
});

export const LoginBody = Type.Object({ email: Email, password: Password }, { additionalProperties: false });

export const LoginOk = Type.Object({
  status: Type.Literal('ok'),
  user: User,
  csrfToken: Type.String(),
});

export const LoginResponse = Type.Union([LoginOk, Type.Object({ status: Type.Literal('mfa_required'), challenge: Type.String() })]);

export const MfaBody = Type.Object(
  { challenge: Type.String({ minLength: 1, maxLength: 100 }), code: Type.String({ minLength: 1, maxLength: 40 }) },
  { additionalProperties: false },
);
export const EnrollResponse = Type.Object({ secret: Type.String(), otpauthUri: Type.String() });
export const ActivateBody = Type.Object({ code: Type.String({ minLength: 6, maxLength: 6, pattern: '^[0-9]{6}$' }) }, { additionalProperties: false });
export const ActivateResponse = Type.Object({ recoveryCodes: Type.Array(Type.String()) });

export const SessionResponse = Type.Object({
  user: Type.Object({ id: Uuid, email: Type.String(), name: Type.String(), emailVerified: Type.Boolean() }),
  memberships: Type.Array(Type.Object({ tenantId: Uuid, tenantName: Type.String(), role: Type.String() })),
  csrfToken: Type.String(),
});

export const PasswordBody = Type.Object({ password: Password }, { additionalProperties: false });
