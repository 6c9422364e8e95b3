import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEgressFetch, isPublicAddress } from './egress.ts';
import { createRelyingParty } from './oidc.ts';

function causes(error: unknown): unknown[] {
  const chain: unknown[] = [];
  for (let link = error; link !== undefined && chain.length < 5; link = (link as { cause?: unknown }).cause) chain.push(link);
  return chain;
}

// Threat: a tenant owner enters an issuer URL that points into our own network (SSRF), to
// make the server fetch internal services or cloud metadata on their behalf.
describe('outbound requests to identity providers', () => {
  let server: Server;
  let port: number;
  let hits = 0;
  beforeAll(async () => {
    server = createServer((_req, res) => {
      hits++;
      res.end('{}');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('tells public addresses from private, loopback, link-local, mapped and special ones', () => {
    for (const address of ['127.0.0.1', '10.1.2.3', '172.16.0.1', '192.168.1.1', '169.254.169.254', '100.64.0.1', '0.0.0.0', '::1', '::', 'fe80::1', 'fd00::1', '::ffff:127.0.0.1', '::ffff:10.0.0.1', 'not an address']) {
      expect(isPublicAddress(address), address).toBe(false);
    }
    for (const address of ['8.8.8.8', '1.1.1.1', '2606:4700:4700::1111', '::ffff:8.8.8.8']) expect(isPublicAddress(address), address).toBe(true);
  });

  it('refuses to connect to a loopback address, by IP literal or by a name that resolves to one', async () => {
    const egress = createEgressFetch({ allowPrivate: false });
    for (const url of [`http://127.0.0.1:${port}/`, `http://[::1]:${port}/`, `http://localhost:${port}/`]) {
      const error = await egress(url, {}).catch((e: unknown) => e);
      expect(causes(error).some((e) => (e as { code?: unknown }).code === 'EGRESS_REFUSED'), url).toBe(true);
    }
    expect(hits).toBe(0);
  });

  it('discovery of an issuer inside our network fails with a generic reason, and nothing is requested', async () => {
    const relyingParty = createRelyingParty({ allowHttpIssuers: false });
    const provider = { tenantId: '00000000-0000-4000-8000-000000000001', issuer: `https://localhost:${port}`, clientId: 'c', clientSecret: 's', updatedAt: new Date() };
    const error = await relyingParty.configurationFor(provider).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'auth.sso_failed', publicDetail: "The tenant's identity provider could not be reached" });
    expect(hits).toBe(0);
  });

  it('with SSO_ALLOW_HTTP_ISSUERS (local trials and tests) loopback is allowed', async () => {
    const response = await createEgressFetch({ allowPrivate: true })(`http://localhost:${port}/`, {});
    expect(response.status).toBe(200);
    expect(hits).toBe(1);
  });
});
