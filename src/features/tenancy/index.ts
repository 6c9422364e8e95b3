export { tenancyRoutes } from './routes.ts';
export { scimRoutes } from './scim.ts';
export { removeMembership } from './members.ts';
export { DEFAULT_AUDIT_RETENTION_DAYS, settingsRoutes } from './settings.ts';
export { deleteTenant, TENANT_AUDIT_TABLES, TENANT_DATA_TABLES } from './deletion.ts';
export { deletionRoutes, purgeDueTenants, startDeletionPurge } from './deletion-schedule.ts';
