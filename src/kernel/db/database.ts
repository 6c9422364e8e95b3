/**
 * The data-access kernel. Feature code reaches the database only through the handles
 * given out here, each living inside one transaction:
 *  - withTenant(tenantId, fn): app role, app.tenant_id set transaction-locally, so RLS
 *    confines every statement to that tenant (DESIGN.md invariant 4);
 *  - withGlobal(fn, { userId }): app role, no tenant: only global tables (and, with a
 *    userId, that user's own membership rows) are visible;
 *  - systemDb({ reason }): the system role for the rare cross-tenant job; every use is logged.
 * Nothing else exports a pool or a Kysely instance.
 */
import { PGlite } from '@electric-sql/pglite';
import {
  CompiledQuery,
  Kysely,
  PGliteDialect,
  PostgresAdapter,
  PostgresIntrospector,
  PostgresQueryCompiler,
  sql,
  type DatabaseConnection,
  type Driver,
  type Transaction,
} from 'kysely';
import pg from 'pg';
import { AsyncLocalStorage } from 'node:async_hooks';
import { createWriteStream } from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import { lockDataDir, type DataDirLock } from './lock.ts';
import { migrateEmbedded, migratePostgres } from './migrate.ts';
import { LazyBeginPostgresDialect, multiStatementResults, preparedMessages } from './pg-driver.ts';
export { deferUntilCommit } from './pg-driver.ts';
import type { DB } from './schema.ts';
import { dumpEmbedded, dumpPostgres, type AddPart, type SnapshotInfo } from './snapshot.ts';

export type Tx = Transaction<DB>;

