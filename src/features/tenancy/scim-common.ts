/**
 * What the SCIM Users and Groups resources share: constants, SCIM's error, value parsing in
 * real clients' dialects, and the tenant's SCIM Users (which Groups' members refer to).
 */
import Type, { type TSchema } from 'typebox';
import type { Actor, RequestMeta } from '../../kernel/audit/record.ts';
import { sql, type RawBuilder } from 'kysely';
import type { Tx } from '../../kernel/db/database.ts';

export const USER_SCHEMA = 'urn:ietf:params:scim:schemas:core:2.0:User';
export const LIST_SCHEMA = 'urn:ietf:params:scim:api:messages:2.0:ListResponse';
export const PATCH_SCHEMA = 'urn:ietf:params:scim:api:messages:2.0:PatchOp';
export const SCIM_TYPE = 'application/scim+json';
export const MAX_RESULTS = 200;

/** A SCIM error: status, and the scimType RFC 7644 3.12 names. */
export class ScimError extends Error {
  readonly status: number;
  readonly scimType: string | undefined;
  constructor(status: number, detail: string, scimType?: string) {
    super(detail);
    this.status = status;
    this.scimType = scimType;
  }
}

/** The SCIM token's tenant and identity (the tenant comes from the token, never from the request). */
export interface ScimCaller {
  readonly tenantId: string;
  readonly tokenId: string;
  readonly createdBy: string;
}

/** A route's work, run in the token's tenant transaction; the wrapper answers in SCIM's format. */
export interface ScimRoute {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  url: string;
  summary: string;
  schema?: { params?: TSchema; querystring?: TSchema };
  work: (ctx: { tx: Tx; caller: ScimCaller; params: Record<string, string>; query: Record<string, string>; body: unknown; actor: Actor; meta: RequestMeta }) => Promise<{ status: number; body?: unknown }>;
}

export interface StoredUser {
  id: string;
  user_name: string;
  external_id: string | null;
  given_name: string | null;
  family_name: string | null;
  display_name: string | null;
  active: boolean;
  user_id: string | null;
  created_at: Date;
  updated_at: Date;
}

/** Which SCIM Users to read; every condition given must hold. */
export interface UserFilter {
  readonly ids?: readonly string[];
  /** Lower-case email. */
  readonly userName?: string;
  readonly externalId?: string;
}

/**
 * The tenant's SCIM Users as one relation: members (with their SCIM attributes if provisioned)
 * and pending resources. Filters and paging run in the database, so a lookup does not read
 * every member of a large tenant.
 */
function usersRelation(tenantId: string, filter: UserFilter): RawBuilder<unknown> {
  const conditions: RawBuilder<unknown>[] = [sql`true`];
  if (filter.ids) conditions.push(sql`id in (select value::uuid from jsonb_array_elements_text(${JSON.stringify(filter.ids)}::jsonb))`);
  if (filter.userName !== undefined) conditions.push(sql`user_name = ${filter.userName}`);
  if (filter.externalId !== undefined) conditions.push(sql`external_id = ${filter.externalId}`);
  return sql`(
    select coalesce(s.id, m.user_id) as id, u.email as user_name, s.external_id, s.given_name, s.family_name,
           coalesce(s.display_name, u.name) as display_name, m.suspended_at is null as active, m.user_id,
           m.created_at, coalesce(s.updated_at, m.created_at) as updated_at
    from memberships m
    join users u on u.id = m.user_id
    left join scim_users s on s.tenant_id = m.tenant_id and s.user_id = m.user_id
    where m.tenant_id = ${tenantId}
    union all
    select id, user_name, external_id, given_name, family_name, display_name, active, null::uuid, created_at, updated_at
    from scim_users
    where tenant_id = ${tenantId} and user_id is null
  ) everyone where ${sql.join(conditions, sql` and `)}`;
}

/** The matching SCIM Users in creation order (a page of them when offset and limit are given). */
export async function findUsers(tx: Tx, tenantId: string, filter: UserFilter = {}, page?: { offset: number; limit: number }): Promise<StoredUser[]> {
  const window = page ? sql`offset ${page.offset} limit ${page.limit}` : sql``;
  const { rows } = await sql<StoredUser>`select * from ${usersRelation(tenantId, filter)} order by created_at, id ${window}`.execute(tx);
  return rows.map((row) => ({ ...row, created_at: new Date(row.created_at), updated_at: new Date(row.updated_at) }));
}

