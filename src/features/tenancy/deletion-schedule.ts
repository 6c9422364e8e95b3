/**
 * Tenant deletion by an owner: re-authentication (step-up), the tenant's name typed back, then
 * a grace period (7 days) in which any owner can cancel; afterwards the purge job deletes it
 * as deleteTenant does for operators (crypto-shredding first, then the data; the platform log
 * records it), and its keys leave the backup keystore, so older backups are shredded too.
 * Owners are mailed when a deletion is scheduled: a stolen session cannot delete quietly.
 */
import { sql } from 'kysely';
import Type from 'typebox';
import { recordPlatformEvent, SYSTEM_ACTOR } from '../../kernel/audit/record.ts';
import type { Keyring } from '../../kernel/crypto/envelope.ts';
import { runAfterCommit, type Database } from '../../kernel/db/database.ts';
import { AppError } from '../../kernel/http/errors.ts';
import { actorOf } from '../../kernel/http/principal.ts';
import { tenantRoute, type RouteDefinition } from '../../kernel/http/routes.ts';
import { TenantParams, Timestamp, Uuid } from '../../kernel/http/schemas.ts';
import type { Mailer } from '../../kernel/mail/mailer.ts';
import { OWNER_ROLE } from '../access/index.ts';
import { deleteTenant } from './deletion.ts';

export const DELETION_GRACE_DAYS = 7;

const DeletionStatus = Type.Object({
  status: Type.Union([Type.Literal('none'), Type.Literal('scheduled')]),
  requestedAt: Type.Union([Timestamp, Type.Null()]),
  requestedBy: Type.Union([Uuid, Type.Null()]),
  dueAt: Type.Union([Timestamp, Type.Null()]),
});
const ScheduleBody = Type.Object(
  { confirmName: Type.String({ minLength: 1, maxLength: 200, description: "The tenant's name, typed back exactly" }) },
  { additionalProperties: false },
);

const iso = (value: Date | null) => (value ? value.toISOString() : null);

export function deletionRoutes(options: { mailer: Mailer; appUrl: string }): RouteDefinition[] {
  const { mailer, appUrl } = options;
  return [
    tenantRoute({
      method: 'GET',
      url: '/api/v1/tenants/:tenantId/deletion',
      permission: 'settings.read',
      schema: { summary: "Whether the tenant's deletion is scheduled, and when it falls due", tags: ['tenancy'], params: TenantParams, response: { 200: DeletionStatus } },
      async handler({ tx, tenantId }) {
        const row = await tx.selectFrom('tenants').select(['deletion_requested_at', 'deletion_requested_by', 'deletion_due_at']).where('id', '=', tenantId).executeTakeFirstOrThrow();
        return {
          status: row.deletion_due_at ? ('scheduled' as const) : ('none' as const),
          requestedAt: iso(row.deletion_requested_at),
          requestedBy: row.deletion_requested_by,
          dueAt: iso(row.deletion_due_at),
        };
      },
    }),

    tenantRoute({
      method: 'POST',
      url: '/api/v1/tenants/:tenantId/deletion',
      permission: 'tenant.delete',
      stepUp: true,
      status: 202,
      schema: {
        summary: `Schedule the tenant's deletion: after ${DELETION_GRACE_DAYS} days its keys are destroyed and its data purged; owners can cancel until then`,
        tags: ['tenancy'],
        params: TenantParams,
        body: ScheduleBody,
        response: { 202: DeletionStatus },
      },
      async handler({ tx, tenantId, principal, body, audit, request, meta }) {
        const tenant = await tx.selectFrom('tenants').select(['name', 'deletion_due_at']).where('id', '=', tenantId).forUpdate().executeTakeFirstOrThrow();
        if (tenant.deletion_due_at) throw new AppError('tenant.deletion_scheduled');
        // The name typed back: deleting the wrong tenant cannot be undone.
        if (body.confirmName !== tenant.name) throw new AppError('validation.failed', { detail: 'The confirmation does not match the tenant name' });
        const row = await tx
          .updateTable('tenants')
          .set({
            deletion_requested_at: sql`now()`,
            deletion_requested_by: principal.userId,
            deletion_due_at: sql`now() + make_interval(days => ${DELETION_GRACE_DAYS})`,
          })
          .where('id', '=', tenantId)
          .returning(['deletion_requested_at', 'deletion_requested_by', 'deletion_due_at'])
          .executeTakeFirstOrThrow();
        const event = { action: 'tenant.deletion_scheduled', target: { type: 'tenant', id: tenantId }, metadata: { dueAt: iso(row.deletion_due_at) } };
        await audit(event);
        await recordPlatformEvent(tx, actorOf(principal), meta, { ...event, tenantId });
        const owners = await tx
          .selectFrom('memberships as m')
          .innerJoin('users as u', 'u.id', 'm.user_id')
          .select('u.email')
          .where('m.tenant_id', '=', tenantId)
          .where('m.role', '=', OWNER_ROLE)
          .where('m.suspended_at', 'is', null)
          .execute();
        const due = row.deletion_due_at!.toISOString();
        runAfterCommit(() => {
          for (const owner of owners) {
            mailer.sendInBackground(
              {
                to: owner.email,
                subject: `${tenant.name.slice(0, 100)} is scheduled for deletion on CustomerNode`,
                text: `${principal.name} (${principal.email}) scheduled the deletion of ${tenant.name}.\n\nOn ${due} its encryption keys will be destroyed and its data purged; this cannot be undone.\nAny owner can cancel until then: ${appUrl}/tenants/${tenantId}/settings (DELETE /api/v1/tenants/${tenantId}/deletion).\n\nIf you did not expect this, cancel it and review your tenant's audit log.\n`,
              },
              request.log,
            );
          }
        });
        return { status: 'scheduled' as const, requestedAt: iso(row.deletion_requested_at), requestedBy: row.deletion_requested_by, dueAt: due };
      },
    }),

    tenantRoute({
      method: 'DELETE',
      url: '/api/v1/tenants/:tenantId/deletion',
      permission: 'tenant.delete',
      status: 204,
      schema: { summary: "Cancel the tenant's scheduled deletion (during the grace period)", tags: ['tenancy'], params: TenantParams, response: { 204: Type.Null() } },
      async handler({ tx, tenantId, principal, audit, meta }) {
        const tenant = await tx.selectFrom('tenants').select(['deletion_due_at']).where('id', '=', tenantId).forUpdate().executeTakeFirstOrThrow();
        if (!tenant.deletion_due_at) throw new AppError('tenant.deletion_not_scheduled');
        await tx.updateTable('tenants').set({ deletion_requested_at: null, deletion_requested_by: null, deletion_due_at: null }).where('id', '=', tenantId).execute();
        const event = { action: 'tenant.deletion_cancelled', target: { type: 'tenant', id: tenantId }, metadata: { dueAt: iso(tenant.deletion_due_at) } };
        await audit(event);
        await recordPlatformEvent(tx, actorOf(principal), meta, { ...event, tenantId });
      },
    }),
  ];
}

