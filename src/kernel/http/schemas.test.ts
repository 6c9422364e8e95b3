import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openTestDatabase, type TestDatabase } from '../../../test/harness.ts';
import { keysetPage } from './schemas.ts';

describe('keyset pagination', () => {
  let t: TestDatabase;
  let tenantId: string;
  let all: { id: string; created_at: Date }[];

  beforeAll(async () => {
    t = await openTestDatabase();
    [{ id: tenantId }] = (await t.admin.query<{ id: string }>(`insert into tenants (name) values ('Paged') returning id`)) as [{ id: string }];
    // Ties on the timestamp: the id must break them, or a page boundary would skip or repeat rows.
    await t.admin.query(
      `insert into accounts (tenant_id, name, created_at)
       select $1, 'Account ' || g, timestamptz '2026-01-01T00:00:00Z' + make_interval(secs => g / 3) from generate_series(1, 11) g`,
      [tenantId],
    );
    all = await t.admin.query<{ id: string; created_at: Date }>(`select id, created_at from accounts where tenant_id = $1 order by created_at, id`, [tenantId]);
  });
  afterAll(async () => t?.close());

  const walk = async (newestFirst: boolean, limit: number) => {
    const seen: string[] = [];
    let cursor: string | undefined;
    for (let pages = 0; pages < 50; pages++) {
      const page = await t.db.withTenant(tenantId, (tx) =>
        keysetPage(tx.selectFrom('accounts').select(['id', 'created_at']).where('tenant_id', '=', tenantId), { limit, ...(cursor ? { cursor } : {}) }, { by: ['created_at', 'id'], newestFirst }, (row) => row.id),
      );
      expect(page.items.length).toBeLessThanOrEqual(limit);
      seen.push(...page.items);
      if (page.nextCursor === null) return seen;
      cursor = page.nextCursor;
    }
    throw new Error('pagination did not end');
  };

  it('walks every row exactly once, in (created, id) order, oldest or newest first, across timestamp ties', async () => {
    expect(all).toHaveLength(11);
    for (const limit of [1, 2, 4, 11, 50]) {
      expect(await walk(false, limit)).toEqual(all.map((row) => row.id));
      expect(await walk(true, limit)).toEqual(all.map((row) => row.id).reverse());
    }
  });
});