export async function countUsers(tx: Tx, tenantId: string, filter: UserFilter = {}): Promise<number> {
  const { rows } = await sql<{ n: number | string }>`select count(*) as n from ${usersRelation(tenantId, filter)}`.execute(tx);
  return Number(rows[0]?.n ?? 0);
}

/** The SCIM Users with these ids, by id (to check and show a group's members). */
export async function usersById(tx: Tx, tenantId: string, ids: readonly string[]): Promise<Map<string, StoredUser>> {
  const wanted = [...new Set(ids.map((id) => id.toLowerCase()))];
  if (wanted.length === 0) return new Map();
  return new Map((await findUsers(tx, tenantId, { ids: wanted })).map((u) => [u.id, u]));
}

/** SCIM booleans as real clients send them: true, or Entra's "True"/"False". */
export function scimBoolean(value: unknown, attribute: string): boolean {
  if (typeof value === 'boolean') return value;
  if (typeof value === 'string' && /^(true|false)$/i.test(value)) return value.toLowerCase() === 'true';
  throw new ScimError(400, `${attribute} must be a boolean`, 'invalidValue');
}

export function scimString(value: unknown, attribute: string, max = 200): string | null {
  if (value === null || value === undefined) return null;
  if (typeof value !== 'string' || value.length > max) throw new ScimError(400, `${attribute} must be a string of at most ${max} characters`, 'invalidValue');
  // Control characters have no place in a name or an id (and PostgreSQL text cannot hold NUL).
  if (CONTROL.test(value)) throw new ScimError(400, `${attribute} must not contain control characters`, 'invalidValue');
  return value.trim() === '' ? null : value.trim();
}

/** A filter's quoted value, unescaped; NUL (which no stored value holds, and SQL text cannot carry) is refused. */
export function filterValue(quoted: string): string {
  const value = quoted.replace(/\\(.)/g, '$1');
  if (value.includes('\u0000')) throw new ScimError(400, 'A filter value must not contain NUL', 'invalidFilter');
  return value;
}

const CONTROL = /[\u0000-\u001f\u007f]/;

/** The query of a list (RFC 7644 3.4.2); attributes and excludedAttributes are accepted, and honoured where a route says so. */
export const ListParams = Type.Object({
  filter: Type.Optional(Type.String({ maxLength: 500 })),
  startIndex: Type.Optional(Type.Integer({ minimum: 1, maximum: 2_147_483_647 })),
  count: Type.Optional(Type.Integer({ minimum: 0, maximum: 2_147_483_647 })),
  attributes: Type.Optional(Type.String({ maxLength: 500 })),
  excludedAttributes: Type.Optional(Type.String({ maxLength: 500 })),
});
export const IdParams = Type.Object({ id: Type.String({ maxLength: 100 }) });

/** The page a list request asks for: startIndex is 1-based; count is capped at MAX_RESULTS. */
export function pageOf(query: Record<string, string>): { startIndex: number; offset: number; limit: number } {
  const startIndex = Number(query.startIndex ?? 1);
  return { startIndex, offset: startIndex - 1, limit: Math.min(Number(query.count ?? MAX_RESULTS), MAX_RESULTS) };
}

/** One ListResponse: a page of items and the total that matched. */
export function listResponse<T, R>(page: readonly T[], totalResults: number, startIndex: number, render: (item: T) => R) {
  return { schemas: [LIST_SCHEMA], totalResults, startIndex, itemsPerPage: page.length, Resources: page.map(render) };
}

/** A PatchOp's operations with `op` lower-cased (Entra capitalises it); anything else is a 400. */
export function patchOperations(body: unknown): { op: 'add' | 'replace' | 'remove'; path: string | undefined; value: unknown }[] {
  const b = body as { schemas?: unknown; Operations?: unknown };
  if (!b || !Array.isArray(b.Operations)) throw new ScimError(400, 'A PatchOp with Operations is required', 'invalidSyntax');
  if (Array.isArray(b.schemas) && !b.schemas.includes(PATCH_SCHEMA)) throw new ScimError(400, `schemas must include ${PATCH_SCHEMA}`, 'invalidSyntax');
  return (b.Operations as { op?: unknown; path?: unknown; value?: unknown }[]).map((operation) => {
    const op = typeof operation?.op === 'string' ? operation.op.toLowerCase() : '';
    if (op !== 'add' && op !== 'replace' && op !== 'remove') throw new ScimError(400, `Unsupported op ${String(operation?.op)}`, 'invalidSyntax');
    return { op, path: typeof operation.path === 'string' ? operation.path : undefined, value: operation.value };
  });
}
