/**
 * The relying party of a tenant's OpenID Connect provider, on openid-client: discovery
 * (cached per configuration), authorization code + PKCE (S256) + state + nonce, and the
 * checks of the callback (issuer, audience, signature, nonce, state, PKCE) done by the library.
 */
import * as oidc from 'openid-client';
import { AppError } from '../../kernel/http/errors.ts';
import { createEgressFetch } from './egress.ts';

export interface ProviderSettings {
  readonly tenantId: string;
  readonly issuer: string;
  readonly clientId: string;
  readonly clientSecret: string;
  readonly updatedAt: Date;
}

const DISCOVERY_TTL_MS = 10 * 60_000;
const MAX_CACHED = 500;
const TIMEOUT_SECONDS = 10;

/** What openid-client reports, reduced to a reason safe to show and to log. */
export function failureReason(error: unknown): string {
  if (error instanceof AppError) return error.publicDetail ?? error.code;
  const code = (error as { code?: unknown }).code;
  const message = error instanceof Error ? error.message : 'unknown error';
  // openid-client wraps oauth4webapi's error, which holds the detail: the IdP's OAuth error
  // (e.g. invalid_grant) or the ID token claim that failed its check (e.g. nonce).
  const details = new Set<string>();
  let link: unknown = error;
  for (let depth = 0; depth < 4 && typeof link === 'object' && link !== null; depth++) {
    const { error: oauthError, claim } = link as { error?: unknown; claim?: unknown };
    if (typeof oauthError === 'string') details.add(oauthError);
    if (typeof claim === 'string') details.add(`claim ${claim}`);
    link = (link as { cause?: unknown }).cause;
  }
  const suffix = details.size > 0 ? ` (${[...details].join(', ')})` : '';
  return `${typeof code === 'string' ? `${code}: ` : ''}${message}${suffix}`.slice(0, 300);
}

export function createRelyingParty(options: { allowHttpIssuers: boolean }) {
  const cache = new Map<string, { config: oidc.Configuration; until: number }>();
  const egress = createEgressFetch({ allowPrivate: options.allowHttpIssuers }) as unknown as oidc.CustomFetch;

  async function configurationFor(provider: ProviderSettings): Promise<oidc.Configuration> {
    const key = `${provider.tenantId}|${provider.updatedAt.getTime()}`;
    const hit = cache.get(key);
    if (hit && hit.until > Date.now()) return hit.config;
    let config: oidc.Configuration;
    try {
      config = await oidc.discovery(new URL(provider.issuer), provider.clientId, undefined, oidc.ClientSecretBasic(provider.clientSecret), {
        timeout: TIMEOUT_SECONDS,
        [oidc.customFetch]: egress,
        ...(options.allowHttpIssuers ? { execute: [oidc.allowInsecureRequests] } : {}),
      });
      // Token and key requests go through the same checked egress as discovery.
      config[oidc.customFetch] = egress;
    } catch (error) {
      // The reason goes to the log only: the public must not learn what this server can reach.
      throw new AppError('auth.sso_failed', { detail: "The tenant's identity provider could not be reached", cause: error });
    }
    if (cache.size >= MAX_CACHED) cache.delete(cache.keys().next().value!);
    cache.set(key, { config, until: Date.now() + DISCOVERY_TTL_MS });
    return config;
  }

  return {
    configurationFor,
    async authorizationUrl(provider: ProviderSettings, redirectUri: string) {
      const config = await configurationFor(provider);
      const codeVerifier = oidc.randomPKCECodeVerifier();
      const state = oidc.randomState();
      const nonce = oidc.randomNonce();
      const url = oidc.buildAuthorizationUrl(config, {
        redirect_uri: redirectUri,
        scope: 'openid email profile',
        response_type: 'code',
        code_challenge: await oidc.calculatePKCECodeChallenge(codeVerifier),
        code_challenge_method: 'S256',
        state,
        nonce,
      });
      return { url, codeVerifier, state, nonce };
    },
    /** Redeems the code; throws auth.sso_failed on any failed check. Returns the ID token's claims. */
    async redeem(provider: ProviderSettings, callbackUrl: URL, checks: { codeVerifier: string; state: string; nonce: string }) {
      const config = await configurationFor(provider);
      try {
        const tokens = await oidc.authorizationCodeGrant(config, callbackUrl, {
          pkceCodeVerifier: checks.codeVerifier,
          expectedState: checks.state,
          expectedNonce: checks.nonce,
          idTokenExpected: true,
        });
        const claims = tokens.claims();
        if (!claims) throw new Error('no ID token');
        return claims;
      } catch (error) {
        throw new AppError('auth.sso_failed', { detail: failureReason(error), cause: error });
      }
    },
  };
}

export type RelyingParty = ReturnType<typeof createRelyingParty>;
