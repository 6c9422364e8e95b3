/**
 * What the SCIM Users and Groups resources share: constants, SCIM's error, value parsing in
 * real clients' dialects, and the tenant's SCIM Users (which Groups' members refer to).
 */
import type { TSchema } from 'typebox';
import type { Actor, RequestMeta } from '../../kernel/audit/record.ts';
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

/** Every SCIM User of the tenant: members (with their SCIM attributes if provisioned) and pending resources. */
export async function allUsers(tx: Tx, tenantId: string): Promise<StoredUser[]> {
  const members = await tx
    .selectFrom('memberships as m')
    .innerJoin('users as u', 'u.id', 'm.user_id')
    .leftJoin('scim_users as s', (join) => join.onRef('s.tenant_id', '=', 'm.tenant_id').onRef('s.user_id', '=', 'm.user_id'))
    .select([
      'm.user_id',
      'u.email',
      'u.name',
      'm.suspended_at',
      'm.created_at',
      's.id as scim_id',
      's.external_id',
      's.given_name',
      's.family_name',
      's.display_name',
      's.updated_at',
    ])
    .where('m.tenant_id', '=', tenantId)
    .execute();
  const pending = await tx.selectFrom('scim_users').selectAll().where('tenant_id', '=', tenantId).where('user_id', 'is', null).execute();
  return [
    ...members.map((m) => ({
      id: m.scim_id ?? m.user_id,
      user_name: m.email,
      external_id: m.external_id,
      given_name: m.given_name,
      family_name: m.family_name,
      display_name: m.display_name ?? m.name,
      active: m.suspended_at === null,
      user_id: m.user_id,
      created_at: m.created_at,
      updated_at: m.updated_at ?? m.created_at,
    })),
    ...pending.map((p) => ({ ...p, user_id: null })),
  ].sort((a, b) => a.created_at.getTime() - b.created_at.getTime() || a.id.localeCompare(b.id));
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
  return value.trim() === '' ? null : value.trim();
}

/** One ListResponse page (startIndex is 1-based; count is capped at MAX_RESULTS). */
export function listResponse<T, R>(items: readonly T[], query: Record<string, string>, render: (item: T) => R) {
  const startIndex = Number(query.startIndex ?? 1);
  const count = Math.min(Number(query.count ?? MAX_RESULTS), MAX_RESULTS);
  const page = items.slice(startIndex - 1, startIndex - 1 + count);
  return { schemas: [LIST_SCHEMA], totalResults: items.length, startIndex, itemsPerPage: page.length, Resources: page.map(render) };
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
