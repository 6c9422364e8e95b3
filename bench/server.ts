/**
 * The server under benchmark, run by bench/run.ts as a child process (so the load
 * generator does not share its event loop). It is the real app — config, migrations,
 * session guard, withTenant, RLS — plus public routes that exist only here:
 *
 *  - GET /bench/baseline/:tenantId/:id: the same primary-key SELECT as
 *    GET /api/v1/tenants/:tenantId/accounts/:id, with the same params validation and
 *    response schema, but through a plain pg.Pool connected as the superuser: no session,
 *    no guard, no transaction, no RLS. One database round trip per request. Like the app's
 *    driver (src/kernel/db/pg-driver.ts) it runs as a named prepared statement, so both
 *    sides skip parse and plan alike (BENCH_BASELINE_PREPARED=0: unnamed, re-planned).
 *  - GET /bench/stats: how many queries the process has sent to PostgreSQL so far
 *    (every pg.Client#query call, the app pools' and the baseline pool's), so run.ts can
 *    report database round trips per request.
 *
 *  - POST /bench/sealer {running} and POST /bench/seal: the audit sealer switched on or off,
 *    and a pass of it on demand, for the API write slices (api-writes.ts).
 *
 * and one tenant route: POST /api/v1/tenants/:tenantId/bench-unaudited/accounts, the real
 * account-creating route with audit() a no-op (api-writes.ts compares the two).
 *
 * Environment: the app's own variables (DATABASE_URL, PORT, DATABASE_POOL_SIZE, ...)
 * plus BENCH_BASELINE_DATABASE_URL (superuser URL of the bench database) and
 * BENCH_BASELINE_PREPARED.
 * Once listening it sends { port } to the parent over IPC.
 */
import pg from 'pg';
import pino from 'pino';
import Type from 'typebox';
import { buildApp } from '../src/app.ts';
import { sealAllLogs, sealerOptionsOf, startAuditSealer, writeDueCheckpoints } from '../src/kernel/audit/sealer.ts';
import { loadAuditSigner } from '../src/kernel/audit/signing.ts';
import { Account } from '../src/features/records/schemas.ts';
import { loadConfig } from '../src/kernel/config/config.ts';
import { openDatabase } from '../src/kernel/db/database.ts';
import { AppError } from '../src/kernel/http/errors.ts';
import { publicRoute, type RouteDefinition } from '../src/kernel/http/routes.ts';
import { TenantItemParams } from '../src/kernel/http/schemas.ts';

// Count every query sent by any pg client in this process (the app's pools use this same
// pg module). One query call is one round trip to PostgreSQL (simple or extended protocol,
// each ends with Sync and waits for ReadyForQuery).
let queries = 0;
const clientPrototype = pg.Client.prototype as unknown as { query: (...args: unknown[]) => unknown };
const originalQuery = clientPrototype.query;
clientPrototype.query = function countedQuery(this: unknown, ...args: unknown[]) {
  queries += 1;
  return originalQuery.apply(this, args);
};

/** The exact statement the real route sends through Kysely (store.getAccount). */
const ACCOUNT_BY_PK =
  'select "id", "name", "domain", "description", "created_at", "updated_at" from "accounts" where "tenant_id" = $1 and "id" = $2';

interface AccountRow {
  id: string;
  name: string;
  domain: string | null;
  description: string | null;
  created_at: Date;
  updated_at: Date;
}

/** Same mapping as the real route's toAccount (src/features/records/routes.ts). */
const toAccount = (row: AccountRow) => ({
  id: row.id,
  name: row.name,
  domain: row.domain,
  description: row.description,
  createdAt: row.created_at.toISOString(),
  updatedAt: row.updated_at.toISOString(),
});

