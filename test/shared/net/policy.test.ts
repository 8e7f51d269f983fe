import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { CidrSet, parseIp, type Ip } from '../../../shared/net/address.js';
import { checkDestination, embeddedV4, specialClass, SPECIAL_RANGES, type DestinationPolicy } from '../../../shared/net/policy.js';

function ip(text: string): Ip {
  const parsed = parseIp(text);
  assert.ok(parsed, `expected ${JSON.stringify(text)} to parse`);
  return parsed;
}

const DEFAULT: DestinationPolicy = { allow: new CidrSet([]), allowPrivate: false };

const denied: [string, string][] = [
  ['0.0.0.0', 'unspecified'],
  ['0.1.2.3', 'unspecified'],
  ['::', 'unspecified'],
  ['127.0.0.1', 'loopback'],
  ['127.255.255.254', 'loopback'],
  ['::1', 'loopback'],
  ['169.254.169.254', 'link-local'],
  ['fe80::1', 'link-local'],
  ['febf:ffff::1', 'link-local'],
  ['10.0.0.1', 'private'],
  ['172.16.0.1', 'private'],
  ['172.31.255.255', 'private'],
  ['192.168.1.1', 'private'],
  ['100.64.0.1', 'private'],
  ['fc00::1', 'unique-local'],
  ['fd12:3456::1', 'unique-local'],
  ['224.0.0.1', 'multicast'],
  ['239.255.255.250', 'multicast'],
  ['ff02::1', 'multicast'],
  ['ff0e::1', 'multicast'],
  ['240.0.0.1', 'reserved'],
  ['255.255.255.255', 'reserved'],
];

describe('specialClass and checkDestination', () => {
  test('special classes are denied by default', () => {
    for (const [addr, cls] of denied) {
      assert.equal(specialClass(ip(addr)), cls, addr);
      assert.equal(checkDestination(DEFAULT, ip(addr)), `${cls} address`, addr);
    }
  });

  test('v4-mapped forms are denied like the IPv4 address', () => {
    for (const [addr, cls] of denied) {
      if (addr.includes(':')) continue;
      for (const mapped of [`::ffff:${addr}`, `[::ffff:${addr}]`, `0:0:0:0:0:ffff:${addr}`]) {
        assert.equal(specialClass(ip(mapped)), cls, mapped);
        assert.notEqual(checkDestination(DEFAULT, ip(mapped)), null, mapped);
      }
    }
    // mapped, written in hex words
    assert.equal(specialClass(ip('::ffff:7f00:1')), 'loopback');
    assert.equal(specialClass(ip('::ffff:a00:1')), 'private');
  });

  test('NAT64 and 6to4 forms are denied through the embedded IPv4', () => {
    assert.deepEqual(embeddedV4(ip('64:ff9b::7f00:1')), ip('127.0.0.1'));
    assert.deepEqual(embeddedV4(ip('64:ff9b::10.0.0.1')), ip('10.0.0.1'));
    assert.deepEqual(embeddedV4(ip('2002:7f00:1::1')), ip('127.0.0.1'));
    assert.equal(embeddedV4(ip('2001:db8::1')), null);
    assert.equal(embeddedV4(ip('127.0.0.1')), null);

    assert.equal(specialClass(ip('64:ff9b::7f00:1')), 'loopback (embedded IPv4)');
    assert.equal(checkDestination(DEFAULT, ip('64:ff9b::7f00:1')), 'loopback (embedded IPv4) address');
    assert.equal(specialClass(ip('64:ff9b::192.168.0.1')), 'private (embedded IPv4)');
    assert.equal(specialClass(ip('64:ff9b::a9fe:a9fe')), 'link-local (embedded IPv4)');
    assert.equal(specialClass(ip('2002:a00:1::')), 'private (embedded IPv4)');
    assert.equal(specialClass(ip('2002:c0a8:101::1')), 'private (embedded IPv4)');
    // public IPv4 behind NAT64 is an ordinary destination
    assert.equal(checkDestination(DEFAULT, ip('64:ff9b::198.51.100.1')), null);
    assert.equal(checkDestination(DEFAULT, ip('2002:c633:6401::1')), null);
  });

  test('public and documentation addresses are allowed', () => {
    for (const addr of ['2001:db8::1', '198.51.100.1', '192.0.2.1', '203.0.113.9', '::ffff:198.51.100.1', '8.8.8.8', '2606:4700::1111', '172.32.0.1', '100.128.0.1', '11.0.0.1', '223.255.255.255']) {
      assert.equal(specialClass(ip(addr)), null, addr);
      assert.equal(checkDestination(DEFAULT, ip(addr)), null, addr);
    }
  });

  test('--allow CIDR overrides a special class, for exactly its range', () => {
    const policy: DestinationPolicy = { allow: new CidrSet(['10.1.0.0/16', 'fd00::/8', '127.0.0.1']), allowPrivate: false };
    assert.equal(checkDestination(policy, ip('10.1.2.3')), null);
    assert.equal(checkDestination(policy, ip('::ffff:10.1.2.3')), null);
    assert.equal(checkDestination(policy, ip('fd00::1')), null);
    assert.equal(checkDestination(policy, ip('127.0.0.1')), null);
    assert.equal(checkDestination(policy, ip('10.2.0.1')), 'private address');
    assert.equal(checkDestination(policy, ip('fc00::1')), 'unique-local address');
    assert.equal(checkDestination(policy, ip('127.0.0.2')), 'loopback address');
    assert.equal(checkDestination(policy, ip('::1')), 'loopback address');
  });

  test('allowPrivate allows every special class', () => {
    const policy: DestinationPolicy = { allow: new CidrSet([]), allowPrivate: true };
    for (const [addr] of denied) assert.equal(checkDestination(policy, ip(addr)), null, addr);
    assert.equal(checkDestination(policy, ip('64:ff9b::7f00:1')), null);
  });

  test('every special range parses', () => {
    for (const [name, ranges] of Object.entries(SPECIAL_RANGES)) {
      assert.doesNotThrow(() => new CidrSet(ranges), name);
    }
  });
});
