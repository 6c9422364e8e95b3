/** API keys: a tenant's credentials for programs. Shown once, stored as a SHA-256 digest. */
import { sql } from 'kysely';
import Type from 'typebox';
import type { Tx } from '../../kernel/db/database.ts';
import { generateToken, hashToken } from '../../kernel/crypto/tokens.ts';
import { AppError } from '../../kernel/http/errors.ts';
import { tenantRoute, type RouteDefinition } from '../../kernel/http/routes.ts';
import { keysetPage, ListQuery, page, TenantItemParams, TenantParams, Timestamp, Uuid } from '../../kernel/http/schemas.ts';
import { checkRoleAssignment, type Role } from '../access/index.ts';

const RoleSchema = Type.Union([Type.Literal('owner'), Type.Literal('admin'), Type.Literal('member'), Type.Literal('viewer'), Type.Literal('guest')]);

const CreateKeyBody = Type.Object(
  { name: Type.String({ minLength: 1, maxLength: 100 }), role: RoleSchema, expiresAt: Type.Optional(Timestamp) },
  { additionalProperties: false },
);
const CreatedKey = Type.Object({ id: Uuid, name: Type.String(), role: RoleSchema, key: Type.String(), expiresAt: Type.Union([Timestamp, Type.Null()]) });
const KeySummary = Type.Object({
  id: Uuid,
  name: Type.String(),
  role: RoleSchema,
  createdBy: Uuid,
  createdAt: Timestamp,
  expiresAt: Type.Union([Timestamp, Type.Null()]),
  lastUsedAt: Type.Union([Timestamp, Type.Null()]),
  revokedAt: Type.Union([Timestamp, Type.Null()]),
});

/** `cn_` + tenant id (hex) + `_` + 256 random bits: recognisable by secret scanners, and names its tenant. */
export function mintApiKey(tenantId: string): string {
  return `cn_${tenantId.replaceAll('-', '')}_${generateToken()}`;
}

/** De-provisioning: a removed member's keys stop working in the same transaction (API.md). */
export async function revokeKeysCreatedBy(tx: Tx, tenantId: string, userId: string): Promise<number> {
  const result = await tx
    .updateTable('api_keys')
    .set({ revoked_at: sql`now()` })
    .where('tenant_id', '=', tenantId)
    .where('created_by', '=', userId)
    .where('revoked_at', 'is', null)
    .executeTakeFirst();
  return Number(result.numUpdatedRows);
}

const iso = (value: Date | null) => (value ? value.toISOString() : null);

export function apiKeyRoutes(): RouteDefinition[] {
  return [
    tenantRoute({
      method: 'POST',
      url: '/api/v1/tenants/:tenantId/api-keys',
      permission: 'apikeys.manage',
      stepUp: true,
      status: 201,
      schema: { summary: 'Create an API key (the key is shown once)', tags: ['api-keys'], params: TenantParams, body: CreateKeyBody, response: { 201: CreatedKey } },
      async handler({ tx, tenantId, principal, body, audit }) {
        // A key never carries a role above its creator's.
        if (checkRoleAssignment({ actorRole: principal.role as Role, targetCurrentRole: null, targetNewRole: body.role, isSelf: false }) !== null) {
          throw new AppError('access.forbidden', { detail: 'A key cannot carry a role above your own' });
        }
        const expiresAt = body.expiresAt ? new Date(body.expiresAt) : null;
        if (expiresAt && expiresAt.getTime() <= Date.now()) throw new AppError('validation.failed', { detail: 'body.expiresAt must be in the future' });
        const key = mintApiKey(tenantId);
        const row = await tx
          .insertInto('api_keys')
          .values({ tenant_id: tenantId, name: body.name, role: body.role, key_hash: hashToken(key), created_by: principal.userId, expires_at: expiresAt })
          .returning(['id', 'name', 'role', 'expires_at'])
          .executeTakeFirstOrThrow();
        await audit({ action: 'apikey.created', target: { type: 'apikey', id: row.id }, metadata: { name: body.name, role: body.role, expiresAt: iso(expiresAt) } });
        return { id: row.id, name: row.name, role: row.role, key, expiresAt: iso(row.expires_at) };
      },
    }),
    tenantRoute({
      method: 'GET',
      url: '/api/v1/tenants/:tenantId/api-keys',
      permission: 'apikeys.manage',
      schema: { summary: "The tenant's API keys (never the secrets)", tags: ['api-keys'], params: TenantParams, querystring: ListQuery, response: { 200: page(KeySummary) } },
      async handler({ tx, tenantId, query }) {
        const builder = tx
          .selectFrom('api_keys')
          .select(['id', 'name', 'role', 'created_by', 'created_at', 'expires_at', 'last_used_at', 'revoked_at'])
          .where('tenant_id', '=', tenantId);
        return keysetPage(builder, query, { by: ['created_at', 'id'] }, (row) => ({
          id: row.id,
          name: row.name,
          role: row.role,
          createdBy: row.created_by,
          createdAt: row.created_at.toISOString(),
          expiresAt: iso(row.expires_at),
          lastUsedAt: iso(row.last_used_at),
          revokedAt: iso(row.revoked_at),
        }));
      },
    }),
    tenantRoute({
      method: 'DELETE',
      url: '/api/v1/tenants/:tenantId/api-keys/:id',
      permission: 'apikeys.manage',
      status: 204,
      schema: { summary: 'Revoke an API key; it fails at once', tags: ['api-keys'], params: TenantItemParams, response: { 204: Type.Null() } },
      async handler({ tx, tenantId, params, audit }) {
        const row = await tx
          .updateTable('api_keys')
          .set({ revoked_at: sql`now()` })
          .where('tenant_id', '=', tenantId)
          .where('id', '=', params.id)
          .where('revoked_at', 'is', null)
          .returning('id')
          .executeTakeFirst();
        if (!row) throw new AppError('not_found');
        await audit({ action: 'apikey.revoked', target: { type: 'apikey', id: params.id } });
      },
    }),
  ];
}