/**
 * Deletes every tenant whose grace period has passed (and that nobody cancelled): the purge job.
 * forgetBackupKeys removes each tenant's keys from the backup keystore once it is deleted.
 */
export async function purgeDueTenants(
  db: Database,
  keyring: Keyring,
  forgetBackupKeys?: (tenantId: string) => Promise<unknown>,
): Promise<{ deleted: string[] }> {
  const due = await db
    .systemDb({ reason: 'find tenants whose scheduled deletion has fallen due' })
    .transaction((tx) =>
      tx.selectFrom('tenants').select(['id', 'name']).where('deleted_at', 'is', null).where('deletion_due_at', '<=', sql<Date>`now()`).orderBy('deletion_due_at').execute(),
    );
  const deleted: string[] = [];
  for (const tenant of due) {
    // onlyIfDue: checked again under the tenant row's lock, so a cancellation that won the race is kept.
    const result = await deleteTenant(db, keyring, { tenantId: tenant.id, confirmName: tenant.name, actor: SYSTEM_ACTOR, onlyIfDue: true });
    if (result === null) continue;
    await forgetBackupKeys?.(tenant.id);
    deleted.push(tenant.id);
  }
  return { deleted };
}

/** Runs purgeDueTenants every intervalMinutes; a failing pass is logged and retried next time. */
export function startDeletionPurge(
  db: Database,
  keyring: Keyring,
  intervalMinutes: number,
  log: { info(object: object, message: string): void; error(object: object, message: string): void },
  forgetBackupKeys?: (tenantId: string) => Promise<unknown>,
): () => void {
  let running = false;
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    purgeDueTenants(db, keyring, forgetBackupKeys)
      .then(({ deleted }) => {
        if (deleted.length > 0) log.info({ deleted }, 'deleted tenants whose grace period had passed');
      })
      .catch((error: unknown) => log.error({ err: error instanceof Error ? { message: error.message } : String(error) }, 'tenant deletion purge failed'))
      .finally(() => {
        running = false;
      });
  }, intervalMinutes * 60_000);
  timer.unref();
  return () => clearInterval(timer);
}
