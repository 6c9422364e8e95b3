/**
 * `node tools/audit-check.ts`: runs `npm audit --json` and fails on any high or critical
 * advisory that audit-allowlist.json does not accept. Each accepted advisory needs a reason
 * and an expiry date; an expired entry fails the check too, so every acceptance is reviewed.
 *
 * When the registry's advisory endpoint cannot be reached, the check cannot decide: it fails,
 * unless --unreachable=warn is given, when it says loudly that nothing was checked.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';

export interface AllowEntry {
  /** The advisory's GHSA id or URL, as npm audit reports it. */
  readonly advisory: string;
  readonly package: string;
  readonly reason: string;
  /** YYYY-MM-DD: after this day the entry no longer counts. */
  readonly expires: string;
}

interface Via {
  readonly source?: number;
  readonly name?: string;
  readonly title?: string;
  readonly url?: string;
  readonly severity?: string;
}

export interface AuditReport {
  readonly vulnerabilities?: Record<string, { readonly name: string; readonly severity: string; readonly via: readonly (Via | string)[] }>;
}

export interface Finding {
  readonly package: string;
  readonly advisory: string;
  readonly severity: string;
  readonly title: string;
}

const BLOCKING = new Set(['high', 'critical']);

/** Checks the allow-list itself: every entry complete, with a real date. */
export function allowListProblems(entries: readonly AllowEntry[]): string[] {
  const problems: string[] = [];
  for (const entry of entries) {
    if (!entry.advisory || !entry.package || !entry.reason || entry.reason.trim().length < 10) problems.push(`allow-list entry ${JSON.stringify(entry)} needs advisory, package and a reason`);
    if (!/^\d{4}-\d{2}-\d{2}$/.test(entry.expires ?? '') || Number.isNaN(Date.parse(entry.expires))) problems.push(`allow-list entry for ${entry.advisory} needs an expiry date (YYYY-MM-DD)`);
  }
  return problems;
}

/** The decision: blocking findings not accepted, and accepted entries that expired. */
export function evaluate(report: AuditReport, allow: readonly AllowEntry[], today: Date): { blocking: Finding[]; expired: AllowEntry[] } {
  const day = today.toISOString().slice(0, 10);
  const live = allow.filter((entry) => entry.expires >= day);
  const expired = allow.filter((entry) => entry.expires < day);
  const findings: Finding[] = [];
  for (const vulnerability of Object.values(report.vulnerabilities ?? {})) {
    for (const via of vulnerability.via) {
      // A string names another vulnerable package; its own entry carries the advisory.
      if (typeof via === 'string') continue;
      const severity = via.severity ?? vulnerability.severity;
      if (!BLOCKING.has(severity)) continue;
      findings.push({ package: vulnerability.name, advisory: via.url ?? String(via.source ?? 'unknown'), severity, title: via.title ?? '' });
    }
  }
  const accepted = (finding: Finding) =>
    live.some((entry) => entry.package === finding.package && (finding.advisory === entry.advisory || finding.advisory.endsWith(`/${entry.advisory}`)));
  return { blocking: findings.filter((finding) => !accepted(finding)), expired };
}

function runAudit(): { report: AuditReport } | { unreachable: string } {
  let output: string;
  try {
    output = execFileSync('npm', ['audit', '--json'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000 });
  } catch (error) {
    // npm audit exits non-zero when it finds anything; its JSON is still on stdout.
    output = (error as { stdout?: string }).stdout ?? '';
  }
  let parsed: AuditReport & { error?: unknown; message?: string; statusCode?: number };
  try {
    parsed = JSON.parse(output) as typeof parsed;
  } catch {
    return { unreachable: 'npm audit printed no report' };
  }
  if (parsed.error !== undefined || parsed.statusCode !== undefined) return { unreachable: parsed.message ?? 'the advisory endpoint answered with an error' };
  return { report: parsed };
}

function main(): number {
  const root = path.resolve(import.meta.dirname, '..');
  const allow = JSON.parse(readFileSync(path.join(root, 'audit-allowlist.json'), 'utf8')) as AllowEntry[];
  const listProblems = allowListProblems(allow);
  for (const problem of listProblems) process.stderr.write(`audit-check: ${problem}\n`);
  if (listProblems.length > 0) return 1;
  const result = runAudit();
  if ('unreachable' in result) {
    const line = `audit-check: npm audit could not run (${result.unreachable}): advisories were NOT checked`;
    process.stderr.write(`${line}\n`);
    return process.argv.includes('--unreachable=warn') ? 0 : 1;
  }
  const { blocking, expired } = evaluate(result.report, allow, new Date());
  for (const entry of expired) process.stderr.write(`audit-check: the acceptance of ${entry.advisory} (${entry.package}) expired on ${entry.expires}: review it\n`);
  for (const finding of blocking) process.stderr.write(`audit-check: ${finding.severity} ${finding.package}: ${finding.title} ${finding.advisory}\n`);
  if (blocking.length === 0 && expired.length === 0) process.stdout.write('audit-check: no high or critical advisories outside the allow-list\n');
  return blocking.length > 0 || expired.length > 0 ? 1 : 0;
}

if (import.meta.main) process.exit(main());
