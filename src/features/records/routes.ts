import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import Type from 'typebox';
import type { Keyring } from '../../kernel/crypto/envelope.ts';
import type { Tx } from '../../kernel/db/database.ts';
import { AppError } from '../../kernel/http/errors.ts';
import { tenantRoute, type RouteDefinition } from '../../kernel/http/routes.ts';
import { decodeCursor, ListQuery, page, TenantItemParams, TenantParams, toPage } from '../../kernel/http/schemas.ts';
import { emailIndex, openContactFields, sealContactFields } from './contacts-crypto.ts';
import { Account, Contact, ContactListQuery, CreateAccountBody, CreateContactBody, UpdateAccountBody, UpdateContactBody } from './schemas.ts';
import * as store from './store.ts';

type AccountRow = NonNullable<Awaited<ReturnType<typeof store.getAccount>>>;
type ContactRow = NonNullable<Awaited<ReturnType<typeof store.getContact>>>;

const toAccount = (row: AccountRow) => ({
  id: row.id,
  name: row.name,
  domain: row.domain,
  description: row.description,
  createdAt: row.created_at.toISOString(),
  updatedAt: row.updated_at.toISOString(),
});

async function toContact(keyring: Keyring, tx: Tx, tenantId: string, row: ContactRow) {
  const { email, phone } = await openContactFields(keyring, tx, tenantId, row);
  return {
    id: row.id,
    accountId: row.account_id,
    name: row.name,
    email,
    phone,
    createdAt: row.created_at.toISOString(),
    updatedAt: row.updated_at.toISOString(),
  };
}

const normalizeDomain = (domain: string | null | undefined) => (domain == null ? domain : domain.toLowerCase());
const normalizeEmail = (email: string | null | undefined) => (email == null ? email : email.trim().toLowerCase());

/** An accountId that is not in this tenant answers 404, like any id of another tenant. */
async function assertAccountInTenant(tx: Parameters<typeof store.getAccount>[0], tenantId: string, accountId: string) {
  if (!(await store.getAccount(tx, tenantId, accountId))) throw new AppError('not_found', { detail: 'No such account' });
}

const accounts: RouteDefinition[] = [
  tenantRoute({
    method: 'GET',
    url: '/api/v1/tenants/:tenantId/accounts',
    permission: 'records.read',
    schema: { summary: 'List accounts', tags: ['records'], params: TenantParams, querystring: ListQuery, response: { 200: page(Account) } },
    async handler({ tx, tenantId, query }) {
      const limit = query.limit ?? 50;
      const after = decodeCursor(query.cursor);
      return toPage(await store.listAccounts(tx, tenantId, { limit, ...(after ? { after } : {}) }), limit, toAccount);
    },
  }),
  tenantRoute({
    method: 'POST',
    url: '/api/v1/tenants/:tenantId/accounts',
    permission: 'records.write',
    status: 201,
    schema: { summary: 'Create an account', tags: ['records'], params: TenantParams, body: CreateAccountBody, response: { 201: Account } },
    async handler({ tx, tenantId, body, audit }) {
      const row = await store.insertAccount(tx, tenantId, {
        name: body.name,
        domain: normalizeDomain(body.domain) ?? null,
        description: body.description ?? null,
      });
      await audit({ action: 'account.created', target: { type: 'account', id: row.id } });
      return toAccount(row);
    },
  }),
  tenantRoute({
    method: 'GET',
    url: '/api/v1/tenants/:tenantId/accounts/:id',
    permission: 'records.read',
    schema: { summary: 'Get an account', tags: ['records'], params: TenantItemParams, response: { 200: Account } },
    prefetch: ({ db, tenantId, params }) => store.accountById(db, tenantId, params.id),
    async handler({ prefetched: [row] }) {
      if (!row) throw new AppError('not_found');
      return toAccount(row);
    },
  }),
  tenantRoute({
    method: 'PATCH',
    url: '/api/v1/tenants/:tenantId/accounts/:id',
    permission: 'records.write',
    schema: { summary: 'Update an account', tags: ['records'], params: TenantItemParams, body: UpdateAccountBody, response: { 200: Account } },
    async handler({ tx, tenantId, params, body, audit }) {
      const changes = { ...body, ...(body.domain !== undefined ? { domain: normalizeDomain(body.domain) ?? null } : {}) };
      const row = await store.updateAccount(tx, tenantId, params.id, changes);
      if (!row) throw new AppError('not_found');
      await audit({ action: 'account.updated', target: { type: 'account', id: row.id }, metadata: { fields: Object.keys(body) } });
      return toAccount(row);
    },
  }),
  tenantRoute({
    method: 'DELETE',
    url: '/api/v1/tenants/:tenantId/accounts/:id',
    permission: 'records.write',
    status: 204,
    schema: { summary: 'Delete an account (it must have no contacts)', tags: ['records'], params: TenantItemParams, response: { 204: Type.Null() } },
    async handler({ tx, tenantId, params, audit }) {
      if (!(await store.getAccount(tx, tenantId, params.id))) throw new AppError('not_found');
      if (await store.accountHasContacts(tx, tenantId, params.id)) throw new AppError('account.has_contacts');
      await store.deleteAccount(tx, tenantId, params.id);
      await audit({ action: 'account.deleted', target: { type: 'account', id: params.id } });
    },
  }),
];

