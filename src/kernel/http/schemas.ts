/** Schemas shared by every feature: ids, pagination, timestamps. */
import type { SelectQueryBuilder, StringReference } from 'kysely';
import Type, { type TSchema } from 'typebox';
import { isUuid, UUID_PATTERN } from '../db/database.ts';
import { AppError } from './errors.ts';

// The pattern as well: ajv's uuid format also accepts a 'urn:uuid:' prefix, which PostgreSQL does not.
export const Uuid = Type.String({ format: 'uuid', pattern: UUID_PATTERN });
export const Timestamp = Type.String({ format: 'date-time' });

export const TenantParams = Type.Object({ tenantId: Uuid }, { additionalProperties: false });
export const TenantItemParams = Type.Object({ tenantId: Uuid, id: Uuid }, { additionalProperties: false });

export const ListQuery = Type.Object(
  {
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 50 })),
    cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  },
  { additionalProperties: false },
);

export function page<T extends TSchema>(item: T) {
  return Type.Object({ items: Type.Array(item), nextCursor: Type.Union([Type.String(), Type.Null()]) });
}

/** Keyset pagination position: (created_at, id). Opaque to clients. */
export interface Position {
  readonly createdAt: Date;
  readonly id: string;
}

export function encodeCursor(position: Position): string {
  return Buffer.from(JSON.stringify([position.createdAt.toISOString(), position.id])).toString('base64url');
}

export function decodeCursor(cursor: string | undefined): Position | undefined {
  if (cursor === undefined) return undefined;
  try {
    const value: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (Array.isArray(value) && value.length === 2 && typeof value[0] === 'string' && isUuid(value[1])) {
      // Only timestamps we could have written: canonical ISO form, four-digit year.
      const createdAt = new Date(value[0]);
      if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/.test(value[0]) && !Number.isNaN(createdAt.getTime()) && createdAt.toISOString() === value[0]) {
        return { createdAt, id: value[1] };
      }
    }
  } catch {
    // fall through: any undecodable cursor is the caller's error
  }
  throw new AppError('validation.failed', { detail: 'querystring.cursor is not a valid cursor' });
}

/** Splits one extra fetched row off into the next cursor. */
export function toPage<R extends { created_at: Date; id: string }, O>(
  rows: readonly R[],
  limit: number,
  map: (row: R) => O,
): { items: O[]; nextCursor: string | null } {
  const hasMore = rows.length > limit;
  const visible = hasMore ? rows.slice(0, limit) : rows;
  const last = visible.at(-1);
  return {
    items: visible.map(map),
    nextCursor: hasMore && last ? encodeCursor({ createdAt: last.created_at, id: last.id }) : null,
  };
}

/**
 * One page of a keyset-paginated list: the rows after the query's cursor in (created, id)
 * order, oldest first or newest first, one more than the limit to know whether a next page
 * exists. `by` names the two columns (an alias, or another timestamp); the rows must carry
 * them as `created_at` and `id` for the cursor.
 */
export async function keysetPage<DB, TB extends keyof DB, R extends { created_at: Date; id: string }, O>(
  builder: SelectQueryBuilder<DB, TB, R>,
  query: { readonly limit?: number; readonly cursor?: string },
  options: { readonly by: readonly [StringReference<DB, TB>, StringReference<DB, TB>]; readonly newestFirst?: boolean },
  map: (row: R) => O,
): Promise<{ items: O[]; nextCursor: string | null }> {
  const limit = query.limit ?? 50;
  const after = decodeCursor(query.cursor);
  const [created, id] = options.by;
  const direction = options.newestFirst ? 'desc' : 'asc';
  let paged = builder;
  // The tuple's types cannot be checked against generic column references; the callers' columns are (timestamp, uuid).
  if (after) paged = paged.where(({ eb, refTuple, tuple }) => eb(refTuple(created, id), options.newestFirst ? '<' : '>', tuple(after.createdAt, after.id) as never));
  const rows = await paged.orderBy(created, direction).orderBy(id, direction).limit(limit + 1).execute();
  return toPage(rows, limit, map);
}
