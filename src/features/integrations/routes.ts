/**
 * Integrations a tenant's admins install, with the third-party credentials they hold
 * (field-encrypted under the tenant's data key, never returned after creation: only the last
 * four characters as a hint; rotatable, with a reminder alert when older than the configured
 * age), and outbound webhooks on chosen event types (delivery.ts signs and sends them). Every
 * URL passes the egress guard when saved and again on every connection.
 */
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import Type from 'typebox';
import type { Keyring } from '../../kernel/crypto/envelope.ts';
import { generateToken } from '../../kernel/crypto/tokens.ts';
import type { Tx } from '../../kernel/db/database.ts';
import { AppError } from '../../kernel/http/errors.ts';
import { tenantRoute, type RouteDefinition } from '../../kernel/http/routes.ts';
import { keysetPage, ListQuery, page, TenantParams, Timestamp, Uuid } from '../../kernel/http/schemas.ts';
import type { EgressGuard } from '../../kernel/net/egress.ts';

const Name = Type.String({ minLength: 1, maxLength: 200 });
const Credential = Type.String({ minLength: 8, maxLength: 4096, description: 'The secret the third party issued (API key, token); stored encrypted, never shown again' });
/** An audit action (account.created), a family (account.*) or every event (*). */
const EventType = Type.String({ maxLength: 100, pattern: '^(\\*|[a-z_]+(\\.[a-z_]+)*(\\.\\*)?)$' });
const Url = Type.String({ minLength: 10, maxLength: 2000, description: 'http(s) URL of the receiver' });

const Integration = Type.Object({
  id: Uuid,
  name: Type.String(),
  provider: Type.String(),
  credentialHint: Type.String({ description: 'The last four characters of the credential' }),
  credentialRotatedAt: Timestamp,
  rotationDue: Type.Boolean({ description: 'The credential is older than the platform reminder age' }),
  createdBy: Uuid,
  createdAt: Timestamp,
});
const IntegrationBody = Type.Object({ name: Name, provider: Type.String({ minLength: 1, maxLength: 100, pattern: '^[a-z0-9][a-z0-9._-]*$' }), credential: Credential }, { additionalProperties: false });
const CredentialBody = Type.Object({ credential: Credential }, { additionalProperties: false });
const IntegrationParams = Type.Object({ tenantId: Uuid, integrationId: Uuid }, { additionalProperties: false });

const Webhook = Type.Object({
  id: Uuid,
  url: Type.String({ description: 'The origin and the last characters of the URL: the whole URL is kept encrypted and never shown again (some receivers put a secret in it)' }),
  eventTypes: Type.Array(Type.String()),
  enabled: Type.Boolean(),
  createdBy: Uuid,
  createdAt: Timestamp,
});
const WebhookWithSecret = Type.Object({ ...Webhook.properties, secret: Type.String({ description: 'The signing secret, shown once' }) });
const WebhookBody = Type.Object({ url: Url, eventTypes: Type.Array(EventType, { minItems: 1, maxItems: 50, uniqueItems: true }) }, { additionalProperties: false });
const WebhookPatch = Type.Object(
  { url: Type.Optional(Url), eventTypes: Type.Optional(Type.Array(EventType, { minItems: 1, maxItems: 50, uniqueItems: true })), enabled: Type.Optional(Type.Boolean()) },
  { additionalProperties: false, minProperties: 1 },
);
const WebhookParams = Type.Object({ tenantId: Uuid, webhookId: Uuid }, { additionalProperties: false });
const Delivery = Type.Object({
  id: Uuid,
  eventId: Uuid,
  action: Type.String(),
  status: Type.Union([Type.Literal('pending'), Type.Literal('succeeded'), Type.Literal('failed')]),
  attempts: Type.Integer(),
  lastStatus: Type.Union([Type.Integer(), Type.Null()]),
  lastError: Type.Union([Type.String(), Type.Null()]),
  nextAttemptAt: Type.Union([Timestamp, Type.Null()]),
  createdAt: Timestamp,
  deliveredAt: Type.Union([Timestamp, Type.Null()]),
});

const hint = (credential: string) => credential.slice(-4);
export const credentialPlace = (tenantId: string, rowId: string) => ({ tenantId, table: 'integrations', column: 'credential', rowId });
export const secretPlace = (tenantId: string, rowId: string) => ({ tenantId, table: 'webhooks', column: 'secret', rowId });
export const urlPlace = (tenantId: string, rowId: string) => ({ tenantId, table: 'webhooks', column: 'url', rowId });

