export { integrationRoutes } from './routes.ts';
export { enqueueDeliveries, remindStaleCredentials, sendDueDeliveries, startWebhookWorker } from './delivery.ts';
