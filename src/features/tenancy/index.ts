export { tenancyRoutes } from './routes.ts';
export { DEFAULT_AUDIT_RETENTION_DAYS, settingsRoutes } from './settings.ts';
