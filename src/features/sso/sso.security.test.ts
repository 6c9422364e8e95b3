import { createKeyring } from '../../kernel/crypto/envelope.ts';
import { encryptLegacySsoSecrets } from './client-secret.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cookieFrom, PASSWORD, startTestApp, type Response, type SessionHandle, type TestApp } from '../../../test/harness.ts';
import { startDnsServer, type DnsServer } from '../../../test/support/dns-server.ts';
import { driveLogin, startIdp, type IdpAccount, type RunningIdp } from '../../../test/support/oidc-idp.ts';
import { totpFor } from '../identity/mfa.ts';

const APP = 'http://127.0.0.1:3000';

function cookieNamed(response: Response, name: string): string | undefined {
  const header = response.headers['set-cookie'];
  const all = (Array.isArray(header) ? header : [header]).filter((c): c is string => typeof c === 'string');
  return all.find((c) => c.startsWith(`${name}=`))?.split(';')[0];
}

// Threats: one tenant's identity provider asserting another tenant's user's email to take
// the account over; a forged, replayed, expired or misdirected authorization response;
// login CSRF (an attacker's code completed in the victim's browser); an SSO session
// reaching beyond the tenant whose IdP vouched for it; members dodging requireSso.
describe('single sign-on over OpenID Connect, per tenant', () => {
  let t: TestApp;
  let dns: DnsServer;
  let idpA: RunningIdp; // tenant A's IdP
  let idpB: RunningIdp; // tenant B's IdP: B is the attacker's tenant
  let idpC: RunningIdp;
  let idpShort: RunningIdp; // codes live 1 second (tenant D)
  let ownerA: SessionHandle;
  let tenantA: string;
  let ownerB: SessionHandle;
  let tenantB: string;
  let tenantC: string;
  let ownerC: SessionHandle;
  let tenantD: string;
  let ownerD: SessionHandle;
  let victim: SessionHandle;
  let victimTenant: string;

  const accounts: Record<string, IdpAccount> = {};
  const callbackOf = (tenantId: string) => `${APP}/api/v1/auth/sso/${tenantId}/callback`;

  beforeAll(async () => {
    dns = await startDnsServer();
    t = await startTestApp({ env: { SSO_ALLOW_HTTP_ISSUERS: '1', DNS_SERVERS: dns.address, PUBLIC_URL: APP } });
    ({ session: ownerA, tenantId: tenantA } = await t.signup({ tenantName: 'Alpha' }));
    ({ session: ownerB, tenantId: tenantB } = await t.signup({ tenantName: 'Mallory Inc' }));
    ({ session: ownerC, tenantId: tenantC } = await t.signup({ tenantName: 'Charlie' }));
    ({ session: ownerD, tenantId: tenantD } = await t.signup({ tenantName: 'Delta' }));
    ({ session: victim, tenantId: victimTenant } = await t.signup({ email: 'victim@alpha.example', tenantName: 'Victim private tenant' }));
    Object.assign(accounts, {
      alice: { sub: 'a-alice', email: 'Alice@alpha.example', email_verified: true, name: 'Alice Alpha' },
      victimAtA: { sub: 'a-victim', email: 'victim@alpha.example', email_verified: true, name: 'Victim' },
      unverified: { sub: 'a-unverified', email: 'new@alpha.example', email_verified: false, name: 'Unverified' },
      outsider: { sub: 'a-outsider', email: 'eve@elsewhere.example', email_verified: true, name: 'Eve' },
      carol: { sub: 'c-carol', email: 'carol@charlie-corp.example', email_verified: true, name: 'Carol' },
      newbie: { sub: 'a-newbie', email: 'newbie@alpha.example', email_verified: true, name: 'Newbie' },
    });
    const clientA = { client_id: 'tenant-a', client_secret: 'secret-a', redirect_uris: [callbackOf(tenantA)] };
    [idpA, idpB, idpC, idpShort] = await Promise.all([
      startIdp({ clients: [clientA], accounts }),
      startIdp({
        clients: [{ client_id: 'tenant-b', client_secret: 'secret-b', redirect_uris: [callbackOf(tenantB)] }],
        // The attacker's IdP says whatever it likes about any address.
        accounts: { forged: { sub: 'b-forged', email: 'victim@alpha.example', email_verified: true, name: 'Not the victim' } },
      }),
      startIdp({ clients: [{ client_id: 'tenant-c', client_secret: 'secret-c', redirect_uris: [callbackOf(tenantC)] }], accounts }),
      startIdp({ clients: [{ client_id: 'tenant-d', client_secret: 'secret-d', redirect_uris: [callbackOf(tenantD)] }], accounts, codeTtlSeconds: 1 }),
    ]);
    const configure = async (owner: SessionHandle, tenantId: string, body: Record<string, unknown>) => {
      const response = await t.request({ method: 'PUT', url: `/api/v1/tenants/${tenantId}/sso`, as: owner, body });
      if (response.statusCode !== 200) throw new Error(`configuring SSO failed: ${response.statusCode} ${response.body}`);
    };
    await configure(ownerA, tenantA, { issuer: idpA.issuer, clientId: 'tenant-a', clientSecret: 'secret-a', allowedDomains: ['alpha.example'], jitProvisioning: true });
    await configure(ownerB, tenantB, { issuer: idpB.issuer, clientId: 'tenant-b', clientSecret: 'secret-b', allowedDomains: ['alpha.example'], jitProvisioning: true });
    await configure(ownerD, tenantD, { issuer: idpShort.issuer, clientId: 'tenant-d', clientSecret: 'secret-d', allowedDomains: ['alpha.example'], jitProvisioning: true });
    await configure(ownerC, tenantC, { issuer: idpC.issuer, clientId: 'tenant-c', clientSecret: 'secret-c', allowedDomains: ['alpha.example', 'charlie-corp.example'], jitProvisioning: true });
    // Tenant A proves it owns alpha.example.
    const claim = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantA}/domains`, as: ownerA, body: { domain: 'alpha.example' } });
    dns.set(claim.json().txtRecord.name, [claim.json().txtRecord.value]);
    const verify = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantA}/domains/${claim.json().id}/verify`, as: ownerA });
    if (verify.statusCode !== 200) throw new Error(`domain verification failed: ${verify.body}`);
  }, 60_000);
  afterAll(async () => {
    await Promise.all([idpA?.stop(), idpB?.stop(), idpC?.stop(), idpShort?.stop()]);
    await dns?.stop();
    await t?.close();
  });

  /** GET /start: the IdP URL and the browser-binding state cookie. */
  async function start(tenantId: string) {
    const response = await t.request({ method: 'GET', url: `/api/v1/auth/sso/${tenantId}/start` });
    expect(response.statusCode, response.body).toBe(302);
    const stateCookie = cookieNamed(response, 'cn_sso_state');
    expect(stateCookie).toBeDefined();
    return { location: String(response.headers.location), stateCookie: stateCookie! };
  }
  const callback = (tenantId: string, returned: URL, stateCookie?: string) =>
    t.request({ method: 'GET', url: `/api/v1/auth/sso/${tenantId}/callback${returned.search}`, headers: stateCookie ? { cookie: stateCookie } : {} });

  /** The whole dance as a browser does it; returns the callback's response. */
  async function ssoLogin(tenantId: string, login: string) {
    const { location, stateCookie } = await start(tenantId);
    const returned = await driveLogin(location, login);
    return callback(tenantId, returned, stateCookie);
  }
  function sessionFrom(response: Response, email: string): SessionHandle {
    return { cookie: cookieFrom(response), csrfToken: String(response.headers['x-csrf-token']), userId: '', email };
  }
  const failedWith = (response: Response, code: string) => {
    expect(response.statusCode, response.body).toBe(code === 'auth.sso_failed' ? 401 : 403);
    expect(response.json().code).toBe(code);
    expect(cookieNamed(response, 'cn_session')).toBeUndefined();
  };

  it('start redirects with authorization code + PKCE (S256) + state + nonce to the configured IdP', async () => {
    const { location } = await start(tenantA);
    const url = new URL(location);
    expect(url.origin).toBe(idpA.issuer);
    expect(url.searchParams.get('response_type')).toBe('code');
    expect(url.searchParams.get('client_id')).toBe('tenant-a');
    expect(url.searchParams.get('redirect_uri')).toBe(callbackOf(tenantA));
    expect(url.searchParams.get('code_challenge_method')).toBe('S256');
    for (const param of ['code_challenge', 'state', 'nonce']) expect(url.searchParams.get(param)?.length ?? 0).toBeGreaterThanOrEqual(43);
    const stored = await t.admin.query<{ state_hash: Buffer }>('select state_hash from sso_logins where tenant_id = $1', [tenantA]);
    expect(stored.every((row) => row.state_hash.length === 32)).toBe(true);
  });

  it('success: a verified address in an allowed domain signs in, joins just in time, and is audited', async () => {
    const response = await ssoLogin(tenantA, 'alice');
    expect(response.statusCode, response.body).toBe(302);
    expect(response.headers.location).toBe(`${APP}/`);
    const session = sessionFrom(response, 'alice@alpha.example');
    const who = await t.request({ method: 'GET', url: '/api/v1/auth/session', as: session });
    expect(who.json().user).toMatchObject({ email: 'alice@alpha.example', name: 'Alice Alpha', emailVerified: true });
    expect(who.json().memberships).toEqual([{ tenantId: tenantA, tenantName: 'Alpha', role: 'member' }]);
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantA}/accounts`, as: session })).statusCode).toBe(200);
    const actions = await t.admin.query<{ action: string }>(`select action from audit_events where tenant_id = $1 and actor_email = 'alice@alpha.example' order by position`, [tenantA]);
    expect(actions.map((a) => a.action)).toEqual(['auth.sso.identity_linked', 'member.joined', 'auth.sso.login.succeeded']);
    // The second time, the (issuer, subject) link is used.
    expect((await ssoLogin(tenantA, 'alice')).statusCode).toBe(302);
    const [{ n }] = (await t.admin.query<{ n: number }>(`select count(*)::int as n from sso_identities where subject = 'a-alice'`)) as [{ n: number }];
    expect(n).toBe(1);
  });

  it('an account created by SSO has no password login: any password is refused like a wrong one', async () => {
    expect((await ssoLogin(tenantA, 'alice')).statusCode).toBe(302);
    const [user] = await t.admin.query<{ password_hash: string }>(`select password_hash from users where email = 'alice@alpha.example'`);
    expect(user!.password_hash.startsWith('$argon2')).toBe(false);
    for (const password of [PASSWORD, '!no-password', '']) {
      const response = await t.request({ method: 'POST', url: '/api/v1/auth/login', body: { email: 'alice@alpha.example', password: password || 'x' } });
      expect(response.statusCode).toBe(401);
      expect(response.json().code).toBe('auth.invalid_credentials');
    }
  });

  it('account takeover: the attacker tenant IdP asserting the victim email is refused (domain not verified by that tenant)', async () => {
    const response = await ssoLogin(tenantB, 'forged');
    failedWith(response, 'auth.sso_link_refused');
    expect(await t.admin.query(`select 1 from sso_identities where user_id = $1`, [victim.userId])).toHaveLength(0);
    expect(await t.admin.query(`select 1 from memberships where tenant_id = $1 and user_id = $2`, [tenantB, victim.userId])).toHaveLength(0);
    const [event] = await t.admin.query<{ actor_type: string; metadata: { reason: string } }>(
      `select actor_type, canonical_metadata::jsonb as metadata from audit_events where tenant_id = $1 and action = 'auth.sso.login.failed' order by position desc limit 1`,
      [tenantB],
    );
    expect(event).toMatchObject({ actor_type: 'anonymous', metadata: { reason: 'domain alpha.example not verified by this tenant' } });
    // The attacker's tenant log does not learn whether, or as whom, the address has an account.
    const logB = await t.admin.query(`select * from audit_events where tenant_id = $1`, [tenantB]);
    expect(JSON.stringify(logB)).not.toContain(victim.userId);
    // Claiming the domain does not help the attacker: TXT records are the owner's to publish,
    // and a domain verified by one tenant cannot be verified by another.
    const claim = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantB}/domains`, as: ownerB, body: { domain: 'alpha.example' } });
    const verify = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantB}/domains/${claim.json().id}/verify`, as: ownerB });
    expect(verify.statusCode).toBe(409);
    expect(verify.json().code).toBe('domain.unverified');
    dns.set(claim.json().txtRecord.name, [claim.json().txtRecord.value]);
    const again = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantB}/domains/${claim.json().id}/verify`, as: ownerB });
    expect(again.json().code).toBe('domain.taken');
    failedWith(await ssoLogin(tenantB, 'forged'), 'auth.sso_link_refused');
  });

  it('the tenant that verified the domain may link the existing account; that session reaches only this tenant', async () => {
    const response = await ssoLogin(tenantA, 'victimAtA');
    expect(response.statusCode, response.body).toBe(302);
    const session = sessionFrom(response, victim.email);
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantA}/accounts`, as: session })).statusCode).toBe(200);
    // The victim's own tenant does not take tenant A's IdP's word for it.
    const elsewhere = await t.request({ method: 'GET', url: `/api/v1/tenants/${victimTenant}/accounts`, as: session });
    expect(elsewhere.statusCode).toBe(401);
    const who = await t.request({ method: 'GET', url: '/api/v1/auth/session', as: session });
    expect(who.json().memberships.map((m: { tenantId: string }) => m.tenantId)).toEqual([tenantA]);
    // Nor may it change what protects the whole account.
    const sessions = await t.request({ method: 'GET', url: '/api/v1/auth/sessions', as: session });
    expect(sessions.json().code).toBe('auth.account_session_required');
    for (const [url, body] of [
      ['/api/v1/auth/totp/enroll', undefined],
      ['/api/v1/auth/password', { currentPassword: PASSWORD, newPassword: 'hijacked passphrase 123' }],
      ['/api/v1/tenants', { name: 'Side door' }],
    ] as const) {
      const refused = await t.request({ method: 'POST', url, as: session, body });
      expect(refused.statusCode, url).toBe(403);
      expect(refused.json().code).toBe('auth.account_session_required');
    }
    // The password login still reaches everything it did.
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${victimTenant}/accounts`, as: victim })).statusCode).toBe(200);
  });

  it('an address the IdP has not verified is refused', async () => {
    failedWith(await ssoLogin(tenantA, 'unverified'), 'auth.sso_failed');
    expect(await t.admin.query(`select 1 from users where email = 'new@alpha.example'`)).toHaveLength(0);
  });

  it('an address outside the allowed domains is refused', async () => {
    const response = await ssoLogin(tenantA, 'outsider');
    failedWith(response, 'auth.sso_failed');
    expect(response.json().detail).toMatch(/domain is not allowed/);
  });

  it('wrong state: a callback whose state is not the one this browser started is refused (login CSRF)', async () => {
    const mine = await start(tenantA);
    const theirs = await start(tenantA);
    const returned = await driveLogin(theirs.location, 'alice');
    failedWith(await callback(tenantA, returned, mine.stateCookie), 'auth.sso_failed');
    failedWith(await callback(tenantA, returned), 'auth.sso_failed');
  });

  it('wrong nonce: an ID token not minted for this login is refused', async () => {
    const { location, stateCookie } = await start(tenantA);
    const returned = await driveLogin(location, 'alice');
    await t.admin.query(`update sso_logins set nonce = 'not-the-nonce-the-idp-saw' where tenant_id = $1 and consumed_at is null`, [tenantA]);
    const response = await callback(tenantA, returned, stateCookie);
    failedWith(response, 'auth.sso_failed');
    expect(response.json().detail).toMatch(/nonce/);
  });

  it('wrong issuer: a response claiming to come from another IdP is refused', async () => {
    const { location, stateCookie } = await start(tenantA);
    const returned = await driveLogin(location, 'alice');
    returned.searchParams.set('iss', idpB.issuer);
    failedWith(await callback(tenantA, returned, stateCookie), 'auth.sso_failed');
  });

  it('replayed code: a completed callback cannot be used again, even with a fresh login', async () => {
    const { location, stateCookie } = await start(tenantA);
    const returned = await driveLogin(location, 'alice');
    expect((await callback(tenantA, returned, stateCookie)).statusCode).toBe(302);
    failedWith(await callback(tenantA, returned, stateCookie), 'auth.sso_failed');
    const fresh = await start(tenantA);
    const replay = new URL(returned);
    replay.searchParams.set('state', decodeURIComponent(fresh.stateCookie.split('=')[1]!));
    failedWith(await callback(tenantA, replay, fresh.stateCookie), 'auth.sso_failed');
  });

  it('expired code: a code redeemed after its lifetime is refused', async () => {
    const { location, stateCookie } = await start(tenantD);
    const returned = await driveLogin(location, 'alice');
    await new Promise((resolve) => setTimeout(resolve, 2200));
    const response = await callback(tenantD, returned, stateCookie);
    failedWith(response, 'auth.sso_failed');
    expect(response.json().detail).toMatch(/invalid_grant/);
  });

  it("an authorization response from tenant A's IdP presented at tenant B's callback is refused", async () => {
    // As is: A's state is unknown to B.
    const a = await start(tenantA);
    const fromA = await driveLogin(a.location, 'alice');
    failedWith(await callback(tenantB, fromA, a.stateCookie), 'auth.sso_failed');
    // Spliced into a login B started: B redeems the code at its own IdP, which never issued it.
    const b = await start(tenantB);
    const a2 = await start(tenantA);
    const spliced = await driveLogin(a2.location, 'alice');
    spliced.searchParams.set('state', decodeURIComponent(b.stateCookie.split('=')[1]!));
    spliced.searchParams.delete('iss');
    failedWith(await callback(tenantB, spliced, b.stateCookie), 'auth.sso_failed');
    expect(await t.admin.query(`select 1 from memberships m join users u on u.id = m.user_id where m.tenant_id = $1 and u.email = 'alice@alpha.example'`, [tenantB])).toHaveLength(0);
  });

  it('strangers cannot write into a tenant log through the callback; bad query input is a clean 400', async () => {
    const before = await t.admin.query(`select count(*)::int as n from audit_events where tenant_id = $1`, [tenantA]);
    const response = await t.request({ method: 'GET', url: `/api/v1/auth/sso/${tenantA}/callback?code=x&state=y` });
    failedWith(response, 'auth.sso_failed');
    expect(await t.admin.query(`select count(*)::int as n from audit_events where tenant_id = $1`, [tenantA])).toEqual(before);
    const tooLong = await t.request({ method: 'GET', url: `/api/v1/auth/sso/${tenantA}/callback?code=${'x'.repeat(5000)}&state=y` });
    expect(tooLong.statusCode).toBe(400);
    expect(tooLong.json().code).toBe('validation.failed');
    const unknownTenant = await t.request({ method: 'GET', url: '/api/v1/auth/sso/00000000-0000-4000-8000-000000000000/start' });
    expect(unknownTenant.statusCode).toBe(404);
  });

  it('starting sign-ins is throttled per address (each start stores a pending login)', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 101; i++) statuses.push((await t.request({ method: 'GET', url: `/api/v1/auth/sso/${tenantA}/start`, remoteAddress: '198.51.100.200' })).statusCode);
    expect(statuses.slice(0, 100).every((s) => s === 302)).toBe(true);
    expect(statuses[100]).toBe(429);
    expect((await t.request({ method: 'GET', url: `/api/v1/auth/sso/${tenantA}/start`, remoteAddress: '198.51.100.201' })).statusCode).toBe(302);
  });

  it('configuration: the secret is never returned, changes need step-up and are audited without it', async () => {
    const read = await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantA}/sso`, as: ownerA });
    expect(read.statusCode).toBe(200);
    expect(read.json()).toMatchObject({ configured: true, issuer: idpA.issuer, clientId: 'tenant-a', hasClientSecret: true, redirectUri: callbackOf(tenantA) });
    expect(read.body).not.toContain('secret-a');
    const [event] = await t.admin.query<{ metadata: unknown }>(`select canonical_metadata::jsonb as metadata from audit_events where tenant_id = $1 and action = 'sso.configured'`, [tenantA]);
    expect(JSON.stringify(event)).not.toContain('secret-a');
    const bad = await t.request({ method: 'PUT', url: `/api/v1/tenants/${tenantA}/sso`, as: ownerA, body: { issuer: 'ftp://idp.example', clientId: 'x', allowedDomains: [] } });
    expect(bad.statusCode).toBe(400);
    await t.admin.query(`update sessions set authenticated_at = now() - interval '16 minutes' where user_id = $1`, [ownerA.userId]);
    const stale = await t.request({ method: 'PUT', url: `/api/v1/tenants/${tenantA}/sso`, as: ownerA, body: { issuer: idpA.issuer, clientId: 'tenant-a', allowedDomains: ['alpha.example'] } });
    expect(stale.json().code).toBe('auth.reauth_required');
    expect((await t.request({ method: 'POST', url: '/api/v1/auth/reauth', as: ownerA, body: { password: PASSWORD } })).statusCode).toBe(204);
    const kept = await t.request({ method: 'PUT', url: `/api/v1/tenants/${tenantA}/sso`, as: ownerA, body: { issuer: idpA.issuer, clientId: 'tenant-a', allowedDomains: ['alpha.example'], jitProvisioning: true } });
    expect(kept.statusCode).toBe(200);
    expect((await ssoLogin(tenantA, 'alice')).statusCode).toBe(302); // the stored secret was kept
  });

  it('stores the client secret only encrypted; a secret stored in the clear before is encrypted by the backfill and keeps working', async () => {
    const stored = async () =>
      (await t.admin.query<{ client_secret: string | null; client_secret_ct: Uint8Array | null }>('select client_secret, client_secret_ct from tenant_sso where tenant_id = $1', [tenantA]))[0]!;
    const sealed = await stored();
    expect(sealed.client_secret).toBeNull();
    expect(Buffer.from(sealed.client_secret_ct!).includes(Buffer.from('secret-a'))).toBe(false);
    // As before migration 21: the secret in the clear. Sign-in still works, then the backfill seals it.
    await t.admin.query(`update tenant_sso set client_secret = 'secret-a', client_secret_ct = null where tenant_id = $1`, [tenantA]);
    expect((await ssoLogin(tenantA, 'alice')).statusCode).toBe(302);
    expect(await encryptLegacySsoSecrets(t.db, createKeyring(t.config, { warn() {} }))).toBeGreaterThanOrEqual(1);
    const after = await stored();
    expect(after.client_secret).toBeNull();
    expect(after.client_secret_ct).not.toBeNull();
    expect((await ssoLogin(tenantA, 'alice')).statusCode).toBe(302);
  });

  it('the stored client secret is never sent to a new issuer or client: changing them needs the secret again', async () => {
    for (const body of [
      { issuer: idpB.issuer, clientId: 'tenant-a', allowedDomains: ['alpha.example'] },
      { issuer: idpA.issuer, clientId: 'another-client', allowedDomains: ['alpha.example'] },
    ]) {
      const response = await t.request({ method: 'PUT', url: `/api/v1/tenants/${tenantA}/sso`, as: ownerA, body });
      expect(response.statusCode).toBe(400);
      expect(response.json().detail).toMatch(/clientSecret is required/);
    }
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantA}/sso`, as: ownerA })).json().issuer).toBe(idpA.issuer);
  });

  it('privilege escalation: an admin cannot choose the identity provider (it would vouch for the owners too)', async () => {
    const admin = await t.addMember(ownerA, tenantA, 'admin');
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantA}/sso`, as: admin })).statusCode).toBe(200);
    const change = await t.request({ method: 'PUT', url: `/api/v1/tenants/${tenantA}/sso`, as: admin, body: { issuer: idpB.issuer, clientId: 'tenant-b', clientSecret: 'secret-b', allowedDomains: ['alpha.example'] } });
    expect(change.statusCode).toBe(403);
    expect(change.json().code).toBe('access.forbidden');
    expect((await t.request({ method: 'DELETE', url: `/api/v1/tenants/${tenantA}/sso`, as: admin })).statusCode).toBe(403);
    const [denial] = await t.admin.query(`select 1 from audit_events where tenant_id = $1 and action = 'access.denied' and actor_id = $2`, [tenantA, admin.userId]);
    expect(denial).toBeDefined();
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantA}/sso`, as: ownerA })).json().issuer).toBe(idpA.issuer);
  });

  it('squatting: without just-in-time provisioning a first sign-in creates nothing', async () => {
    const off = await t.request({ method: 'PUT', url: `/api/v1/tenants/${tenantA}/sso`, as: ownerA, body: { issuer: idpA.issuer, clientId: 'tenant-a', allowedDomains: ['alpha.example'], jitProvisioning: false } });
    expect(off.statusCode).toBe(200);
    failedWith(await ssoLogin(tenantA, 'newbie'), 'auth.sso_not_member');
    expect(await t.admin.query(`select 1 from users where email = 'newbie@alpha.example'`)).toHaveLength(0);
    expect(await t.admin.query(`select 1 from sso_identities where subject = 'a-newbie'`)).toHaveLength(0);
    const on = await t.request({ method: 'PUT', url: `/api/v1/tenants/${tenantA}/sso`, as: ownerA, body: { issuer: idpA.issuer, clientId: 'tenant-a', allowedDomains: ['alpha.example'], jitProvisioning: true } });
    expect(on.statusCode).toBe(200);
  });

  it('requireSso: password sessions of members are refused; an owner with MFA keeps a break-glass login, audited once per session', async () => {
    const member = await t.addMember(ownerC, tenantC, 'member');
    const settings = `/api/v1/tenants/${tenantC}/settings`;
    const noBreakGlass = await t.request({ method: 'PATCH', url: settings, as: ownerC, body: { requireSso: true } });
    expect(noBreakGlass.json().code).toBe('sso.no_break_glass');
    const { secret } = (await t.request({ method: 'POST', url: '/api/v1/auth/totp/enroll', as: ownerC })).json<{ secret: string }>();
    expect((await t.request({ method: 'POST', url: '/api/v1/auth/totp/activate', as: ownerC, body: { code: totpFor(secret, 'x').generate() } })).statusCode).toBe(200);
    expect((await t.request({ method: 'PATCH', url: settings, as: ownerC, body: { requireSso: true } })).json().requireSso).toBe(true);

    const refused = await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantC}/accounts`, as: member });
    expect(refused.statusCode).toBe(403);
    expect(refused.json().code).toBe('auth.sso_required');
    for (let i = 0; i < 2; i++) expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantC}/accounts`, as: ownerC })).statusCode).toBe(200);
    const breakGlass = await t.admin.query(`select 1 from audit_events where tenant_id = $1 and action = 'auth.sso.break_glass'`, [tenantC]);
    expect(breakGlass).toHaveLength(1);
    const removal = await t.request({ method: 'DELETE', url: `/api/v1/tenants/${tenantC}/sso`, as: ownerC });
    expect(removal.json().code).toBe('sso.in_use');
    // An SSO session of the tenant passes (Alice's existing account is not linkable here: C has not verified alpha.example).
    failedWith(await ssoLogin(tenantC, 'alice'), 'auth.sso_link_refused');
    // Carol's domain is unverified at first: no account may be created in it.
    failedWith(await ssoLogin(tenantC, 'carol'), 'auth.sso_link_refused');
    expect(await t.admin.query(`select 1 from users where email = 'carol@charlie-corp.example'`)).toHaveLength(0);
    const claim = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantC}/domains`, as: ownerC, body: { domain: 'charlie-corp.example' } });
    dns.set(claim.json().txtRecord.name, [claim.json().txtRecord.value]);
    expect((await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantC}/domains/${claim.json().id}/verify`, as: ownerC })).statusCode).toBe(200);
    const sso = await ssoLogin(tenantC, 'carol');
    expect(sso.statusCode, sso.body).toBe(302);
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantC}/accounts`, as: sessionFrom(sso, 'carol@charlie-corp.example') })).statusCode).toBe(200);
  });

  it('domains: a claim needs the exact TXT value; admins manage them, with audit', async () => {
    const claim = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantC}/domains`, as: ownerC, body: { domain: 'Charlie.Example' } });
    expect(claim.statusCode).toBe(201);
    expect(claim.json()).toMatchObject({ domain: 'charlie.example', verified: false, txtRecord: { name: '_customernode-challenge.charlie.example' } });
    dns.set('_customernode-challenge.charlie.example', ['customernode-domain-verification=wrong-value']);
    const wrong = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantC}/domains/${claim.json().id}/verify`, as: ownerC });
    expect(wrong.json().code).toBe('domain.unverified');
    dns.set('_customernode-challenge.charlie.example', ['unrelated', claim.json().txtRecord.value]);
    const ok = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantC}/domains/${claim.json().id}/verify`, as: ownerC });
    expect(ok.json()).toMatchObject({ verified: true });
    const badName = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantC}/domains`, as: ownerC, body: { domain: 'not a domain' } });
    expect(badName.statusCode).toBe(400);
    expect((await t.request({ method: 'DELETE', url: `/api/v1/tenants/${tenantC}/domains/${claim.json().id}`, as: ownerC })).statusCode).toBe(204);
    const actions = await t.admin.query<{ action: string }>(`select action from audit_events where tenant_id = $1 and action like 'sso.domain.%' and canonical_metadata::jsonb->>'domain' = 'charlie.example' order by position`, [tenantC]);
    expect(actions.map((a) => a.action)).toEqual(['sso.domain.added', 'sso.domain.verified', 'sso.domain.removed']);
  });
});
