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
 * is held by the connection and sent with the transaction's next statement or its COMMIT,
 * so recording an event costs no round trip of its own. With the COMMIT it goes in the
 * extended protocol, in one write: Bind and Execute of the prepared insert with its values
 * as parameters, then COMMIT, then one Sync; PostgreSQL neither lexes the values as SQL
 * literals nor parses an EXECUTE. It is still inside the transaction: if it fails,
 * PostgreSQL skips everything up to the Sync, the COMMIT included, and the change rolls
 * back with it.
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

const isPrepared = <S extends { readonly sql: string }>(statement: PlainStatement | S): statement is S => !('plain' in statement);

/** Inserts the caller marked (deferUntilCommit): sent with the transaction's next message, results unread. */
const deferrable = new WeakSet<CompiledQuery>();

/**
 * Marks an INSERT whose result the caller will not read, to travel with the transaction's
 * next statement or its COMMIT (PostgreSQL; elsewhere it runs at once). With the COMMIT its
 * values are Bind parameters; ahead of another statement they become literals (pg's
 * escapeLiteral; the connection's client_encoding is UTF8). So only text, null, booleans
 * and safe integers qualify; anything else runs at once, as does a statement text with a
 * quote in it (a parameter marker must not hide in a string literal).
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

/** A value a deferred insert may carry: text, null, a boolean or a safe integer. */
function deferrableValue(value: unknown): boolean {
  if (value === null || value === undefined || typeof value === 'boolean') return true;
  if (typeof value === 'string') return !value.includes('\0');
  return typeof value === 'number' && Number.isSafeInteger(value);
}

/** A value deferrableValue let through, as an SQL literal. */
function literalOf(value: unknown): string {
  if (value === null || value === undefined) return 'null';
  if (typeof value === 'string') return escapeLiteral(value);
  if (typeof value === 'number') return value < 0 ? `(${value})` : String(value);
  return value ? 'true' : 'false';
}

/** An insert held for the transaction's COMMIT, its values checked by deferrableValue. */
interface DeferredInsert {
  readonly sql: string;
  readonly values: readonly unknown[];
}

/** The deferred insert with its values as literals, for a simple-protocol message. */
function asLiteralStatement(insert: DeferredInsert): PreparedStatement {
  return {
    sql: insert.sql,
    literals: insert.values.map(literalOf),
  };
}

/** The parts of node-postgres' wire connection a Pipeline writes to. */
interface WireConnection {
  readonly stream: { cork?: () => void; uncork?: () => void };
  parse(query: { text: string }): void;
  bind(config: { statement?: string; values?: readonly unknown[]; valueMapper?: (value: unknown) => string | null }): void;
  execute(config: object): void;
  sync(): void;
  sendCopyFail(message: string): void;
}

/** A statement of a Pipeline: SQL without parameters, or a statement prepared on the connection and its values. */
type PipelineStep = { readonly text: string } | { readonly name: string; readonly values: readonly unknown[] };

/** Text format: deferrableValue let only text, null, booleans and safe integers through. */
const textValue = (value: unknown): string | null => (value === null || value === undefined ? null : String(value));

/**
 * Statements sent in the extended protocol in one write, with one Sync after the last: a
 * node-postgres submittable (the client runs one at a time, as it runs its own queries).
 * PostgreSQL runs them in order and, at the first error, skips the rest up to the Sync.
 * Resolves to the command tags of the statements that ran; the results' rows are not read.
 */
class Pipeline {
  callback: ((error: Error | null, tags?: readonly string[]) => void) | undefined;
  readonly #steps: readonly PipelineStep[];
  readonly #tags: string[] = [];
  #unsent: Error | undefined;

  constructor(steps: readonly PipelineStep[]) {
    this.#steps = steps;
  }

  static run(client: pg.PoolClient, steps: readonly PipelineStep[]): Promise<readonly string[]> {
    return new Promise((resolve, reject) => {
      const pipeline = new Pipeline(steps);
      pipeline.callback = (error, tags) => (error ? reject(error) : resolve(tags ?? []));
      client.query(pipeline as unknown as pg.Submittable);
    });
  }

  submit(connection: WireConnection): null {
    // One write for all of it: the messages are small, and a write each would cost a syscall each.
    connection.stream.cork?.();
    try {
      for (const step of this.#steps) {
        if ('text' in step) {
          connection.parse({ text: step.text });
          connection.bind({});
        } else {
          connection.bind({ statement: step.name, values: step.values, valueMapper: textValue });
        }
        connection.execute({});
      }
    } catch (error) {
      // A message that could not be written (nothing of it was): what went before still
      // runs, without the COMMIT, and the Sync below brings the connection back to ready.
      this.#unsent = error instanceof Error ? error : new Error(String(error));
    } finally {
      connection.sync();
      connection.stream.uncork?.();
    }
    return null;
  }

  #settle(error: Error | null): void {
    const callback = this.callback;
    this.callback = undefined;
    callback?.(error, this.#tags);
  }

