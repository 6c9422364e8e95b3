/**
 * Applies pending migrations as the table owner, then re-applies the application role's
 * privileges. Concurrent starts are serialised by an advisory lock.
 */
import type { PGlite } from '@electric-sql/pglite';
import type pg from 'pg';
import { APP_FUNCTIONS, APP_GRANTS, MIGRATIONS, PURGE_GRANTS, SYSTEM_GRANTS } from './migrations.ts';

/** The minimal script runner both engines provide. */
interface Runner {
  exec(script: string): Promise<void>;
  appliedVersions(): Promise<Set<number>>;
}

const MIGRATION_LOCK = 7_461_330_051;

function ident(name: string): string {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) throw new Error('invalid role name');
  return `"${name}"`;
}

/**
 * The two unprivileged roles: the application role (every request) and cn_system (the
 * rare cross-tenant job; policies name it). Neither is superuser, BYPASSRLS or owner.
 * Created only when missing (that needs CREATEROLE); operators may create them first.
 */
function rolesScript(appUser: string, canLogin: boolean): string {
  const app = ident(appUser);
  const login = canLogin ? 'login' : 'nologin';
  return `
do $$ begin
  if not exists (select 1 from pg_roles where rolname = '${appUser}') then
    create role ${app} ${login} nosuperuser nobypassrls nocreatedb nocreaterole noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'cn_system') then
    create role cn_system ${login} nosuperuser nobypassrls nocreatedb nocreaterole noinherit;
  end if;
  -- Owns the audit retention purge function; nobody logs in as it.
  if not exists (select 1 from pg_roles where rolname = 'cn_audit_purge') then
    create role cn_audit_purge nologin nosuperuser nobypassrls nocreatedb nocreaterole noinherit;
  end if;
  ${canLogin ? `if exists (select 1 from pg_roles where rolname = 'cn_system' and not rolcanlogin) then
    alter role cn_system login;
  end if;` : ''}
end $$;`;
}

function grantsScript(appUser: string): string {
  const app = ident(appUser);
  const lines = [`grant usage on schema public to ${app}, cn_system;`];
  for (const [table, privileges] of Object.entries(APP_GRANTS)) {
    lines.push(`revoke all on ${table} from ${app};`);
    lines.push(`grant ${privileges} on ${table} to ${app};`);
    lines.push(`revoke all on ${table} from cn_system;`);
    for (const privileges of SYSTEM_GRANTS[table] ?? ['select, insert, update, delete']) lines.push(`grant ${privileges} on ${table} to cn_system;`);
    lines.push(`revoke all on ${table} from cn_audit_purge;`);
    if (PURGE_GRANTS[table]) lines.push(`grant ${PURGE_GRANTS[table]} on ${table} to cn_audit_purge;`);
  }
  lines.push('grant usage on schema public to cn_audit_purge;');
  lines.push('revoke all on function cn_audit_purge(uuid, bigint) from public;');
  lines.push('grant execute on function cn_audit_purge(uuid, bigint) to cn_system;');
  lines.push(`grant usage on all sequences in schema public to ${app}, cn_system;`);
  for (const fn of APP_FUNCTIONS) lines.push(`grant execute on function ${fn} to ${app}, cn_system;`);
  return lines.join('\n');
}

async function run(runner: Runner, appUser: string, appCanLogin: boolean, upTo = Infinity): Promise<number[]> {
  await runner.exec(rolesScript(appUser, appCanLogin));
  await runner.exec(
    'create table if not exists schema_migrations (version integer primary key, name text not null, applied_at timestamptz not null default now())',
  );
  const applied = await runner.appliedVersions();
  const done: number[] = [];
  for (const migration of MIGRATIONS) {
    if (applied.has(migration.version) || migration.version > upTo) continue;
    await runner.exec(
      `${migration.sql}\ninsert into schema_migrations (version, name) values (${migration.version}, '${migration.name}');`,
    );
    done.push(migration.version);
  }
  // A partial migration (a restore at an older schema) grants later, when it migrates the rest.
  if (MIGRATIONS.every((migration) => migration.version <= upTo)) await runner.exec(grantsScript(appUser));
  return done;
}

/** Migrates a PostgreSQL database through the owner pool. Returns the versions applied now. */
export async function migratePostgres(ownerPool: pg.Pool, appUser: string): Promise<number[]> {
  const client = await ownerPool.connect();
  try {
    await client.query('select pg_advisory_lock($1)', [MIGRATION_LOCK]);
    try {
      return await run(
        {
          async exec(script) {
            await client.query('begin');
            try {
              await client.query(script);
              await client.query('commit');
            } catch (error) {
              await client.query('rollback');
              throw error;
            }
          },
          async appliedVersions() {
            const { rows } = await client.query<{ version: number }>('select version from schema_migrations');
            return new Set(rows.map((row) => row.version));
          },
        },
        appUser,
        true,
      );
    } finally {
      await client.query('select pg_advisory_unlock($1)', [MIGRATION_LOCK]);
    }
  } finally {
    client.release();
  }
}

/**
 * Migrates the embedded database (one session, so no lock is needed); upTo stops at a version
 * (a restore recreates the schema a backup was taken with before loading its rows).
 */
export async function migrateEmbedded(pglite: PGlite, upTo = Infinity): Promise<number[]> {
  return run(
    {
      async exec(script) {
        await pglite.transaction(async (tx) => {
          await tx.exec(script);
        });
      },
      async appliedVersions() {
        const { rows } = await pglite.query<{ version: number }>('select version from schema_migrations');
        return new Set(rows.map((row) => row.version));
      },
    },
    'cn_app',
    false,
    upTo,
  );
}
