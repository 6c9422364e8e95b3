export { recordsRoutes } from './routes.ts';
export { insertMissingRecords, storedRecords, type StoredRecords } from './store.ts';
