export { identityRoutes, normalizeEmail } from './routes.ts';
export { createSessionAuthenticator } from './sessions.ts';
export { hashPassword, NO_PASSWORD, verifyPassword } from './passwords.ts';
export { createSession } from './sessions.ts';
export { apiKeyRoutes, revokeKeysCreatedBy } from './api-keys.ts';
export { sessionRoutes } from './session-routes.ts';
export { assertAccountSession, assertRecentAuthentication } from './step-up.ts';
export { countAttempt, rateLimited } from './throttle.ts';
export { encryptLegacyTotpSecrets } from './mfa.ts';
