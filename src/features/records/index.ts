export { recordsRoutes } from './routes.ts';
