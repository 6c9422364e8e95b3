import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PASSWORD, startTestApp, type TestApp } from './harness.ts';

// Threat: a secret reaches the log stream (and from there a SIEM, a support ticket, a backup):
// the key-encryption key, the audit signing key, a password, a session or CSRF token, an API
// key, an SSO client secret, a contact's encrypted field.
describe('no secret ever appears in a log line', () => {
  const kek = randomBytes(32);
  const signingKey = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  let t: TestApp;

  beforeAll(async () => {
    t = await startTestApp({ env: { KEY_ENCRYPTION_KEY: kek.toString('hex'), AUDIT_SIGNING_KEY: signingKey, LOG_LEVEL: 'trace' } });
  });
  afterAll(async () => t?.close());

  it('through signup, logins, API keys, SSO configuration, contacts and refused requests, at trace level', async () => {
    const secrets: string[] = [kek.toString('hex'), kek.toString('base64'), signingKey.split('\n')[1]!, PASSWORD];
    const { session: owner, tenantId } = await t.signup();
    secrets.push(owner.cookie.split('=')[1]!, owner.csrfToken);
    const wrong = await t.request({ method: 'POST', url: '/api/v1/auth/login', body: { email: owner.email, password: 'a wrong password that is long' } });
    expect(wrong.statusCode).toBe(401);
    secrets.push('a wrong password that is long');

    const key = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/api-keys`, as: owner, body: { name: 'ci', role: 'viewer' } });
    expect(key.statusCode).toBe(201);
    const apiKey = key.json<{ key: string }>().key;
    secrets.push(apiKey);
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/accounts`, headers: { authorization: `Bearer ${apiKey}` } })).statusCode).toBe(200);
    expect((await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/accounts`, headers: { authorization: `Bearer ${apiKey}x` } })).statusCode).toBe(401);

    const clientSecret = `sso-client-secret-${randomBytes(8).toString('hex')}`;
    secrets.push(clientSecret);
    // Refused (not a real IdP), but the secret travelled in the body of a logged request.
    await t.request({ method: 'PUT', url: `/api/v1/tenants/${tenantId}/sso`, as: owner, body: { issuer: 'https://idp.invalid', clientId: 'c', clientSecret, allowedDomains: [] } });

    const account = (await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/accounts`, as: owner, body: { name: 'Acme' } })).json<{ id: string }>();
    const contact = await t.request({ method: 'POST', url: `/api/v1/tenants/${tenantId}/contacts`, as: owner, body: { accountId: account.id, name: 'Ada', email: 'ada.secret@example.com', phone: '+442079460999' } });
    expect(contact.statusCode).toBe(201);
    secrets.push('ada.secret@example.com', '+442079460999');
    await t.request({ method: 'GET', url: `/api/v1/tenants/${tenantId}/contacts?email=ada.secret@example.com`, as: owner });

    const logs = t.logs.join('\n');
    // The stream really captured these requests (the check below is not vacuous).
    expect(logs).toContain('/api/v1/auth/login');
    expect(logs).toContain('/api-keys');
    for (const secret of secrets) expect(logs.includes(secret), `a log line contains a secret (${secret.slice(0, 4)}…)`).toBe(false);
  });
});
