/**
 * What the audit log and its hash chain cost on the write path, in the bench process itself
 * through the kernel (withTenant as cn_app, the sealer as cn_system) on real PostgreSQL:
 *
 *   plain      a write (insert an account) in a tenant transaction, no audit event
 *   audited    the same write plus its audit event, sealer stopped (no chain work at all)
 *   chained    the same, with the sealer running every AUDIT_SEAL_INTERVAL_MS as in the server
 *   hot        chained, every write to one tenant (the prototype's trap: a per-tenant lock)
 *
 * Writes are spread over `tenants` tenants except in "hot". The kinds take turns in short
 * slices (SLICE_SECONDS each, `seconds` x `rounds` per kind in all), and each kind's rate is
 * its writes over its time: a database checkpoint or an autovacuum run then slows every kind
 * alike instead of whichever run it fell into. The backlog a sealer-less slice leaves is
 * sealed (untimed) before the next slice. Then the commit-to-sealed delay over the chained slices (sealed_at - at), and the
 * sealing and verification rates over a large log (run.ts seeds it).
 */
import path from 'node:path';
import { CLK_TCK, procAvailable, systemTicks } from './cpu.ts';
import { recordTenantEvent } from '../src/kernel/audit/record.ts';
import { sealAllLogs, sealTenantLog, startAuditSealer, writeDueCheckpoints, type AuditSigner } from '../src/kernel/audit/sealer.ts';
import { loadAuditSigner } from '../src/kernel/audit/signing.ts';
import { verifyLogInParallel } from '../src/kernel/audit/verify.ts';
import { loadConfig } from '../src/kernel/config/config.ts';
import { openDatabase, type Database } from '../src/kernel/db/database.ts';
import pino from 'pino';
import type pg from 'pg';

type Kind = 'plain' | 'audited' | 'chained' | 'hot';
const SLICE_SECONDS = 3;
const KINDS: readonly Kind[] = ['plain', 'audited', 'chained', 'hot'];

export interface AuditWriteResult {
  readonly perSecond: Record<Kind, number>;
  /**
   * Per kind, from /proc/stat over its slices (null where /proc is missing): the share of the
   * machine's CPU in use, and the machine's CPU time per write (every process: the writers
   * here, PostgreSQL, the sealer), and of it this process's (the writers' and the sealer's
   * Node.js side; the rest is mostly PostgreSQL). A kind whose busy share is near 100 % is bound by CPU, so its
   * ratio to another is the ratio of their CPU per write.
   */
  readonly cpu: Record<Kind, { busyPercent: number; usPerWrite: number; benchUsPerWrite: number }> | null;
  /** Per kind: the slowest and fastest slice. */
  readonly spread: Record<Kind, { min: number; max: number }>;
  readonly sealDelayMs: { p50: number; p99: number; max: number; events: number };
  readonly sealIntervalMs: number;
  readonly concurrency: number;
  readonly seconds: number;
  readonly tenants: number;
}

export interface AuditChainResult {
  readonly events: number;
  readonly sealSeconds: number;
  /** The verification of the settled table (after VACUUM, as autovacuum leaves it): the measured figure. */
  readonly verifySeconds: number;
  /** The first verification, right after sealing the whole log in one go (dead row versions, hint bits unset). */
  readonly firstPassSeconds: number;
  readonly vacuumSeconds: number;
  readonly verifiedOk: boolean;
  /** What verification reported when the chain did not verify. */
  readonly problem: string | null;
}

const ACTOR = { type: 'user' as const, id: '00000000-0000-4000-8000-000000000001', email: 'bench@example.com' };
const META = { requestId: 'bench', ip: '127.0.0.1', userAgent: 'bench' };

/** A checkpoint policy: a signed checkpoint once a head has moved this many events, or this long. */
export interface CheckpointPolicy {
  readonly everyEvents: number;
  readonly everySeconds: number;
}

