/**
 * Memory of an audit export: a tenant's log of BENCH_EXPORT_EVENTS events (default 1
 * million, inserted with SQL) is downloaded as JSON lines from the running server while its
 * resident memory is sampled; bounded memory means the peak does not grow with the log.
 */
import { readFileSync } from 'node:fs';
import type pg from 'pg';

export interface ExportResult {
  readonly events: number;
  readonly lines: number;
  readonly seconds: number;
  readonly bytes: number;
  readonly rssBeforeMiB: number;
  readonly rssPeakMiB: number;
}

function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1] ?? 0);
  return kib / 1024;
}

/** Appends `count` unsealed events to the log of the tenant named `tenantName` (as the superuser); the server seals them. */
export async function seedAuditEvents(superPool: pg.Pool, tenantName: string, count: number): Promise<string> {
  const tenant = (await superPool.query<{ id: string }>('select id from tenants where name = $1', [tenantName])).rows[0]!.id;
  for (let done = 0; done < count; done += 200_000) {
    const n = Math.min(200_000, count - done);
    await superPool.query(
      `insert into audit_events (tenant_id, actor_type, action, target_type, target_id, outcome, ip, user_agent, canonical_metadata)
       select $1, 'system', 'bench.event', 'account', gen_random_uuid()::text, 'success', '127.0.0.1', 'bench',
              '{"n":' || g || ',"note":"a bench event of typical size"}'
       from generate_series(1, $2::int) g`,
      [tenant, n],
    );
  }
  return tenant;
}

export async function measureExport(options: { baseUrl: string; cookie: string; tenantId: string; serverPid: number; events: number }): Promise<ExportResult> {
  const { baseUrl, cookie, tenantId, serverPid } = options;
  const rssBeforeMiB = rssMiB(serverPid);
  let rssPeakMiB = rssBeforeMiB;
  const sampler = setInterval(() => {
    rssPeakMiB = Math.max(rssPeakMiB, rssMiB(serverPid));
  }, 50);
  const started = process.hrtime.bigint();
  try {
    const response = await fetch(`${baseUrl}/api/v1/tenants/${tenantId}/audit-events/export?format=jsonl`, { headers: { cookie } });
    if (response.status !== 200 || !response.body) throw new Error(`export answered ${response.status}: ${await response.text()}`);
    let lines = 0;
    let bytes = 0;
    for await (const chunk of response.body) {
      bytes += chunk.byteLength;
      for (const byte of chunk) if (byte === 10) lines += 1;
    }
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    return { events: options.events, lines, seconds, bytes, rssBeforeMiB, rssPeakMiB };
  } finally {
    clearInterval(sampler);
  }
}

export function exportLine(result: ExportResult): string {
  return `audit export (JSON lines): ${result.lines.toLocaleString('en-US')} events, ${(result.bytes / 2 ** 20).toFixed(0)} MiB in ${result.seconds.toFixed(1)} s (${Math.round(result.lines / result.seconds).toLocaleString('en-US')} events/s); server memory ${result.rssBeforeMiB.toFixed(0)} MiB before, peak ${result.rssPeakMiB.toFixed(0)} MiB (+${(result.rssPeakMiB - result.rssBeforeMiB).toFixed(0)} MiB)`;
}