/** A bytea value as a Buffer: node-postgres returns Buffers, PGlite plain Uint8Arrays. */
export function asBuffer(value: Uint8Array): Buffer {
  return Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

/** The tenant each open tenant transaction was entered for (code that caches tenant secrets checks it). */
const transactionTenants = new WeakMap<Tx, string>();

/** The tenant tx was entered for by withTenant, withTenantSession or withTenantKey; undefined otherwise. */
export function tenantOfTransaction(tx: Tx): string | undefined {
  return transactionTenants.get(tx);
}

/**
 * A read sent in the same message as the tenant entry (PostgreSQL): the strict entry
 * raises unless the caller holds one of roles and needs nothing else from the guard, which
 * aborts the transaction before the read runs. Refused that way, withTenantSession rejects
 * with StrictEntryRefusedError and the guard takes the ordinary path. Where the read cannot
 * travel along (PGlite, or a value that is not a UUID or an integer), prefetched is undefined.
 */
export interface Prefetch {
  readonly roles: readonly string[];
  readonly query: CompiledQuery;
  /** The request's address, for the tenant's IP allow-list (null: refused wherever a list is set). */
  readonly clientIp?: string | null;
}

/** A query builder with no connection behind it: it compiles, and fails if asked to run. */
export interface QueryCompiler {
  readonly selectFrom: Kysely<DB>['selectFrom'];
  readonly insertInto: Kysely<DB>['insertInto'];
}

class CompileOnlyDriver implements Driver {
  async init(): Promise<void> {}
  async acquireConnection(): Promise<DatabaseConnection> {
    throw new Error('the query compiler cannot run queries: use a transaction handle');
  }
  async beginTransaction(): Promise<void> {}
  async commitTransaction(): Promise<void> {}
  async rollbackTransaction(): Promise<void> {}
  async releaseConnection(): Promise<void> {}
  async destroy(): Promise<void> {}
}

export const compileOnly: QueryCompiler = new Kysely<DB>({
  dialect: {
    createAdapter: () => new PostgresAdapter(),
    createDriver: () => new CompileOnlyDriver(),
    createIntrospector: (db) => new PostgresIntrospector(db),
    createQueryCompiler: () => new PostgresQueryCompiler(),
  },
});

export class StrictEntryRefusedError extends Error {
  override name = 'StrictEntryRefusedError';
}

export interface SystemDb {
  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T>;
}

export interface Database {
  readonly kind: 'embedded' | 'postgres';
  /** Runs fn in one transaction confined by RLS to tenantId. Throws InvalidTenantIdError for a non-UUID. */
  withTenant<T>(tenantId: string, fn: (tx: Tx) => Promise<T>): Promise<T>;
  /**
   * The request guard's transaction: tenantId's context plus, in the same first round
   * trip, the session with that token digest, its user and their role in the tenant
   * (null caller: no live session).
   */
  withTenantSession<T>(
    tenantId: string,
    tokenHash: Buffer,
    idleMinutes: number,
    fn: (tx: Tx, caller: TenantCaller | null, prefetched?: readonly unknown[]) => Promise<T>,
    prefetch?: Prefetch,
  ): Promise<T>;
  /**
   * Runs fn outside the current async context's transaction bookkeeping: for work that
   * happens after a request's transaction has ended but was started from inside it (a
   * streamed answer's later reads). Never call it while a transaction is still open.
   */
  detached<T>(fn: () => Promise<T>): Promise<T>;
  /** Builds and compiles queries (for a Prefetch); cannot run them. */
  readonly compiler: QueryCompiler;
  /** Like withTenantSession, for a request that presents an API key (digest) of tenantId. */
  withTenantKey<T>(tenantId: string, keyHash: Buffer, fn: (tx: Tx, caller: TenantKeyCaller | null) => Promise<T>): Promise<T>;
  /** Runs fn in one transaction with no tenant: tenant tables show no rows (but the user's own memberships). */
  withGlobal<T>(fn: (tx: Tx) => Promise<T>, options?: { userId?: string }): Promise<T>;
  /** Cross-tenant access as the system role, for a stated reason that is logged on every use. */
  systemDb(options: { reason: string }): SystemDb;
  /**
   * A consistent snapshot of the whole database for a backup, key tables' rows excepted:
   * the embedded database copies itself; PostgreSQL is dumped by pg_dump through backupUrl,
   * a role that reads past row-level security.
   */
  snapshot(addPart: AddPart, backupUrl: string | undefined): Promise<SnapshotInfo>;
  close(): Promise<void>;
}

/**
 * Marks code running inside a kernel transaction. Opening a second one from there would
 * deadlock the embedded database (one session) and break atomicity on PostgreSQL.
 */
const insideTransaction = new AsyncLocalStorage<TransactionContext>();

interface TransactionContext {
  /** Lines for the audit stream (built only if a stream is configured), written only once the transaction has committed. */
  readonly afterCommit: (() => string)[];
  /** Side effects outside the database (mail), run only once the transaction has committed. */
  readonly callbacks: (() => void)[];
  /** Whether the server writes an audit stream at all. */
  readonly streaming: boolean;
}

/**
 * Runs fn once the current kernel transaction has committed, never for one that rolls back
 * (say, mailing a link whose token the transaction stores). fn must not throw.
 */
export function runAfterCommit(fn: () => void): void {
  const context = insideTransaction.getStore();
  if (!context) throw new Error('runAfterCommit outside a kernel transaction');
  context.callbacks.push(fn);
}

/** Whether lines queued in the current kernel transaction will be written (a stream is configured): else the sealer need not build them. */
export function auditStreamWanted(): boolean {
  const context = insideTransaction.getStore();
  if (!context) throw new Error('auditStreamWanted outside a kernel transaction');
  return context.streaming;
}

/**
 * Queues a line for the operator's audit stream (or several, joined by newlines): written
 * after the current kernel transaction commits, never for one that rolls back. The text is
 * built then, and only when the server writes a stream (the sealer queues a line per event,
 * or a pass's lines as one text).
 */
export function emitAfterCommit(line: () => string): void {
  const context = insideTransaction.getStore();
  if (!context) throw new Error('emitAfterCommit outside a kernel transaction');
  context.afterCommit.push(line);
}

export class NestedTransactionError extends Error {
  override name = 'NestedTransactionError';
}

function assertNotNested(): void {
  if (insideTransaction.getStore()) {
    throw new NestedTransactionError('a database transaction was opened inside another; pass the open transaction instead');
  }
}

export class InvalidTenantIdError extends Error {
  override name = 'InvalidTenantIdError';
}

/** The one UUID shape accepted anywhere (schemas use the same source). */
export const UUID_PATTERN = '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$';
const UUID = new RegExp(UUID_PATTERN);

export function isUuid(value: unknown): value is string {
  return typeof value === 'string' && UUID.test(value);
}

/** A unique constraint refused the write (SQLSTATE 23505, on both databases). */
export function isUniqueViolation(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === '23505';
}

/** What the guard learns in the tenant transaction's first round trip. */
export interface TenantCaller {
  readonly sessionId: string;
  readonly userId: string;
  readonly email: string;
  readonly name: string;
  /** The caller's role in this tenant; null: not a member. */
  readonly role: string | null;
  readonly mfaEnabled: boolean;
  /** The tenant requires a second factor of its members. */
  readonly requireMfa: boolean;
  /** Unused for longer than min(platform, tenant) idle limit: the session no longer counts. */
  readonly idle: boolean;
  /** The tenant requires its members to come through its SSO. */
  readonly requireSso: boolean;
  /** Set when the session was opened by a tenant's IdP (it then reaches only that tenant). */
  readonly ssoTenantId: string | null;
  /** A member whose membership is suspended (role is then null). */
  readonly suspended: boolean;
  /** The tenant's IP allow-list (CIDRs); empty: any address. */
  readonly ipAllowlist: readonly string[];
}

/** What the guard learns from an API key in the tenant transaction's first round trip. */
export interface TenantKeyCaller {
  readonly keyId: string;
  readonly keyRole: string;
  readonly creatorId: string;
  readonly creatorEmail: string;
  readonly creatorName: string;
  /** The creator's current role here; null: no longer a member, or suspended. */
  readonly creatorRole: string | null;
  /** The tenant's IP allow-list (CIDRs); empty: any address. */
  readonly ipAllowlist: readonly string[];
}

interface EnterSettings {
  readonly tenantId?: string;
  readonly userId?: string;
}

/**
 * How a transaction takes on its identity. Values reach SQL text only after isUuid (or
 * as our own SHA-256 digest in hex), so the PostgreSQL entry can be one unparameterised
 * statement that the driver sends together with BEGIN.
 */
interface Entry {
  enter(tx: Tx, settings: EnterSettings, role: 'app' | 'system'): Promise<void>;
  enterTenantSession(tx: Tx, tenantId: string, tokenHash: Buffer, idleMinutes: number): Promise<TenantCaller[]>;
  /** The strict entry with prefetch.query in the same message; null when the query cannot go along. */
  enterTenantSessionWithRead?(tx: Tx, tenantId: string, tokenHash: Buffer, idleMinutes: number, prefetch: Prefetch): Promise<{ callers: TenantCaller[]; rows: unknown[] } | null>;
  enterTenantKey(tx: Tx, tenantId: string, keyHash: Buffer): Promise<TenantKeyCaller[]>;
}

function literalUuid(value: string | undefined): string {
  if (value === undefined) return "''";
  if (!isUuid(value)) throw new InvalidTenantIdError('id must be a UUID');
  return `'${value.toLowerCase()}'`;
}

function literalDigest(digest: Buffer): string {
  if (digest.length !== 32) throw new Error('a credential digest is 32 bytes');
  return `'\\x${digest.toString('hex')}'::bytea`;
}

/** The query's parameters as SQL literals, or null unless every one is a UUID or a non-negative safe integer. */
export function literalParameters(query: CompiledQuery): string[] | null {
  const values: string[] = [];
  for (const value of query.parameters) {
    if (isUuid(value)) values.push(`'${value.toLowerCase()}'`);
    // Never negative: a literal starting with '-' could meet another '-' and open a comment.
    else if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) values.push(String(value));
    else return null;
  }
  return values;
}

