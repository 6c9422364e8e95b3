import type { Selectable } from 'kysely';
import { Readable } from 'node:stream';
import Type from 'typebox';
import { csvField } from '../../kernel/http/csv.ts';
import type { AuditLogView } from '../../kernel/db/schema.ts';
import { AppError } from '../../kernel/http/errors.ts';
import { publicRoute, tenantRoute, type RouteDefinition } from '../../kernel/http/routes.ts';
import type { AuditSigner } from '../../kernel/audit/sealer.ts';
import { asBuffer } from '../../kernel/db/database.ts';
import { verifyTenantLog } from '../../kernel/audit/verify.ts';
import { page, TenantItemParams, TenantParams, Timestamp, Uuid } from '../../kernel/http/schemas.ts';

export const AuditEventSchema = Type.Object({
  id: Uuid,
  seq: Type.Integer(),
  at: Timestamp,
  tenantId: Uuid,
  actor: Type.Object({
    type: Type.String(),
    id: Type.Union([Uuid, Type.Null()]),
    email: Type.Optional(Type.String()),
  }),
  action: Type.String(),
  target: Type.Optional(Type.Object({ type: Type.String(), id: Type.String() })),
  outcome: Type.String(),
  ip: Type.Union([Type.String(), Type.Null()]),
  userAgent: Type.Union([Type.String(), Type.Null()]),
  metadata: Type.Record(Type.String(), Type.Unknown()),
});

const Hex = Type.String({ pattern: '^[0-9a-f]*$' });
const VerifySchema = Type.Object({
  ok: Type.Boolean(),
  count: Type.Integer(),
  head: Type.Object({ seq: Type.Integer(), hash: Hex }),
  firstBad: Type.Optional(Type.Object({ seq: Type.Integer(), id: Type.Union([Uuid, Type.Null()]), reason: Type.String() })),
});
const CheckpointSchema = Type.Object({
  log: Type.Literal('tenant'),
  tenantId: Uuid,
  seq: Type.Integer(),
  hash: Hex,
  at: Timestamp,
  keyId: Type.String(),
  reason: Type.String(),
  signature: Type.String({ description: 'Ed25519 signature (base64) over the JCS of the other fields plus type and v' }),
});

const AuditQuery = Type.Object(
  {
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 50 })),
    cursor: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,17}$' })),
    action: Type.Optional(Type.String({ minLength: 1, maxLength: 100, pattern: '^[a-z_.]+$' })),
    actorId: Type.Optional(Uuid),
    since: Type.Optional(Timestamp),
    until: Type.Optional(Timestamp),
  },
  { additionalProperties: false },
);

/** A record's history shows who did what to it, not from where: no address or user agent. */
const HistoryEventSchema = Type.Omit(AuditEventSchema, ['ip', 'userAgent', 'tenantId']);
const HistoryQuery = Type.Object(
  {
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 50 })),
    cursor: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,17}$' })),
  },
  { additionalProperties: false },
);

type AuditRow = Selectable<AuditLogView>;

const ExportQuery = Type.Object(
  {
    format: Type.Union([Type.Literal('jsonl'), Type.Literal('csv')]),
    since: Type.Optional(Timestamp),
    until: Type.Optional(Timestamp),
  },
  { additionalProperties: false },
);
/** Rows per read of an export: memory stays bounded whatever the log's size. */
const EXPORT_CHUNK = 1000;
const CSV_COLUMNS = ['id', 'seq', 'at', 'actorType', 'actorId', 'actorEmail', 'action', 'targetType', 'targetId', 'outcome', 'ip', 'userAgent', 'requestId', 'metadata', 'hash'] as const;


function csvLine(row: AuditRow): string {
  const values = [row.id, Number(row.seq), row.at.toISOString(), row.actor_type, row.actor_id, row.actor_email, row.action, row.target_type, row.target_id, row.outcome, row.ip, row.user_agent, row.request_id, row.metadata, hashHex(row)];
  return `${values.map(csvField).join(',')}\r\n`;
}

function hashHex(row: AuditRow): string {
  return asBuffer(row.hash).toString('hex');
}

/** An export line: the API's event plus what an offline check of the chain needs. */
function exportLine(row: AuditRow): string {
  return `${JSON.stringify({ ...toEvent(row), requestId: row.request_id, hash: hashHex(row) })}\n`;
}

