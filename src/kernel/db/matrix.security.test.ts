import { sealAllLogs, writeDueCheckpoints } from '../audit/sealer.ts';
import { loadAuditSigner } from '../audit/signing.ts';
import { sql } from 'kysely';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../../../test/harness.ts';
import { GLOBAL_TABLES } from './catalog.ts';

/**
 * The database-level permission matrix, generated from the catalog: every tenant table
 * (every table not on the global allow-list), every statement kind, as the application role
 * inside withTenant(A), aimed at B's rows. Seeded through the real API where the API writes
 * the table, then copied to B by the superuser, so every table holds rows of both tenants.
 */

interface Problem {
  readonly table: string;
  readonly check: string;
  readonly detail: string;
}

/** Tables the API cannot fill in this fixture: seeded with SQL as the superuser (each says why). */
const SQL_SEEDED: Readonly<Record<string, string>> = {
  sso_logins: 'a pending SSO login needs a reachable IdP; the row shape is all that matters here',
  sso_break_glass: 'needs requireSso and an owner with MFA; one row is enough',
  security_alerts: 'raised by the alert loop, not by a request; one row is enough',
  alert_cursors: 'written by the alert loop, not by a request',
  audit_chain_heads: 'written by the audit sealer, not by a request',
  audit_checkpoints: 'written by the audit sealer, not by a request',
  webhook_deliveries: 'queued by the webhook worker, not by a request',
  scim_users: 'written through /scim/v2 with a SCIM token; one row is enough',
  scim_groups: 'written through /scim/v2 with a SCIM token; one row is enough',
  scim_group_members: 'written through /scim/v2 with a SCIM token; one row is enough',
};

// A PostgreSQL error that means "the database refused": row-level security or privileges.
const REFUSED = new Set(['42501']);

async function tenantTables(t: TestApp): Promise<string[]> {
  const rows = await t.admin.query<{ name: string }>(
    `select c.relname as name from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = 'public' and c.relkind in ('r', 'p') order by c.relname`,
  );
  return rows.map((r) => r.name).filter((name) => !(name in GLOBAL_TABLES));
}

/** Runs every check for every tenant table; returns what leaked, changed or was wrongly refused. */
async function crossTenantProblems(t: TestApp, tables: readonly string[], tenantA: string, tenantB: string): Promise<Problem[]> {
  const problems: Problem[] = [];
  const report = (table: string, check: string, detail: string) => problems.push({ table, check, detail });
  const countOf = async (table: string, tenantId: string) =>
    (await t.admin.query<{ n: number }>(`select count(*)::int as n from ${table} where tenant_id = $1`, [tenantId]))[0]!.n;
  /** Runs statement as the app role inside withTenant(A); returns affected rows, or the refusal's SQLSTATE. */
  const asA = async (statement: string): Promise<{ rows: Record<string, unknown>[]; affected: number } | { refused: string }> => {
    try {
      return await t.db.withTenant(tenantA, async (tx) => {
        const result = await sql.raw<Record<string, unknown>>(statement).execute(tx);
        return { rows: result.rows, affected: Number(result.numAffectedRows ?? 0) };
      });
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      return { refused: typeof code === 'string' ? code : String(error) };
    }
  };

  for (const table of tables) {
    const bBefore = await countOf(table, tenantB);
    if (bBefore === 0) report(table, 'fixture', "tenant B has no rows: nothing would prove they stay hidden");
    // SELECT: A sees its own rows and never B's, filtered or not.
    const all = await asA(`select tenant_id::text as tenant_id from ${table}`);
    if ('refused' in all) report(table, 'select own', `refused (${all.refused})`);
    else {
      if (all.rows.length === 0) report(table, 'select own', "A's rows are invisible to A");
      if (all.rows.some((row) => row.tenant_id !== tenantA)) report(table, 'select', 'rows of another tenant are visible');
    }
    const aimed = await asA(`select count(*)::int as n from ${table} where tenant_id = '${tenantB}'`);
    if (!('refused' in aimed) && aimed.rows[0]?.n !== 0) report(table, 'select aimed at B', `${String(aimed.rows[0]?.n)} rows`);

    // UPDATE and DELETE aimed at B change nothing (zero rows, or no privilege at all).
    for (const [check, statement] of [
      ['update aimed at B', `update ${table} set tenant_id = tenant_id where tenant_id = '${tenantB}'`],
      ['delete aimed at B', `delete from ${table} where tenant_id = '${tenantB}'`],
      ['update own row to B', `update ${table} set tenant_id = '${tenantB}' where tenant_id = '${tenantA}'`],
    ] as const) {
      const result = await asA(statement);
      if ('refused' in result) {
        if (!REFUSED.has(result.refused)) report(table, check, `failed for another reason (${result.refused})`);
      } else if (result.affected !== 0) report(table, check, `${result.affected} rows affected`);
    }
    // INSERT carrying B's tenant_id: a copy of one of A's rows, re-labelled, must be refused.
    const insert = await asA(
      `insert into ${table} select (jsonb_populate_record(null::${table}, to_jsonb(r) || jsonb_build_object('tenant_id', '${tenantB}'))).* from ${table} r limit 1`,
    );
    if (!('refused' in insert)) report(table, 'insert with B tenant_id', `${insert.affected} rows inserted`);
    else if (!REFUSED.has(insert.refused)) report(table, 'insert with B tenant_id', `failed for another reason (${insert.refused})`);

    const bAfter = await countOf(table, tenantB);
    if (bAfter !== bBefore) report(table, "B's rows", `${bBefore} before, ${bAfter} after`);
  }
  return problems;
}

