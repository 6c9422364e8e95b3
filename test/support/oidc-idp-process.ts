/**
 * A throwaway OpenID Provider for SSO tests, run as a child process:
 *
 *   IDP_CONFIG='{"clients":[...],"accounts":{...}}' [IDP_CODE_TTL_SECONDS=60] node test/support/oidc-idp-process.ts
 *
 * oidc-provider on 127.0.0.1, a free port, plain http. The login and consent pages are
 * oidc-provider's devInteractions; their form submissions are handled here instead, because
 * devInteractions makes the typed login name the account id, and oidc-provider 9 always
 * issues `sub` = account id. Here the login name picks an account from IDP_CONFIG.accounts
 * (any password), the account id is that account's `sub`, and an unknown login name ends the
 * flow with error=access_denied at the client's redirect_uri.
 *
 * Prints one JSON line {"issuer":"http://127.0.0.1:PORT"} on stdout when listening; everything
 * else (oidc-provider's dev notices, errors) goes to stderr. Runs until SIGTERM/SIGINT.
 * Start it through startIdp() in oidc-idp.ts.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { format } from 'node:util';
import type ProviderType from 'oidc-provider';
import type { Configuration, FindAccount, JWK } from 'oidc-provider';

// oidc-provider reports through console.info (stdout) and console.warn: stdout carries only
// the ready line, so send all console output to stderr. Set before oidc-provider loads,
// which warns at import time on some runtimes.
for (const method of ['log', 'info', 'warn', 'error', 'debug'] as const) {
  console[method] = (...args: unknown[]) => {
    process.stderr.write(`${format(...args)}\n`);
  };
}

export interface IdpClient {
  client_id: string;
  client_secret: string;
  redirect_uris: string[];
}

export interface IdpAccount {
  sub: string;
  email: string;
  email_verified: boolean;
  name: string;
}

export interface IdpConfig {
  clients: IdpClient[];
  /** Login name (what is typed into the login form) to claims. */
  accounts: Record<string, IdpAccount>;
}

function fail(message: string): never {
  process.stderr.write(`oidc-idp-process: ${message}\n`);
  process.exit(2);
}

const raw = process.env.IDP_CONFIG;
if (!raw) fail('IDP_CONFIG (JSON) is required');
let config: IdpConfig;
try {
  config = JSON.parse(raw) as IdpConfig;
} catch (error) {
  fail(`IDP_CONFIG is not JSON: ${String(error)}`);
}
if (!Array.isArray(config.clients) || typeof config.accounts !== 'object' || config.accounts === null) {
  fail('IDP_CONFIG needs "clients" (array) and "accounts" (object)');
}
const codeTtl = process.env.IDP_CODE_TTL_SECONDS ? Number(process.env.IDP_CODE_TTL_SECONDS) : 60;
if (!Number.isSafeInteger(codeTtl) || codeTtl <= 0) fail('IDP_CODE_TTL_SECONDS must be a positive integer');

// The login form names an account; everything after login knows it by its sub.
const byLogin = new Map(Object.entries(config.accounts));
const bySub = new Map<string, IdpAccount>();
for (const [login, account] of byLogin) {
  if (typeof account?.sub !== 'string' || account.sub === '') fail(`account ${login} needs a non-empty "sub"`);
  if (bySub.has(account.sub)) fail(`two accounts share sub ${account.sub}`);
  bySub.set(account.sub, account);
}

const findAccount: FindAccount = (_ctx, sub) => {
  const account = bySub.get(sub);
  if (!account) return undefined;
  return {
    accountId: sub,
    claims: () => ({ ...account }),
  };
};

// Own signing key, so oidc-provider does not fall back to its published development keys.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-idp', use: 'sig', alg: 'RS256' } as JWK;

const { default: Provider } = await import('oidc-provider');

// Bind first: the issuer must name the port, and port 0 avoids picking one that races.
const server = createServer();
server.listen(0, '127.0.0.1');
await once(server, 'listening');
const { port } = server.address() as { port: number };
const issuer = `http://127.0.0.1:${port}`;

const configuration: Configuration = {
  clients: config.clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    redirect_uris: c.redirect_uris,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['authorization_code'],
    response_types: ['code'],
  })),
  findAccount,
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  // Put the claims of granted scopes in the ID token, not only at userinfo.
  conformIdTokenClaims: false,
  // oidc-provider 9 requires PKCE only for public clients by default; the RP must always use it.
  pkce: { required: () => true },
  ttl: {
    AuthorizationCode: () => codeTtl,
    AccessToken: () => 600,
    IdToken: () => 600,
    Interaction: () => 600,
    Session: () => 3600,
    Grant: () => 3600,
  },
  // Error pages as JSON: {"error":"invalid_redirect_uri","error_description":...}, which
  // driveLogin quotes when the IdP refuses a request before any redirect to the client.
  renderError(ctx, out) {
    ctx.type = 'application/json';
    ctx.body = JSON.stringify(out);
  },
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  features: {
    devInteractions: { enabled: true },
  },
};

const provider = new Provider(issuer, configuration);
provider.on('server_error', (_ctx: unknown, error: unknown) => {
  process.stderr.write(`oidc-idp-process server_error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
});

async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  let body = '';
  req.setEncoding('utf8');
  for await (const chunk of req) {
    body += chunk as string;
    if (body.length > 64 * 1024) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

/** POST /interaction/:uid from the devInteractions login or consent form. */
async function submitInteraction(provider: ProviderType, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const form = await readForm(req);
  const { prompt, grantId, session, params } = await provider.interactionDetails(req, res);
  if (prompt.name === 'login' && form.get('prompt') === 'login') {
    const account = byLogin.get(form.get('login') ?? '');
    const result = account
      ? { login: { accountId: account.sub } }
      : { error: 'access_denied', error_description: 'unknown login name' };
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
    return;
  }
  if (prompt.name === 'consent' && form.get('prompt') === 'consent') {
    // As devInteractions does: grant whatever is missing.
    const grant = grantId
      ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: session!.accountId, clientId: params.client_id as string });
    if (!grant) throw new Error(`grant ${grantId} not found`);
    const details = prompt.details as { missingOIDCScope?: string[]; missingOIDCClaims?: string[]; missingResourceScopes?: Record<string, string[]> };
    if (details.missingOIDCScope) grant.addOIDCScope(details.missingOIDCScope.join(' '));
    if (details.missingOIDCClaims) grant.addOIDCClaims(details.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(details.missingResourceScopes ?? {})) grant.addResourceScope(indicator, scopes.join(' '));
    await provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true });
    return;
  }
  res.statusCode = 400;
  res.setHeader('content-type', 'text/plain');
  res.end(`form prompt ${form.get('prompt')} does not match interaction prompt ${prompt.name}`);
}

const handle = provider.callback();
server.on('request', (req, res) => {
  const { pathname } = new URL(req.url ?? '/', issuer);
  if (req.method === 'POST' && /^\/interaction\/[^/]+$/.test(pathname)) {
    submitInteraction(provider, req, res).catch((error: unknown) => {
      process.stderr.write(`oidc-idp-process interaction error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
      if (!res.headersSent) {
        res.statusCode = 400;
        res.setHeader('content-type', 'text/plain');
      }
      res.end(`interaction failed: ${error instanceof Error ? error.message : String(error)}`);
    });
    return;
  }
  void handle(req, res);
});

process.stdout.write(`${JSON.stringify({ issuer })}\n`);

function shutdown(): void {
  server.closeAllConnections();
  server.close(() => process.exit(0));
}
process.once('SIGTERM', shutdown);
process.once('SIGINT', shutdown);
