import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type SessionHandle, type TestApp } from '../../../test/harness.ts';

describe('accounts and contacts', () => {
  let t: TestApp;
  let owner: SessionHandle;
  let tenantId: string;

  beforeAll(async () => {
    t = await startTestApp();
    ({ session: owner, tenantId } = await t.signup());
  });
  afterAll(async () => t?.close());

  it('creates, reads, updates, lists and deletes an account, auditing each write', async () => {
    const base = `/api/v1/tenants/${tenantId}/accounts`;
    const created = await t.request({ method: 'POST', url: base, as: owner, body: { name: 'Globex', domain: 'Globex.com' } });
    expect(created.statusCode).toBe(201);
    const account = created.json();
    expect(account).toMatchObject({ name: 'Globex', domain: 'globex.com', description: null });
    const got = await t.request({ method: 'GET', url: `${base}/${account.id}`, as: owner });
    expect(got.json()).toEqual(account);
    const patched = await t.request({ method: 'PATCH', url: `${base}/${account.id}`, as: owner, body: { description: 'Big' } });
    expect(patched.statusCode).toBe(200);
    expect(patched.json().description).toBe('Big');
    const list = await t.request({ method: 'GET', url: base, as: owner });
    expect(list.json().items.map((a: { id: string }) => a.id)).toContain(account.id);
    const deleted = await t.request({ method: 'DELETE', url: `${base}/${account.id}`, as: owner });
    expect(deleted.statusCode).toBe(204);
    expect((await t.request({ method: 'GET', url: `${base}/${account.id}`, as: owner })).statusCode).toBe(404);
    const audit = await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/audit-events?limit=3`, as: owner });
    expect(audit.json().items.map((e: { action: string }) => e.action)).toEqual(['account.deleted', 'account.updated', 'account.created']);
  });

  it('paginates with a cursor until nextCursor is null', async () => {
    const { session, tenantId: tid } = await t.signup();
    for (let i = 0; i < 5; i++) {
      await t.request({ method: 'POST', url: `/api/v1/tenants/${tid}/accounts`, as: session, body: { name: `A${i}` } });
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const response = await t.request({
        method: 'GET',
        url: `/api/v1/tenants/${tid}/accounts?limit=2${cursor ? `&cursor=${cursor}` : ''}`,
        as: session,
      });
      expect(response.statusCode).toBe(200);
      const body = response.json();
      seen.push(...body.items.map((a: { name: string }) => a.name));
      cursor = body.nextCursor;
    } while (cursor);
    expect(seen).toEqual(['A0', 'A1', 'A2', 'A3', 'A4']);
  });
});
