/**
 * A Kysely driver for node-postgres that saves round trips on the request path.
 *
 * Lazy BEGIN: beginning a transaction sends nothing; BEGIN travels with the transaction's
 * first statement. When that statement has no parameters (the kernel's tenant entry,
 * whose only values are a strictly validated UUID and a SHA-256 digest we computed), both
 * go as one simple-protocol message: one round trip instead of two.
 *
 * Lazy COMMIT of read-only transactions: when every statement of a transaction was a
 * plain SELECT, nothing it did needs to become durable, so its COMMIT is not waited for:
 * it travels with the connection's next message ("commit; begin; ...") or, if the
 * connection stays idle, is sent after READ_ONLY_COMMIT_DELAY_MS. A transaction that
 * wrote anything (or locked rows) commits before the caller is answered, as always.
 *
 * Prepared statements: parameterised queries are prepared once per connection (named by
 * a digest of their text), so PostgreSQL skips parsing and analysis on every later call.
 *
 * Statements deferred to the COMMIT: an insert whose result nobody reads (an audit event)
 * is held by the connection and sent in the same message as the transaction's next
 * statement or its COMMIT ("execute <insert>(...); commit"), so recording an event costs
 * no round trip of its own. It is still inside the transaction: if it fails, PostgreSQL
 * skips the COMMIT in that message and the change rolls back with it.
 */
import { hash } from 'node:crypto';
import type {
  CompiledQuery} from 'kysely';
import {
  PostgresAdapter,
  PostgresIntrospector,
  PostgresQueryCompiler,
  type DatabaseConnection,
  type Dialect,
  type Driver,
  type Kysely,
  type QueryResult,
  type TransactionSettings,
} from 'kysely';
import pg from 'pg';

const { escapeLiteral } = pg;

/** Per connection; beyond this, queries run unnamed (bounded server-side memory). */
const MAX_PREPARED_PER_CONNECTION = 256;
/** How long an idle connection may hold a finished read-only transaction open. */
export const READ_ONLY_COMMIT_DELAY_MS = 20;

/**
 * A statement that neither writes nor locks. Statements that write inside a function
 * (the API-key entry stamps last_used_at) start with a comment and so never count.
 */
export function isReadOnlyStatement(text: string): boolean {
  return /^select\b/i.test(text) && !/\bfor\s+(update|share|no\s+key\s+update|key\s+share)\b/i.test(text);
}

/**
 * Multi-statement messages whose every result the caller wants (the strict tenant entry and
 * the read sent along with it): the results land here, keyed by the compiled query object.
 */
export const multiStatementResults = new WeakMap<CompiledQuery, { results?: QueryResult<unknown>[] }>();

/**
 * Statements sent together as one simple-protocol message (with any deferred COMMIT and
 * BEGIN): each is prepared once per connection with SQL PREPARE (in the same message the
 * first time), then run with EXECUTE and its arguments as literals, which the caller has
 * validated (digests, UUIDs, integers, role names only), so PostgreSQL plans each once per
 * connection. The compiled query's own text is not sent; its SELECT results are the
 * statements' results, in order.
 */
export interface PreparedStatement {
  readonly sql: string;
  readonly literals: readonly string[];
}
/** A utility statement sent as it is (SET LOCAL, nothing to plan), built from validated literals only. */
export interface PlainStatement {
  readonly plain: string;
}
export type MessageStatement = PreparedStatement | PlainStatement;
export const preparedMessages = new WeakMap<CompiledQuery, readonly MessageStatement[]>();

const isPrepared = (statement: MessageStatement): statement is PreparedStatement => !('plain' in statement);

/** Inserts the caller marked (deferUntilCommit): sent with the transaction's next message, results unread. */
const deferrable = new WeakSet<CompiledQuery>();