/** Opens the kernel on the bench database (owner URL; requests then run as cn_app). */
export async function openBenchDatabase(ownerUrl: string, dataDir: string, signingKeyPem: string): Promise<{ db: Database; signer: AuditSigner; checkpoints: CheckpointPolicy }> {
  const config = loadConfig({
    NODE_ENV: 'test',
    DATABASE_URL: ownerUrl,
    DATA_DIR: dataDir,
    DATABASE_POOL_SIZE: '10',
    // A server writes every sealed event to the operator stream (stdout unless told otherwise);
    // the sealer here does too, to a file, so the chain's cost includes it.
    AUDIT_STREAM: path.join(dataDir, 'audit-stream.jsonl'),
    AUDIT_SIGNING_KEY: signingKeyPem,
  });
  const db = await openDatabase({ config, logger: pino({ level: 'silent' }) });
  // The server's checkpoint policy (its defaults: the bench server sets none).
  const checkpoints = { everyEvents: config.audit.checkpointEvents, everySeconds: config.audit.checkpointSeconds };
  return { db, signer: loadAuditSigner(config, { warn() {} }), checkpoints };
}

/** All CPUs' busy and total time so far, in clock ticks (steal counts as neither), or null without /proc. */
function machineTicks(): { busy: number; total: number } | null {
  if (!procAvailable) return null;
  const ticks = systemTicks();
  return { busy: ticks.busy, total: ticks.total - ticks.steal };
}

async function runFor(seconds: number, concurrency: number, op: (worker: number, i: number) => Promise<void>): Promise<number> {
  const deadline = performance.now() + seconds * 1000;
  let done = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async (_, worker) => {
      for (let i = 0; performance.now() < deadline; i++) {
        await op(worker, i);
        done += 1;
      }
    }),
  );
  return done / seconds;
}

