/**
 * A minimal authoritative DNS server over UDP on 127.0.0.1 for tests of TXT-record checks
 * (domain verification). Point node's resolver at it:
 *
 *   const resolver = new dns.promises.Resolver(); resolver.setServers([server.address]);
 *
 * Names are matched case-insensitively, without a trailing dot. A configured name answers
 * TXT queries with its values (one TXT record per value; values over 255 bytes are split into
 * several character-strings, which resolveTxt returns as chunks of one record) and any other
 * type with no data (NOERROR, resolveTxt → ENODATA); an unknown name gets NXDOMAIN
 * (resolveTxt → ENOTFOUND). No TCP: keep answers under ~1 KB.
 */
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { isIP } from 'node:net';
import dnsPacket from 'dns-packet';

export interface DnsQuery {
  name: string;
  type: string;
}

export interface DnsServer {
  /** '127.0.0.1:PORT', for Resolver#setServers. */
  readonly address: string;
  /** Replaces the TXT values of name; [] keeps the name with no TXT records, null removes it (NXDOMAIN). */
  set(name: string, values: string[] | null): void;
  /** Replaces the A and AAAA answers of name (IPv4 and IPv6 addresses; TTL 0). */
  setAddresses(name: string, addresses: string[]): void;
  /** Every question received so far, in order (lower-cased names). */
  readonly queries: readonly DnsQuery[];
  stop(): Promise<void>;
}

const NXDOMAIN = 3;
const SERVFAIL = 2;

function normalize(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

function chunks(value: string): Buffer[] {
  const bytes = Buffer.from(value, 'utf8');
  if (bytes.length === 0) return [bytes];
  const parts: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += 255) parts.push(bytes.subarray(i, i + 255));
  return parts;
}

export async function startDnsServer(records: Record<string, string[]> = {}): Promise<DnsServer> {
  const zone = new Map<string, string[]>();
  const hosts = new Map<string, string[]>();
  for (const [name, values] of Object.entries(records)) zone.set(normalize(name), [...values]);
  const queries: DnsQuery[] = [];

  const socket = createSocket('udp4');
  socket.on('message', (message, rinfo) => {
    let query: dnsPacket.DecodedPacket;
    try {
      query = dnsPacket.decode(message);
    } catch {
      return; // not DNS: drop it, as a real server would
    }
    if (query.type !== 'query') return;
    const question = query.questions?.[0];
    let rcode = 0;
    const answers: dnsPacket.Answer[] = [];
    if (!question) {
      rcode = SERVFAIL;
    } else {
      const name = normalize(question.name);
      queries.push({ name, type: question.type });
      const values = zone.get(name);
      const addresses = hosts.get(name);
      if (addresses !== undefined && (question.type === 'A' || question.type === 'AAAA')) {
        for (const address of addresses.filter((a) => (question.type === 'A' ? isIP(a) === 4 : isIP(a) === 6))) {
          answers.push({ type: question.type, class: 'IN', name: question.name, ttl: 0, data: address });
        }
      } else if (values === undefined && addresses === undefined) rcode = NXDOMAIN;
      else if (values !== undefined && question.type === 'TXT') {
        for (const value of values) answers.push({ type: 'TXT', class: 'IN', name: question.name, ttl: 0, data: chunks(value) });
      }
    }
    const response = dnsPacket.encode({
      type: 'response',
      id: query.id ?? 0,
      flags: dnsPacket.AUTHORITATIVE_ANSWER | (query.flag_rd ? dnsPacket.RECURSION_DESIRED : 0) | rcode,
      questions: question ? [question] : [],
      answers,
    });
    socket.send(response, rinfo.port, rinfo.address);
  });
  socket.bind(0, '127.0.0.1');
  await once(socket, 'listening');
  const { port } = socket.address();

  return {
    address: `127.0.0.1:${port}`,
    queries,
    setAddresses(name, addresses) {
      hosts.set(normalize(name), [...addresses]);
    },
    set(name, values) {
      if (values === null) zone.delete(normalize(name));
      else zone.set(normalize(name), [...values]);
    },
    async stop() {
      await new Promise<void>((resolve) => socket.close(() => resolve()));
    },
  };
}
