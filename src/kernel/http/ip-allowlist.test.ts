import { describe, expect, it } from 'vitest';
import { ipAllowed, networkAddress, parseCidr } from './ip-allowlist.ts';

describe('the IP allow-list check', () => {
  it('admits any address when the list is empty, and none whose address is unknown when it is not', () => {
    expect(ipAllowed([], '198.51.100.7')).toBe(true);
    expect(ipAllowed([], null)).toBe(true);
    expect(ipAllowed(['10.0.0.0/8'], null)).toBe(false);
    expect(ipAllowed(['10.0.0.0/8'], 'not an ip')).toBe(false);
  });

  it('matches IPv4 and IPv6 networks, and judges an IPv4-mapped IPv6 address as IPv4', () => {
    const list = ['10.0.0.0/8', '203.0.113.9/32', '2001:db8:abcd::/48'];
    expect(ipAllowed(list, '10.200.1.1')).toBe(true);
    expect(ipAllowed(list, '11.0.0.1')).toBe(false);
    expect(ipAllowed(list, '203.0.113.9')).toBe(true);
    expect(ipAllowed(list, '203.0.113.10')).toBe(false);
    expect(ipAllowed(list, '::ffff:10.1.2.3')).toBe(true);
    expect(ipAllowed(list, '::ffff:11.1.2.3')).toBe(false);
    expect(ipAllowed(list, '2001:db8:abcd:12::1')).toBe(true);
    expect(ipAllowed(list, '2001:db8:abce::1')).toBe(false);
    // An IPv4 network does not admit an IPv6 address that merely embeds it otherwise (NAT64).
    expect(ipAllowed(list, '64:ff9b::a00:1')).toBe(false);
  });

  it('parses CIDRs and single addresses, refusing anything else', () => {
    expect(parseCidr('10.0.0.0/8')).toEqual({ network: '10.0.0.0', prefix: 8, family: 'ipv4' });
    expect(parseCidr('203.0.113.9')).toEqual({ network: '203.0.113.9', prefix: 32, family: 'ipv4' });
    expect(parseCidr('2001:db8::/32')).toEqual({ network: '2001:db8::', prefix: 32, family: 'ipv6' });
    for (const bad of ['10.0.0.0/33', '10.0.0/8', '10.0.0.0/8/8', '10.0.0.0/-1', '10.0.0.0/', 'example.com', '2001:db8::/129', '0x0a000001', '167772161', '']) {
      expect(parseCidr(bad), bad).toBeNull();
    }
  });

  it('clears host bits to give the network address', () => {
    expect(networkAddress({ network: '10.1.2.3', prefix: 8, family: 'ipv4' })).toBe('10.0.0.0');
    expect(networkAddress({ network: '192.168.77.200', prefix: 20, family: 'ipv4' })).toBe('192.168.64.0');
    expect(networkAddress({ network: '203.0.113.9', prefix: 32, family: 'ipv4' })).toBe('203.0.113.9');
    expect(networkAddress({ network: '2001:db8:abcd:12::1', prefix: 48, family: 'ipv6' })).toBe('2001:db8:abcd:0:0:0:0:0');
    expect(networkAddress({ network: '::ffff:10.1.2.3', prefix: 104, family: 'ipv6' })).toBe('0:0:0:0:0:ffff:a00:0');
    expect(networkAddress({ network: '::1', prefix: 128, family: 'ipv6' })).toBe('0:0:0:0:0:0:0:1');
  });
});
