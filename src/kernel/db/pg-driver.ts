/**
 * A Kysely driver for node-postgres that saves round trips on the request path.
 *
 * Lazy BEGIN: beginning a transaction sends nothing; BEGIN travels with the transaction's
 * first statement. When that statement has no parameters (the kernel's tenant entry,
 * whose only values are a strictly validated UUID and a SHA-256 digest we computed), both
 * go as one simple-protocol message: one round trip instead of two.
 *
 * Prepared statements: parameterised queries are prepared once per connection (named by
 * a digest of their text), so PostgreSQL skips parsing and analysis on every later call.
 */
import { createHash } from 'node:crypto';
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
import type pg from 'pg';

/** Per connection; beyond this, queries run unnamed (bounded server-side memory). */
const MAX_PREPARED_PER_CONNECTION = 256;

class LazyBeginConnection implements DatabaseConnection {
  readonly client: pg.PoolClient;
  pendingBegin = false;
  broken = false;
  readonly prepared = new Set<string>();

  constructor(client: pg.PoolClient) {
    this.client = client;
  }

  async executeQuery<R>(compiled: CompiledQuery): Promise<QueryResult<R>> {
    const parameters = compiled.parameters as unknown[];
    let result: pg.QueryResult | pg.QueryResult[];
    if (this.pendingBegin) {
      this.pendingBegin = false;
      if (parameters.length === 0) {
        const results = (await this.client.query(`begin;\n${compiled.sql}`)) as unknown as pg.QueryResult[];
        return toQueryResult<R>(results[results.length - 1]!);
      }
      await this.client.query('begin');
    }
    if (parameters.length === 0) {
      result = await this.client.query(compiled.sql);
    } else {
      const name = `k${createHash('sha1').update(compiled.sql).digest('base64url').slice(0, 20)}`;
      if (this.prepared.has(name) || this.prepared.size < MAX_PREPARED_PER_CONNECTION) {
        this.prepared.add(name);
        result = await this.client.query({ name, text: compiled.sql, values: parameters });
      } else {
        result = await this.client.query(compiled.sql, parameters);
      }
    }
    return toQueryResult<R>(Array.isArray(result) ? result[result.length - 1]! : result);
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
    return connection;
  }

  async beginTransaction(connection: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    if (settings.isolationLevel || settings.accessMode) throw new Error('transaction settings are not supported');
    (connection as LazyBeginConnection).pendingBegin = true;
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    const lazy = connection as LazyBeginConnection;
    if (lazy.pendingBegin) {
      lazy.pendingBegin = false; // nothing ran: nothing to commit
      return;
    }
    const result = await lazy.client.query('commit');
    // COMMIT of a failed transaction answers ROLLBACK: the caller must not think it landed.
    if (result.command === 'ROLLBACK') throw new Error('the transaction was rolled back by the database');
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    const lazy = connection as LazyBeginConnection;
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
    if (lazy.broken) this.#connections.delete(lazy.client);
    lazy.client.release(lazy.broken);
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
