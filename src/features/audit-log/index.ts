export { auditLogRoutes, AuditEventSchema } from './routes.ts';
