/**
 * Test harness: a fresh database per test file (a clone of the run's migrated template)
 * and the real app on it, driven through fastify.inject. Embedded PGlite by default;
 * real PostgreSQL when TEST_DATABASE_URL names an admin connection.
 */
import { PGlite } from '@electric-sql/pglite';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import pino from 'pino';
import { Writable } from 'node:stream';
import { inject } from 'vitest';
import { buildApp } from '../src/app.ts';
import { loadConfig, type Config } from '../src/kernel/config/config.ts';
import { openDatabase, type Database } from '../src/kernel/db/database.ts';
import type { RouteDefinition } from '../src/kernel/http/routes.ts';

export const PASSWORD = 'correct horse battery staple';

/** Superuser access to the test database, for seeding and inspecting behind the app's back. */
export interface Admin {
  query<T = Record<string, unknown>>(text: string, params?: unknown[]): Promise<T[]>;
  /** Runs a script of several statements. */
  exec(script: string): Promise<void>;
}

export interface TestDatabase {
  readonly kind: 'embedded' | 'postgres';
  readonly db: Database;
  readonly admin: Admin;
  readonly config: Config;
  /** The env used to build config; a child server process can reuse it. */
  readonly env: Record<string, string>;
  /** Somewhere new to restore a backup into (a data directory, or a database on the test server); cleaned up at close. */
  newRestoreTarget(): string;
  close(): Promise<void>;
}

