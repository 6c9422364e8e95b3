export { evaluateAlerts, startAlertLoop } from './alerts.ts';
export { monitoringRoutes } from './routes.ts';
