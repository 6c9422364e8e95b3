export { auditLogRoutes, AuditEventSchema } from './routes.ts';
export { purgeExpiredAuditEvents, startRetentionPurge, type PurgeReport } from './retention.ts';
