export { evaluateAlerts, listAllAlerts, startAlertLoop, type OperatorAlert } from './alerts.ts';
export { monitoringRoutes } from './routes.ts';
export { reportRoutes } from './reports.ts';
export { createAlertNotifier } from './notify.ts';
export type { NewAlert } from './alerts.ts';