export async function measureAuditWrites(options: {
  db: Database;
  signer: AuditSigner;
  superPool: pg.Pool;
  seconds: number;
  rounds: number;
  concurrency: number;
  tenants: number;
  sealIntervalMs: number;
  checkpoints: CheckpointPolicy;
  log: (line: string) => void;
}): Promise<AuditWriteResult> {
  const { db, signer, seconds, concurrency } = options;
  const tenantIds = (await options.superPool.query<{ id: string }>('select id from tenants order by id limit $1', [options.tenants])).rows.map((row) => row.id);
  const write = async (tenantId: string, audited: boolean, n: number) => {
    await db.withTenant(tenantId, async (tx) => {
      const row = await tx.insertInto('accounts').values({ tenant_id: tenantId, name: `Audit bench ${n}` }).returning('id').executeTakeFirstOrThrow();
      if (audited) await recordTenantEvent(tx, tenantId, ACTOR, META, { action: 'account.created', target: { type: 'account', id: row.id }, metadata: { name: `Audit bench ${n}` } });
    });
  };
  const spread = (worker: number, i: number) => tenantIds[(worker * 7919 + i) % tenantIds.length]!;
  const slices: { kind: Kind; seconds: number; writes: number; busyTicks: number; totalTicks: number; benchUs: number }[] = [];
  const chainedWindows: [Date, Date][] = [];
  // Warm-up: connections, plans, JIT.
  await runFor(2, concurrency, (w, i) => write(spread(w, i), true, i));
  // What earlier benchmarks left (the login flood moves a thousand heads) is sealed and signed
  // first, untimed: the first chained slice would otherwise sign all of those heads.
  await sealAllLogs(db);
  await writeDueCheckpoints(db, signer, options.checkpoints);
  const turns = Math.max(1, Math.round((seconds * options.rounds) / SLICE_SECONDS));
  for (let turn = 1; turn <= turns; turn++) {
    for (const kind of KINDS) {
      await sealAllLogs(db); // the backlog of a sealer-less slice is not the next slice's cost
      const stop = kind === 'chained' || kind === 'hot' ? startAuditSealer(db, signer, { intervalMs: options.sealIntervalMs, ...options.checkpoints }, { error: (o) => options.log(`sealer error ${JSON.stringify(o)}`) }) : null;
      const started = new Date();
      const ticksBefore = machineTicks();
      const ownBefore = process.cpuUsage();
      const perSecond = await runFor(SLICE_SECONDS, concurrency, (w, i) => write(kind === 'hot' ? tenantIds[0]! : spread(w, i), kind !== 'plain', i));
      const ticksAfter = machineTicks();
      const own = process.cpuUsage(ownBefore);
      if (stop) chainedWindows.push([started, new Date()]);
      // Let the loop seal what the slice's last writes committed before stopping it.
      if (stop) await new Promise((resolve) => setTimeout(resolve, options.sealIntervalMs * 3));
      stop?.();
      slices.push({
        kind,
        seconds: SLICE_SECONDS,
        writes: perSecond * SLICE_SECONDS,
        busyTicks: ticksBefore && ticksAfter ? ticksAfter.busy - ticksBefore.busy : 0,
        totalTicks: ticksBefore && ticksAfter ? ticksAfter.total - ticksBefore.total : 0,
        benchUs: own.user + own.system,
      });
    }
    options.log(`  audit writes turn ${turn}/${turns}: ${KINDS.map((kind) => `${kind} ${Math.round(slices.filter((x) => x.kind === kind).at(-1)!.writes / SLICE_SECONDS)}`).join(', ')} writes/s`);
  }
  await sealAllLogs(db);
  // Commit-to-sealed over the events written during the chained runs (the sealer running at its interval).
  const { rows } = await options.superPool.query<{ p50: number; p99: number; max: number; n: string }>(
    `select percentile_cont(0.5) within group (order by d) as p50, percentile_cont(0.99) within group (order by d) as p99, max(d) as max, count(*) as n
     from (select extract(epoch from e.sealed_at - e.at) * 1000 as d
           from audit_log e join jsonb_to_recordset($1::jsonb) as w(s timestamptz, f timestamptz) on e.at >= w.s and e.at < w.f
           where e.request_id = 'bench') s`,
    [JSON.stringify(chainedWindows.map(([s, f]) => ({ s, f })))],
  );
  const rate = (kind: Kind) => {
    const mine = slices.filter((x) => x.kind === kind);
    return mine.reduce((sum, x) => sum + x.writes, 0) / mine.reduce((sum, x) => sum + x.seconds, 0);
  };
  const range = (kind: Kind) => {
    const rates = slices.filter((x) => x.kind === kind).map((x) => x.writes / x.seconds);
    return { min: Math.min(...rates), max: Math.max(...rates) };
  };
  const cpuOf = (kind: Kind) => {
    const mine = slices.filter((x) => x.kind === kind);
    const busy = mine.reduce((sum, x) => sum + x.busyTicks, 0);
    const total = mine.reduce((sum, x) => sum + x.totalTicks, 0);
    const writes = mine.reduce((sum, x) => sum + x.writes, 0);
    const benchUs = mine.reduce((sum, x) => sum + x.benchUs, 0);
    return {
      busyPercent: total > 0 ? (100 * busy) / total : 0,
      usPerWrite: writes > 0 ? (busy / CLK_TCK / writes) * 1e6 : 0,
      benchUsPerWrite: writes > 0 ? benchUs / writes : 0,
    };
  };
  return {
    cpu: machineTicks() ? { plain: cpuOf('plain'), audited: cpuOf('audited'), chained: cpuOf('chained'), hot: cpuOf('hot') } : null,
    perSecond: { plain: rate('plain'), audited: rate('audited'), chained: rate('chained'), hot: rate('hot') },
    spread: { plain: range('plain'), audited: range('audited'), chained: range('chained'), hot: range('hot') },
    sealDelayMs: { p50: Number(rows[0]?.p50 ?? 0), p99: Number(rows[0]?.p99 ?? 0), max: Number(rows[0]?.max ?? 0), events: Number(rows[0]?.n ?? 0) },
    sealIntervalMs: options.sealIntervalMs,
    concurrency,
    seconds,
    tenants: tenantIds.length,
  };
}

