import { promises as dns } from 'node:dns';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDnsServer, type DnsServer } from './dns-server.ts';

describe('test DNS server', () => {
  let server: DnsServer;
  let resolver: dns.Resolver;

  beforeAll(async () => {
    server = await startDnsServer({
      '_customernode.example.com': ['customernode-verification=abc123', 'v=spf1 -all'],
      'Empty.Example.com.': [],
    });
    resolver = new dns.Resolver({ timeout: 2_000, tries: 1 });
    resolver.setServers([server.address]);
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('answers TXT queries for configured names, case-insensitively', async () => {
    expect(server.address).toMatch(/^127\.0\.0\.1:\d+$/);
    const records = await resolver.resolveTxt('_CustomerNode.EXAMPLE.com');
    expect(records.map((chunks) => chunks.join('')).sort()).toEqual(['customernode-verification=abc123', 'v=spf1 -all']);
    expect(server.queries.at(-1)).toEqual({ name: '_customernode.example.com', type: 'TXT' });
  });

  it('answers NXDOMAIN (ENOTFOUND) for unknown names and ENODATA for a name without TXT', async () => {
    await expect(resolver.resolveTxt('unknown.example.com')).rejects.toMatchObject({ code: 'ENOTFOUND' });
    await expect(resolver.resolveTxt('empty.example.com')).rejects.toMatchObject({ code: 'ENODATA' });
  });

  it('changes records at runtime and splits values over 255 bytes into chunks', async () => {
    const long = 'x'.repeat(300);
    server.set('later.example.com', ['one', long]);
    const records = await resolver.resolveTxt('later.example.com');
    expect(records.map((chunks) => chunks.join('')).sort()).toEqual(['one', long]);
    expect(records.find((chunks) => chunks.join('') === long)).toHaveLength(2);

    server.set('LATER.example.com', ['two']);
    expect(await resolver.resolveTxt('later.example.com')).toEqual([['two']]);

    server.set('later.example.com', null);
    await expect(resolver.resolveTxt('later.example.com')).rejects.toMatchObject({ code: 'ENOTFOUND' });
  });
});
