export { tenancyRoutes } from './routes.ts';
