import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openTestDatabase, type TestDatabase } from '../../../test/harness.ts';
import { findIsolationProblems, GLOBAL_TABLES } from './catalog.ts';

// Threat: a table added without tenant_id, RLS or tenant-scoped keys silently shares data across tenants.
describe('schema isolation check', () => {
  let t: TestDatabase;
  const query = <T>(text: string, params: unknown[]) => t.admin.query<T>(text, params);

  beforeAll(async () => {
    t = await openTestDatabase();
  });
  afterAll(async () => t?.close());

  it('every table of the migrated schema is tenant-isolated or on the global allow-list', async () => {
    expect(await findIsolationProblems(query)).toEqual([]);
    const tables = await t.admin.query<{ relname: string }>(
      `select relname from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'public' and relkind = 'r'`,
    );
    // The check ran over real tenant tables, not an empty set.
    expect(tables.map((r) => r.relname).filter((name) => !(name in GLOBAL_TABLES))).toEqual(
      expect.arrayContaining(['accounts', 'contacts', 'memberships', 'invitations', 'audit_events']),
    );
  });

  it('catches each kind of defect in a scratch schema', async () => {
    await t.admin.exec(`
      create schema if not exists scratch;
      create table scratch.no_tenant (id uuid primary key);
      create table scratch.nullable_no_rls (tenant_id uuid, id uuid, primary key (id));
      create table scratch.parent (tenant_id uuid not null, id uuid not null, primary key (tenant_id, id));
      alter table scratch.parent enable row level security; alter table scratch.parent force row level security;
      create policy tenant_isolation on scratch.parent
        using (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid)
        with check (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
      create table scratch.child (tenant_id uuid not null, id uuid not null, parent_id uuid, primary key (tenant_id, id),
        unique (id), foreign key (parent_id) references scratch.no_tenant (id));
      create table scratch.child2 (tenant_id uuid not null, id uuid not null, parent_id uuid, primary key (tenant_id, id));
      alter table scratch.parent add constraint parent_id_key unique (id);
      alter table scratch.child2 add foreign key (parent_id) references scratch.parent (id);
      alter table scratch.child2 enable row level security;
      create policy leaky on scratch.child2 using (true);
    `);
    const problems = await findIsolationProblems(query, 'scratch');
    const by = (table: string) => problems.filter((p) => p.table === table).map((p) => p.problem);
    expect(by('no_tenant')).toEqual(['has no tenant_id column']);
    expect(by('nullable_no_rls')).toEqual(
      expect.arrayContaining([
        'tenant_id is nullable',
        'row level security is not enabled',
        'row level security is not forced',
        'primary key does not start with tenant_id',
        expect.stringContaining('has no tenant_id policy'),
      ]),
    );
    expect(by('parent')).toEqual([]);
    expect(by('child2')).toEqual(
      expect.arrayContaining([
        'row level security is not forced',
        expect.stringMatching(/^foreign key .* does not include tenant_id/),
        expect.stringContaining('has no tenant_id policy'),
        'permissive policy leaky widens access and is not an allowed exception',
      ]),
    );
  });
});