export async function openTestDatabase(extraEnv: Record<string, string> = {}): Promise<TestDatabase> {
  const spec = inject('testDb');
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'cn-test-'));
  const logger = pino({ level: 'silent' });
  if (spec.kind === 'embedded') {
    const pglite = await PGlite.create({ loadDataDir: new Blob([readFileSync(spec.templatePath)]) });
    const env = { NODE_ENV: 'test', DATA_DIR: dataDir, ...extraEnv };
    const config = loadConfig(env);
    const db = await openDatabase({ config, logger, pglite });
    const targets: string[] = [];
    return {
      kind: 'embedded',
      db,
      config,
      env,
      newRestoreTarget() {
        const dir = mkdtempSync(path.join(os.tmpdir(), 'cn-restore-'));
        targets.push(dir);
        return dir;
      },
      admin: {
        async query<T>(text: string, params?: unknown[]) {
          return (await pglite.query<T>(text, params)).rows;
        },
        async exec(script: string) {
          await pglite.exec(script);
        },
      },
      async close() {
        await db.close();
        for (const dir of targets) rmSync(dir, { recursive: true, force: true });
        rmSync(dataDir, { recursive: true, force: true });
      },
    };
  }
  const name = `cn_t_${spec.runId}_${randomBytes(4).toString('hex')}`;
  const adminClient = new pg.Client({ connectionString: spec.adminUrl });
  await adminClient.connect();
  await adminClient.query(`create database ${name} template ${spec.template} owner ${spec.ownerRole}`);
  await adminClient.end();
  const ownerUrl = new URL(spec.adminUrl);
  ownerUrl.username = spec.ownerRole;
  ownerUrl.password = '';
  ownerUrl.pathname = `/${name}`;
  const superUrl = new URL(spec.adminUrl);
  superUrl.pathname = `/${name}`;
  const superPool = new pg.Pool({ connectionString: superUrl.toString(), max: 2 });
  // Backups read past row-level security: like an operator's BYPASSRLS role, the superuser here.
  const env = { NODE_ENV: 'test', DATA_DIR: dataDir, DATABASE_URL: ownerUrl.toString(), BACKUP_DATABASE_URL: superUrl.toString(), DATABASE_POOL_SIZE: '5', ...extraEnv };
  const config = loadConfig(env);
  const db = await openDatabase({ config, logger });
  return {
    kind: 'postgres',
    db,
    config,
    env,
    newRestoreTarget() {
      // Named with the run id: the global teardown drops it (and its renamed leftovers).
      const url = new URL(spec.adminUrl);
      url.pathname = `/cn_r_${spec.runId}_${randomBytes(4).toString('hex')}`;
      return url.toString();
    },
    admin: {
      async query<T>(text: string, params?: unknown[]) {
        return (await superPool.query(text, params)).rows as T[];
      },
      async exec(script: string) {
        await superPool.query(script);
      },
    },
    async close() {
      await db.close();
      await superPool.end();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export interface Response extends LightMyRequestResponse {
  body: string;
}

/** Like a browser: a request made `as` a session adopts a renewed cookie and CSRF token. */
export interface SessionHandle {
  cookie: string;
  csrfToken: string;
  readonly userId: string;
  readonly email: string;
}

export interface TestApp extends TestDatabase {
  readonly app: FastifyInstance;
  readonly logs: string[];
  request(options: {
    method: string;
    url: string;
    as?: SessionHandle | null;
    body?: unknown;
    payload?: string | Buffer;
    headers?: Record<string, string>;
    /** The client address the server sees (default 127.0.0.1). */
    remoteAddress?: string;
  }): Promise<Response>;
  /** Signs up a fresh user owning a fresh tenant. */
  signup(options?: { email?: string; tenantName?: string; name?: string }): Promise<{ session: SessionHandle; tenantId: string }>;
  login(email: string, password?: string): Promise<SessionHandle>;
  /** A new user who is a member of tenantId with role, via invitation and acceptance. */
  addMember(owner: SessionHandle, tenantId: string, role: string): Promise<SessionHandle>;
}

export function cookieFrom(response: LightMyRequestResponse): string {
  const header = response.headers['set-cookie'];
  const value = (Array.isArray(header) ? header : [header]).find((c) => typeof c === 'string' && c.startsWith('cn_session='));
  if (!value) throw new Error(`no session cookie in response ${response.statusCode}: ${response.body}`);
  return value.split(';')[0]!;
}

export async function startTestApp(
  options: { env?: Record<string, string>; extraRoutes?: readonly RouteDefinition[]; alterRoutes?: (routes: RouteDefinition[]) => RouteDefinition[] } = {},
): Promise<TestApp> {
  const base = await openTestDatabase(options.env);
  const logs: string[] = [];
  const logStream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      logs.push(chunk.toString('utf8'));
      done();
    },
  });
  const config = { ...base.config, logLevel: 'info' as const };
  const app = await buildApp({
    config,
    db: base.db,
    logStream,
    ...(options.extraRoutes ? { extraRoutes: options.extraRoutes } : {}),
    ...(options.alterRoutes ? { alterRoutes: options.alterRoutes } : {}),
  });
  await app.ready();

  const request: TestApp['request'] = async ({ method, url, as, body, payload, headers = {}, remoteAddress }) => {
    const all: Record<string, string> = { ...headers };
    if (as) {
      all.cookie = as.cookie;
      all['x-csrf-token'] ??= as.csrfToken;
    }
    if (body !== undefined) all['content-type'] ??= 'application/json';
    const response = (await app.inject({
      method: method as 'GET',
      url,
      headers: all,
      ...(remoteAddress ? { remoteAddress } : {}),
      ...(payload !== undefined ? { payload } : body !== undefined ? { payload: JSON.stringify(body) } : {}),
    })) as Response;
    const renewedCsrf = response.headers['x-csrf-token'];
    if (as && typeof renewedCsrf === 'string' && response.statusCode < 400) {
      as.cookie = cookieFrom(response);
      as.csrfToken = renewedCsrf;
    }
    return response;
  };

  const login: TestApp['login'] = async (email, password = PASSWORD) => {
    const response = await request({ method: 'POST', url: '/api/v1/auth/login', body: { email, password } });
    if (response.statusCode !== 200) throw new Error(`login failed: ${response.statusCode} ${response.body}`);
    const json = response.json<{ user: { id: string }; csrfToken: string }>();
    return { cookie: cookieFrom(response), csrfToken: json.csrfToken, userId: json.user.id, email };
  };

  const signup: TestApp['signup'] = async (opts = {}) => {
    const email = opts.email ?? `user-${randomUUID()}@example.com`;
    const response = await request({
      method: 'POST',
      url: '/api/v1/auth/signup',
      body: { email, password: PASSWORD, name: opts.name ?? 'Test User', tenantName: opts.tenantName ?? 'Test Tenant' },
    });
    if (response.statusCode !== 201) throw new Error(`signup failed: ${response.statusCode} ${response.body}`);
    const json = response.json<{ user: { id: string }; tenant: { id: string }; csrfToken: string }>();
    return { session: { cookie: cookieFrom(response), csrfToken: json.csrfToken, userId: json.user.id, email }, tenantId: json.tenant.id };
  };

  const addMember: TestApp['addMember'] = async (owner, tenantId, role) => {
    const { session } = await signup({ tenantName: 'Own tenant of invitee' });
    const invite = await request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/invitations`, as: owner, body: { email: session.email, role } });
    if (invite.statusCode !== 201) throw new Error(`invite failed: ${invite.statusCode} ${invite.body}`);
    const accept = await request({ method: 'POST', url: '/api/v1/invitations/accept', as: session, body: { token: invite.json<{ token: string }>().token } });
    if (accept.statusCode !== 200) throw new Error(`accept failed: ${accept.statusCode} ${accept.body}`);
    return session;
  };

  return {
    ...base,
    app,
    logs,
    request,
    signup,
    login,
    addMember,
    async close() {
      await app.close();
      await base.close();
    },
  };
}
