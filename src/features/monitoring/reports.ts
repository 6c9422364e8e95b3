/**
 * Reporting suspicious activity: any member (guests included) tells the tenant's admins and
 * the platform's security operators what they saw. The report is an audit event in both
 * logs; the alert rules turn it into an alert on each side (alerts.ts), so it reaches the
 * admins' mail and the operators' stream like any other alert, within the alert interval.
 */
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import Type from 'typebox';
import { recordPlatformEvent } from '../../kernel/audit/record.ts';
import { AppError } from '../../kernel/http/errors.ts';
import { actorOf } from '../../kernel/http/principal.ts';
import { tenantRoute, type RouteDefinition } from '../../kernel/http/routes.ts';
import { TenantParams, Timestamp, Uuid } from '../../kernel/http/schemas.ts';

/** Reports one person may file per tenant and hour: enough for anything real, not a way to flood the admins. */
export const REPORTS_PER_HOUR = 10;

const ReportBody = Type.Object(
  {
    what: Type.String({ minLength: 1, maxLength: 4000, description: 'What you saw, in your own words' }),
    when: Type.Optional(Type.String({ format: 'date-time', description: 'When it happened (ISO 8601)' })),
    eventIds: Type.Optional(Type.Array(Uuid, { maxItems: 20, uniqueItems: true, description: "Related events of this tenant's audit log" })),
  },
  { additionalProperties: false },
);
const ReportReceipt = Type.Object({ id: Uuid, receivedAt: Timestamp });

export function reportRoutes(): RouteDefinition[] {
  return [
    tenantRoute({
      method: 'POST',
      url: '/api/v1/tenants/:tenantId/security-reports',
      permission: 'security.report',
      status: 201,
      schema: {
        summary: "Report suspicious activity to the tenant's admins and the platform's security operators",
        tags: ['security'],
        params: TenantParams,
        body: ReportBody,
        response: { 201: ReportReceipt },
      },
      async handler({ tx, tenantId, principal, body, meta, audit }) {
        const actor = actorOf(principal);
        const recent = await tx
          .selectFrom('audit_events')
          .select((eb) => eb.fn.countAll<number>().as('n'))
          .where('tenant_id', '=', tenantId)
          .where('action', '=', 'security.reported')
          .where('actor_type', '=', actor.type)
          .where('actor_id', '=', actor.id)
          .where('at', '>', sql<Date>`now() - interval '1 hour'`)
          .executeTakeFirstOrThrow();
        if (Number(recent.n) >= REPORTS_PER_HOUR) {
          throw new AppError('rate_limited', { detail: `At most ${REPORTS_PER_HOUR} reports an hour`, headers: { 'retry-after': '3600' } });
        }
        const eventIds = (body.eventIds ?? []).map((id) => id.toLowerCase());
        if (eventIds.length > 0) {
          const found = await tx.selectFrom('audit_events').select('id').where('tenant_id', '=', tenantId).where('id', 'in', eventIds).execute();
          // Like any id outside this tenant: not found, never "exists elsewhere".
          if (found.length !== eventIds.length) throw new AppError('not_found', { detail: 'An event named in eventIds is not in this tenant\'s log' });
        }
        const id = randomUUID();
        const metadata = { what: body.what, when: body.when ?? null, eventIds };
        const target = { type: 'security_report', id };
        await audit({ action: 'security.reported', target, metadata });
        await recordPlatformEvent(tx, actor, meta, { action: 'security.reported', target, metadata, tenantId });
        return { id, receivedAt: new Date().toISOString() };
      },
    }),
  ];
}