/** What admins and the audit log see of a webhook URL: its origin and the last four characters of the rest. */
export function redactUrl(url: string): string {
  const parsed = new URL(url);
  const rest = `${parsed.pathname}${parsed.search}`;
  return `${parsed.origin}/${rest.length > 1 ? `…${rest.slice(-4)}` : ''}`;
}

export interface IntegrationOptions {
  readonly keyring: Keyring;
  readonly egress: EgressGuard;
  /** Credentials older than this get rotationDue and a reminder alert. */
  readonly credentialMaxAgeDays: number;
}

async function assertDestination(egress: EgressGuard, url: string): Promise<void> {
  try {
    await egress.checkDestination(url);
  } catch (error) {
    throw new AppError('integration.url_not_allowed', { detail: (error as Error).message });
  }
}

function toWebhook(row: { id: string; url: string; event_types: string[]; enabled: boolean; created_by: string; created_at: Date }) {
  return { id: row.id, url: row.url, eventTypes: row.event_types, enabled: row.enabled, createdBy: row.created_by, createdAt: row.created_at.toISOString() };
}

async function findWebhook(tx: Tx, tenantId: string, id: string) {
  const row = await tx.selectFrom('webhooks').select(['id', 'url', 'event_types', 'enabled', 'created_by', 'created_at']).where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst();
  if (!row) throw new AppError('not_found');
  return row;
}

/** Webhooks start at the tenant's current log head: an old event is not sent to a new receiver. */
async function startCursor(tx: Tx, tenantId: string): Promise<void> {
  await sql`insert into webhook_cursors (tenant_id, last_seq)
    select ${tenantId}::uuid, coalesce((select seq from audit_chain_heads where tenant_id = ${tenantId}::uuid), 0)
    on conflict (tenant_id) do nothing`.execute(tx);
}