function literalRoles(roles: readonly string[]): string {
  if (roles.length === 0 || !roles.every((role) => /^[a-z]{1,20}$/.test(role))) throw new Error('roles are lower-case words');
  return `array[${roles.map((role) => `'${role}'`).join(', ')}]::text[]`;
}

/** An IP address as a literal (validated by node:net), or null. */
function literalIp(ip: string | null): string {
  return ip !== null && isIP(ip) !== 0 ? `'${ip}'::inet` : 'null';
}

function literalMinutes(minutes: number): string {
  if (!Number.isInteger(minutes) || minutes < 1 || minutes > 100_000) throw new Error('idle minutes must be a whole number');
  return String(minutes);
}

/** A TenantCaller's fields, as the tenant entries name them (snake_case) and as the caller object does. */
const CALLER_COLUMNS = [
  ['session_id', 'sessionId'],
  ['user_id', 'userId'],
  ['email', 'email'],
  ['name', 'name'],
  ['role', 'role'],
  ['mfa_enabled', 'mfaEnabled'],
  ['require_mfa', 'requireMfa'],
  ['idle', 'idle'],
  ['require_sso', 'requireSso'],
  ['sso_tenant_id', 'ssoTenantId'],
  ['suspended', 'suspended'],
  ['ip_allowlist', 'ipAllowlist'],
] as const;
const ENTER_COLUMNS = CALLER_COLUMNS.map(([column, field]) => `${column} as "${field}"`).join(', ');
const KEY_COLUMNS =
  'key_id as "keyId", key_role as "keyRole", creator_id as "creatorId", creator_email as "creatorEmail", creator_name as "creatorName", creator_role as "creatorRole", ip_allowlist as "ipAllowlist"';

