import * as client from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { driveLogin, startIdp, type RunningIdp, type StartIdpOptions } from './oidc-idp.ts';

// The support code itself: a real IdP in a child process, signed in to with openid-client.
const CLIENT_ID = 'customernode-test';
const CLIENT_SECRET = 'test-client-secret-that-is-long-enough-0123456789';
const REDIRECT_URI = 'http://127.0.0.1:1/sso/callback';

const IDP: StartIdpOptions = {
  clients: [{ client_id: CLIENT_ID, client_secret: CLIENT_SECRET, redirect_uris: [REDIRECT_URI] }],
  accounts: {
    alice: { sub: 'idp-user-alice', email: 'alice@example.com', email_verified: true, name: 'Alice Example' },
    bob: { sub: 'idp-user-bob', email: 'bob@example.com', email_verified: false, name: 'Bob Example' },
  },
};

async function discover(issuer: string): Promise<client.Configuration> {
  return client.discovery(new URL(issuer), CLIENT_ID, undefined, client.ClientSecretBasic(CLIENT_SECRET), {
    execute: [client.allowInsecureRequests],
  });
}

interface Started {
  url: URL;
  verifier: string;
  state: string;
  nonce: string;
}

async function authorizationRequest(config: client.Configuration, extra: Record<string, string> = {}): Promise<Started> {
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: REDIRECT_URI,
    scope: 'openid email profile',
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
    nonce,
    ...extra,
  });
  return { url, verifier, state, nonce };
}

function redeem(config: client.Configuration, callback: URL, started: Started) {
  return client.authorizationCodeGrant(config, callback, {
    pkceCodeVerifier: started.verifier,
    expectedState: started.state,
    expectedNonce: started.nonce,
    idTokenExpected: true,
  });
}

describe('test IdP (oidc-provider child process) and driveLogin', () => {
  let idp: RunningIdp;
  let config: client.Configuration;

  beforeAll(async () => {
    idp = await startIdp(IDP);
    config = await discover(idp.issuer);
  });
  afterAll(async () => {
    await idp?.stop();
  });

  it('runs a full code + PKCE + state + nonce login and refuses a replayed code', async () => {
    expect(idp.issuer).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const started = await authorizationRequest(config);
    const callback = await driveLogin(started.url.href, 'alice');
    expect(callback.origin + callback.pathname).toBe(REDIRECT_URI);
    expect(callback.searchParams.get('state')).toBe(started.state);
    expect(callback.searchParams.get('iss')).toBe(idp.issuer);
    expect(callback.searchParams.get('code')).toBeTruthy();

    const tokens = await redeem(config, callback, started);
    const claims = tokens.claims()!;
    expect(claims).toMatchObject({
      iss: idp.issuer,
      aud: CLIENT_ID,
      sub: 'idp-user-alice',
      email: 'alice@example.com',
      email_verified: true,
      name: 'Alice Example',
      nonce: started.nonce,
    });

    const replay = await redeem(config, callback, started).then(
      () => null,
      (error: unknown) => error,
    );
    expect(replay).toBeInstanceOf(client.ResponseBodyError);
    expect((replay as client.ResponseBodyError).error).toBe('invalid_grant');
  });

  it('carries email_verified false through to the ID token', async () => {
    const started = await authorizationRequest(config);
    const tokens = await redeem(config, await driveLogin(started.url.href, 'bob'), started);
    expect(tokens.claims()).toMatchObject({ sub: 'idp-user-bob', email: 'bob@example.com', email_verified: false });
  });

  it('rejects a wrong PKCE verifier and an authorization request without PKCE', async () => {
    const started = await authorizationRequest(config);
    const callback = await driveLogin(started.url.href, 'alice');
    const wrong = await redeem(config, callback, { ...started, verifier: client.randomPKCECodeVerifier() }).then(
      () => null,
      (error: unknown) => error,
    );
    expect((wrong as client.ResponseBodyError).error).toBe('invalid_grant');

    const noPkce = new URL(started.url);
    noPkce.searchParams.delete('code_challenge');
    noPkce.searchParams.delete('code_challenge_method');
    const refused = await driveLogin(noPkce.href, 'alice');
    expect(refused.origin + refused.pathname).toBe(REDIRECT_URI);
    expect(refused.searchParams.get('error')).toBe('invalid_request');
    expect(refused.searchParams.get('code')).toBeNull();
  });

  it('driveLogin throws with the IdP error when the IdP will not redirect (unregistered redirect_uri)', async () => {
    const started = await authorizationRequest(config);
    const url = new URL(started.url);
    url.searchParams.set('redirect_uri', 'http://127.0.0.1:2/elsewhere');
    await expect(driveLogin(url.href, 'alice')).rejects.toThrow(/400 .*invalid_redirect_uri/);
  });

  it('sends an unknown login name back to the client with access_denied', async () => {
    const started = await authorizationRequest(config);
    const denied = await driveLogin(started.url.href, 'mallory');
    expect(denied.origin + denied.pathname).toBe(REDIRECT_URI);
    expect(denied.searchParams.get('error')).toBe('access_denied');
    expect(denied.searchParams.get('state')).toBe(started.state);
    expect(denied.searchParams.get('code')).toBeNull();
  });
});

describe('test IdP with a short code lifetime', () => {
  let idp: RunningIdp;
  beforeAll(async () => {
    idp = await startIdp({ ...IDP, codeTtlSeconds: 1 });
  });
  afterAll(async () => {
    await idp?.stop();
  });

  it('refuses an expired authorization code', async () => {
    const config = await discover(idp.issuer);
    const started = await authorizationRequest(config);
    const callback = await driveLogin(started.url.href, 'alice');
    // Expiry is checked in whole seconds: wait past the next second boundary and then some.
    await new Promise((resolve) => setTimeout(resolve, 2_100));
    const error = await redeem(config, callback, started).then(
      () => null,
      (e: unknown) => e,
    );
    expect((error as client.ResponseBodyError).error).toBe('invalid_grant');
  });
});

describe('startIdp', () => {
  it('rejects with the child stderr when the IdP cannot start', async () => {
    await expect(startIdp({ clients: 'nope' as unknown as StartIdpOptions['clients'], accounts: {} })).rejects.toThrow(
      /exited before listening[\s\S]*"clients" \(array\)/,
    );
  });
});