export function integrationRoutes(options: IntegrationOptions): RouteDefinition[] {
  const { keyring, egress, credentialMaxAgeDays } = options;
  const toIntegration = (row: { id: string; name: string; provider: string; credential_hint: string; credential_rotated_at: Date; created_by: string; created_at: Date }) => ({
    id: row.id,
    name: row.name,
    provider: row.provider,
    credentialHint: row.credential_hint,
    credentialRotatedAt: row.credential_rotated_at.toISOString(),
    rotationDue: row.credential_rotated_at.getTime() < Date.now() - credentialMaxAgeDays * 86_400_000,
    createdBy: row.created_by,
    createdAt: row.created_at.toISOString(),
  });
  const INTEGRATION_COLUMNS = ['id', 'name', 'provider', 'credential_hint', 'credential_rotated_at', 'created_by', 'created_at'] as const;

  return [
    tenantRoute({
      method: 'GET',
      url: '/api/v1/tenants/:tenantId/integrations',
      permission: 'integrations.manage',
      schema: { summary: 'Integrations installed in the tenant (credentials never shown)', tags: ['integrations'], params: TenantParams, querystring: ListQuery, response: { 200: page(Integration) } },
      async handler({ tx, tenantId, query }) {
        const builder = tx.selectFrom('integrations').select(INTEGRATION_COLUMNS).where('tenant_id', '=', tenantId);
        return keysetPage(builder, query, { by: ['created_at', 'id'] }, toIntegration);
      },
    }),

    tenantRoute({
      method: 'POST',
      url: '/api/v1/tenants/:tenantId/integrations',
      permission: 'integrations.manage',
      status: 201,
      schema: { summary: 'Install an integration with its third-party credential', tags: ['integrations'], params: TenantParams, body: IntegrationBody, response: { 201: Integration } },
      async handler({ tx, tenantId, principal, body, audit }) {
        const id = randomUUID();
        const row = await tx
          .insertInto('integrations')
          .values({
            tenant_id: tenantId,
            id,
            name: body.name.trim(),
            provider: body.provider,
            credential: await keyring.encrypt(tx, credentialPlace(tenantId, id), body.credential),
            credential_hint: hint(body.credential),
            created_by: principal.userId,
          })
          .returning(INTEGRATION_COLUMNS)
          .executeTakeFirstOrThrow();
        await audit({ action: 'integration.created', target: { type: 'integration', id }, metadata: { name: row.name, provider: row.provider } });
        return toIntegration(row);
      },
    }),

    tenantRoute({
      method: 'PUT',
      url: '/api/v1/tenants/:tenantId/integrations/:integrationId/credential',
      permission: 'integrations.manage',
      schema: { summary: "Rotate an integration's credential", tags: ['integrations'], params: IntegrationParams, body: CredentialBody, response: { 200: Integration } },
      async handler({ tx, tenantId, params, body, audit }) {
        const id = params.integrationId.toLowerCase();
        const row = await tx
          .updateTable('integrations')
          .set({ credential: await keyring.encrypt(tx, credentialPlace(tenantId, id), body.credential), credential_hint: hint(body.credential), credential_rotated_at: sql`now()` })
          .where('tenant_id', '=', tenantId)
          .where('id', '=', id)
          .returning(INTEGRATION_COLUMNS)
          .executeTakeFirst();
        if (!row) throw new AppError('not_found');
        await audit({ action: 'integration.credential_rotated', target: { type: 'integration', id } });
        return toIntegration(row);
      },
    }),

    tenantRoute({
      method: 'DELETE',
      url: '/api/v1/tenants/:tenantId/integrations/:integrationId',
      permission: 'integrations.manage',
      status: 204,
      schema: { summary: 'Remove an integration and its credential', tags: ['integrations'], params: IntegrationParams, response: { 204: Type.Null() } },
      async handler({ tx, tenantId, params, audit }) {
        const id = params.integrationId.toLowerCase();
        const row = await tx.deleteFrom('integrations').where('tenant_id', '=', tenantId).where('id', '=', id).returning(['name']).executeTakeFirst();
        if (!row) throw new AppError('not_found');
        await audit({ action: 'integration.deleted', target: { type: 'integration', id }, metadata: { name: row.name } });
      },
    }),

    tenantRoute({
      method: 'GET',
      url: '/api/v1/tenants/:tenantId/webhooks',
      permission: 'integrations.manage',
      schema: { summary: 'Outbound webhooks (secrets never shown)', tags: ['integrations'], params: TenantParams, querystring: ListQuery, response: { 200: page(Webhook) } },
      async handler({ tx, tenantId, query }) {
        const builder = tx.selectFrom('webhooks').select(['id', 'url', 'event_types', 'enabled', 'created_by', 'created_at']).where('tenant_id', '=', tenantId);
        return keysetPage(builder, query, { by: ['created_at', 'id'] }, toWebhook);
      },
    }),

    tenantRoute({
      method: 'POST',
      url: '/api/v1/tenants/:tenantId/webhooks',
      permission: 'integrations.manage',
      status: 201,
      schema: {
        summary: 'Send chosen events to a URL, signed (HMAC-SHA-256 with a timestamp); the signing secret is shown once',
        tags: ['integrations'],
        params: TenantParams,
        body: WebhookBody,
        response: { 201: WebhookWithSecret },
      },
      async handler({ tx, tenantId, principal, body, audit }) {
        await assertDestination(egress, body.url);
        const id = randomUUID();
        const secret = generateToken('whsec_');
        const row = await tx
          .insertInto('webhooks')
          .values({
            tenant_id: tenantId,
            id,
            url: redactUrl(body.url),
            url_ct: await keyring.encrypt(tx, urlPlace(tenantId, id), body.url),
            event_types: body.eventTypes,
            secret: await keyring.encrypt(tx, secretPlace(tenantId, id), secret),
            created_by: principal.userId,
          })
          .returning(['id', 'url', 'event_types', 'enabled', 'created_by', 'created_at'])
          .executeTakeFirstOrThrow();
        await startCursor(tx, tenantId);
        await audit({ action: 'webhook.created', target: { type: 'webhook', id }, metadata: { url: row.url, eventTypes: body.eventTypes } });
        return { ...toWebhook(row), secret };
      },
    }),

    tenantRoute({
      method: 'PATCH',
      url: '/api/v1/tenants/:tenantId/webhooks/:webhookId',
      permission: 'integrations.manage',
      schema: { summary: 'Change a webhook: URL, event types, or turn it off and on', tags: ['integrations'], params: WebhookParams, body: WebhookPatch, response: { 200: Webhook } },
      async handler({ tx, tenantId, params, body, audit }) {
        const before = await findWebhook(tx, tenantId, params.webhookId.toLowerCase());
        if (body.url !== undefined) await assertDestination(egress, body.url);
        const row = await tx
          .updateTable('webhooks')
          .set({
            ...(body.url !== undefined ? { url: redactUrl(body.url), url_ct: await keyring.encrypt(tx, urlPlace(tenantId, before.id), body.url) } : {}),
            ...(body.eventTypes ? { event_types: body.eventTypes } : {}),
            ...(body.enabled !== undefined ? { enabled: body.enabled } : {}),
          })
          .where('tenant_id', '=', tenantId)
          .where('id', '=', before.id)
          .returning(['id', 'url', 'event_types', 'enabled', 'created_by', 'created_at'])
          .executeTakeFirstOrThrow();
        await audit({
          action: 'webhook.updated',
          target: { type: 'webhook', id: before.id },
          metadata: { before: { url: before.url, eventTypes: before.event_types, enabled: before.enabled }, after: { url: row.url, eventTypes: row.event_types, enabled: row.enabled } },
        });
        return toWebhook(row);
      },
    }),

    tenantRoute({
      method: 'POST',
      url: '/api/v1/tenants/:tenantId/webhooks/:webhookId/rotate-secret',
      permission: 'integrations.manage',
      schema: { summary: "Rotate a webhook's signing secret (the new one is shown once; the old one stops signing at once)", tags: ['integrations'], params: WebhookParams, response: { 200: WebhookWithSecret } },
      async handler({ tx, tenantId, params, audit }) {
        const row = await findWebhook(tx, tenantId, params.webhookId.toLowerCase());
        const secret = generateToken('whsec_');
        await tx.updateTable('webhooks').set({ secret: await keyring.encrypt(tx, secretPlace(tenantId, row.id), secret) }).where('tenant_id', '=', tenantId).where('id', '=', row.id).execute();
        await audit({ action: 'webhook.secret_rotated', target: { type: 'webhook', id: row.id } });
        return { ...toWebhook(row), secret };
      },
    }),

    tenantRoute({
      method: 'DELETE',
      url: '/api/v1/tenants/:tenantId/webhooks/:webhookId',
      permission: 'integrations.manage',
      status: 204,
      schema: { summary: 'Remove a webhook and its delivery log', tags: ['integrations'], params: WebhookParams, response: { 204: Type.Null() } },
      async handler({ tx, tenantId, params, audit }) {
        const row = await findWebhook(tx, tenantId, params.webhookId.toLowerCase());
        await tx.deleteFrom('webhooks').where('tenant_id', '=', tenantId).where('id', '=', row.id).execute();
        await audit({ action: 'webhook.deleted', target: { type: 'webhook', id: row.id }, metadata: { url: row.url } });
      },
    }),

    tenantRoute({
      method: 'GET',
      url: '/api/v1/tenants/:tenantId/webhooks/:webhookId/deliveries',
      permission: 'integrations.manage',
      schema: { summary: "A webhook's delivery log, newest first", tags: ['integrations'], params: WebhookParams, querystring: ListQuery, response: { 200: page(Delivery) } },
      async handler({ tx, tenantId, params, query }) {
        const webhook = await findWebhook(tx, tenantId, params.webhookId.toLowerCase());
        const builder = tx
          .selectFrom('webhook_deliveries')
          .select(['id', 'event_id', 'action', 'status', 'attempts', 'last_status', 'last_error', 'next_attempt_at', 'created_at', 'delivered_at'])
          .where('tenant_id', '=', tenantId)
          .where('webhook_id', '=', webhook.id);
        return keysetPage(builder, query, { by: ['created_at', 'id'], newestFirst: true }, (row) => ({
          id: row.id,
          eventId: row.event_id,
          action: row.action,
          status: row.status,
          attempts: row.attempts,
          lastStatus: row.last_status,
          lastError: row.last_error,
          nextAttemptAt: row.status === 'pending' ? row.next_attempt_at.toISOString() : null,
          createdAt: row.created_at.toISOString(),
          deliveredAt: row.delivered_at ? row.delivered_at.toISOString() : null,
        }));
      },
    }),
  ];
}