async function main(): Promise<void> {
  const config = loadConfig(process.env);
  const baselineUrl = process.env.BENCH_BASELINE_DATABASE_URL;
  if (!baselineUrl) throw new Error('BENCH_BASELINE_DATABASE_URL is required');
  const prepared = process.env.BENCH_BASELINE_PREPARED !== '0';
  const logger = pino({ level: config.logLevel });

  const db = await openDatabase({ config, logger });
  const baselinePool = new pg.Pool({ connectionString: baselineUrl, max: config.databasePoolSize });
  baselinePool.on('error', (error) => logger.warn({ err: error }, 'idle baseline client error'));

  const auditSigner = loadAuditSigner(config, logger);
  let stopSealer: (() => void) | undefined;
  const benchRoutes = [
    publicRoute({
      method: 'GET',
      url: '/bench/baseline/:tenantId/:id',
      reason: 'benchmark baseline: the account SELECT with no session, guard or RLS',
      schema: { summary: 'Benchmark baseline', tags: ['bench'], params: TenantItemParams, response: { 200: Account } },
      async handler({ params }) {
        const values = [params.tenantId.toLowerCase(), params.id];
        const { rows } = await baselinePool.query<AccountRow>(
          prepared ? { name: 'bench_account_by_pk', text: ACCOUNT_BY_PK, values } : { text: ACCOUNT_BY_PK, values },
        );
        const row = rows[0];
        if (!row) throw new AppError('not_found');
        return toAccount(row);
      },
    }),
    // The audit sealer, as main.ts runs it, switched on for the API write slices that want it
    // (api-writes.ts); off otherwise, so the read benchmarks stay as they were measured.
    publicRoute({
      method: 'POST',
      url: '/bench/sealer',
      reason: 'benchmark instrumentation: start or stop the audit sealer',
      schema: { summary: 'Benchmark sealer switch', tags: ['bench'], body: Type.Object({ running: Type.Boolean() }), response: { 200: Type.Object({ running: Type.Boolean() }) } },
      async handler({ body }) {
        stopSealer?.();
        stopSealer = body.running
          ? startAuditSealer(db, auditSigner, sealerOptionsOf(config.audit), logger)
          : undefined;
        return { running: body.running };
      },
    }),
    publicRoute({
      method: 'POST',
      url: '/bench/seal',
      reason: 'benchmark instrumentation: seal every pending audit event now (untimed, between slices)',
      schema: {
        summary: 'Benchmark seal',
        tags: ['bench'],
        body: Type.Object({ signAll: Type.Optional(Type.Boolean()) }),
        response: { 200: Type.Object({ sealed: Type.Number() }) },
      },
      async handler({ body }) {
        const sealed = await sealAllLogs(db);
        // After the last slice: sign every head that moved, so none falls due in a later benchmark's timed runs.
        if (body.signAll) await writeDueCheckpoints(db, auditSigner, { everyEvents: 1, everySeconds: 0 });
        return { sealed };
      },
    }),
    publicRoute({
      method: 'GET',
      url: '/bench/stats',
      reason: 'benchmark instrumentation: query counter',
      schema: { summary: 'Benchmark counters', tags: ['bench'], response: { 200: Type.Object({ queries: Type.Number() }) } },
      async handler() {
        return { queries };
      },
    }),
  ];

  // The account-creating route's unaudited twin (api-writes.ts): the same definition and
  // handler, with audit() a no-op, so the two differ by the audit event alone.
  const withUnauditedTwin = (routes: RouteDefinition[]): RouteDefinition[] => {
    const real = routes.find((route) => route.method === 'POST' && route.url === '/api/v1/tenants/:tenantId/accounts');
    if (!real || real.access.kind !== 'tenant') throw new Error('the bench needs POST /api/v1/tenants/:tenantId/accounts');
    const handler = (real as Extract<RouteDefinition, { access: { kind: 'tenant' } }>).handler;
    const twin = { ...real, url: '/api/v1/tenants/:tenantId/bench-unaudited/accounts', handler: (ctx: Parameters<typeof handler>[0]) => handler({ ...ctx, audit: async () => {} }) };
    return [...routes, twin as RouteDefinition];
  };
  const app = await buildApp({ config, db, auditSigner, extraRoutes: benchRoutes, alterRoutes: withUnauditedTwin });

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    stopSealer?.();
    await app.close();
    await Promise.allSettled([db.close(), baselinePool.end()]);
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
  // If the orchestrator dies, do not linger.
  process.on('disconnect', () => void stop());

  await app.listen({ host: config.host, port: config.port });
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : config.port;
  process.send?.({ type: 'listening', port });
}

main().catch((error: unknown) => {
  process.stderr.write(`bench server failed to start: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
