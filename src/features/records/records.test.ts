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

describe('contacts', () => {
  let t: TestApp;
  let owner: SessionHandle;
  let tenantId: string;
  let accountId: string;
  const url = () => `/api/v1/tenants/${tenantId}/contacts`;

  beforeAll(async () => {
    t = await startTestApp();
    ({ session: owner, tenantId } = await t.signup());
    accountId = (await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner, body: { name: 'Acme' } })).json().id;
  });
  afterAll(async () => t?.close());

  it('creates, updates and deletes a contact of an account in the same tenant', async () => {
    const created = await t.request({ method: 'POST', url: url(), as: owner, body: { accountId, name: 'Grace', email: 'Grace@Example.com', phone: '+14155550100' } });
    expect(created.statusCode).toBe(201);
    expect(created.json()).toMatchObject({ accountId, name: 'Grace', email: 'grace@example.com', phone: '+14155550100' });
    const id = created.json().id;
    const patched = await t.request({ method: 'PATCH', url: `${url()}/${id}`, as: owner, body: { phone: null } });
    expect(patched.json().phone).toBeNull();
    expect((await t.request({ method: 'GET', url: `${url()}/${id}`, as: owner })).json().name).toBe('Grace');
    expect((await t.request({ method: 'DELETE', url: `${url()}/${id}`, as: owner })).statusCode).toBe(204);
    expect((await t.request({ method: 'DELETE', url: `${url()}/${id}`, as: owner })).statusCode).toBe(404);
  });

  it("refuses an accountId of another tenant with 404, on create and on update", async () => {
    const other = await t.signup();
    const foreignAccount = (await t.request({ method: 'POST', url: `/api/v1/tenants/${other.tenantId}/accounts`, as: other.session, body: { name: 'Theirs' } })).json().id;
    const create = await t.request({ method: 'POST', url: url(), as: owner, body: { accountId: foreignAccount, name: 'x' } });
    expect(create.statusCode).toBe(404);
    const mine = (await t.request({ method: 'POST', url: url(), as: owner, body: { accountId, name: 'Mine' } })).json().id;
    const move = await t.request({ method: 'PATCH', url: `${url()}/${mine}`, as: owner, body: { accountId: foreignAccount } });
    expect(move.statusCode).toBe(404);
    const [row] = await t.admin.query<{ account_id: string }>('select account_id from contacts where id = $1', [mine]);
    expect(row!.account_id).toBe(accountId);
  });

  it('requires E.164 phone numbers and valid emails', async () => {
    for (const body of [
      { accountId, name: 'x', phone: '555-0100' },
      { accountId, name: 'x', phone: '+0123' },
      { accountId, name: 'x', email: 'not-an-email' },
    ]) {
      const response = await t.request({ method: 'POST', url: url(), as: owner, body });
      expect(response.statusCode).toBe(400);
      expect(response.json().code).toBe('validation.failed');
    }
  });

  it('keeps an account that still has contacts (409) rather than deleting them silently', async () => {
    const acct = (await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner, body: { name: 'Busy' } })).json().id;
    await t.request({ method: 'POST', url: url(), as: owner, body: { accountId: acct, name: 'Kept' } });
    const response = await t.request({ method: 'DELETE', url: `/api/v1/tenants/${tenantId}/accounts/${acct}`, as: owner });
    expect(response.statusCode).toBe(409);
    expect(response.json().code).toBe('account.has_contacts');
  });
});
