export { domainRoutes, createTxtLookup } from './domains.ts';
export { createRelyingParty } from './oidc.ts';
export { encryptLegacySsoSecrets, reencryptSsoSecret, ssoSecretsBelowVersion } from './client-secret.ts';
export { ssoRoutes } from './routes.ts';
