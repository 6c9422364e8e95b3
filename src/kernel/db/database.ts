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
import { Kysely, PGliteDialect, PostgresDialect, sql, type Transaction } from 'kysely';
import pg from 'pg';
import { AsyncLocalStorage } from 'node:async_hooks';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import { lockDataDir, type DataDirLock } from './lock.ts';
import { migrateEmbedded, migratePostgres } from './migrate.ts';
import type { DB } from './schema.ts';

export type Tx = Transaction<DB>;

export interface SystemDb {
  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T>;
}

export interface Database {
  readonly kind: 'embedded' | 'postgres';
  /** Runs fn in one transaction confined by RLS to tenantId. Throws InvalidTenantIdError for a non-UUID. */
  withTenant<T>(tenantId: string, fn: (tx: Tx) => Promise<T>): Promise<T>;
  /** Runs fn in one transaction with no tenant: tenant tables show no rows (but the user's own memberships). */
  withGlobal<T>(fn: (tx: Tx) => Promise<T>, options?: { userId?: string }): Promise<T>;
  /** Cross-tenant access as the system role, for a stated reason that is logged on every use. */
  systemDb(options: { reason: string }): SystemDb;
  close(): Promise<void>;
}

/**
 * Marks code running inside a kernel transaction. Opening a second one from there would
 * deadlock the embedded database (one session) and break atomicity on PostgreSQL.
 */
const insideTransaction = new AsyncLocalStorage<true>();

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

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isUuid(value: unknown): value is string {
  return typeof value === 'string' && UUID.test(value);
}

interface Roles {
  /** The role statement of a transaction; PGlite's session is a superuser, so it must SET LOCAL ROLE. */
  readonly app: string | null;
  readonly system: string;
}

function createKernel(options: {
  kind: 'embedded' | 'postgres';
  appDb: Kysely<DB>;
  systemKysely: Kysely<DB>;
  roles: Roles;
  logger: Logger;
  close: () => Promise<void>;
}): Database {
  const { appDb, systemKysely, roles, logger } = options;

  async function enter(tx: Tx, settings: { tenantId?: string; userId?: string; role: string | null }) {
    // Transaction-local settings only (set_config(..., true)): a pooled connection never
    // carries one request's tenant into the next.
    await sql`select set_config('role', ${settings.role ?? 'none'}, true),
      set_config('app.tenant_id', ${settings.tenantId ?? ''}, true),
      set_config('app.user_id', ${settings.userId ?? ''}, true)`.execute(tx);
  }

  return {
    kind: options.kind,
    async withTenant(tenantId, fn) {
      if (!isUuid(tenantId)) throw new InvalidTenantIdError('tenant id must be a UUID');
      assertNotNested();
      return insideTransaction.run(true, () =>
        appDb.transaction().execute(async (tx) => {
          await enter(tx, { tenantId: tenantId.toLowerCase(), role: roles.app });
          return fn(tx);
        }),
      );
    },
    async withGlobal(fn, opts) {
      if (opts?.userId !== undefined && !isUuid(opts.userId)) throw new InvalidTenantIdError('user id must be a UUID');
      assertNotNested();
      return insideTransaction.run(true, () =>
        appDb.transaction().execute(async (tx) => {
          await enter(tx, { role: roles.app, ...(opts?.userId ? { userId: opts.userId } : {}) });
          return fn(tx);
        }),
      );
    },
    systemDb({ reason }) {
      if (typeof reason !== 'string' || reason.trim().length < 8) {
        throw new Error('systemDb needs a reason of at least 8 characters');
      }
      return {
        async transaction(fn) {
          assertNotNested();
          logger.info({ reason }, 'system database access');
          return insideTransaction.run(true, () =>
            systemKysely.transaction().execute(async (tx) => {
              await enter(tx, { role: roles.system });
              return fn(tx);
            }),
          );
        },
      };
    },
    close: options.close,
  };
}

export interface OpenDatabaseOptions {
  config: Pick<Config, 'dataDir' | 'databaseUrl' | 'databaseAppUser' | 'databaseAppPassword' | 'databasePoolSize'>;
  logger: Logger;
  /** Tests hand in an in-memory PGlite (loaded from a migrated template) instead of DATA_DIR. */
  pglite?: PGlite;
}

/** Opens, migrates and checks the database named by the config: PGlite under DATA_DIR, or PostgreSQL. */
export async function openDatabase(options: OpenDatabaseOptions): Promise<Database> {
  return options.config.databaseUrl === undefined ? openEmbedded(options) : openPostgres(options, options.config.databaseUrl);
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
  return createKernel({
    kind: 'embedded',
    appDb: db,
    systemKysely: db,
    roles: { app: 'cn_app', system: 'cn_system' },
    logger: options.logger,
    async close() {
      await db.destroy();
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

async function openPostgres(options: OpenDatabaseOptions, databaseUrl: string): Promise<Database> {
  const { config } = options;
  const ownerPool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  const appUrl = new URL(databaseUrl);
  appUrl.username = config.databaseAppUser;
  appUrl.password = config.databaseAppPassword ?? '';
  const appPool = new pg.Pool({ connectionString: appUrl.toString(), max: config.databasePoolSize });
  // An idle client that errors must not crash the process; the pool replaces it.
  for (const pool of [ownerPool, appPool]) pool.on('error', (error) => options.logger.warn({ err: error }, 'idle database client error'));
  try {
    await migratePostgres(ownerPool, config.databaseAppUser);
    await assertUnprivileged(appPool);
  } catch (error) {
    await Promise.allSettled([ownerPool.end(), appPool.end()]);
    throw error;
  }
  const appDb = new Kysely<DB>({ dialect: new PostgresDialect({ pool: appPool }) });
  const systemKysely = new Kysely<DB>({ dialect: new PostgresDialect({ pool: ownerPool }) });
  return createKernel({
    kind: 'postgres',
    appDb,
    systemKysely,
    roles: { app: null, system: 'cn_system' },
    logger: options.logger,
    async close() {
      await Promise.allSettled([appDb.destroy(), systemKysely.destroy()]);
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