/**
 * Seals a tenant's (seeded, unsealed) log and then verifies the whole chain; all timed.
 * Right after a burst of a million inserts the first pass also sets hint bits and races
 * autovacuum for the two cores. A chain is verified long after its events were sealed, so the
 * figure held to the target is the pass over the settled tables, after the VACUUM autovacuum
 * would run; the first pass is reported beside it.
 */
export async function measureChain(db: Database, signer: AuditSigner, superPool: pg.Pool, tenantId: string, events: number): Promise<AuditChainResult> {
  let started = performance.now();
  await sealTenantLog(db, tenantId);
  const sealSeconds = (performance.now() - started) / 1000;
  // The operators' check (`audit verify`): ranges checked two at a time by the database.
  const verify = async () => {
    const begun = performance.now();
    const result = await verifyLogInParallel(db, { tenantId }, signer.publicKeys);
    return { result, seconds: (performance.now() - begun) / 1000 };
  };
  const first = await verify();
  started = performance.now();
  await superPool.query('vacuum (analyze) audit_events, audit_seals');
  const vacuumSeconds = (performance.now() - started) / 1000;
  const settled = await verify();
  const broken = [first.result, settled.result].find((result) => !result.ok);
  return {
    events: Math.max(events, settled.result.count),
    sealSeconds,
    verifySeconds: settled.seconds,
    firstPassSeconds: first.seconds,
    vacuumSeconds,
    verifiedOk: broken === undefined,
    problem: broken ? JSON.stringify(broken) : null,
  };
}

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

export function auditWriteLines(r: AuditWriteResult): string[] {
  const { plain, audited, chained, hot } = r.perSecond;
  const verdict = (ok: boolean) => (ok ? 'met' : 'NOT met');
  return [
    `kernel: audited write / plain write = ${(audited / plain).toFixed(2)} (${fmt(audited)} vs ${fmt(plain)} writes/s; the strictest reading of the target >= 0.75: ${verdict(audited / plain >= 0.75)})`,
    `kernel: chain cost: chained / audited = ${(chained / audited).toFixed(2)} (${fmt(chained)} writes/s with the sealer running; the strictest reading of the target >= 0.90, i.e. <= 10 % cost: ${verdict(chained / audited >= 0.9)})`,
    `kernel: one hot tenant / spread over ${r.tenants} tenants = ${(hot / chained).toFixed(2)} (${fmt(hot)} writes/s; target >= 0.90: ${verdict(hot / chained >= 0.9)})`,
    ...(r.cpu ? [`machine CPU per write (busy share): ${KINDS.map((kind) => `${kind} ${fmt(r.cpu![kind].usPerWrite)} µs, ${fmt(r.cpu![kind].benchUsPerWrite)} in Node (${fmt(r.cpu![kind].busyPercent)} % busy)`).join(', ')}`] : []),
    `commit to sealed (sealer every ${r.sealIntervalMs} ms): p50 ${fmt(r.sealDelayMs.p50)} ms, p99 ${fmt(r.sealDelayMs.p99)} ms, max ${fmt(r.sealDelayMs.max)} ms over ${fmt(r.sealDelayMs.events)} events`,
  ];
}

export function chainLine(c: AuditChainResult): string {
  return `sealing ${fmt(c.events)} events of one tenant: ${c.sealSeconds.toFixed(1)} s (${fmt(c.events / c.sealSeconds)} events/s); verifying the chain: ${c.verifySeconds.toFixed(1)} s (${fmt(c.events / c.verifySeconds)} events/s; target >= 200,000: ${c.events / c.verifySeconds >= 200_000 ? 'met' : 'NOT met'}; ${c.verifiedOk ? 'chain ok' : `CHAIN BROKEN: ${c.problem}`}); the first pass right after sealing took ${c.firstPassSeconds.toFixed(1)} s (${fmt(c.events / c.firstPassSeconds)} events/s), then VACUUM ${c.vacuumSeconds.toFixed(1)} s`;
}
