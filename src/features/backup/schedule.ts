/**
 * Backups on a schedule, inside the server: BACKUP_SCHEDULE (cron) takes a backup and prunes
 * by retention; BACKUP_VERIFY_SCHEDULE (default weekly) runs a restore drill on the newest
 * backup. A failed backup, a missed one (none since the last scheduled time, after a grace
 * period) and a failed drill are recorded in the platform log, where the alert rules turn
 * them into operator alerts.
 */
import { Cron } from 'croner';
import type { Logger } from 'pino';
import { createBackup, listBackups, pruneBackups, recordBackupEvent, verifyBackup, type BackupContext } from './backups.ts';

/** How late a scheduled backup may be before it counts as missed. */
const GRACE_MS = 30 * 60_000;
/** How often the watchdog looks for a missed backup. */
const WATCHDOG = '*/10 * * * *';

/** The newest scheduled time at least GRACE_MS ago that has no backup after it, if any. */
export async function findMissedBackup(ctx: BackupContext, schedule: string, now: Date): Promise<Date | null> {
  const [expected] = new Cron(schedule, { paused: true }).previousRuns(1, new Date(now.getTime() - GRACE_MS));
  if (!expected) return null;
  const newest = (await listBackups(ctx.target))[0];
  return newest && new Date(newest.createdAt) >= expected ? null : expected;
}

export interface BackupScheduler {
  /** Runs the scheduled backup now (tests, and the first run of a new deployment). */
  runBackup(): Promise<void>;
  runWatchdog(now?: Date): Promise<void>;
  runDrill(): Promise<void>;
  stop(): void;
}

export function startBackupSchedule(ctx: BackupContext, log: Logger): BackupScheduler | null {
  const schedule = ctx.config.backup.schedule;
  if (schedule === undefined) return null;
  let reportedMiss = 0;
  const runBackup = async () => {
    try {
      const backup = await createBackup(ctx);
      const removed = await pruneBackups(ctx);
      log.info({ backupId: backup.id, sizeBytes: backup.sizeBytes, durationMs: backup.durationMs, pruned: removed.length }, 'scheduled backup written');
    } catch (error) {
      const message = error instanceof Error ? error.message.split('\n')[0]! : String(error);
      log.error({ err: { message } }, 'scheduled backup failed');
      await recordBackupEvent(ctx.db, 'backup.failed', { error: message, target: ctx.target.description }, 'failure').catch((recordError: unknown) => log.error({ err: recordError }, 'the failed backup could not be recorded'));
    }
  };
  const runWatchdog = async (now = new Date()) => {
    try {
      const missed = await findMissedBackup(ctx, schedule, now);
      // Reported once per missed slot.
      if (missed && missed.getTime() !== reportedMiss) {
        reportedMiss = missed.getTime();
        log.error({ expectedAt: missed.toISOString() }, 'a scheduled backup is missing');
        await recordBackupEvent(ctx.db, 'backup.missed', { expectedAt: missed.toISOString(), target: ctx.target.description }, 'failure');
      }
    } catch (error) {
      log.error({ err: error }, 'the backup watchdog failed');
    }
  };
  const runDrill = async () => {
    try {
      const newest = (await listBackups(ctx.target))[0];
      if (!newest) return; // nothing to drill yet; the watchdog reports missing backups
      const report = await verifyBackup(ctx, newest.id);
      if (report.ok) log.info({ backupId: newest.id, restoreMs: report.restoreMs }, 'restore drill passed');
      else log.error({ backupId: newest.id, problems: report.problems }, 'restore drill failed');
    } catch (error) {
      log.error({ err: error }, 'the restore drill could not run');
    }
  };
  // protect: a run still going when the next is due is not started twice.
  const jobs = [new Cron(schedule, { protect: true }, runBackup), new Cron(WATCHDOG, { protect: true }, () => runWatchdog()), new Cron(ctx.config.backup.verifySchedule, { protect: true }, runDrill)];
  log.info({ schedule, verifySchedule: ctx.config.backup.verifySchedule, target: ctx.target.description }, 'backups scheduled');
  return {
    runBackup,
    runWatchdog,
    runDrill,
    stop() {
      for (const job of jobs) job.stop();
    },
  };
}
