/**
 * Outbound HTTP to a tenant's identity provider. The issuer URL is a customer's input, so
 * the server must not become their probe into our own network (SSRF): every connection's
 * address is checked when it is made (after DNS, so a name that later resolves elsewhere is
 * checked again), and private, loopback, link-local and other special ranges are refused.
 * SSO_ALLOW_HTTP_ISSUERS (local trials and tests only) also allows those addresses.
 */
import { lookup, type LookupAddress } from 'node:dns';
import { BlockList, isIP } from 'node:net';
import { Agent } from 'undici';

const SPECIAL = new BlockList();
for (const [network, prefix] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.88.99.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['198.51.100.0', 24],
  ['203.0.113.0', 24], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) SPECIAL.addSubnet(network, prefix, 'ipv4');
for (const [network, prefix] of [
  // Not ::ffff:0:0/96 or 64:ff9b::/96 here: BlockList matches IPv4 addresses against such
  // IPv4-embedding rules, which would refuse every IPv4 address. Those are handled below.
  ['::', 128], ['::1', 128], ['100::', 64], ['2001:db8::', 32], ['fc00::', 7], ['fe80::', 10], ['ff00::', 8],
] as const) SPECIAL.addSubnet(network, prefix, 'ipv6');

/** Whether address is an ordinary public unicast address. IPv4-mapped IPv6 is judged as IPv4. */
export function isPublicAddress(address: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
  if (mapped) return isPublicAddress(mapped);
  const family = isIP(address);
  if (family === 0) return false;
  if (family === 6 && /^(::ffff:|64:ff9b::)/i.test(address)) return false; // other embeddings of IPv4: refuse
  return !SPECIAL.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

export class EgressRefusedError extends Error {
  override name = 'EgressRefusedError';
  readonly code = 'EGRESS_REFUSED';
}

type Fetch = (url: string, options: RequestInit) => Promise<Response>;

export function createEgressFetch(options: { allowPrivate: boolean }): Fetch {
  const { allowPrivate } = options;
  const agent = new Agent({
    connect: {
      lookup(hostname, lookupOptions, callback) {
        lookup(hostname, { ...lookupOptions, all: true }, (error, addresses: LookupAddress[]) => {
          if (error) return callback(error, []);
          const refused = allowPrivate ? undefined : addresses.find((a) => !isPublicAddress(a.address));
          if (refused) return callback(new EgressRefusedError(`refused to connect to a non-public address for ${hostname}`), []);
          callback(null, addresses);
        });
      },
    },
  });
  return async (url, init) => {
    const { hostname } = new URL(url);
    const literal = hostname.replace(/^\[|\]$/g, '');
    // An IP literal is connected to without any lookup: check it here.
    if (!allowPrivate && isIP(literal) !== 0 && !isPublicAddress(literal)) throw new EgressRefusedError('refused to connect to a non-public address');
    return fetch(url, { ...init, dispatcher: agent } as RequestInit);
  };
}
