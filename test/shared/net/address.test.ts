import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  canonicalHost,
  cidrContains,
  CidrSet,
  familyOf,
  formatIp,
  ipFromV4Bytes,
  isV4,
  joinHostPort,
  parseCidr,
  parseIp,
  splitHostPort,
  unbracket,
  type Ip,
} from '../../../shared/net/address.js';

function ip(text: string): Ip {
  const parsed = parseIp(text);
  assert.ok(parsed, `expected ${JSON.stringify(text)} to parse`);
  return parsed;
}

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

describe('parseIp / formatIp', () => {
  test('every address is 16 bytes', () => {
    for (const t of ['1.2.3.4', '::', '2001:db8::5', '::ffff:1.2.3.4']) assert.equal(ip(t).length, 16);
  });

  test('IPv6 texts format canonically (RFC 5952)', () => {
    const cases: [string, string][] = [
      ['::', '::'],
      ['0::0', '::'],
      ['0:0:0:0:0:0:0:0', '::'],
      ['::1', '::1'],
      ['0:0:0:0:0:0:0:1', '::1'],
      ['1::', '1::'],
      ['2001:db8::5', '2001:db8::5'],
      ['2001:0db8:0000:0000:0000:0000:0000:0005', '2001:db8::5'],
      // §4.1 no leading zeros, §4.3 lower case
      ['2001:DB8:00AB::0001', '2001:db8:ab::1'],
      // §4.2.2 a single zero word is not shortened
      ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
      // §4.2.1 the longest run is shortened
      ['1:0:0:2:0:0:0:3', '1:0:0:2::3'],
      // §4.2.3 on a tie, the first run is shortened
      ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
      ['1::2:3:4:5:6:7', '1:0:2:3:4:5:6:7'],
      ['1:2:3:4:5:6:7::', '1:2:3:4:5:6:7:0'],
      ['::2:3:4:5:6:7:8', '0:2:3:4:5:6:7:8'],
      ['fe80::1', 'fe80::1'],
      ['ff02::1:ff00:1', 'ff02::1:ff00:1'],
      ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'],
      // brackets as in URLs and --listen
      ['[::1]', '::1'],
      ['[2001:db8::5]', '2001:db8::5'],
    ];
    for (const [text, want] of cases) assert.equal(formatIp(ip(text)), want, text);
  });

  test('embedded dotted quad fills the last two words', () => {
    assert.equal(hex(ip('::1.2.3.4')), '00000000000000000000000001020304');
    assert.equal(formatIp(ip('::1.2.3.4')), '::102:304');
    assert.equal(formatIp(ip('64:ff9b::192.0.2.33')), '64:ff9b::c000:221');
    assert.equal(formatIp(ip('1:2:3:4:5:6:1.2.3.4')), '1:2:3:4:5:6:102:304');
    assert.equal(formatIp(ip('1::1.2.3.4')), '1::102:304');
  });

  test('IPv4 is held v4-mapped and formats as a dotted quad', () => {
    assert.equal(hex(ip('1.2.3.4')), '00000000000000000000ffff01020304');
    assert.deepEqual(ip('::ffff:1.2.3.4'), ip('1.2.3.4'));
    assert.deepEqual(ip('::ffff:102:304'), ip('1.2.3.4'));
    assert.deepEqual(ip('::FFFF:1.2.3.4'), ip('1.2.3.4'));
    assert.equal(formatIp(ip('::ffff:1.2.3.4')), '1.2.3.4');
    assert.equal(formatIp(ip('0:0:0:0:0:ffff:0102:0304')), '1.2.3.4');
    for (const t of ['0.0.0.0', '255.255.255.255', '192.0.2.1', '10.0.0.1']) assert.equal(formatIp(ip(t)), t);
    assert.equal(isV4(ip('1.2.3.4')), true);
    assert.equal(isV4(ip('::ffff:1.2.3.4')), true);
    assert.equal(isV4(ip('::1.2.3.4')), false);
    assert.equal(isV4(ip('::1')), false);
    assert.equal(familyOf(ip('198.51.100.1')), 4);
    assert.equal(familyOf(ip('2001:db8::1')), 6);
  });

  test('ipFromV4Bytes maps four bytes', () => {
    assert.deepEqual(ipFromV4Bytes(Uint8Array.of(192, 0, 2, 1)), ip('192.0.2.1'));
    // only the first four bytes count
    assert.deepEqual(ipFromV4Bytes(Uint8Array.of(192, 0, 2, 1, 9, 9)), ip('192.0.2.1'));
  });

  test('format then parse is the identity on random addresses', () => {
    let seed = 0x5eed;
    const rnd = (): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed >>> 24;
    };
    for (let n = 0; n < 2000; n++) {
      const a = new Uint8Array(16);
      // many zero words, so the "::" choice gets exercised
      for (let i = 0; i < 16; i += 2) {
        if (rnd() < 128) continue;
        a[i] = rnd() < 64 ? rnd() : 0;
        a[i + 1] = rnd();
      }
      if (n % 5 === 0) a.set([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
      const text = formatIp(a);
      assert.deepEqual(parseIp(text), a, text);
      assert.equal(formatIp(parseIp(text)!), text);
    }
  });

  test('invalid texts are null', () => {
    const bad = [
      '',
      ':',
      ':::',
      '::::',
      '1::2::3',
      '1:::2',
      ':1::2',
      '1::2:',
      '1:2:3:4:5:6:7:8:9',
      '1:2:3:4:5:6:7',
      '1:2:3:4:5:6:7:8::',
      '::1:2:3:4:5:6:7:8',
      '1:2:3:4:5:6:7:8:',
      '12345::',
      'g::1',
      '::-1',
      '::+1',
      '::ffff:1.2.3',
      '::ffff:01.2.3.4',
      '::ffff:1.2.3.256',
      '::ffff:1.2.3.4.5',
      '1:2:3:4:5:6:7:1.2.3.4',
      '1.2.3.4::',
      '1.2.3.4::1',
      '::1.2.3.4:5',
      '1.2.3',
      '1.2.3.4.5',
      '01.2.3.4',
      '1.2.3.04',
      '256.1.1.1',
      '1.2.3.-1',
      '1..2.3',
      '0x1.2.3.4',
      '1.2.3.4 ',
      ' 1.2.3.4',
      '1e2.1.1.1',
      '[::1',
      '::1]',
      '[[::1]]',
      '[]',
      '[1.2.3.4]',
      'fe80::1%eth0',
      '[fe80::1%eth0]',
      'fe80::1%25eth0',
      'localhost',
      'example.com',
      '1:2:3:4:5:6:7:8:9:0:1:2:3:4:5:6:7:8:9:0:1:2:3:4:5',
    ];
    for (const t of bad) assert.equal(parseIp(t), null, JSON.stringify(t));
  });

  test('canonicalHost normalises IPs and leaves names alone', () => {
    assert.equal(canonicalHost('::ffff:10.0.0.1'), '10.0.0.1');
    assert.equal(canonicalHost('2001:DB8:0::5'), '2001:db8::5');
    assert.equal(canonicalHost('[::1]'), '::1');
    assert.equal(canonicalHost('Example.COM'), 'Example.COM');
    assert.equal(canonicalHost('01.2.3.4'), '01.2.3.4');
  });
});

describe('splitHostPort / joinHostPort', () => {
  test('accepts host:port, [v6]:port and a bare host with a default', () => {
    const ok: [string, number | undefined, string, number][] = [
      ['example.com:80', undefined, 'example.com', 80],
      ['127.0.0.1:1080', undefined, '127.0.0.1', 1080],
      ['[::1]:1081', undefined, '::1', 1081],
      ['[2001:db8::5]:0', undefined, '2001:db8::5', 0],
      ['[::ffff:1.2.3.4]:65535', undefined, '::ffff:1.2.3.4', 65535],
      ['example.com', 443, 'example.com', 443],
      ['[::1]', 1080, '::1', 1080],
      ['host:22', 80, 'host', 22],
    ];
    for (const [text, def, host, port] of ok) assert.deepEqual(splitHostPort(text, def), { host, port }, text);
  });

  test('rejects malformed text', () => {
    const bad: [string, number?][] = [
      ['::1:80'],
      ['::1', 80],
      ['2001:db8::5'],
      ['[::1'],
      ['[::1', 80],
      ['[::1]80'],
      ['[::1]:'],
      ['[::1]:x'],
      ['[example.com]:80'],
      ['[fe80::1%eth0]:80'],
      ['[]:80'],
      ['host:'],
      [':80'],
      [''],
      ['', 80],
      ['host'],
      ['host:65536'],
      ['host:123456'],
      ['host:-1'],
      ['host:+80'],
      ['host: 80'],
      ['host:8 0'],
      ['a:b:c'],
    ];
    for (const [text, def] of bad) assert.equal(splitHostPort(text, def), null, JSON.stringify(text));
  });

  test('joinHostPort brackets IPv6 and round-trips through splitHostPort', () => {
    assert.equal(joinHostPort('::1', 1080), '[::1]:1080');
    assert.equal(joinHostPort('1.2.3.4', 80), '1.2.3.4:80');
    assert.equal(joinHostPort('example.com', 443), 'example.com:443');
    for (const [host, port] of [['::1', 1], ['2001:db8::5', 65535], ['192.0.2.1', 80], ['example.com', 0]] as const) {
      assert.deepEqual(splitHostPort(joinHostPort(host, port)), { host, port });
    }
  });
});

describe('CIDR', () => {
  test('parses v4, v6, v4-mapped and bare addresses', () => {
    assert.equal(parseCidr('10.0.0.0/8')!.bits, 96 + 8);
    assert.equal(parseCidr('0.0.0.0/0')!.bits, 96);
    assert.equal(parseCidr('192.0.2.1')!.bits, 128);
    assert.equal(parseCidr('2001:db8::/32')!.bits, 32);
    assert.equal(parseCidr('::/0')!.bits, 0);
    assert.equal(parseCidr('::1')!.bits, 128);
    // written in IPv6 form, the length counts over 128 bits
    assert.equal(parseCidr('::ffff:10.0.0.0/104')!.bits, 104);
    assert.equal(parseCidr('10.0.0.0/8')!.text, '10.0.0.0/8');
  });

  test('rejects malformed CIDRs', () => {
    for (const t of ['', '/8', '10.0.0.0/', '10.0.0.0/33', '2001:db8::/129', '10.0.0.0/8/8', '10.0.0.0/-1', '10.0.0.0/x', '10.0.0.0/1234', 'example.com/8', '10.0.0/8', '::ffff:10.0.0.0/129']) {
      assert.equal(parseCidr(t), null, JSON.stringify(t));
    }
  });

  const contains = (cidr: string, addr: string): boolean => cidrContains(parseCidr(cidr)!, ip(addr));

  test('IPv4 containment', () => {
    assert.equal(contains('10.0.0.0/8', '10.255.255.255'), true);
    assert.equal(contains('10.0.0.0/8', '11.0.0.0'), false);
    assert.equal(contains('10.0.0.0/8', '9.255.255.255'), false);
    assert.equal(contains('172.16.0.0/12', '172.31.1.1'), true);
    assert.equal(contains('172.16.0.0/12', '172.32.0.0'), false);
    assert.equal(contains('192.0.2.0/25', '192.0.2.127'), true);
    assert.equal(contains('192.0.2.0/25', '192.0.2.128'), false);
    assert.equal(contains('192.0.2.1', '192.0.2.1'), true);
    assert.equal(contains('192.0.2.1', '192.0.2.2'), false);
    // host bits in the prefix do not matter
    assert.equal(contains('10.1.2.3/8', '10.9.9.9'), true);
    // /0 over IPv4 is every IPv4 address and no IPv6 one
    assert.equal(contains('0.0.0.0/0', '255.255.255.255'), true);
    assert.equal(contains('0.0.0.0/0', '2001:db8::1'), false);
    assert.equal(contains('0.0.0.0/0', '::1'), false);
  });

  test('IPv6 containment', () => {
    assert.equal(contains('2001:db8::/32', '2001:db8:ffff::1'), true);
    assert.equal(contains('2001:db8::/32', '2001:db9::1'), false);
    assert.equal(contains('fe80::/10', 'febf::1'), true);
    assert.equal(contains('fe80::/10', 'fec0::1'), false);
    assert.equal(contains('fc00::/7', 'fdff::1'), true);
    assert.equal(contains('fc00::/7', 'fe00::1'), false);
    assert.equal(contains('::1/128', '::1'), true);
    assert.equal(contains('::1/128', '::2'), false);
    assert.equal(contains('::/0', '1.2.3.4'), true);
    assert.equal(contains('2001:db8::/127', '2001:db8::1'), true);
    assert.equal(contains('2001:db8::/127', '2001:db8::2'), false);
  });

  test('v4-mapped addresses match IPv4 rules and v4-mapped rules alike', () => {
    assert.equal(contains('127.0.0.0/8', '::ffff:127.0.0.1'), true);
    assert.equal(contains('::ffff:127.0.0.0/104', '127.0.0.1'), true);
    assert.equal(contains('::ffff:0:0/96', '198.51.100.1'), true);
    assert.equal(contains('::ffff:0:0/96', '2001:db8::1'), false);
    // IPv4-compatible (deprecated) is not v4-mapped
    assert.equal(contains('127.0.0.0/8', '::127.0.0.1'), false);
  });

  test('CidrSet matches the first containing entry and rejects bad entries', () => {
    const set = new CidrSet(['10.0.0.0/8', '10.1.0.0/16', '2001:db8::/32', parseCidr('192.0.2.1')!]);
    assert.equal(set.size, 4);
    assert.equal(set.match(ip('10.1.2.3'))!.text, '10.0.0.0/8');
    assert.equal(set.match(ip('2001:db8::1'))!.text, '2001:db8::/32');
    assert.equal(set.has(ip('192.0.2.1')), true);
    assert.equal(set.has(ip('192.0.2.2')), false);
    assert.equal(set.has(ip('::ffff:10.0.0.1')), true);
    assert.equal(new CidrSet([]).has(ip('::')), false);
    assert.throws(() => new CidrSet(['10.0.0.0/8', 'nonsense']), TypeError);
  });
});

test('unbracket takes the brackets off an IPv6 literal and leaves any other host alone', () => {
  assert.equal(unbracket('[::1]'), '::1');
  assert.equal(unbracket('[2001:db8::1]'), '2001:db8::1');
  assert.equal(unbracket('::1'), '::1');
  assert.equal(unbracket('example.com'), 'example.com');
  assert.equal(unbracket('10.0.0.1'), '10.0.0.1');
  assert.equal(unbracket('[]'), '');
  for (const half of ['[', ']', '[::1', '::1]']) assert.equal(unbracket(half), half);
  assert.equal(unbracket(new URL('http://[::1]:8080/').hostname), '::1');
});