  handleCommandComplete(message: { text: string }): void {
    this.#tags.push(message.text);
  }
  /** node-postgres calls this for an ErrorResponse (the ReadyForQuery after it then finds no query) or a lost connection. */
  handleError(error: Error): void {
    this.#settle(error);
  }
  handleReadyForQuery(): void {
    this.#settle(this.#unsent ?? null);
  }
  handleRowDescription(): void {}
  handleDataRow(): void {}
  handleEmptyQuery(): void {}
  handlePortalSuspended(): void {}
  handleCopyInResponse(connection: WireConnection): void {
    connection.sendCopyFail('not expected in a pipeline');
  }
  handleCopyData(): void {}
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

const COMMIT_STEP: PipelineStep = { text: 'commit' };
const BEGIN_STEP: PipelineStep = { text: 'begin' };

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
  deferred: DeferredInsert[] = [];
  /** Statements prepared with SQL PREPARE on this connection (they outlive transactions). */
  readonly sqlPrepared = new Set<string>();

  constructor(client: pg.PoolClient) {
    this.client = client;
  }

  static #nameOf(statement: { readonly sql: string }): string {
    return statementName('s', statement.sql);
  }

  /**
   * Prepares, in a message of their own, the statements this connection has not prepared
   * yet (once per connection). On their own, so that a later message that fails part-way
   * never leaves it unclear which were prepared (PREPARE outlives a rolled-back transaction).
   */
  async #prepare(statements: readonly (MessageStatement | DeferredInsert)[]): Promise<void> {
    const missing = statements.filter(isPrepared).filter((statement) => !this.sqlPrepared.has(LazyBeginConnection.#nameOf(statement)));
    if (missing.length === 0) return;
    if (this.sqlPrepared.size + missing.length > MAX_PREPARED_PER_CONNECTION) throw new Error('too many prepared statements on one connection');
    // The previous request's deferred COMMIT goes first: PREPARE must not run inside its transaction.
    const commit = this.#takeCommit() ? 'commit;\n' : '';
    await this.client.query(`${commit}${missing.map((statement) => `prepare ${LazyBeginConnection.#nameOf(statement)} as ${statement.sql}`).join(';\n')}`);
    for (const statement of missing) this.sqlPrepared.add(LazyBeginConnection.#nameOf(statement));
  }

  #execute(statement: MessageStatement): string {
    if (!isPrepared(statement)) return statement.plain;
    const name = LazyBeginConnection.#nameOf(statement);
    return statement.literals.length > 0 ? `execute ${name}(${statement.literals.join(', ')})` : `execute ${name}`;
  }

  /** Whether the previous read-only transaction's COMMIT is still to be sent; it is the caller's to send now. */
  #takeCommit(): boolean {
    if (!this.pendingCommit) return false;
    clearTimeout(this.commitTimer);
    this.pendingCommit = false;
    return true;
  }

  /** Whether this transaction's BEGIN is still to be sent; it is the caller's to send now. */
  #takeBegin(): boolean {
    if (!this.pendingBegin) return false;
    this.pendingBegin = false;
    return true;
  }

  /** Whatever must precede the next message: a deferred COMMIT, then a deferred BEGIN. */
  #takePrefix(): string {
    let prefix = '';
    if (this.#takeCommit()) prefix += 'commit;\n';
    if (this.#takeBegin()) prefix += 'begin;\n';
    if (this.deferred.length > 0) {
      prefix += this.deferred.map((insert) => `${this.#execute(asLiteralStatement(insert))};\n`).join('');
      this.deferred = [];
    }
    return prefix;
  }

  /** Sends the transaction's deferred inserts (and what must precede them) with its COMMIT, in one pipeline. */
  async commitWithDeferred(): Promise<void> {
    const steps: PipelineStep[] = [];
    if (this.#takeCommit()) steps.push(COMMIT_STEP);
    if (this.#takeBegin()) steps.push(BEGIN_STEP);
    for (const insert of this.deferred) steps.push({ name: LazyBeginConnection.#nameOf(insert), values: insert.values });
    this.deferred = [];
    steps.push(COMMIT_STEP);
    const tags = await Pipeline.run(this.client, steps);
    // COMMIT of a failed transaction answers ROLLBACK: the caller must not think it landed.
    if (tags.length !== steps.length || tags[tags.length - 1] !== 'COMMIT') throw new Error('the transaction was rolled back by the database');
  }

  async executeQuery<R>(compiled: CompiledQuery): Promise<QueryResult<R>> {
    const parameters = compiled.parameters as unknown[];
    if (this.inTransaction && !isReadOnlyStatement(compiled.sql)) this.readOnly = false;
    if (this.inTransaction && deferrable.has(compiled) && parameters.every(deferrableValue)) {
      const insert: DeferredInsert = { sql: compiled.sql, values: parameters };
      await this.#prepare([insert]);
      this.deferred.push(insert);
      return { rows: [] };
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