/** The strict entry's columns: prefixed, so that no column of the read sent along can clash with them. */
const STRICT_PREFIX = 'cn$';

/**
 * The strict entry and a read (PostgreSQL), as one statement run after app.tenant_id is set.
 * The entry finds the caller's session, user, membership and the tenant's session rules and
 * always yields one row or raises CN403: it lets in exactly whom the guard would let in
 * without writing or deciding anything (no denial to record, no break-glass): a live, not
 * idle session not revoked for this tenant, of a member whose role is one of the roles given,
 * not from another tenant's SSO, meeting requireMfa and requireSso. The same rules as
 * cn_enter_tenant and the guard in routes.ts: change them together. Each CASE branch is
 * evaluated only when reached, so neither function runs on the common path.
 *
 * The read (its own parameters first, $1..$n, untouched) is joined laterally to the entry's
 * row, so it runs after the entry has let the caller in; and whatever the plan, a refusal
 * fails the whole statement, so no row of the read ever reaches a refused caller.
 * "cn$found" tells a read that found nothing from one that found a row of nulls.
 */
function strictEntryWithRead(readSql: string, readParameters: number): string {
  const [tenant, token, idle, roles, ip] = [1, 2, 3, 4, 5].map((i) => `$${readParameters + i}`);
  return `select ${CALLER_COLUMNS.map(([column, field]) => `e.${column} as "${STRICT_PREFIX}${field}"`).join(', ')}, r.*
from (
  select e.* from (select) one left join (
    select s.id as session_id, u.id as user_id, u.email, u.name, m.role,
      -- A second factor: our TOTP, or this tenant's IdP saying it asked for more than one.
      u.mfa_enabled or (s.sso_tenant_id = ${tenant}::uuid and s.idp_mfa) as mfa_enabled,
      coalesce(t.require_mfa, false) as require_mfa, coalesce(t.require_sso, false) as require_sso, s.sso_tenant_id,
      s.last_seen_at < now() - make_interval(mins => least(${idle}::integer, coalesce(t.session_idle_minutes, ${idle}::integer))) as idle,
      s.last_seen_at < now() - interval '1 minute' as due,
      -- The tenant signed this user out after the session began (tenant_session_revocations, copied).
      coalesce(s.created_at <= m.signed_out_before, false) as signed_out,
      m.suspended_at is not null as suspended, coalesce(t.ip_allowlist::text[], '{}') as ip_allowlist,
      coalesce(cardinality(t.ip_allowlist), 0) = 0 or coalesce(${ip}::inet <<= any (t.ip_allowlist), false) as ip_allowed
    from sessions s
    join users u on u.id = s.user_id
    left join memberships m on m.tenant_id = ${tenant}::uuid and m.user_id = s.user_id
    left join tenant_settings t on t.tenant_id = ${tenant}::uuid
    where s.token_hash = ${token}::bytea and s.revoked_at is null and s.expires_at > now()
  ) e on true
  where case
    when e.session_id is null or e.signed_out or e.idle or e.role is null or e.suspended or not e.ip_allowed
      or not (e.role = any (${roles}::text[]))
      or (e.sso_tenant_id is not null and e.sso_tenant_id <> ${tenant}::uuid)
      or (e.require_mfa and not e.mfa_enabled)
      or (e.require_sso and e.sso_tenant_id is distinct from ${tenant}::uuid)
    then cn_refuse_strict_entry()
    -- Let in; stamp the session when it is due (the function's UPDATE is planned only then).
    when e.due then coalesce(cn_touch_session(e.session_id), true)
    else true end
) e
left join lateral (select read.*, true as "${STRICT_PREFIX}found" from (${readSql}) read where e.session_id is not null) r on true`;
}

