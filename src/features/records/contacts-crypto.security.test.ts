import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type SessionHandle, type TestApp } from '../../../test/harness.ts';
import { createKeyring } from '../../kernel/crypto/envelope.ts';
import { encryptLegacyContacts } from './contacts-crypto.ts';

interface StoredContact {
  id: string;
  email: string | null;
  phone: string | null;
  email_ct: Uint8Array | null;
  phone_ct: Uint8Array | null;
  email_index: Uint8Array | null;
  updated_at: Date;
}

describe('contact email and phone are encrypted at rest', () => {
  let t: TestApp;
  let owner: SessionHandle;
  let tenantId: string;
  let accountId: string;

  beforeAll(async () => {
    t = await startTestApp();
    ({ session: owner, tenantId } = await t.signup());
    accountId = (await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner, body: { name: 'Acme' } })).json().id;
  });
  afterAll(async () => t?.close());

  const stored = async (id: string) =>
    (await t.admin.query<StoredContact>('select id, email, phone, email_ct, phone_ct, email_index, updated_at from contacts where id = $1', [id]))[0]!;
  const create = async (as: SessionHandle, tenant: string, account: string, body: Record<string, unknown>) => {
    const response = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenant}/contacts`, as, body: { accountId: account, name: 'Someone', ...body } });
    expect(response.statusCode).toBe(201);
    return response.json<{ id: string; email: string | null; phone: string | null }>();
  };
  const get = (id: string) => t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/contacts/${id}`, as: owner });
  const bytes = (value: Uint8Array | null) => Buffer.from(value ?? []);

  it('stores only ciphertexts and a blind index, and answers the plaintext to members', async () => {
    const contact = await create(owner, tenantId, accountId, { email: 'Ada@Example.com', phone: '+442079460000' });
    expect(contact).toMatchObject({ email: 'ada@example.com', phone: '+442079460000' });
    const row = await stored(contact.id);
    expect(row.email).toBeNull();
    expect(row.phone).toBeNull();
    expect(bytes(row.email_ct).includes(Buffer.from('ada@example.com'))).toBe(false);
    expect(bytes(row.phone_ct).includes(Buffer.from('442079460000'))).toBe(false);
    expect(bytes(row.email_index)).toHaveLength(32);
    expect((await get(contact.id)).json()).toMatchObject({ email: 'ada@example.com', phone: '+442079460000' });
    const list = await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/contacts`, as: owner });
    expect(list.json().items.find((item: { id: string }) => item.id === contact.id)).toMatchObject({ email: 'ada@example.com' });
  });

  it('finds contacts by exact email through the blind index, per tenant', async () => {
    const mine = await create(owner, tenantId, accountId, { email: 'lookup@example.com' });
    await create(owner, tenantId, accountId, { email: 'other@example.com' });
    const found = await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/contacts?email=LOOKUP@example.com`, as: owner });
    expect(found.statusCode).toBe(200);
    expect(found.json().items.map((item: { id: string }) => item.id)).toEqual([mine.id]);
    const none = await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/contacts?email=nobody@example.com`, as: owner });
    expect(none.json().items).toEqual([]);
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/contacts?email=not-an-email`, as: owner })).statusCode).toBe(400);

    // Another tenant's contact with the same address has another index: indexes do not link tenants.
    const { session: otherOwner, tenantId: otherTenant } = await t.signup();
    const otherAccount = (await t.request({ method: 'POST', url: `/api/v1/tenants/${otherTenant}/accounts`, as: otherOwner, body: { name: 'Other' } })).json().id;
    const theirs = await create(otherOwner, otherTenant, otherAccount, { email: 'lookup@example.com' });
    expect(bytes((await stored(theirs.id)).email_index).equals(bytes((await stored(mine.id)).email_index))).toBe(false);
    const mineOnly = await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/contacts?email=lookup@example.com`, as: owner });
    expect(mineOnly.json().items.map((item: { id: string }) => item.id)).toEqual([mine.id]);
  });

  it('re-encrypts on update, clears with null, and leaves sealed fields alone when others change', async () => {
    const contact = await create(owner, tenantId, accountId, { email: 'before@example.com', phone: '+14155550100' });
    const before = await stored(contact.id);
    const renamed = await t.request({ method: 'PATCH', url: `/api/v1/tenants/${tenantId}/contacts/${contact.id}`, as: owner, body: { name: 'Renamed' } });
    expect(renamed.json()).toMatchObject({ name: 'Renamed', email: 'before@example.com', phone: '+14155550100' });
    expect(bytes((await stored(contact.id)).email_ct).equals(bytes(before.email_ct))).toBe(true);

    const changed = await t.request({ method: 'PATCH', url: `/api/v1/tenants/${tenantId}/contacts/${contact.id}`, as: owner, body: { email: 'after@example.com', phone: null } });
    expect(changed.json()).toMatchObject({ email: 'after@example.com', phone: null });
    const after = await stored(contact.id);
    expect(bytes(after.email_ct).equals(bytes(before.email_ct))).toBe(false);
    expect(bytes(after.email_index).equals(bytes(before.email_index))).toBe(false);
    expect(after.phone_ct).toBeNull();
    const found = await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/contacts?email=after@example.com`, as: owner });
    expect(found.json().items.map((item: { id: string }) => item.id)).toEqual([contact.id]);

    const cleared = await t.request({ method: 'PATCH', url: `/api/v1/tenants/${tenantId}/contacts/${contact.id}`, as: owner, body: { email: null } });
    expect(cleared.json().email).toBeNull();
    expect((await stored(contact.id)).email_index).toBeNull();
  });

  it('never serves a ciphertext moved into another contact, and leaks neither value', async () => {
    const a = await create(owner, tenantId, accountId, { email: 'first@example.com' });
    const b = await create(owner, tenantId, accountId, { email: 'second@example.com' });
    // The database owner copies a's email ciphertext into b.
    await t.admin.query('update contacts set email_ct = (select email_ct from contacts where id = $1) where id = $2', [a.id, b.id]);
    const response = await get(b.id);
    expect(response.statusCode).toBe(500);
    expect(response.body).not.toContain('first@example.com');
    expect(response.body).not.toContain('second@example.com');
    expect(response.headers['content-type']).toContain('application/problem+json');
  });

  it('encrypts contacts written before field encryption, once, without touching updated_at', async () => {
    const id = randomUUID();
    await t.admin.query(`insert into contacts (tenant_id, id, account_id, name, email, phone) values ($1, $2, $3, 'Legacy', 'legacy@example.com', '+33142685300')`, [tenantId, id, accountId]);
    // Until the backfill reaches it, the row still reads.
    expect((await get(id)).json()).toMatchObject({ email: 'legacy@example.com', phone: '+33142685300' });
    const before = await stored(id);
    const keyring = createKeyring(t.config, { warn() {} });
    expect(await encryptLegacyContacts(t.db, keyring)).toBeGreaterThanOrEqual(1);
    const after = await stored(id);
    expect(after).toMatchObject({ email: null, phone: null });
    expect(after.email_ct).not.toBeNull();
    expect(after.updated_at).toEqual(before.updated_at);
    expect((await get(id)).json()).toMatchObject({ email: 'legacy@example.com', phone: '+33142685300' });
    expect(await encryptLegacyContacts(t.db, keyring)).toBe(0);
    const found = await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/contacts?email=legacy@example.com`, as: owner });
    expect(found.json().items.map((item: { id: string }) => item.id)).toEqual([id]);
  });
});
