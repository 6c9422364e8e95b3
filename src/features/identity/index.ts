export { identityRoutes, normalizeEmail } from './routes.ts';
export { createSessionAuthenticator } from './sessions.ts';
export { hashPassword, verifyPassword } from './passwords.ts';
export { apiKeyRoutes, revokeKeysCreatedBy } from './api-keys.ts';
export { sessionRoutes } from './session-routes.ts';