const strictStatements = new Map<string, string>();

/** The statement for this read, built once per read text (reads come from code: a bounded set). */
function strictStatement(readSql: string, readParameters: number): string {
  let statement = strictStatements.get(readSql);
  if (statement === undefined) {
    statement = strictEntryWithRead(readSql, readParameters);
    if (strictStatements.size < 256) strictStatements.set(readSql, statement);
  }
  return statement;
}

/** Splits the strict statement's rows into the caller (the entry's columns) and the read's rows. */
function splitStrictRows(rows: readonly Record<string, unknown>[]): { callers: TenantCaller[]; rows: unknown[] } {
  const first = rows[0];
  if (!first) return { callers: [], rows: [] };
  const caller: Record<string, unknown> = {};
  for (const [, field] of CALLER_COLUMNS) caller[field] = first[STRICT_PREFIX + field];
  const found = rows.filter((row) => row[`${STRICT_PREFIX}found`] === true);
  const read = found.map((row) => {
    const own: Record<string, unknown> = {};
    for (const key in row) if (!key.startsWith(STRICT_PREFIX)) own[key] = row[key];
    return own;
  });
  return { callers: [caller as unknown as TenantCaller], rows: read };
}

/** PostgreSQL: the server logs in as the app or system role itself; no role switch. */
const postgresEntry: Entry = {
  async enter(tx, settings) {
    await sql.raw(
      `select set_config('app.tenant_id', ${literalUuid(settings.tenantId)}, true), set_config('app.user_id', ${literalUuid(settings.userId)}, true)`,
    ).execute(tx);
  },
  async enterTenantSession(tx, tenantId, tokenHash, idleMinutes) {
    const { rows } = await sql.raw<TenantCaller>(
      `select ${ENTER_COLUMNS} from cn_enter_tenant(${literalUuid(tenantId)}::uuid, ${literalDigest(tokenHash)}, ${literalMinutes(idleMinutes)})`,
    ).execute(tx);
    return rows;
  },
  async enterTenantSessionWithRead(tx, tenantId, tokenHash, idleMinutes, prefetch) {
    const literals = literalParameters(prefetch.query);
    if (literals === null) return null;
    // Not sent (the driver sends the statements below); a plain SELECT to the driver, like the
    // ordinary entry, so the session stamp rides the deferred COMMIT of a read-only request.
    const message = CompiledQuery.raw("select 'the strict tenant entry and a read, as prepared statements'");
    const holder: { results?: { rows: unknown[] }[] } = {};
    multiStatementResults.set(message, holder);
    preparedMessages.set(message, [
      { plain: `set local app.tenant_id = ${literalUuid(tenantId)}` },
      {
        sql: strictStatement(prefetch.query.sql, literals.length),
        literals: [...literals, literalUuid(tenantId), literalDigest(tokenHash), literalMinutes(idleMinutes), literalRoles(prefetch.roles), literalIp(prefetch.clientIp ?? null)],
      },
    ]);
    try {
      await tx.executeQuery(message);
    } catch (error) {
      if ((error as { code?: unknown }).code === 'CN403') throw new StrictEntryRefusedError('the strict tenant entry refused the caller', { cause: error });
      throw error;
    }
    const [result] = holder.results ?? [];
    if (!result) throw new Error('the strict entry message returned no result');
    return splitStrictRows(result.rows as Record<string, unknown>[]);
  },
  async enterTenantKey(tx, tenantId, keyHash) {
    // The leading comment marks a statement that writes (the last-used stamp): its transaction commits in full.
    const { rows } = await sql.raw<TenantKeyCaller>(
      `/* writes */ select ${KEY_COLUMNS} from cn_enter_tenant_key(${literalUuid(tenantId)}::uuid, ${literalDigest(keyHash)})`,
    ).execute(tx);
    return rows;
  },
};

