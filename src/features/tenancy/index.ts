export { tenancyRoutes } from './routes.ts';
export { settingsRoutes } from './settings.ts';
