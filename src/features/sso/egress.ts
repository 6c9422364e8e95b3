/**
 * Outbound HTTP to a tenant's identity provider. The issuer URL is a customer's input, so
 * the server must not become their probe into our own network (SSRF): every connection's
 * address is checked when it is made (after DNS, so a name that later resolves elsewhere is
 * checked again), and private, loopback, link-local and other special ranges are refused.
 * SSO_ALLOW_HTTP_ISSUERS (local trials and tests only) also allows those addresses.
 */
import { lookup, type LookupAddress } from 'node:dns';
import { isIP } from 'node:net';
import { Agent } from 'undici';
import { EgressRefusedError, isPublicAddress } from '../../kernel/net/egress.ts';

export { EgressRefusedError, isPublicAddress };

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