/** PGlite: the session is a superuser, so each transaction first drops to the right role. */
const embeddedEntry: Entry = {
  async enter(tx, settings, role) {
    await sql`select set_config('role', ${role === 'app' ? 'cn_app' : 'cn_system'}, true),
      set_config('app.tenant_id', ${settings.tenantId ?? ''}, true),
      set_config('app.user_id', ${settings.userId ?? ''}, true)`.execute(tx);
  },
  async enterTenantSession(tx, tenantId, tokenHash, idleMinutes) {
    await sql`select set_config('role', 'cn_app', true)`.execute(tx);
    const { rows } = await sql<TenantCaller>`select ${sql.raw(ENTER_COLUMNS)} from cn_enter_tenant(${tenantId}::uuid, ${tokenHash}, ${idleMinutes}::int)`.execute(tx);
    return rows;
  },
  async enterTenantKey(tx, tenantId, keyHash) {
    await sql`select set_config('role', 'cn_app', true)`.execute(tx);
    const { rows } = await sql<TenantKeyCaller>`select ${sql.raw(KEY_COLUMNS)} from cn_enter_tenant_key(${tenantId}::uuid, ${keyHash})`.execute(tx);
    return rows;
  },
};

function createKernel(options: {
  kind: 'embedded' | 'postgres';
  appDb: Kysely<DB>;
  systemKysely: Kysely<DB>;
  logger: Logger;
  auditSink: ((line: string) => void) | null;
  snapshot: Database['snapshot'];
  close: () => Promise<void>;
}): Database {
  const { appDb, systemKysely, logger } = options;
  const entry = options.kind === 'embedded' ? embeddedEntry : postgresEntry;

  async function transaction<T>(db: Kysely<DB>, body: (tx: Tx) => Promise<T>): Promise<T> {
    assertNotNested();
    const context: TransactionContext = { afterCommit: [], callbacks: [], streaming: options.auditSink !== null };
    const result = await insideTransaction.run(context, () => db.transaction().execute(body));
    if (options.auditSink) for (const line of context.afterCommit) options.auditSink(line());
    for (const fn of context.callbacks) fn();
    return result;
  }

  return {
    kind: options.kind,
    withTenant(tenantId, fn) {
      if (!isUuid(tenantId)) return Promise.reject(new InvalidTenantIdError('tenant id must be a UUID'));
      return transaction(appDb, async (tx) => {
        await entry.enter(tx, { tenantId: tenantId.toLowerCase() }, 'app');
        transactionTenants.set(tx, tenantId.toLowerCase());
        return fn(tx);
      });
    },
    compiler: compileOnly,
    detached(fn) {
      return insideTransaction.exit(fn);
    },
    withTenantSession(tenantId, tokenHash, idleMinutes, fn, prefetch) {
      if (!isUuid(tenantId)) return Promise.reject(new InvalidTenantIdError('tenant id must be a UUID'));
      return transaction(appDb, async (tx) => {
        const tenant = tenantId.toLowerCase();
        transactionTenants.set(tx, tenant);
        const combined = prefetch && entry.enterTenantSessionWithRead ? await entry.enterTenantSessionWithRead(tx, tenant, tokenHash, idleMinutes, prefetch) : null;
        if (combined) return fn(tx, combined.callers[0] ?? null, combined.rows);
        const [caller] = await entry.enterTenantSession(tx, tenant, tokenHash, idleMinutes);
        return fn(tx, caller ?? null);
      });
    },
    withTenantKey(tenantId, keyHash, fn) {
      if (!isUuid(tenantId)) return Promise.reject(new InvalidTenantIdError('tenant id must be a UUID'));
      return transaction(appDb, async (tx) => {
        transactionTenants.set(tx, tenantId.toLowerCase());
        const [caller] = await entry.enterTenantKey(tx, tenantId.toLowerCase(), keyHash);
        return fn(tx, caller ?? null);
      });
    },
    withGlobal(fn, opts) {
      if (opts?.userId !== undefined && !isUuid(opts.userId)) return Promise.reject(new InvalidTenantIdError('user id must be a UUID'));
      return transaction(appDb, async (tx) => {
        await entry.enter(tx, opts?.userId ? { userId: opts.userId } : {}, 'app');
        return fn(tx);
      });
    },
    systemDb({ reason }) {
      if (typeof reason !== 'string' || reason.trim().length < 8) {
        throw new Error('systemDb needs a reason of at least 8 characters');
      }
      return {
        transaction(fn) {
          logger.info({ reason }, 'system database access');
          return transaction(systemKysely, async (tx) => {
            await entry.enter(tx, {}, 'system');
            return fn(tx);
          });
        },
      };
    },
    snapshot: options.snapshot,
    close: options.close,
  };
}

