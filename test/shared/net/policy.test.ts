import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { CidrSet, parseIp, type Ip } from '../../../shared/net/address.js';
import { LOOPBACK_INSIDE, SAMPLES } from './samples.js';
import { checkDestination, embeddedV4, embeddedV4s, specialBlock, specialClass, SPECIAL_BLOCKS, SPECIAL_RANGES, type DestinationPolicy } from '../../../shared/net/policy.js';

function ip(text: string): Ip {
  const parsed = parseIp(text);
  assert.ok(parsed, `expected ${JSON.stringify(text)} to parse`);
  return parsed;
}

const DEFAULT: DestinationPolicy = { allow: new CidrSet([]), allowPrivate: false };
const allowing = (...cidrs: string[]): DestinationPolicy => ({ allow: new CidrSet(cidrs), allowPrivate: false });

describe('the special-purpose table', () => {
  test('every row has a sample address, and the sample falls in that row', () => {
    assert.deepEqual(Object.keys(SAMPLES).sort(), SPECIAL_BLOCKS.map((b) => b.cidr).sort());
    for (const b of SPECIAL_BLOCKS) assert.equal(specialBlock(ip(SAMPLES[b.cidr]!)), b, b.cidr);
  });

  test('every denied row: refused by default, allowed with --allow of that block, and by --allow-private', () => {
    for (const b of SPECIAL_BLOCKS.filter((r) => r.deny)) {
      const addr = ip(SAMPLES[b.cidr]!);
      const why = checkDestination(DEFAULT, addr);
      assert.ok(why?.startsWith(`${b.class} address`) && why.includes(b.rfc), `${b.cidr}: ${why}`);
      assert.equal(specialClass(addr), b.class, b.cidr);
      assert.equal(checkDestination(allowing(b.cidr), addr), null, b.cidr);
      assert.equal(checkDestination({ allow: new CidrSet([]), allowPrivate: true }, addr), null, b.cidr);
    }
  });

  test('globally reachable rows inside denied blocks, and translation forms carrying a public IPv4, are allowed', () => {
    for (const b of SPECIAL_BLOCKS.filter((r) => !r.deny)) {
      assert.equal(checkDestination(DEFAULT, ip(SAMPLES[b.cidr]!)), null, b.cidr);
      assert.equal(specialClass(ip(SAMPLES[b.cidr]!)), null, b.cidr);
    }
  });

  test('every row records the registry fields', () => {
    for (const b of SPECIAL_BLOCKS) {
      assert.match(b.rfc, /^RFC \d+$/, b.cidr);
      assert.ok(b.name.length > 2, b.cidr);
      // a row allowed although in the registry as not globally reachable would be a hole
      if (b.reachable === false) assert.ok(b.deny || b.embeds, b.cidr);
    }
  });

  test('the PCP and TURN anycast addresses stay refused (they answer on the local network)', () => {
    for (const a of ['192.0.0.9', '192.0.0.10', '2001:1::1', '2001:1::2', '2001:1::3']) assert.notEqual(checkDestination(DEFAULT, ip(a)), null, a);
  });
});

