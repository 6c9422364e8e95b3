/**
 * A tenant's IP allow-list: CIDRs (IPv4 and IPv6). An empty list admits every address; a
 * request whose address is unknown is refused wherever a list is set. IPv4-mapped IPv6
 * addresses (::ffff:a.b.c.d, what a dual-stack socket reports) are judged as IPv4.
 */
import { BlockList, isIP } from 'node:net';

/** Parses "a.b.c.d/n", "x::/n" or a bare address (a single host); null when it is none of these. */
export function parseCidr(text: string): { network: string; prefix: number; family: 'ipv4' | 'ipv6' } | null {
  const [address = '', prefixText, ...rest] = text.trim().split('/');
  if (rest.length > 0) return null;
  const version = isIP(address);
  if (version === 0) return null;
  const max = version === 4 ? 32 : 128;
  if (prefixText !== undefined && !/^\d{1,3}$/.test(prefixText)) return null;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (prefix > max) return null;
  return { network: address, prefix, family: version === 4 ? 'ipv4' : 'ipv6' };
}

export function normalizeIp(ip: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip)?.[1];
  return mapped ?? ip;
}

const lists = new Map<string, BlockList>();

function blockListOf(cidrs: readonly string[]): BlockList {
  const key = cidrs.join(',');
  let list = lists.get(key);
  if (!list) {
    list = new BlockList();
    for (const cidr of cidrs) {
      const parsed = parseCidr(cidr);
      if (parsed) list.addSubnet(parsed.network, parsed.prefix, parsed.family);
    }
    // Lists come from tenants' settings: a bounded cache, cleared rather than grown without end.
    if (lists.size >= 1000) lists.clear();
    lists.set(key, list);
  }
  return list;
}

export function ipAllowed(cidrs: readonly string[], ip: string | null): boolean {
  if (cidrs.length === 0) return true;
  if (ip === null) return false;
  const address = normalizeIp(ip);
  const version = isIP(address);
  if (version === 0) return false;
  return blockListOf(cidrs).check(address, version === 4 ? 'ipv4' : 'ipv6');
}

function toBigInt(address: string, family: 'ipv4' | 'ipv6'): bigint {
  if (family === 'ipv4') return address.split('.').reduce((value, octet) => (value << 8n) | BigInt(Number(octet)), 0n);
  let text = address.toLowerCase();
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two hextets.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text)?.[1];
  if (v4) {
    const n = toBigInt(v4, 'ipv4');
    text = `${text.slice(0, -v4.length)}${(n >> 16n).toString(16)}:${(n & 0xffffn).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const hextets = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  return hextets.reduce((value, hextet) => (value << 16n) | BigInt(parseInt(hextet, 16)), 0n);
}

/** The network's own address: the given address with its host bits cleared. */
export function networkAddress(cidr: { network: string; prefix: number; family: 'ipv4' | 'ipv6' }): string {
  const bits = cidr.family === 'ipv4' ? 32 : 128;
  const host = (1n << BigInt(bits - cidr.prefix)) - 1n;
  const value = toBigInt(cidr.network, cidr.family) & ~host & ((1n << BigInt(bits)) - 1n);
  if (cidr.family === 'ipv4') return [24n, 16n, 8n, 0n].map((shift) => String((value >> shift) & 0xffn)).join('.');
  return Array.from({ length: 8 }, (_, i) => ((value >> BigInt(112 - 16 * i)) & 0xffffn).toString(16)).join(':');
}