const contacts = (keyring: Keyring): RouteDefinition[] => [
  tenantRoute({
    method: 'GET',
    url: '/api/v1/tenants/:tenantId/contacts',
    permission: 'records.read',
    schema: {
      summary: 'List contacts',
      description: 'With email: the contacts whose email is exactly that address (case-insensitive), found by a blind index; emails are stored only encrypted.',
      tags: ['records'],
      params: TenantParams,
      querystring: ContactListQuery,
      response: { 200: page(Contact) },
    },
    async handler({ tx, tenantId, query }) {
      const limit = query.limit ?? 50;
      const after = decodeCursor(query.cursor);
      const email = normalizeEmail(query.email);
      const rows = await store.listContacts(tx, tenantId, { limit, ...(after ? { after } : {}), ...(email ? { emailIndex: await emailIndex(keyring, tx, tenantId, email) } : {}) });
      const { items, nextCursor } = toPage(rows, limit, (row) => row);
      // One at a time: the first may load the tenant's key in this transaction.
      const contacts = [];
      for (const row of items) contacts.push(await toContact(keyring, tx, tenantId, row));
      return { items: contacts, nextCursor };
    },
  }),
  tenantRoute({
    method: 'POST',
    url: '/api/v1/tenants/:tenantId/contacts',
    permission: 'records.write',
    status: 201,
    schema: { summary: 'Create a contact', tags: ['records'], params: TenantParams, body: CreateContactBody, response: { 201: Contact } },
    async handler({ tx, tenantId, body, audit }) {
      await assertAccountInTenant(tx, tenantId, body.accountId);
      // The id is chosen here: the ciphertexts are bound to it.
      const id = randomUUID();
      const sealed = await sealContactFields(keyring, tx, tenantId, id, { email: normalizeEmail(body.email) ?? null, phone: body.phone ?? null });
      const row = await store.insertContact(tx, tenantId, { id, account_id: body.accountId, name: body.name, ...sealed });
      await audit({ action: 'contact.created', target: { type: 'contact', id: row.id } });
      return toContact(keyring, tx, tenantId, row);
    },
  }),
  tenantRoute({
    method: 'GET',
    url: '/api/v1/tenants/:tenantId/contacts/:id',
    permission: 'records.read',
    schema: { summary: 'Get a contact', tags: ['records'], params: TenantItemParams, response: { 200: Contact } },
    prefetch: ({ db, tenantId, params }) => store.contactById(db, tenantId, params.id),
    async handler({ tx, tenantId, prefetched: [row] }) {
      if (!row) throw new AppError('not_found');
      return toContact(keyring, tx, tenantId, row);
    },
  }),
  tenantRoute({
    method: 'PATCH',
    url: '/api/v1/tenants/:tenantId/contacts/:id',
    permission: 'records.write',
    schema: { summary: 'Update a contact', tags: ['records'], params: TenantItemParams, body: UpdateContactBody, response: { 200: Contact } },
    async handler({ tx, tenantId, params, body, audit }) {
      if (body.accountId !== undefined) await assertAccountInTenant(tx, tenantId, body.accountId);
      const sealed = await sealContactFields(keyring, tx, tenantId, params.id, {
        ...(body.email !== undefined ? { email: normalizeEmail(body.email) ?? null } : {}),
        ...(body.phone !== undefined ? { phone: body.phone } : {}),
      });
      const row = await store.updateContact(tx, tenantId, params.id, {
        ...(body.name !== undefined ? { name: body.name } : {}),
        ...(body.accountId !== undefined ? { account_id: body.accountId } : {}),
        ...sealed,
      });
      if (!row) throw new AppError('not_found');
      // Field names only: contact values are personal data and stay out of the log.
      await audit({ action: 'contact.updated', target: { type: 'contact', id: row.id }, metadata: { fields: Object.keys(body) } });
      return toContact(keyring, tx, tenantId, row);
    },
  }),
  tenantRoute({
    method: 'DELETE',
    url: '/api/v1/tenants/:tenantId/contacts/:id',
    permission: 'records.write',
    status: 204,
    schema: { summary: 'Delete a contact', tags: ['records'], params: TenantItemParams, response: { 204: Type.Null() } },
    async handler({ tx, tenantId, params, audit }) {
      if (!(await store.deleteContact(tx, tenantId, params.id))) throw new AppError('not_found');
      await audit({ action: 'contact.deleted', target: { type: 'contact', id: params.id } });
    },
  }),
];

