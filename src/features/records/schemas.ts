import Type from 'typebox';
import { Timestamp, Uuid } from '../../kernel/http/schemas.ts';

const Name = Type.String({ minLength: 1, maxLength: 200 });
const Domain = Type.String({
  maxLength: 253,
  pattern: '^(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z]{2,63}$',
});
const Description = Type.String({ maxLength: 10_000 });
const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(schema: T) => Type.Union([schema, Type.Null()]);

export const Account = Type.Object({
  id: Uuid,
  name: Type.String(),
  domain: Nullable(Type.String()),
  description: Nullable(Type.String()),
  createdAt: Timestamp,
  updatedAt: Timestamp,
});

export const CreateAccountBody = Type.Object(
  { name: Name, domain: Type.Optional(Nullable(Domain)), description: Type.Optional(Nullable(Description)) },
  { additionalProperties: false },
);

export const UpdateAccountBody = Type.Object(
  { name: Type.Optional(Name), domain: Type.Optional(Nullable(Domain)), description: Type.Optional(Nullable(Description)) },
  { additionalProperties: false, minProperties: 1 },
);

// E.164: a plus, a non-zero country digit, at most 15 digits in all.
const Phone = Type.String({ pattern: '^\\+[1-9][0-9]{1,14}$' });
const Email = Type.String({ format: 'email', maxLength: 254 });

export const Contact = Type.Object({
  id: Uuid,
  accountId: Uuid,
  name: Type.String(),
  email: Nullable(Type.String()),
  phone: Nullable(Type.String()),
  createdAt: Timestamp,
  updatedAt: Timestamp,
});

export const ContactListQuery = Type.Object(
  {
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 50 })),
    cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    email: Type.Optional(Email),
  },
  { additionalProperties: false },
);

export const CreateContactBody = Type.Object(
  { accountId: Uuid, name: Name, email: Type.Optional(Nullable(Email)), phone: Type.Optional(Nullable(Phone)) },
  { additionalProperties: false },
);

export const UpdateContactBody = Type.Object(
  { accountId: Type.Optional(Uuid), name: Type.Optional(Name), email: Type.Optional(Nullable(Email)), phone: Type.Optional(Nullable(Phone)) },
  { additionalProperties: false, minProperties: 1 },
);
