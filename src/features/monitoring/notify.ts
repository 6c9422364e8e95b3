/**
 * Delivers a new alert: a line in the operator log, and a mail to the tenant's admins and
 * owners through the mail transport. Delivery failures are logged, never retried in a loop.
 */
import type { Database } from '../../kernel/db/database.ts';
import type { Mailer } from '../../kernel/mail/mailer.ts';
import { PRIVILEGED_ROLES } from '../access/index.ts';
import type { NewAlert } from './alerts.ts';

interface Log {
  info(object: object, message: string): void;
  warn(object: object, message: string): void;
  error(object: object, message: string): void;
}

export function createAlertNotifier(options: { db: Database; mailer: Mailer; log: Log; appUrl: string }): (alert: NewAlert) => Promise<void> {
  const { db, mailer, log, appUrl } = options;
  return async (alert) => {
    const level = alert.severity === 'high' ? 'error' : alert.severity === 'medium' ? 'warn' : 'info';
    log[level]({ securityAlert: { tenantId: alert.tenantId, id: alert.id, rule: alert.rule, severity: alert.severity, subject: alert.subject } }, 'security alert raised');
    const admins = await db.withTenant(alert.tenantId, (tx) =>
      tx
        .selectFrom('memberships as m')
        .innerJoin('users as u', 'u.id', 'm.user_id')
        .select('u.email')
        .where('m.tenant_id', '=', alert.tenantId)
        .where('m.role', 'in', PRIVILEGED_ROLES)
        .execute(),
    );
    for (const { email } of admins) {
      try {
        await mailer.send(
          {
            to: email,
            subject: `CustomerNode security alert (${alert.severity}): ${alert.rule.replaceAll('_', ' ')}`,
            text: `A security alert was raised in one of your CustomerNode tenants.\n\nRule: ${alert.rule}\nSeverity: ${alert.severity}\nSubject: ${alert.subject}\n\nReview it at ${appUrl}/tenants/${alert.tenantId}/security-alerts (or GET /api/v1/tenants/${alert.tenantId}/security-alerts), then acknowledge or resolve it.\n`,
          },
          log,
        );
      } catch (error) {
        log.error({ err: error instanceof Error ? { message: error.message } : String(error), alertId: alert.id }, 'could not mail a security alert');
      }
    }
  };
}
