/**
 * Outbound HTTP to addresses customers choose (identity providers, webhooks): the server
 * must not become their probe into our own network (SSRF).
 *
 * - Only http and https URLs, without credentials in them.
 * - Each connection resolves its host name once, checks every address, and connects to an
 *   address it checked (undici's connect lookup): a name that answers differently the next
 *   time (DNS rebinding) is checked again on the next connection, never trusted from an
 *   earlier check.
 * - Loopback, private, link-local, carrier-grade NAT, multicast, documentation and other
 *   special ranges are refused, as are IPv4-mapped and NAT64 embeddings of them. URL
 *   parsing already turns decimal, octal and hex spellings of an IPv4 address into dotted
 *   form, so they meet the same check.
 * - Cloud metadata endpoints are refused always, even where the operator allows private
 *   networks (on-premise targets: EGRESS_ALLOW_CIDRS).
 * - Redirects are never followed (a 3xx is the answer), so a public URL cannot bounce the
 *   request inward.
 */
import { Resolver } from 'node:dns/promises';
import { lookup as systemLookup, type LookupAddress } from 'node:dns';
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

/** Instance metadata services (AWS, GCP, Azure, Oracle: 169.254.169.254; AWS IPv6; Alibaba): never, whatever the allow-list. */
const METADATA = new Set(['169.254.169.254', 'fd00:ec2::254', '100.100.100.200']);

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

export interface EgressPolicy {
  /** Any address (local trials and tests of identity providers only). */
  readonly allowPrivate?: boolean;
  /** Non-public networks the operator allows (on-premise targets), as [network, prefix, family]. */
  readonly allowNetworks?: readonly (readonly [string, number, 'ipv4' | 'ipv6'])[];
  /** DNS servers to ask instead of the system resolver (DNS_SERVERS). */
  readonly dnsServers?: readonly string[];
}

type Resolve = (hostname: string) => Promise<LookupAddress[]>;

function resolverFor(dnsServers: readonly string[] | undefined): Resolve {
  if (!dnsServers || dnsServers.length === 0) {
    return (hostname) =>
      new Promise((resolve, reject) => systemLookup(hostname, { all: true }, (error, addresses) => (error ? reject(error) : resolve(addresses))));
  }
  const resolver = new Resolver({ timeout: 3000, tries: 2 });
  resolver.setServers([...dnsServers]);
  return async (hostname) => {
    const [v4, v6] = await Promise.all([resolver.resolve4(hostname).catch(() => []), resolver.resolve6(hostname).catch(() => [])]);
    const addresses = [...v4.map((address) => ({ address, family: 4 })), ...v6.map((address) => ({ address, family: 6 }))];
    if (addresses.length === 0) throw Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' });
    return addresses;
  };
}

export function createEgressGuard(policy: EgressPolicy) {
  const allowed = new BlockList();
  for (const [network, prefix, family] of policy.allowNetworks ?? []) allowed.addSubnet(network, prefix, family);
  const resolve = resolverFor(policy.dnsServers);

  /** Why address may not be connected to, or null when it may. */
  function refusal(address: string): string | null {
    const plain = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1] ?? address;
    if (METADATA.has(plain.toLowerCase())) return 'a cloud metadata address';
    if (policy.allowPrivate || isPublicAddress(plain)) return null;
    const family = isIP(plain);
    if (family !== 0 && allowed.check(plain, family === 4 ? 'ipv4' : 'ipv6')) return null;
    return 'a non-public address';
  }

  /** Checks a URL's form (scheme, no credentials) and, for an IP literal, its address. */
  function checkUrl(url: string): URL {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new EgressRefusedError('not a URL');
    }
    if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') throw new EgressRefusedError('only http and https URLs');
    if (parsed.username !== '' || parsed.password !== '') throw new EgressRefusedError('no credentials in the URL');
    const literal = parsed.hostname.replace(/^\[|\]$/g, '');
    if (isIP(literal) !== 0) {
      const why = refusal(literal);
      if (why) throw new EgressRefusedError(`refused: ${why}`);
    }
    return parsed;
  }

  /** Resolves the URL's host now and checks every address (for a clear answer when a URL is saved). */
  async function checkDestination(url: string): Promise<void> {
    const parsed = checkUrl(url);
    const host = parsed.hostname.replace(/^\[|\]$/g, '');
    if (isIP(host) !== 0) return;
    let addresses: LookupAddress[];
    try {
      addresses = await resolve(host);
    } catch {
      throw new EgressRefusedError('the host name does not resolve');
    }
    for (const { address } of addresses) {
      const why = refusal(address);
      if (why) throw new EgressRefusedError(`refused: ${host} resolves to ${why}`);
    }
  }

  const agent = new Agent({
    connect: {
      lookup(hostname, _options, callback) {
        // One resolution per connection; the connection uses exactly the addresses checked here.
        resolve(hostname).then(
          (addresses) => {
            const bad = addresses.map((a) => refusal(a.address)).find((why) => why !== null);
            if (bad) return callback(new EgressRefusedError(`refused: ${hostname} resolves to ${bad}`), []);
            callback(null, addresses);
          },
          (error: Error) => callback(error, []),
        );
      },
    },
  });

  /** fetch through the guard: never follows redirects. */
  async function guardedFetch(url: string, init: RequestInit & { signal?: AbortSignal }): Promise<Response> {
    checkUrl(url);
    return fetch(url, { ...init, redirect: 'manual', dispatcher: agent } as RequestInit);
  }

  return { checkUrl, checkDestination, fetch: guardedFetch, close: () => agent.close() };
}

export type EgressGuard = ReturnType<typeof createEgressGuard>;

/** The refusal behind a failed fetch, if the guard refused it (errors nest: fetch -> undici -> lookup). */
export function egressRefusal(error: unknown): EgressRefusedError | null {
  for (let link = error, depth = 0; link !== undefined && link !== null && depth < 6; link = (link as { cause?: unknown }).cause, depth++) {
    if (link instanceof EgressRefusedError) return link;
  }
  return null;
}