/** Rows per read of a tenant export: memory stays bounded however large the tenant. */
const EXPORT_CHUNK = 500;

/**
 * A tenant owner's copy of their tenant's records (JSON lines, streamed): a header line, then
 * every account and every contact, with encrypted fields decrypted. Audited before the first byte.
 */
const tenantExport = (keyring: Keyring): RouteDefinition =>
  tenantRoute({
    method: 'GET',
    url: '/api/v1/tenants/:tenantId/export',
    permission: 'tenant.export',
    stepUp: true,
    noHead: true, // a HEAD would record an export that never happened
    schema: {
      summary: "Download this tenant's records as JSON lines (accounts, then contacts, decrypted); owners only, after a recent authentication; audited",
      tags: ['records'],
      params: TenantParams,
      response: { 200: Type.String() },
    },
    async handler({ tenantId, reply, audit, readLater, countRead }) {
      const exportedAt = new Date().toISOString();
      await audit({ action: 'tenant.exported', metadata: { format: 'jsonl', at: exportedAt } });
      async function* lines(): AsyncGenerator<string> {
        yield `${JSON.stringify({ type: 'export', format: 1, tenantId, exportedAt })}\n`;
        for (let after = ''; ; ) {
          const rows = await readLater((chunkTx) => store.exportAccounts(chunkTx, tenantId, after, EXPORT_CHUNK));
          if (rows.length === 0) break;
          await countRead(rows.length);
          yield rows.map((row) => `${JSON.stringify({ type: 'account', ...toAccount(row) })}\n`).join('');
          after = rows.at(-1)!.id;
        }
        for (let after = ''; ; ) {
          const chunk = await readLater(async (chunkTx) => {
            const rows = await store.exportContacts(chunkTx, tenantId, after, EXPORT_CHUNK);
            return { last: rows.at(-1)?.id, lines: await Promise.all(rows.map(async (row) => `${JSON.stringify({ type: 'contact', ...(await toContact(keyring, chunkTx, tenantId, row)) })}\n`)) };
          });
          if (chunk.last === undefined) break;
          await countRead(chunk.lines.length);
          yield chunk.lines.join('');
          after = chunk.last;
        }
      }
      void reply.type('application/x-ndjson');
      void reply.header('content-disposition', `attachment; filename="tenant-${tenantId}.jsonl"`);
      return Readable.from(lines());
    },
  });

export function recordsRoutes(keyring: Keyring): RouteDefinition[] {
  return [...accounts, ...contacts(keyring), tenantExport(keyring)];
}
