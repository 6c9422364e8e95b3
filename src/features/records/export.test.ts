import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type SessionHandle, type TestApp } from '../../../test/harness.ts';

// Threat: a tenant cannot get its own data out (lock-in, lost data after a mistake), or
// someone short of owner takes the whole tenant out in one download.
describe("a tenant owner's data export", () => {
  let t: TestApp;
  let owner: SessionHandle;
  let tenantId: string;

  beforeAll(async () => {
    t = await startTestApp();
    ({ session: owner, tenantId } = await t.signup({ tenantName: 'Exporting' }));
  });
  afterAll(async () => t?.close());

  it('streams every account and contact as JSON lines, with encrypted fields decrypted, and audits the export', async () => {
    const accounts: string[] = [];
    for (let i = 0; i < 3; i++) accounts.push((await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner, body: { name: `Account ${i}` } })).json<{ id: string }>().id);
    const contact = (await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/contacts`, as: owner, body: { accountId: accounts[0], name: 'Ada', email: 'ada@export.example', phone: '+442079460111' } })).json<{ id: string }>();
    const other = await t.signup({ tenantName: 'Not exported' });
    await t.request({ method: 'POST', url: `/api/v1/tenants/${other.tenantId}/accounts`, as: other.session, body: { name: 'Foreign' } });

    const response = await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/export`, as: owner });
    expect(response.statusCode).toBe(200);
    expect(response.headers['content-type']).toMatch(/^application\/x-ndjson/);
    const lines = response.body.trim().split('\n').map((line) => JSON.parse(line) as { type: string; id?: string; name?: string; email?: string });
    expect(lines[0]).toMatchObject({ type: 'export', format: 1, tenantId });
    expect(lines.filter((line) => line.type === 'account').map((line) => line.id).sort()).toEqual([...accounts].sort());
    expect(lines.filter((line) => line.type === 'contact')).toEqual([expect.objectContaining({ id: contact.id, email: 'ada@export.example', phone: '+442079460111' })]);
    expect(response.body).not.toContain('Foreign');
    const audit = await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/audit-events?action=tenant.exported`, as: owner });
    expect(audit.json<{ items: unknown[] }>().items).toHaveLength(1);
  });

  it('is for owners only: an admin gets 403 and nothing is exported', async () => {
    const admin = await t.addMember(owner, tenantId, 'admin');
    const response = await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/export`, as: admin });
    expect(response.statusCode).toBe(403);
    expect(response.body).not.toContain('"type":"account"');
  });
});
