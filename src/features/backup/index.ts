/** Backup and recovery: encrypted backups kept apart, restores, restore drills, the keystore. */
export { BackupIntegrityError } from './archive.ts';
export {
  createBackup,
  isBackupId,
  listBackups,
  listRestoreTests,
  pruneBackups,
  restoreBackup,
  restoreTenantRecords,
  verifyBackup,
  type BackupContext,
  type BackupDescriptor,
  type RestoreContext,
  type RestoreResult,
  type TenantRestoreResult,
  type VerifyReport,
} from './backups.ts';
export { forgetTenantKeys, readKeystore } from './keystore.ts';
export { findMissedBackup, startBackupSchedule, type BackupScheduler } from './schedule.ts';
export { BackupNotFoundError, DirectoryTarget, S3Target, targetFromConfig, type BackupTarget } from './targets.ts';