function toEvent(row: AuditRow) {
  return {
    id: row.id,
    seq: Number(row.seq),
    at: row.at.toISOString(),
    tenantId: row.tenant_id,
    actor: { type: row.actor_type, id: row.actor_id, ...(row.actor_email ? { email: row.actor_email } : {}) },
    action: row.action,
    ...(row.target_type && row.target_id ? { target: { type: row.target_type, id: row.target_id } } : {}),
    outcome: row.outcome,
    ip: row.ip,
    userAgent: row.user_agent,
    metadata: row.metadata,
  };
}

export function auditLogRoutes(signer: AuditSigner): RouteDefinition[] {
  return [
    tenantRoute({
      method: 'GET',
      url: '/api/v1/tenants/:tenantId/audit-events',
      permission: 'audit.read',
      sealsAudit: true,
      schema: { summary: "The tenant's audit log, newest first", tags: ['audit'], params: TenantParams, querystring: AuditQuery, response: { 200: page(AuditEventSchema) } },
      async handler({ tx, tenantId, query }) {
        const limit = query.limit ?? 50;
        if (query.since && query.until && Date.parse(query.since) >= Date.parse(query.until)) {
          throw new AppError('validation.failed', { detail: 'querystring.since must be before querystring.until' });
        }
        let builder = tx.selectFrom('audit_log').selectAll().where('tenant_id', '=', tenantId);
        if (query.cursor) builder = builder.where('seq', '<', query.cursor);
        if (query.action) builder = builder.where('sealed_action', '=', query.action);
        if (query.actorId) builder = builder.where('actor_id', '=', query.actorId);
        if (query.since) builder = builder.where('at', '>=', new Date(query.since));
        if (query.until) builder = builder.where('at', '<', new Date(query.until));
        const rows = await builder.orderBy('seq', 'desc').limit(limit + 1).execute();
        const visible = rows.slice(0, limit);
        return { items: visible.map(toEvent), nextCursor: rows.length > limit ? String(visible.at(-1)?.seq) : null };
      },
    }),

    tenantRoute({
      method: 'GET',
      url: '/api/v1/tenants/:tenantId/audit-events/export',
      permission: 'audit.read',
      stepUp: true,
      sealsAudit: true,
      noHead: true, // a HEAD would record an export that never happened
      schema: {
        summary: "Download this tenant's audit log (JSON lines or CSV, oldest first); needs a recent authentication; the export is audited",
        tags: ['audit'],
        params: TenantParams,
        querystring: ExportQuery,
        response: { 200: Type.String() },
      },
      async handler({ tx, tenantId, query, reply, audit, readLater, countRead }) {
        if (query.since && query.until && Date.parse(query.since) >= Date.parse(query.until)) {
          throw new AppError('validation.failed', { detail: 'querystring.since must be before querystring.until' });
        }
        // The export covers the log as it is now: up to the current head, read in chunks later.
        const head = await tx.selectFrom('audit_chain_heads').select('seq').where('tenant_id', '=', tenantId).executeTakeFirst();
        const upTo = Number(head?.seq ?? 0);
        await audit({ action: 'audit.exported', metadata: { format: query.format, since: query.since ?? null, until: query.until ?? null, upToSeq: upTo } });
        const since = query.since ? new Date(query.since) : null;
        const until = query.until ? new Date(query.until) : null;
        async function* lines(): AsyncGenerator<string> {
          if (query.format === 'csv') yield `${CSV_COLUMNS.join(',')}\r\n`;
          let after = 0;
          for (;;) {
            const rows = await readLater((chunkTx) => {
              let builder = chunkTx.selectFrom('audit_log').selectAll().where('tenant_id', '=', tenantId).where('seq', '>', String(after)).where('seq', '<=', String(upTo));
              if (since) builder = builder.where('at', '>=', since);
              if (until) builder = builder.where('at', '<', until);
              return builder.orderBy('seq').limit(EXPORT_CHUNK).execute();
            });
            if (rows.length === 0) return;
            await countRead(rows.length);
            yield rows.map((row) => (query.format === 'csv' ? csvLine(row) : exportLine(row))).join('');
            after = Number(rows.at(-1)!.seq);
          }
        }
        void reply.type(query.format === 'csv' ? 'text/csv; charset=utf-8' : 'application/x-ndjson');
        void reply.header('content-disposition', `attachment; filename="audit-${tenantId}.${query.format}"`);
        return Readable.from(lines());
      },
    }),

    tenantRoute({
      method: 'GET',
      url: '/api/v1/tenants/:tenantId/accounts/:id/history',
      permission: 'records.read',
      sealsAudit: true,
      schema: {
        summary: "An account's own history (also after it was deleted), newest first",
        tags: ['audit', 'records'],
        params: TenantItemParams,
        querystring: HistoryQuery,
        response: { 200: page(HistoryEventSchema) },
      },
      async handler({ tx, tenantId, params, query }) {
        const limit = query.limit ?? 50;
        let builder = tx
          .selectFrom('audit_log')
          .selectAll()
          .where('tenant_id', '=', tenantId)
          .where('sealed_target_type', '=', 'account')
          .where('sealed_target_id', '=', params.id.toLowerCase());
        if (query.cursor) builder = builder.where('seq', '<', query.cursor);
        const rows = await builder.orderBy('seq', 'desc').limit(limit + 1).execute();
        // Neither the account nor any event about it here: as for any id of another tenant, 404.
        if (rows.length === 0 && !query.cursor) {
          const exists = await tx.selectFrom('accounts').select('id').where('tenant_id', '=', tenantId).where('id', '=', params.id).executeTakeFirst();
          if (!exists) throw new AppError('not_found');
        }
        const visible = rows.slice(0, limit);
        // The response schema is the allow-list: address, user agent and tenant are not serialised.
        return { items: visible.map(toEvent), nextCursor: rows.length > limit ? String(visible.at(-1)?.seq) : null };
      },
    }),

    tenantRoute({
      method: 'GET',
      url: '/api/v1/tenants/:tenantId/audit-events/verify',
      permission: 'audit.read',
      sealsAudit: true,
      schema: {
        summary: "Checks this tenant's hash chain and signed checkpoints; names the first bad event",
        tags: ['audit'],
        params: TenantParams,
        response: { 200: VerifySchema },
      },
      async handler({ tx, tenantId }) {
        return verifyTenantLog(tx, tenantId, signer.publicKeys);
      },
    }),

    tenantRoute({
      method: 'GET',
      url: '/api/v1/tenants/:tenantId/audit-events/checkpoints',
      permission: 'audit.read',
      sealsAudit: true,
      schema: {
        summary: "This tenant's signed checkpoints of its chain head, oldest first (for checking an export offline)",
        tags: ['audit'],
        params: TenantParams,
        response: { 200: Type.Object({ items: Type.Array(CheckpointSchema) }) },
      },
      async handler({ tx, tenantId }) {
        const rows = await tx.selectFrom('audit_checkpoints').selectAll().where('tenant_id', '=', tenantId).orderBy('seq').execute();
        return {
          items: rows.map((row) => ({
            log: 'tenant',
            tenantId,
            seq: Number(row.seq),
            hash: asBuffer(row.hash).toString('hex'),
            at: row.at.toISOString(),
            keyId: row.key_id,
            reason: row.reason,
            signature: asBuffer(row.signature).toString('base64'),
          })),
        };
      },
    }),

    publicRoute({
      method: 'GET',
      url: '/api/v1/audit/signing-keys',
      reason: 'public keys that verify audit checkpoints: meant to be fetched by anyone',
      schema: {
        summary: 'The Ed25519 public keys that sign audit checkpoints (current and retired)',
        tags: ['audit'],
        response: { 200: Type.Object({ items: Type.Array(Type.Object({ keyId: Type.String(), algorithm: Type.Literal('Ed25519'), current: Type.Boolean(), publicKeyPem: Type.String() })) }) },
      },
      async handler() {
        return {
          items: [...signer.publicKeys].map(([keyId, key]) => ({
            keyId,
            algorithm: 'Ed25519' as const,
            current: keyId === signer.keyId,
            publicKeyPem: key.export({ type: 'spki', format: 'pem' }).toString(),
          })),
        };
      },
    }),
  ];
}