// Threat: one statement, whatever its shape, reaches another tenant's rows at the database.
describe('database-level permission matrix (generated from the catalog)', () => {
  let t: TestApp;
  let tables: string[];
  const tenantB = randomUUID();
  let tenantA: string;

  beforeAll(async () => {
    t = await startTestApp();
    const { session: owner, tenantId } = await t.signup({ tenantName: 'Matrix A' });
    tenantA = tenantId;
    const post = async (path: string, body: unknown) => {
      const response = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantA}/${path}`, as: owner, body });
      if (response.statusCode >= 300) throw new Error(`seeding ${path}: ${response.statusCode} ${response.body}`);
      return response;
    };
    const account = (await post('accounts', { name: 'Seed account' })).json<{ id: string }>();
    await post('contacts', { accountId: account.id, name: 'Seed contact', email: 'seed@example.com' });
    await post('invitations', { email: 'invitee@example.com', role: 'member' });
    await post('api-keys', { name: 'Seed key', role: 'member' });
    await post('domains', { domain: 'matrix-seed.example' });
    await post('integrations', { name: 'Seed integration', provider: 'acme', credential: 'seed-credential' });
    const webhook = (await post('webhooks', { url: 'https://93.184.216.34/hook', eventTypes: ['account.created'] })).json<{ id: string }>();
    await post('access-reviews', {});
    await post('scim-tokens', { name: 'Seed IdP' });
    await t.admin.query(`insert into scim_users (tenant_id, user_name, external_id) values ($1, 'pending@matrix.example', 'ext-1')`, [tenantA]);
    await t.admin.query(
      `with g as (insert into scim_groups (tenant_id, display_name, role) values ($1, 'Matrix group', 'viewer') returning id)
       insert into scim_group_members (tenant_id, group_id, member_id) select $1, g.id, s.id from g, scim_users s where s.tenant_id = $1`,
      [tenantA],
    );
    const member = await t.addMember(owner, tenantA, 'member');
    await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantA}/members/${member.userId}/revoke-sessions`, as: owner });
    await t.request({ method: 'PATCH', url: `/api/v1/tenants/${tenantA}/settings`, as: owner, body: { sessionIdleMinutes: 20 } });
    await t.request({ method: 'PUT', url: `/api/v1/tenants/${tenantA}/sso`, as: owner, body: { issuer: 'https://idp.example.com', clientId: 'c', clientSecret: 's', allowedDomains: ['example.com'] } });
    const [session] = await t.admin.query<{ id: string }>('select id from sessions where user_id = $1 limit 1', [owner.userId]);
    await t.admin.query(`insert into sso_logins (tenant_id, state_hash, code_verifier, nonce, expires_at) values ($1, sha256('state'), 'verifier', 'nonce', now() + interval '10 minutes')`, [tenantA]);
    await t.admin.query('insert into sso_break_glass (tenant_id, session_id) values ($1, $2)', [tenantA, session!.id]);
    await t.admin.query(`insert into security_alerts (tenant_id, rule, severity, subject) values ($1, 'matrix', 'low', 'matrix')`, [tenantA]);
    await t.admin.query('insert into alert_cursors (tenant_id, last_seq) values ($1, 1)', [tenantA]);
    await t.admin.query(`insert into webhook_deliveries (tenant_id, webhook_id, event_id, action) values ($1, $2, gen_random_uuid(), 'account.created')`, [tenantA, webhook.id]);
    await sealAllLogs(t.db);
    await writeDueCheckpoints(t.db, loadAuditSigner(t.config, { warn() {} }), { everyEvents: 1, everySeconds: 60 });

    // B: a copy of everything A has, tables in foreign-key order (parents first).
    tables = await tenantTables(t);
    await t.admin.query(`insert into tenants (id, name) values ($1, 'Matrix B')`, [tenantB]);
    // Parents first: tables other tenant tables reference.
    const parents = ['accounts', 'webhooks', 'access_reviews', 'scim_groups'];
    const rank = (table: string) => (parents.includes(table) ? 0 : 1);
    const ordered = [...tables].sort((x, y) => rank(x) - rank(y));
    // An audit event's position is unique across tenants: B's copies (and their seals, which name it) get their own.
    const positioned = ['audit_events', 'audit_seals'];
    for (const table of ordered) {
      const moved = positioned.includes(table) ? `, 'position', r.position + 1000000000000` : '';
      await t.admin.query(
        `insert into ${table} select (jsonb_populate_record(null::${table}, to_jsonb(r) || jsonb_build_object('tenant_id', $2::text${moved}))).* from ${table} r where tenant_id = $1`,
        [tenantA, tenantB],
      );
    }
  });
  afterAll(async () => t?.close());

  it('covers every tenant table of the live schema, each seeded for both tenants', async () => {
    expect(tables.length).toBeGreaterThanOrEqual(13);
    for (const table of Object.keys(SQL_SEEDED)) expect(tables).toContain(table);
    for (const table of tables) {
      const [a] = await t.admin.query<{ n: number }>(`select count(*)::int as n from ${table} where tenant_id = $1`, [tenantA]);
      expect(a!.n, `${table} has rows of A`).toBeGreaterThan(0);
    }
  });

  it("as the application role inside withTenant(A), no statement sees or changes B's rows, and B's tenant_id cannot be written", async () => {
    expect(await crossTenantProblems(t, tables, tenantA, tenantB)).toEqual([]);
  });

  it("the sealed log view (audit_log) runs with the reader's rights: inside withTenant(A) it shows A's events and none of B's", async () => {
    const [view] = await t.admin.query<{ options: string[] | null }>(`select reloptions as options from pg_class where relname = 'audit_log' and relkind = 'v'`);
    expect(view?.options).toContain('security_invoker=true');
    const [all] = await t.admin.query<{ a: number; b: number }>(
      'select count(*) filter (where tenant_id = $1)::int as a, count(*) filter (where tenant_id = $2)::int as b from audit_log',
      [tenantA, tenantB],
    );
    expect(all!.b).toBeGreaterThan(0);
    const seen = await t.db.withTenant(tenantA, (tx) => tx.selectFrom('audit_log').select('tenant_id').execute());
    expect(seen.length).toBe(all!.a);
    expect(seen.every((row) => row.tenant_id === tenantA)).toBe(true);
  });

  it('has teeth: a permissive policy on one table, or its tenant policy dropped, is reported', async () => {
    await t.admin.exec(`create policy leaky on contacts using (true) with check (true)`);
    const leaking = await crossTenantProblems(t, ['contacts'], tenantA, tenantB);
    await t.admin.exec(`drop policy leaky on contacts`);
    expect(leaking.map((p) => p.check)).toEqual(expect.arrayContaining(['select', 'select aimed at B', 'update aimed at B', 'delete aimed at B']));

    await t.admin.exec(`alter policy tenant_isolation on accounts rename to tenant_isolation_off`);
    await t.admin.exec(`drop policy tenant_isolation_off on accounts`);
    const dropped = await crossTenantProblems(t, ['accounts'], tenantA, tenantB);
    expect(dropped.map((p) => p.check)).toContain('select own');
  });
});