export interface OpenDatabaseOptions {
  config: Pick<Config, 'dataDir' | 'databaseUrl' | 'databaseAppUser' | 'databaseAppPassword' | 'databaseSystemPassword' | 'databasePoolSize'> &
    Partial<Pick<Config, 'auditStream'>>;
  logger: Logger;
  /** Tests hand in an in-memory PGlite (loaded from a migrated template) instead of DATA_DIR. */
  pglite?: PGlite;
}

/** Opens, migrates and checks the database named by the config: PGlite under DATA_DIR, or PostgreSQL. */
export async function openDatabase(options: OpenDatabaseOptions): Promise<Database> {
  return options.config.databaseUrl === undefined ? openEmbedded(options) : openPostgres(options, options.config.databaseUrl);
}

/** How many lines a text of newline-joined lines holds. */
function lineCount(lines: string): number {
  let count = 1;
  for (let at = lines.indexOf('\n'); at !== -1; at = lines.indexOf('\n', at + 1)) count += 1;
  return count;
}

/** Bytes an audit stream may hold unwritten (a stalled reader) before lines are dropped. */
const AUDIT_STREAM_BACKLOG = 64 * 2 ** 20;

/**
 * The operator's audit stream (AUDIT_STREAM): stdout, an append-only file (0600), or
 * nothing. It is a copy for a SIEM: the database keeps every event, so a failing or stalled
 * stream never takes the server down or holds requests; it is reported once and dropped.
 * A write is one line or several joined by newlines. (Exported for its test.)
 */
export function openAuditSink(
  config: Pick<OpenDatabaseOptions['config'], 'auditStream'>,
  logger: Pick<Logger, 'error' | 'warn'>,
  backlog = AUDIT_STREAM_BACKLOG,
): { write: ((lines: string) => void) | null; close: () => Promise<void> } {
  const target = config.auditStream ?? { kind: 'off' };
  if (target.kind === 'off') return { write: null, close: async () => {} };
  const stream = target.kind === 'stdout' ? process.stdout : createWriteStream(target.path, { flags: 'a', mode: 0o600 });
  let broken = false;
  let dropped = 0;
  const fail = (error: Error) => {
    if (broken) return;
    broken = true;
    logger.error({ err: { message: error.message, code: (error as { code?: unknown }).code } }, 'the audit stream failed: no more lines are written there (the database keeps every event)');
  };
  stream.on('error', fail);
  return {
    write(lines) {
      if (broken) return;
      if (stream.writableLength > backlog) {
        if (dropped === 0) logger.error({ backlogBytes: stream.writableLength }, 'the audit stream is not being read: lines are dropped until it catches up');
        dropped += lineCount(lines);
        return;
      }
      if (dropped > 0) {
        logger.warn({ dropped }, 'the audit stream caught up after dropping lines');
        dropped = 0;
      }
      stream.write(`${lines}\n`);
    },
    async close() {
      stream.off('error', fail);
      if (stream !== process.stdout) await new Promise<void>((resolve) => (stream as NodeJS.WritableStream).end(resolve));
    },
  };
}

async function openEmbedded(options: OpenDatabaseOptions): Promise<Database> {
  let lock: DataDirLock | undefined;
  let pglite = options.pglite;
  if (pglite === undefined) {
    lock = lockDataDir(options.config.dataDir);
    try {
      pglite = await PGlite.create(path.join(options.config.dataDir, 'pgdata'));
    } catch (error) {
      lock.release();
      throw error;
    }
  }
  const instance = pglite;
  try {
    await migrateEmbedded(instance);
  } catch (error) {
    await instance.close();
    lock?.release();
    throw error;
  }
  const db = new Kysely<DB>({ dialect: new PGliteDialect({ pglite: instance }) });
  const sink = openAuditSink(options.config, options.logger);
  return createKernel({
    kind: 'embedded',
    appDb: db,
    systemKysely: db,
    logger: options.logger,
    auditSink: sink.write,
    snapshot: (addPart) => dumpEmbedded(instance, addPart),
    async close() {
      await db.destroy();
      await sink.close();
      lock?.release();
    },
  });
}

