/**
 * The audit log's cost on writes through the API, the way the real server writes: the real
 * `POST /api/v1/tenants/{t}/accounts` (session, CSRF, guard, validation, tenant transaction,
 * the insert and its audit event) against its twin, which bench/server.ts registers at
 * `.../bench-unaudited/accounts`: the same route definition, handler included, with audit() a
 * no-op. The kinds, as in audit.ts:
 *
 *   plain      the unaudited twin
 *   audited    the real route, the server's sealer off
 *   chained    the real route, the sealer running at AUDIT_SEAL_INTERVAL_MS (as in main.ts)
 *   hot        chained, every write to one tenant
 *
 * Same session, headers, body and tenants; the kinds take turns in short slices, so a
 * checkpoint or an autovacuum slows them alike, and what a sealer-less slice leaves is sealed
 * (untimed) before the next one.
 */
import autocannon, { type AutocannonRequest } from 'autocannon';
import type pg from 'pg';

const UNAUDITED_ACCOUNTS_PATH = (tenantId: string) => `/api/v1/tenants/${tenantId}/bench-unaudited/accounts`;
const AUDITED_ACCOUNTS_PATH = (tenantId: string) => `/api/v1/tenants/${tenantId}/accounts`;
const SLICE_SECONDS = 3;
const KINDS = ['plain', 'audited', 'chained', 'hot'] as const;
type Kind = (typeof KINDS)[number];

export interface ApiWriteResult {
  /** Requests per second over all of a kind's slices. */
  readonly perSecond: Record<Kind, number>;
  readonly connections: number;
  readonly seconds: number;
  readonly tenants: number;
}

const writeHeaders = (cookie: string, csrfToken: string) => ({ cookie, 'x-csrf-token': csrfToken, 'content-type': 'application/json' });

/** The two routes answer alike, and only the real one records an event. */
export async function apiWriteSanityCheck(baseUrl: string, cookie: string, csrfToken: string, superPool: pg.Pool, tenantId: string): Promise<void> {
  const ids: string[] = [];
  for (const path of [AUDITED_ACCOUNTS_PATH(tenantId), UNAUDITED_ACCOUNTS_PATH(tenantId)]) {
    const response = await fetch(`${baseUrl}${path}`, { method: 'POST', headers: writeHeaders(cookie, csrfToken), body: JSON.stringify({ name: 'API write check' }) });
    if (response.status !== 201) throw new Error(`POST ${path}: ${response.status} ${await response.text()}`);
    ids.push(((await response.json()) as { id: string }).id);
  }
  const { rows } = await superPool.query<{ target_id: string }>(`select target_id from audit_events where action = 'account.created' and target_id = any($1)`, [ids]);
  if (rows.length !== 1 || rows[0]!.target_id !== ids[0]) throw new Error(`API write check: expected an event for the audited write only, found ${JSON.stringify(rows)}`);
}

export async function measureApiWrites(options: {
  readonly baseUrl: string;
  readonly cookie: string;
  readonly csrfToken: string;
  readonly tenantIds: readonly string[];
  readonly connections: number;
  /** Per kind, in all (in slices of SLICE_SECONDS). */
  readonly seconds: number;
  readonly log: (line: string) => void;
}): Promise<ApiWriteResult> {
  const { baseUrl, cookie, csrfToken, tenantIds } = options;
  const body = JSON.stringify({ name: 'API write bench', description: 'one of many' });
  const bench = async (path: string, payload?: unknown) => {
    const response = await fetch(`${baseUrl}${path}`, { method: 'POST', ...(payload === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(payload) }) });
    if (response.status !== 200) throw new Error(`POST ${path}: ${response.status} ${await response.text()}`);
  };
  const slice = async (kind: Kind, seconds: number) => {
    await bench('/bench/seal', {}); // the backlog of a sealer-less slice is not the next slice's cost
    const sealer = kind === 'chained' || kind === 'hot';
    if (sealer) await bench('/bench/sealer', { running: true });
    try {
      const pathOf = kind === 'plain' ? UNAUDITED_ACCOUNTS_PATH : AUDITED_ACCOUNTS_PATH;
      const paths = (kind === 'hot' ? tenantIds.slice(0, 1) : tenantIds).map(pathOf);
      const result = await autocannon({
        url: baseUrl,
        connections: options.connections,
        duration: seconds,
        headers: writeHeaders(cookie, csrfToken),
        requests: [{ method: 'POST', body, setupRequest: (request: AutocannonRequest) => ((request.path = paths[Math.floor(Math.random() * paths.length)]!), request) }],
      });
      if (result.non2xx > 0 || result.errors > 0) throw new Error(`API writes (${kind}): ${result.non2xx} non-2xx, ${result.errors} errors`);
      return { requests: result.requests.total, seconds: result.duration };
    } finally {
      if (sealer) await bench('/bench/sealer', { running: false });
    }
  };
  for (const kind of KINDS) await slice(kind, 2); // warm-up
  const turns = Math.max(1, Math.round(options.seconds / SLICE_SECONDS));
  const total = Object.fromEntries(KINDS.map((kind) => [kind, { requests: 0, seconds: 0 }])) as Record<Kind, { requests: number; seconds: number }>;
  for (let turn = 1; turn <= turns; turn++) {
    for (const kind of KINDS) {
      const { requests, seconds } = await slice(kind, SLICE_SECONDS);
      total[kind].requests += requests;
      total[kind].seconds += seconds;
    }
    options.log(`  API writes turn ${turn}/${turns}: ${KINDS.map((kind) => `${kind} ${Math.round(total[kind].requests / total[kind].seconds)}`).join(', ')} req/s so far`);
  }
  await bench('/bench/seal', { signAll: true });
  return {
    perSecond: Object.fromEntries(KINDS.map((kind) => [kind, total[kind].requests / total[kind].seconds])) as Record<Kind, number>,
    connections: options.connections,
    seconds: turns * SLICE_SECONDS,
    tenants: tenantIds.length,
  };
}

export function apiWriteLines(r: ApiWriteResult): string[] {
  const { plain, audited, chained, hot } = r.perSecond;
  const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
  const verdict = (ok: boolean) => (ok ? 'met' : 'NOT met');
  return [
    `API: audited write / the same write unaudited = ${(audited / plain).toFixed(2)} (POST .../accounts, ${fmt(audited)} vs ${fmt(plain)} req/s; target >= 0.75: ${verdict(audited / plain >= 0.75)})`,
    `API: chain cost: chained / audited = ${(chained / audited).toFixed(2)} (${fmt(chained)} req/s with the server's sealer running; target >= 0.90: ${verdict(chained / audited >= 0.9)})`,
    `API: one hot tenant / spread over ${fmt(r.tenants)} tenants = ${(hot / chained).toFixed(2)} (${fmt(hot)} req/s; target >= 0.90: ${verdict(hot / chained >= 0.9)})`,
  ];
}
