import { describe, expect, it } from 'vitest';
import { compileOnly } from '../db/database.ts';
import { compilePrefetch, type PrefetchInput } from './prefetch-template.ts';

const T = '0d6f2c51-6a0e-4b7f-9b43-3f2f1f6b9c11';
const ID = 'f1e2d3c4-b5a6-4978-8899-aabbccddeeff';
const byId = ({ db, tenantId, params }: PrefetchInput) =>
  db.selectFrom('accounts').select(['id', 'name']).where('tenant_id', '=', tenantId).where('id', '=', params.id!).limit(1);

describe('a prefetch compiled once at registration', () => {
  it('gives, per request, the same statement and values as compiling the builder for that request', () => {
    const template = compilePrefetch('GET /x', byId, compileOnly, false);
    for (const [tenant, id] of [[T, ID], [ID, T]] as const) {
      const once = template(tenant, { tenantId: tenant, id }, {});
      const fresh = byId({ db: compileOnly, tenantId: tenant, params: { id }, query: {} }).compile();
      expect(once.sql).toBe(fresh.sql);
      expect(once.parameters).toEqual(fresh.parameters);
      expect(once.parameters).toEqual([tenant, id, 1]);
    }
  });

  it('refuses at registration a builder that reads a request value as text, or reads the query string', () => {
    const lowered = ({ db, tenantId, params }: PrefetchInput) =>
      db.selectFrom('accounts').selectAll().where('tenant_id', '=', tenantId).where('id', '=', params.id!.toLowerCase());
    expect(() => compilePrefetch('GET /lowered', lowered, compileOnly, false)).toThrow(/GET \/lowered.*cannot be compiled once/);
    const templated = ({ db, tenantId, params }: PrefetchInput) =>
      db.selectFrom('accounts').selectAll().where('tenant_id', '=', tenantId).where('name', '=', `${params.id}`);
    expect(() => compilePrefetch('GET /templated', templated, compileOnly, false)).toThrow(/read params\.id as text/);
    const byQuery = ({ db, tenantId, query }: PrefetchInput) =>
      db.selectFrom('accounts').selectAll().where('tenant_id', '=', tenantId).limit((query as { limit: number }).limit);
    expect(() => compilePrefetch('GET /q', byQuery, compileOnly, false)).toThrow(/query string/);
  });

  it('outside production catches a builder whose shape depends on a value (compared per request)', () => {
    const branching = ({ db, tenantId, params }: PrefetchInput) => {
      const base = db.selectFrom('accounts').selectAll().where('tenant_id', '=', tenantId);
      return params.id === ID ? base.where('id', '=', params.id) : base;
    };
    const checked = compilePrefetch('GET /b', branching, compileOnly, true);
    expect(() => checked(T, { id: ID }, {})).toThrow(/compiles differently/);
    expect(() => checked(T, { id: T }, {})).not.toThrow();
  });
});
