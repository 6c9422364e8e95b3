/**
 * Reads the PostgreSQL catalog and reports every table that breaks the isolation
 * invariants of DESIGN.md. The schema test runs it on both databases; a new table that
 * is neither tenant-isolated nor on GLOBAL_TABLES fails the build.
 */

/** The few tables that are not tenant-owned, each with why. */
export const GLOBAL_TABLES: Readonly<Record<string, string>> = {
  tenants: 'the tenants themselves',
  users: 'people are global: one login, many tenants',
  sessions: 'a session belongs to a user before any tenant is chosen',
  platform_audit_events: "the operators' log, including events no tenant may see",
  platform_audit_head: "the head of the operators' log hash chain",
  audit_seal_watermark: 'one number: the event position at or below which every tenant event is sealed (no tenant data)',
  platform_audit_checkpoints: "signed checkpoints of the operators' log",
  platform_security_alerts: 'alerts about the platform as a whole (no tenant owns them), for operators',
  platform_alert_cursor: "how far the alert rules have read the operators' log",
  schema_migrations: 'migration bookkeeping',
  platform_keys: "the platform's own data keys (for user-level secrets such as TOTP seeds), stored only wrapped",
  auth_throttles: 'login protection counters, keyed by hashed email or IP before any tenant is known',
  auth_failures: 'recent failed logins per IP, for credential-stuffing detection',
  mfa_recovery_codes: "a user's second-factor recovery codes (users are global)",
  mfa_challenges: 'the pending second step of a login, before any tenant is chosen',
  sso_identities: "links of IdP identities (issuer, subject) to global users; the linking tenant is kept for evidence",
  restore_tests: 'recorded restore drills (backup verify): evidence for operators, no tenant data',
  user_tokens: "mailed password-reset and email-verification tokens of a user (users are global)",
};

/** Policies beside tenant_isolation that are allowed to widen access, each with why. */
export const POLICY_EXCEPTIONS: Readonly<Record<string, Readonly<Record<string, string>>>> = {
  memberships: { memberships_self_read: 'a signed-in user lists their own memberships (tenant picker)' },
};

export const SYSTEM_ROLE = 'cn_system';

export interface IsolationProblem {
  readonly table: string;
  readonly problem: string;
}

type Query = <T>(text: string, params: unknown[]) => Promise<T[]>;

const TENANT_SETTING = /tenant_id = .*current_setting\('app\.tenant_id'(::text)?, true\)/;

/** Returns the problems found in schema (empty: all invariants hold). query must see the catalog. */
export async function findIsolationProblems(query: Query, schema = 'public'): Promise<IsolationProblem[]> {
  const problems: IsolationProblem[] = [];
  const tables = await query<{ oid: number; name: string; rls: boolean; forced: boolean }>(
    `select c.oid::int as oid, c.relname as name, c.relrowsecurity as rls, c.relforcerowsecurity as forced
     from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = $1 and c.relkind in ('r', 'p') order by c.relname`,
    [schema],
  );
  const tenantTables = new Set(tables.filter((t) => !(t.name in GLOBAL_TABLES)).map((t) => t.oid));
  for (const table of tables) {
    if (!tenantTables.has(table.oid)) continue;
    const report = (problem: string) => problems.push({ table: table.name, problem });
    const [column] = await query<{ attnum: number; notnull: boolean; type: string }>(
      `select attnum::int as attnum, attnotnull as notnull, format_type(atttypid, atttypmod) as type
       from pg_attribute where attrelid = $1 and attname = 'tenant_id' and not attisdropped`,
      [table.oid],
    );
    if (!column) {
      report('has no tenant_id column');
      continue;
    }
    if (!column.notnull) report('tenant_id is nullable');
    if (column.type !== 'uuid') report(`tenant_id is ${column.type}, not uuid`);
    if (!table.rls) report('row level security is not enabled');
    if (!table.forced) report('row level security is not forced');

    const constraints = await query<{ name: string; type: string; key: number[]; fkey: number[] | null; ref: number | null }>(
      `select conname as name, contype as type, conkey::int[] as key, confkey::int[] as fkey, nullif(confrelid, 0)::int as ref
       from pg_constraint where conrelid = $1 and contype in ('p', 'f')`,
      [table.oid],
    );
    const primary = constraints.find((c) => c.type === 'p');
    if (!primary) report('has no primary key');
    else if (primary.key[0] !== column.attnum) report('primary key does not start with tenant_id');
    for (const fk of constraints.filter((c) => c.type === 'f' && c.ref !== null && tenantTables.has(c.ref))) {
      const position = fk.key.indexOf(column.attnum);
      const [refColumn] = await query<{ attnum: number }>(
        `select attnum::int as attnum from pg_attribute where attrelid = $1 and attname = 'tenant_id'`,
        [fk.ref],
      );
      if (position < 0 || !refColumn || fk.fkey?.[position] !== refColumn.attnum) {
        report(`foreign key ${fk.name} does not include tenant_id on both sides`);
      }
    }

    const policies = await query<{ name: string; cmd: string; permissive: boolean; roles: string[]; qual: string | null; check: string | null }>(
      `select p.polname as name, p.polcmd::text as cmd, p.polpermissive as permissive,
         array(select case when r = 0 then 'public' else pg_get_userbyid(r)::text end from unnest(p.polroles) r) as roles,
         pg_get_expr(p.polqual, p.polrelid) as qual, pg_get_expr(p.polwithcheck, p.polrelid) as check
       from pg_policy p where p.polrelid = $1`,
      [table.oid],
    );
    const isolating = policies.find(
      (p) => p.cmd === '*' && p.permissive && p.roles.includes('public') && TENANT_SETTING.test(p.qual ?? '') && TENANT_SETTING.test(p.check ?? ''),
    );
    if (!isolating) report('has no tenant_id policy for all commands with USING and WITH CHECK on app.tenant_id');
    for (const policy of policies) {
      if (policy === isolating || !policy.permissive) continue;
      const isSystem = policy.roles.length === 1 && policy.roles[0] === SYSTEM_ROLE;
      if (!isSystem && POLICY_EXCEPTIONS[table.name]?.[policy.name] === undefined) {
        report(`permissive policy ${policy.name} widens access and is not an allowed exception`);
      }
    }
  }
  return problems;
}