/**
 * Marks an INSERT whose result the caller will not read, to travel with the transaction's
 * next statement or its COMMIT (PostgreSQL; elsewhere it runs at once). Its values become
 * literals (pg's escapeLiteral; the connection's client_encoding is UTF8), so only text,
 * null, booleans and safe integers qualify; anything else runs at once, as does text with
 * a quote in it (a parameter marker must not hide in a string literal).
 */
export function deferUntilCommit(query: CompiledQuery): CompiledQuery {
  let verdict = deferrableTexts.get(query.sql);
  if (verdict === undefined) {
    verdict = /^insert into "[a-z_]+" \(/.test(query.sql) && !query.sql.includes("'") && !query.sql.includes('$$');
    if (deferrableTexts.size < 1024) deferrableTexts.set(query.sql, verdict);
  }
  if (verdict) deferrable.add(query);
  return query;
}

/** deferUntilCommit's verdict per statement text (texts come from code, a bounded set; V8 keeps a string's hash). */
const deferrableTexts = new Map<string, boolean>();

function literalOf(value: unknown): string | null {
  if (value === null || value === undefined) return 'null';
  if (typeof value === 'string') return value.includes('\0') ? null : escapeLiteral(value);
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (typeof value === 'number' && Number.isSafeInteger(value)) return value < 0 ? `(${value})` : String(value);
  return null;
}

/** The statement with its values as literals, or null when one cannot be written as one. */
function asLiteralStatement(query: CompiledQuery): PreparedStatement | null {
  const literals: string[] = [];
  for (const value of query.parameters) {
    const literal = literalOf(value);
    if (literal === null) return null;
    literals.push(literal);
  }
  return { sql: query.sql, literals };
}

const statementNames = { s: new Map<string, string>(), k: new Map<string, string>() };

/**
 * A prepared statement's name: a digest of its text, remembered (texts come from code, a
 * bounded set). Keyed by the text itself: V8 keeps a string's hash, so a constant text is
 * looked up without being read again (a digest per request cost more than the rest of the driver).
 */
function statementName(prefix: 's' | 'k', text: string): string {
  const names = statementNames[prefix];
  let name = names.get(text);
  if (name === undefined) {
    name = `${prefix}${hash('sha1', text, 'hex').slice(0, 24)}`;
    if (names.size < 8 * MAX_PREPARED_PER_CONNECTION) names.set(text, name);
  }
  return name;
}

class LazyBeginConnection implements DatabaseConnection {
  readonly client: pg.PoolClient;
  pendingBegin = false;
  /** A finished read-only transaction whose COMMIT has not been sent yet. */
  pendingCommit = false;
  inTransaction = false;
  readOnly = true;
  inUse = false;
  broken = false;
  commitTimer: NodeJS.Timeout | undefined;
  readonly prepared = new Set<string>();
  /** Inserts of the open transaction not sent yet (deferUntilCommit). */
  deferred: PreparedStatement[] = [];
  /** Statements prepared with SQL PREPARE on this connection (they outlive transactions). */
  readonly sqlPrepared = new Set<string>();

  constructor(client: pg.PoolClient) {
    this.client = client;
  }

  static #nameOf(statement: PreparedStatement): string {
    return statementName('s', statement.sql);
  }

  /**
   * Prepares, in a message of their own, the statements this connection has not prepared
   * yet (once per connection). On their own, so that a later message that fails part-way
   * never leaves it unclear which were prepared (PREPARE outlives a rolled-back transaction).
   */
  async #prepare(statements: readonly MessageStatement[]): Promise<void> {
    const missing = statements.filter(isPrepared).filter((statement) => !this.sqlPrepared.has(LazyBeginConnection.#nameOf(statement)));
    if (missing.length === 0) return;
    if (this.sqlPrepared.size + missing.length > MAX_PREPARED_PER_CONNECTION) throw new Error('too many prepared statements on one connection');
    // The previous request's deferred COMMIT goes first: PREPARE must not run inside its transaction.
    let commit = '';
    if (this.pendingCommit) {
      clearTimeout(this.commitTimer);
      this.pendingCommit = false;
      commit = 'commit;\n';
    }
    await this.client.query(`${commit}${missing.map((statement) => `prepare ${LazyBeginConnection.#nameOf(statement)} as ${statement.sql}`).join(';\n')}`);
    for (const statement of missing) this.sqlPrepared.add(LazyBeginConnection.#nameOf(statement));
  }

  #execute(statement: MessageStatement): string {
    if (!isPrepared(statement)) return statement.plain;
    const name = LazyBeginConnection.#nameOf(statement);
    return statement.literals.length > 0 ? `execute ${name}(${statement.literals.join(', ')})` : `execute ${name}`;
  }

  /** Whatever must precede the next message: a deferred COMMIT, then a deferred BEGIN. */
  #takePrefix(): string {
    let prefix = '';
    if (this.pendingCommit) {
      clearTimeout(this.commitTimer);
      this.pendingCommit = false;
      prefix += 'commit;\n';
    }
    if (this.pendingBegin) {
      this.pendingBegin = false;
      prefix += 'begin;\n';
    }
    if (this.deferred.length > 0) {
      prefix += this.deferred.map((statement) => `${this.#execute(statement)};\n`).join('');
      this.deferred = [];
    }
    return prefix;
  }

  /** Sends the transaction's deferred inserts (and what must precede them) with its COMMIT. */
  async commitWithDeferred(): Promise<void> {
    const results = (await this.client.query(`${this.#takePrefix()}commit`)) as unknown as pg.QueryResult[];
    // COMMIT of a failed transaction answers ROLLBACK: the caller must not think it landed.
    if (results[results.length - 1]?.command !== 'COMMIT') throw new Error('the transaction was rolled back by the database');
  }

  async executeQuery<R>(compiled: CompiledQuery): Promise<QueryResult<R>> {
    const parameters = compiled.parameters as unknown[];
    if (this.inTransaction && !isReadOnlyStatement(compiled.sql)) this.readOnly = false;
    if (this.inTransaction && deferrable.has(compiled)) {
      const statement = asLiteralStatement(compiled);
      if (statement) {
        await this.#prepare([statement]);
        this.deferred.push(statement);
        return { rows: [] };
      }
    }
    const statements = parameters.length === 0 ? preparedMessages.get(compiled) : undefined;
    if (statements) await this.#prepare(statements);
    const prefix = this.#takePrefix();
    if (parameters.length === 0) {
      // One simple-protocol message: any deferred COMMIT and BEGIN, then the statement(s).
      const text = statements ? statements.map((statement) => this.#execute(statement)).join(';\n') : compiled.sql;
      const sent = (await this.client.query(`${prefix}${text}`)) as unknown as pg.QueryResult | pg.QueryResult[];
      const results = Array.isArray(sent) ? sent : [sent];
      const holder = multiStatementResults.get(compiled);
      if (holder) holder.results = results.filter((r) => r.command === 'SELECT').map((r) => toQueryResult<unknown>(r));
      return toQueryResult<R>(results[results.length - 1]!);
    }
    if (prefix !== '') await this.client.query(prefix);
    const name = statementName('k', compiled.sql);
    if (this.prepared.has(name) || this.prepared.size < MAX_PREPARED_PER_CONNECTION) {
      this.prepared.add(name);
      return toQueryResult<R>(await this.client.query({ name, text: compiled.sql, values: parameters }));
    }
    return toQueryResult<R>(await this.client.query(compiled.sql, parameters));
  }

   
  async *streamQuery<R>(): AsyncIterableIterator<QueryResult<R>> {
    throw new Error('streaming is not supported by this driver');
  }
}

function toQueryResult<R>(result: pg.QueryResult): QueryResult<R> {
  const { command, rowCount, rows } = result;
  if (command === 'ROLLBACK' || command === 'COMMIT') return { rows: [{ command } as R] };
  return {
    ...(command === 'INSERT' || command === 'UPDATE' || command === 'DELETE' || command === 'MERGE'
      ? { numAffectedRows: BigInt(rowCount ?? 0) }
      : {}),
    rows: (rows ?? []) as R[],
  };
}

class LazyBeginDriver implements Driver {
  readonly #pool: pg.Pool;
  readonly #connections = new WeakMap<pg.PoolClient, LazyBeginConnection>();

  constructor(pool: pg.Pool) {
    this.#pool = pool;
  }

  async init(): Promise<void> {}

  async acquireConnection(): Promise<DatabaseConnection> {
    const client = await this.#pool.connect();
    let connection = this.#connections.get(client);
    if (!connection) {
      connection = new LazyBeginConnection(client);
      this.#connections.set(client, connection);
    }
    connection.inUse = true;
    return connection;
  }

  async beginTransaction(connection: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    if (settings.isolationLevel || settings.accessMode) throw new Error('transaction settings are not supported');
    const lazy = connection as LazyBeginConnection;
    lazy.pendingBegin = true;
    lazy.inTransaction = true;
    lazy.readOnly = true;
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    const lazy = connection as LazyBeginConnection;
    lazy.inTransaction = false;
    if (lazy.deferred.length > 0) return lazy.commitWithDeferred();
    if (lazy.pendingBegin) {
      lazy.pendingBegin = false; // nothing ran: nothing to commit
      return;
    }
    if (lazy.readOnly) {
      lazy.pendingCommit = true; // nothing to make durable: sent with the next message
      return;
    }
    const result = await lazy.client.query('commit');
    // COMMIT of a failed transaction answers ROLLBACK: the caller must not think it landed.
    if (result.command === 'ROLLBACK') throw new Error('the transaction was rolled back by the database');
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    const lazy = connection as LazyBeginConnection;
    lazy.inTransaction = false;
    lazy.deferred = []; // never sent: nothing of them to undo
    if (lazy.pendingBegin) {
      lazy.pendingBegin = false;
      return;
    }
    try {
      await lazy.client.query('rollback');
    } catch (error) {
      lazy.broken = true; // never hand a connection in an unknown state to the next request
      throw error;
    }
  }

  async releaseConnection(connection: DatabaseConnection): Promise<void> {
    const lazy = connection as LazyBeginConnection;
    lazy.pendingBegin = false;
    lazy.inTransaction = false;
    lazy.inUse = false;
    lazy.deferred = [];
    if (lazy.broken) {
      this.#connections.delete(lazy.client);
      lazy.client.release(true);
      return;
    }
    if (lazy.pendingCommit) {
      // An idle connection must not sit in a transaction (it would hold back vacuum and
      // block DDL). If nobody has taken it by then, send the COMMIT on its own. A request
      // that takes it in between sends the COMMIT first itself; pg runs a client's
      // queries in order, so the two can never interleave.
      lazy.commitTimer = setTimeout(() => {
        if (lazy.inUse || !lazy.pendingCommit) return;
        lazy.pendingCommit = false;
        lazy.client.query('commit').catch(() => {
          lazy.broken = true; // the pool discards a client whose connection failed
        });
      }, READ_ONLY_COMMIT_DELAY_MS);
      lazy.commitTimer.unref();
    }
    lazy.client.release();
  }

  async destroy(): Promise<void> {
    await this.#pool.end();
  }
}

export class LazyBeginPostgresDialect implements Dialect {
  readonly #pool: pg.Pool;
  constructor(pool: pg.Pool) {
    this.#pool = pool;
  }
  createAdapter() {
    return new PostgresAdapter();
  }
  createDriver() {
    return new LazyBeginDriver(this.#pool);
  }
  createQueryCompiler() {
    return new PostgresQueryCompiler();
  }
  createIntrospector(db: Kysely<unknown>) {
    return new PostgresIntrospector(db);
  }
}
