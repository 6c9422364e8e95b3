export { domainRoutes, createTxtLookup } from './domains.ts';
export { createRelyingParty } from './oidc.ts';
export { encryptLegacySsoSecrets, reencryptSsoSecret, ssoRoutes, ssoSecretsBelowVersion } from './routes.ts';
