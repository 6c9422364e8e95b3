/**
 * The canonical event text of chain.ts, and the operator stream line of an event, built by
 * PostgreSQL over an event's columns: the sealer hashes tenant events with it (sealer.ts),
 * the verifier recomputes hashes with it (verify.ts). JavaScript's canonicalRecord stays the
 * definition: a test holds the two equal, and any event the database finds odd on
 * verification is checked again in JavaScript.
 */
import { sql, type RawBuilder } from 'kysely';
import type { LogName } from './chain.ts';

/** A character JSON.stringify escapes: a quote, a backslash or a control character. */
const NEEDS_ESCAPE = String.raw`["\\\x01-\x1f]`;

/** The event's strings a text quotes; if one of them needs escaping, all go through to_json. */
const QUOTED = sql`concat(action, actor_email, actor_type, ip, outcome, request_id, target_id, target_type, user_agent)`;

type Quote = (column: RawBuilder<unknown>) => RawBuilder<string>;

/** A quoted string, or JSON null. */
const nullable = (quote: Quote, column: RawBuilder<unknown>) => sql`coalesce(${quote(column)}, 'null')`;

/**
 * Strings are quoted as JSON.stringify does: as they are when none of them holds a character
 * it escapes (nearly always, and much cheaper), else through to_json, which escapes the same
 * characters the same way (lower-case \u00xx for the other control characters).
 */
function eitherQuoting(text: (quote: Quote) => RawBuilder<string>): RawBuilder<string> {
  return sql<string>`case when ${QUOTED} ~ ${NEEDS_ESCAPE}
    then ${text((column) => sql`to_json(${column})::text`)}
    else ${text((column) => sql`'"' || ${column} || '"'`)} end`;
}

/** An event's time as chain.ts has it: ISO 8601, milliseconds, UTC. */
export const AT_TEXT: RawBuilder<string> = sql<string>`to_char(at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;

export interface CanonicalSource {
  readonly log: LogName;
  /** The tenant id as JSON text ('"<uuid>"' or 'null'): one constant for a tenant range, else from tenant_id. */
  readonly tenant: RawBuilder<string>;
  /** The event's seq (a column, or computed while sealing). */
  readonly seq: RawBuilder<unknown>;
  /** The event's metadata as JCS text. */
  readonly metadata: RawBuilder<string>;
}

/** JSON text of the row's tenant_id, or null. */
export const TENANT_COLUMN_JSON: RawBuilder<string> = sql<string>`coalesce('"' || tenant_id::text || '"', 'null')`;

/** canonicalRecord (chain.ts) of the row in scope, as text. */
export function canonicalSql(source: CanonicalSource): RawBuilder<string> {
  return eitherQuoting((quote) => {
    return sql<string>`'{"action":' || ${quote(sql`action`)} || ',"actor":{"email":' || ${nullable(quote, sql`actor_email`)}
      || ',"id":' || coalesce('"' || actor_id::text || '"', 'null') || ',"type":' || ${quote(sql`actor_type`)}
      || '},"at":"' || ${AT_TEXT} || '","id":"' || id::text
      || '","ip":' || ${nullable(quote, sql`ip`)} || ',"log":"' || ${source.log}::text || '","metadata":' || ${source.metadata}
      || ',"outcome":' || ${quote(sql`outcome`)} || ',"requestId":' || ${nullable(quote, sql`request_id`)} || ',"seq":' || ${source.seq}::text
      || ',"target":{"id":' || ${nullable(quote, sql`target_id`)} || ',"type":' || ${nullable(quote, sql`target_type`)}
      || '},"tenantId":' || ${source.tenant} || ',"userAgent":' || ${nullable(quote, sql`user_agent`)} || ',"v":1}'`;
  });
}

/**
 * One line of the operator's audit stream for a sealed tenant event (sealer.ts's streamLine
 * builds the platform's): its place in the chain, the event, and its metadata as the sealed
 * JCS text. An actor's email only when it has one, a target only when it has both parts.
 */
export function streamLineSql(source: CanonicalSource & { readonly hashHex: RawBuilder<string> }): RawBuilder<string> {
  return eitherQuoting((quote) => {
    return sql<string>`'{"stream":"audit","log":"' || ${source.log}::text || '","id":"' || id::text || '","seq":' || ${source.seq}::text
      || ',"hash":"' || ${source.hashHex} || '","at":"' || ${AT_TEXT} || '","tenantId":' || ${source.tenant}
      || ',"actor":{"type":' || ${quote(sql`actor_type`)} || ',"id":' || coalesce('"' || actor_id::text || '"', 'null')
      || case when actor_email <> '' then ',"email":' || ${quote(sql`actor_email`)} else '' end
      || '},"action":' || ${quote(sql`action`)}
      || case when target_type <> '' and target_id <> '' then ',"target":{"type":' || ${quote(sql`target_type`)} || ',"id":' || ${quote(sql`target_id`)} || '}' else '' end
      || ',"outcome":' || ${quote(sql`outcome`)} || ',"ip":' || ${nullable(quote, sql`ip`)} || ',"userAgent":' || ${nullable(quote, sql`user_agent`)}
      || ',"requestId":' || ${nullable(quote, sql`request_id`)} || ',"metadata":' || ${source.metadata} || '}'`;
  });
}
