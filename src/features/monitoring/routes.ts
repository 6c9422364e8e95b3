/** Security alerts as a tenant's admins see and handle them (API.md: GET .../security-alerts). */
import Type from 'typebox';
import { AppError, notFound } from '../../kernel/http/errors.ts';
import { tenantRoute, type RouteDefinition } from '../../kernel/http/routes.ts';
import { keysetPage, ListQuery, page, TenantItemParams, TenantParams, Timestamp, Uuid } from '../../kernel/http/schemas.ts';

const Status = Type.Union([Type.Literal('open'), Type.Literal('acknowledged'), Type.Literal('resolved')]);
const Alert = Type.Object({
  id: Uuid,
  rule: Type.String(),
  severity: Type.String(),
  at: Timestamp,
  subject: Type.String(),
  details: Type.Record(Type.String(), Type.Unknown()),
  evidence: Type.Array(Uuid),
  status: Status,
});
const COLUMNS = ['id', 'rule', 'severity', 'at', 'subject', 'details', 'evidence', 'status'] as const;

function present(row: { id: string; rule: string; severity: string; at: Date; subject: string; details: Record<string, unknown>; evidence: string[]; status: 'open' | 'acknowledged' | 'resolved' }) {
  return { id: row.id, rule: row.rule, severity: row.severity, at: row.at.toISOString(), subject: row.subject, details: row.details, evidence: row.evidence, status: row.status };
}

export function monitoringRoutes(): RouteDefinition[] {
  return [
    tenantRoute({
      method: 'GET',
      url: '/api/v1/tenants/:tenantId/security-alerts',
      permission: 'alerts.read',
      schema: { summary: "The tenant's security alerts, oldest first", tags: ['alerts'], params: TenantParams, querystring: ListQuery, response: { 200: page(Alert) } },
      async handler({ tx, tenantId, query }) {
        const builder = tx.selectFrom('security_alerts').select([...COLUMNS, 'at as created_at']).where('tenant_id', '=', tenantId);
        return keysetPage(builder, query, { by: ['at', 'id'] }, present);
      },
    }),
    tenantRoute({
      method: 'PATCH',
      url: '/api/v1/tenants/:tenantId/security-alerts/:id',
      permission: 'alerts.manage',
      schema: {
        summary: 'Acknowledge or resolve an alert (audited)',
        tags: ['alerts'],
        params: TenantItemParams,
        body: Type.Object({ status: Type.Union([Type.Literal('acknowledged'), Type.Literal('resolved')]) }, { additionalProperties: false }),
        response: { 200: Alert },
      },
      async handler({ tx, tenantId, params, body, audit }) {
        const before = await tx.selectFrom('security_alerts').select('status').where('tenant_id', '=', tenantId).where('id', '=', params.id).executeTakeFirst();
        if (!before) throw notFound();
        if (before.status === 'resolved') throw new AppError('validation.failed', { detail: 'A resolved alert stays resolved' });
        const row = await tx
          .updateTable('security_alerts')
          .set({ status: body.status, updated_at: new Date() })
          .where('tenant_id', '=', tenantId)
          .where('id', '=', params.id)
          .returning(COLUMNS)
          .executeTakeFirstOrThrow();
        await audit({ action: `alert.${body.status}`, target: { type: 'security_alert', id: row.id }, metadata: { rule: row.rule, before: before.status, after: body.status } });
        return present(row);
      },
    }),
  ];
}