/** Refuses to serve through a role that would silently bypass RLS (DESIGN.md invariant 3). */
async function assertUnprivileged(pool: pg.Pool): Promise<void> {
  const { rows } = await pool.query<{ rolsuper: boolean; rolbypassrls: boolean; owns: boolean; user: string }>(
    `select r.rolsuper, r.rolbypassrls, current_user as user,
       exists (select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace
               where n.nspname = 'public' and pg_has_role(current_user, c.relowner, 'USAGE')) as owns
     from pg_roles r where r.rolname = current_user`,
  );
  const role = rows[0];
  if (!role || role.rolsuper || role.rolbypassrls || role.owns) {
    throw new Error(
      `Refusing to start: the application role ${role?.user ?? '?'} is a superuser, has BYPASSRLS or owns tables; ` +
        'row-level security would not protect tenants.',
    );
  }
}

function roleUrl(databaseUrl: string, user: string, password: string | undefined): string {
  const url = new URL(databaseUrl);
  url.username = user;
  url.password = password ?? '';
  return url.toString();
}

async function openPostgres(options: OpenDatabaseOptions, databaseUrl: string): Promise<Database> {
  const { config, logger } = options;
  // The owner connection only migrates; the server then runs as the two unprivileged roles.
  const ownerPool = new pg.Pool({ connectionString: databaseUrl, max: 1 });
  ownerPool.on('error', (error) => logger.warn({ err: error }, 'idle database client error'));
  try {
    await migratePostgres(ownerPool, config.databaseAppUser);
  } finally {
    await ownerPool.end();
  }
  const appPool = new pg.Pool({ connectionString: roleUrl(databaseUrl, config.databaseAppUser, config.databaseAppPassword), max: config.databasePoolSize });
  const systemPool = new pg.Pool({ connectionString: roleUrl(databaseUrl, 'cn_system', config.databaseSystemPassword), max: 2 });
  // An idle client that errors must not crash the process; the pool replaces it.
  for (const pool of [appPool, systemPool]) pool.on('error', (error) => logger.warn({ err: error }, 'idle database client error'));
  try {
    await assertUnprivileged(appPool);
    await assertUnprivileged(systemPool);
  } catch (error) {
    await Promise.allSettled([appPool.end(), systemPool.end()]);
    throw error;
  }
  const appDb = new Kysely<DB>({ dialect: new LazyBeginPostgresDialect(appPool) });
  const systemKysely = new Kysely<DB>({ dialect: new LazyBeginPostgresDialect(systemPool) });
  const sink = openAuditSink(options.config, options.logger);
  return createKernel({
    kind: 'postgres',
    appDb,
    systemKysely,
    logger,
    auditSink: sink.write,
    snapshot(addPart, backupUrl) {
      return dumpPostgres(backupUrl ?? databaseUrl, addPart);
    },
    async close() {
      await Promise.allSettled([appDb.destroy(), systemKysely.destroy()]);
      // Kysely ends a pool only if a query ran through it; the role checks above used both directly.
      await Promise.allSettled([appPool, systemPool].filter((pool) => !pool.ended).map((pool) => pool.end()));
      await sink.close();
    },
  });
}

/** Applies pending migrations and returns the versions applied now (the CLI's `migrate`). */
export async function runMigrations(options: Omit<OpenDatabaseOptions, 'pglite'>): Promise<number[]> {
  const { config } = options;
  if (config.databaseUrl === undefined) {
    const lock = lockDataDir(config.dataDir);
    try {
      const pglite = await PGlite.create(path.join(config.dataDir, 'pgdata'));
      try {
        return await migrateEmbedded(pglite);
      } finally {
        await pglite.close();
      }
    } finally {
      lock.release();
    }
  }
  const ownerPool = new pg.Pool({ connectionString: config.databaseUrl, max: 1 });
  ownerPool.on('error', (error) => options.logger.warn({ err: error }, 'idle database client error'));
  try {
    return await migratePostgres(ownerPool, config.databaseAppUser);
  } finally {
    await ownerPool.end();
  }
}
