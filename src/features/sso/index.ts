export { domainRoutes, createTxtLookup } from './domains.ts';
export { createRelyingParty } from './oidc.ts';
export { ssoRoutes } from './routes.ts';
