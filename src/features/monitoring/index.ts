export { AlertStatusError, evaluateAlerts, listAllAlerts, OVERDUE_REVIEW_RULE, setPlatformAlertStatus, STALE_CREDENTIAL_RULE, startAlertLoop, type OperatorAlert } from './alerts.ts';
export { monitoringRoutes } from './routes.ts';
export { reportRoutes } from './reports.ts';
export { createAlertNotifier } from './notify.ts';
export type { NewAlert } from './alerts.ts';
