/** Composition root: config -> database -> http. Handles SIGTERM/SIGINT gracefully. */
import pino from 'pino';
import { buildApp, createWebhookEgress } from './app.ts';
import { startRetentionPurge } from './features/audit-log/index.ts';
import { createAlertNotifier, startAlertLoop } from './features/monitoring/index.ts';
import { forgetTenantKeys, startBackupSchedule, targetFromConfig } from './features/backup/index.ts';
import { startDeletionPurge } from './features/tenancy/index.ts';
import { startWebhookWorker } from './features/integrations/index.ts';
import { startReviewJobs } from './features/reviews/index.ts';
import { sealerOptionsOf, startAuditSealer } from './kernel/audit/sealer.ts';
import { loadAuditSigner } from './kernel/audit/signing.ts';
import { createKeyring } from './kernel/crypto/envelope.ts';
import { encryptLegacyTotpSecrets } from './features/identity/index.ts';
import { encryptLegacyContacts } from './features/records/contacts-crypto.ts';
import { encryptLegacySsoSecrets } from './features/sso/index.ts';
import { createMailer } from './kernel/mail/mailer.ts';
import { ConfigError, loadConfig } from './kernel/config/config.ts';
import { openDatabase } from './kernel/db/database.ts';
import { DataDirLockedError } from './kernel/db/lock.ts';

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      process.exit(78); // EX_CONFIG
    }
    throw error;
  }
  const logger = pino({ level: config.logLevel });
  if (config.databaseUrl === undefined) logger.info({ dataDir: config.dataDir }, 'using the embedded database');
  let db;
  try {
    db = await openDatabase({ config, logger });
  } catch (error) {
    if (error instanceof DataDirLockedError) {
      process.stderr.write(`${error.message}\n`);
      process.exit(75); // EX_TEMPFAIL
    }
    throw error;
  }
  const auditSigner = loadAuditSigner(config, logger);
  // The key provider must work before anything is served (fail closed, not on first use).
  const keyring = createKeyring(config, logger);
  const keyHealth = await keyring.provider.health();
  if (!keyHealth.ok) throw new Error(`the key provider is not usable: ${keyHealth.detail}`);
  logger.info({ provider: keyring.provider.kind, keyId: keyring.provider.keyId }, 'key provider ready');
  // Secrets and personal data stored before field encryption are encrypted now (idempotent).
  const legacy = { contacts: await encryptLegacyContacts(db, keyring), totpSeeds: await encryptLegacyTotpSecrets(db, keyring), ssoSecrets: await encryptLegacySsoSecrets(db, keyring) };
  if (legacy.contacts + legacy.totpSeeds + legacy.ssoSecrets > 0) logger.info(legacy, 'encrypted data stored before field encryption');
  const app = await buildApp({ config, db, auditSigner, keyring });
  // Audit events are sealed into their hash chains in batches, outside the request path.
  const stopSealer = startAuditSealer(db, auditSigner, sealerOptionsOf(config.audit), logger);
  // Anomaly rules read the committed audit log every couple of seconds, outside requests.
  const alertMailer = createMailer(config);
  const stopAlerts = startAlertLoop(db, logger, createAlertNotifier({ db, mailer: alertMailer, log: logger, appUrl: config.appUrl }), config.alerts);
  // Events past each tenant's retention are purged at a signed cut, hourly by default.
  const stopPurge = startRetentionPurge(db, auditSigner, config.audit.purgeIntervalMinutes, logger);
  // Scheduled backups, retention and restore drills (BACKUP_SCHEDULE); failures become alerts.
  const backupTarget = targetFromConfig(config);
  const backups = backupTarget === undefined ? null : startBackupSchedule({ db, config, target: backupTarget, provider: keyring.provider }, logger);
  // Tenants whose owners scheduled their deletion are purged once the grace period has passed;
  // their keys also leave the backup keystore (older backups are shredded too).
  // Webhooks: new audit events become signed deliveries; old integration credentials get reminders.
  const webhookEgress = createWebhookEgress(config);
  const stopWebhooks = startWebhookWorker(db, keyring, webhookEgress, { intervalMs: config.integrations.webhookIntervalMs, credentialMaxAgeDays: config.integrations.credentialMaxAgeDays }, logger);
  // Access review campaigns past their deadline complete themselves; overdue reviews raise reminders.
  const stopReviews = startReviewJobs(db, logger);
  const stopDeletions = startDeletionPurge(db, keyring, 15, logger, backupTarget === undefined ? undefined : (tenantId) => forgetTenantKeys(backupTarget, keyring.provider, tenantId));
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down: no new requests, finishing in-flight ones');
    // Fastify stops accepting, waits for in-flight requests (their transactions commit
    // before their responses), then we close the database.
    stopAlerts();
    stopSealer();
    stopPurge();
    backups?.stop();
    stopDeletions();
    stopWebhooks();
    stopReviews();
    await webhookEgress.close();
    alertMailer.close();
    await app.close();
    await db.close();
    logger.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', (signal) => void stop(signal));
  process.on('SIGINT', (signal) => void stop(signal));
  await app.listen({ host: config.host, port: config.port });
}

main().catch((error: unknown) => {
  process.stderr.write(`CustomerNode failed to start: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