describe('IPv4 inside IPv6', () => {
  test('the IPv4 is read from every translation form', () => {
    assert.deepEqual(embeddedV4(ip('::127.0.0.1')), ip('127.0.0.1'));
    assert.deepEqual(embeddedV4(ip('::ffff:0:127.0.0.1')), ip('127.0.0.1'));
    assert.deepEqual(embeddedV4(ip('64:ff9b::7f00:1')), ip('127.0.0.1'));
    assert.deepEqual(embeddedV4(ip('64:ff9b::10.0.0.1')), ip('10.0.0.1'));
    // RFC 6052 §2.2 with a /48 prefix: octets 1-2 in bits 48-63, u (bits 64-71) zero, octets 3-4 after it
    assert.deepEqual(embeddedV4s(ip('64:ff9b:1:c000:2:100::')), [ip('192.0.2.1')]);
    assert.deepEqual(embeddedV4s(ip('64:ff9b:1::192.0.2.1')), [ip('192.0.2.1')]);
    assert.deepEqual(embeddedV4s(ip('64:ff9b:1::')), [ip('0.0.0.0')]);
    assert.deepEqual(embeddedV4(ip('2002:7f00:1::1')), ip('127.0.0.1'));
    // Teredo: server 65.54.227.120, client 192.0.2.45 obfuscated (RFC 4380 §4 example style)
    assert.deepEqual(embeddedV4s(ip('2001:0:4136:e378:8000:63bf:3fff:fdd2')), [ip('65.54.227.120'), ip('192.0.2.45')]);
    assert.deepEqual(embeddedV4s(ip('2001:db8::1')), []);
    assert.deepEqual(embeddedV4s(ip('127.0.0.1')), []);
    assert.deepEqual(embeddedV4s(ip('::1')), []);
  });

  test('a translation form carrying a refused IPv4 is refused, and --allow of the IPv4 block allows it', () => {
    for (const [block, addr] of LOOPBACK_INSIDE) {
      const why = checkDestination(DEFAULT, ip(addr));
      assert.ok(why?.includes('embedded IPv4 127.0.0.1') || why?.startsWith('nat64-local'), `${addr}: ${why}`);
      assert.ok(specialClass(ip(addr)), addr);
      // allowing the IPv6 block does not allow the loopback inside it
      assert.match(checkDestination(allowing(block), ip(addr)) ?? '', /^loopback address \(embedded IPv4 127\.0\.0\.1\)/, addr);
      assert.equal(checkDestination(allowing(block, '127.0.0.0/8'), ip(addr)), null, addr);
    }
  });

  test('the four addresses of issue 10 are refused', () => {
    for (const a of ['::127.0.0.1', '64:ff9b:1::7f00:1', '::ffff:0:127.0.0.1', 'fec0::1']) assert.notEqual(checkDestination(DEFAULT, ip(a)), null, a);
  });

  test('v4-mapped forms are the IPv4 address', () => {
    for (const [cidr, sample] of Object.entries(SAMPLES)) {
      if (cidr.includes(':')) continue;
      for (const mapped of [`::ffff:${sample}`, `[::ffff:${sample}]`, `0:0:0:0:0:ffff:${sample}`]) {
        assert.equal(specialClass(ip(mapped)), specialClass(ip(sample)), mapped);
        assert.notEqual(checkDestination(DEFAULT, ip(mapped)), null, mapped);
      }
    }
    assert.equal(specialClass(ip('::ffff:7f00:1')), 'loopback');
    assert.equal(specialClass(ip('::ffff:a00:1')), 'private');
  });

  test('the host\'s own addresses, also inside a translation form', () => {
    const policy: DestinationPolicy = { ...DEFAULT, self: new CidrSet(['8.8.4.4', '2606:4700::1']) };
    assert.equal(checkDestination(policy, ip('8.8.4.4')), "the gateway's own address");
    assert.equal(checkDestination(policy, ip('2606:4700::1')), "the gateway's own address");
    assert.equal(checkDestination(policy, ip('64:ff9b::8.8.4.4')), "the gateway's own address (embedded IPv4 8.8.4.4)");
    assert.equal(checkDestination({ ...policy, selfName: 'the bridge' }, ip('8.8.4.4')), "the bridge's own address");
    assert.equal(checkDestination({ ...policy, allowPrivate: true }, ip('8.8.4.4')), null);
    assert.equal(checkDestination(policy, ip('8.8.8.8')), null);
  });
});

describe('checkDestination', () => {
  test('public addresses are allowed', () => {
    for (const addr of ['8.8.8.8', '::ffff:8.8.8.8', '2606:4700::1111', '172.32.0.1', '100.128.0.1', '11.0.0.1', '223.255.255.255', '192.0.3.1', '192.31.196.1', '192.175.48.1', '2620:4f:8000::1', '2001:200::1']) {
      assert.equal(specialClass(ip(addr)), null, addr);
      assert.equal(checkDestination(DEFAULT, ip(addr)), null, addr);
    }
  });

  test('--allow CIDR overrides the table for exactly its range', () => {
    const policy = allowing('10.1.0.0/16', 'fd00::/8', '127.0.0.1');
    assert.equal(checkDestination(policy, ip('10.1.2.3')), null);
    assert.equal(checkDestination(policy, ip('::ffff:10.1.2.3')), null);
    assert.equal(checkDestination(policy, ip('fd00::1')), null);
    assert.equal(checkDestination(policy, ip('127.0.0.1')), null);
    assert.match(checkDestination(policy, ip('10.2.0.1'))!, /^private address: 10\.0\.0\.0\/8 Private-Use, RFC 1918$/);
    assert.match(checkDestination(policy, ip('fc00::1'))!, /^unique-local address/);
    assert.match(checkDestination(policy, ip('127.0.0.2'))!, /^loopback address/);
    assert.match(checkDestination(policy, ip('::1'))!, /^loopback address/);
  });

  test('every special range parses', () => {
    for (const [name, ranges] of Object.entries(SPECIAL_RANGES)) assert.doesNotThrow(() => new CidrSet(ranges), name);
    assert.ok(SPECIAL_RANGES.loopback?.includes('127.0.0.0/8'));
  });
});
