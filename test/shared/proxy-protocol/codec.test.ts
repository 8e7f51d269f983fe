// The PROXY protocol decoder against HAProxy's doc/proxy-protocol.txt: v1 lines (TCP4, TCP6,
// UNKNOWN, the 107-byte limit, CRLF only), v2 headers (signature, version, LOCAL vs PROXY, the
// family/protocol bytes, length, TLVs skipped with their lengths checked), every split of a
// valid header decoding the same, and the bytes after it left to the next protocol.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  decodeProxyHeader,
  encodeProxyV1,
  encodeProxyV2,
  startsLikeProxyHeader,
  V1_MAX_LINE,
  V2_SIGNATURE,
  type ProxyDecoded,
} from '../../../shared/proxy-protocol/codec.js';
import { concatBytes } from '../../../shared/socks5/codec.js';

const text = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));
const code = (d: ProxyDecoded): string => (d.status === 'error' ? d.error.code : d.status);

/** Decodes growing prefixes as the gateway's reader does; every proper prefix must say 'need'. */
function everyPrefixNeeds(bytes: Uint8Array): void {
  for (let i = 0; i < bytes.length; i++) assert.equal(code(decodeProxyHeader(bytes.subarray(0, i))), 'need', `prefix of ${i} bytes`);
}

/** All two- and three-piece splits give the one-piece answer. */
function splitsAgree(bytes: Uint8Array): void {
  const whole = JSON.stringify(decodeProxyHeader(bytes));
  for (let a = 1; a < bytes.length; a++) {
    for (let b = a; b < bytes.length; b += Math.max(1, Math.floor(bytes.length / 7))) {
      let buf: Uint8Array = new Uint8Array(0);
      let d: ProxyDecoded = { status: 'need' };
      for (const piece of [bytes.subarray(0, a), bytes.subarray(a, b), bytes.subarray(b)]) {
        buf = concatBytes(buf, piece);
        d = decodeProxyHeader(buf);
        if (d.status !== 'need') break;
      }
      assert.equal(JSON.stringify(d), whole, `split at ${a}, ${b}`);
    }
  }
}

const SOCKS_GREETING = Uint8Array.of(5, 1, 0);

describe('PROXY protocol v1', () => {
  const valid: [string, unknown][] = [
    ['PROXY TCP4 192.0.2.1 198.51.100.2 56324 1081\r\n', { source: { host: '192.0.2.1', port: 56324 }, destination: { host: '198.51.100.2', port: 1081 } }],
    ['PROXY TCP4 255.255.255.255 0.0.0.0 65535 0\r\n', { source: { host: '255.255.255.255', port: 65535 }, destination: { host: '0.0.0.0', port: 0 } }],
    ['PROXY TCP6 2001:DB8::1 2001:db8:0:0:0:0:0:2 1 2\r\n', { source: { host: '2001:db8::1', port: 1 }, destination: { host: '2001:db8::2', port: 2 } }],
    // a v4-mapped TCP6 source is the IPv4 client, as the gateway's own dual-stack sockets report it
    ['PROXY TCP6 ::ffff:192.0.2.7 2001:db8::2 1 2\r\n', { source: { host: '192.0.2.7', port: 1 }, destination: { host: '2001:db8::2', port: 2 } }],
    ['PROXY UNKNOWN\r\n', { source: null, destination: null }],
    // "the receiver must ignore anything presented before the CRLF"
    ['PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n', { source: null, destination: null }],
  ];
  for (const [line, want] of valid) {
    test(`decodes ${JSON.stringify(line)}, every prefix needs more, every split agrees, SOCKS bytes after it are left`, () => {
      const bytes = text(line);
      const d = decodeProxyHeader(concatBytes(bytes, SOCKS_GREETING));
      assert.equal(d.status, 'ok');
      if (d.status !== 'ok') return;
      assert.equal(d.size, bytes.length, 'the header ends at its CRLF');
      assert.deepEqual({ source: d.msg.source, destination: d.msg.destination }, want);
      assert.equal(d.msg.version, 1);
      everyPrefixNeeds(bytes);
      splitsAgree(concatBytes(bytes, SOCKS_GREETING));
    });
  }

  test('the longest line the specification allows (107 bytes) is taken; one byte more is refused', () => {
    const longest = text(`PROXY UNKNOWN ${'ffff:'.repeat(7)}ffff ${'ffff:'.repeat(7)}ffff 65535 65535\r\n`);
    assert.equal(longest.length, V1_MAX_LINE);
    assert.equal(code(decodeProxyHeader(longest)), 'ok');
    const over = text(`PROXY UNKNOWN ${'ffff:'.repeat(7)}ffff ${'ffff:'.repeat(7)}ffff 65535 655350\r\n`);
    assert.equal(code(decodeProxyHeader(over)), 'ERR_PROXY_MALFORMED');
    // without a CRLF, the 107th byte decides: no more waiting
    assert.equal(code(decodeProxyHeader(text(`PROXY UNKNOWN ${'x'.repeat(V1_MAX_LINE - 15)}`))), 'need');
    assert.equal(code(decodeProxyHeader(text(`PROXY UNKNOWN ${'x'.repeat(V1_MAX_LINE - 14)}`))), 'ERR_PROXY_MALFORMED');
  });

  const malformed = [
    'PROXY TCP4 192.0.2.1 198.51.100.2 56324 1081\n', // LF alone
    'PROXY TCP4 192.0.2.1 198.51.100.2 56324 1081\r\r\n', // CR alone
    'PROXY TCP4 192.0.2.1 198.51.100.2 56324 1081 \r\n', // trailing space
    'PROXY TCP4  192.0.2.1 198.51.100.2 56324 1081\r\n', // two spaces
    'PROXY TCP4 192.0.2.01 198.51.100.2 56324 1081\r\n', // leading zero (octal confusion)
    'PROXY TCP4 192.0.2.256 198.51.100.2 56324 1081\r\n',
    'PROXY TCP4 192.0.2.1 198.51.100.2 056324 1081\r\n',
    'PROXY TCP4 192.0.2.1 198.51.100.2 65536 1081\r\n',
    'PROXY TCP4 192.0.2.1 198.51.100.2 -1 1081\r\n',
    'PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n', // family mismatch
    'PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n',
    'PROXY TCP6 2001:db8::1%eth0 2001:db8::2 1 2\r\n', // scope
    'PROXY TCP6 2001:db8:::1 2001:db8::2 1 2\r\n',
    'PROXY TCP4 192.0.2.1 198.51.100.2 1\r\n', // a field missing
    'PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n',
    'PROXY UNKNOWNX\r\n',
    'PROXY tcp4 192.0.2.1 198.51.100.2 1 2\r\n',
    'PROXY \r\n',
    'PROXY TCP4 192.0.2.1\x00198.51.100.2 1 2\r\n',
  ];
  for (const line of malformed) {
    test(`refuses ${JSON.stringify(line)} with ERR_PROXY_MALFORMED, however it is split`, () => {
      assert.equal(code(decodeProxyHeader(text(line))), 'ERR_PROXY_MALFORMED');
      splitsAgree(text(line));
    });
  }

  test('what is not a header at all is ERR_PROXY_MISSING at its first wrong byte', () => {
    for (const s of ['\x05\x01\x00', 'POST / HTTP/1.1\r\n', 'PROXX', 'proxy TCP4', 'GET /']) {
      assert.equal(code(decodeProxyHeader(text(s))), 'ERR_PROXY_MISSING', s);
    }
    assert.equal(code(decodeProxyHeader(text('PROX'))), 'need');
  });

  test('the encoder writes what the decoder reads', () => {
    const d = decodeProxyHeader(encodeProxyV1({ host: '2001:db8::5', port: 4000 }, { host: '2001:db8::6', port: 1081 }));
    assert.equal(d.status === 'ok' && d.msg.source?.host, '2001:db8::5');
    assert.deepEqual(encodeProxyV1(null, null), text('PROXY UNKNOWN\r\n'));
  });
});

describe('PROXY protocol v2', () => {
  const v4 = { command: 'proxy' as const, source: { host: '192.0.2.1', port: 56324 }, destination: { host: '198.51.100.2', port: 1081 } };
  const v6 = { command: 'proxy' as const, source: { host: '2001:db8::1', port: 1 }, destination: { host: '2001:db8::2', port: 65535 } };
  const tlvs = [
    { type: 0x01, value: text('h2') }, // ALPN
    { type: 0x04, value: new Uint8Array(0) }, // NOOP, empty
    { type: 0x05, value: new Uint8Array(128).fill(7) }, // UNIQUE_ID
    { type: 0x20, value: Uint8Array.of(1, 0, 0, 0, 0, 0x21, 0, 3, 0x54, 0x4c, 0x53) }, // SSL with a sub-TLV
  ];
  const cases: [string, Uint8Array, unknown][] = [
    ['TCP over IPv4', encodeProxyV2(v4), { command: 'proxy', source: v4.source, destination: v4.destination }],
    ['TCP over IPv6', encodeProxyV2(v6), { command: 'proxy', source: v6.source, destination: v6.destination }],
    ['TCP over IPv4 with TLVs', encodeProxyV2({ ...v4, tlvs }), { command: 'proxy', source: v4.source, destination: v4.destination }],
    ['LOCAL (a health check): no address', encodeProxyV2({ command: 'local' }), { command: 'local', source: null, destination: null }],
    ['LOCAL with TLVs', encodeProxyV2({ command: 'local', tlvs }), { command: 'local', source: null, destination: null }],
    // LOCAL: "discard the protocol block including the family"
    ['LOCAL with an IPv4 block', encodeProxyV2({ ...v4, command: 'local' }), { command: 'local', source: null, destination: null }],
    ['PROXY with AF_UNSPEC', encodeProxyV2({ command: 'proxy' }), { command: 'proxy', source: null, destination: null }],
  ];
  for (const [name, bytes, want] of cases) {
    test(`${name}: decoded, every prefix needs more, every split agrees, SOCKS bytes after it are left`, () => {
      const d = decodeProxyHeader(concatBytes(bytes, SOCKS_GREETING));
      assert.equal(d.status, 'ok');
      if (d.status !== 'ok') return;
      assert.equal(d.size, bytes.length);
      assert.deepEqual({ command: d.msg.command, source: d.msg.source, destination: d.msg.destination }, want);
      assert.equal(d.msg.version, 2);
      everyPrefixNeeds(bytes);
      splitsAgree(concatBytes(bytes, SOCKS_GREETING));
    });
  }

  /** A v2 header by hand: version/command, family byte, and the bytes after the length. */
  const raw = (verCmd: number, fam: number, body: Uint8Array, len = body.length): Uint8Array =>
    concatBytes(V2_SIGNATURE, Uint8Array.of(verCmd, fam, len >> 8, len & 0xff), body);
  const v4block = Uint8Array.of(192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0x04, 0x39);

  test('UDP and UNIX families fall back to the connection\'s own endpoints (UNSPEC mode)', () => {
    for (const [fam, block] of [[0x12, v4block], [0x22, new Uint8Array(36)], [0x31, new Uint8Array(216)], [0x32, new Uint8Array(216)]] as const) {
      const d = decodeProxyHeader(raw(0x21, fam, block));
      assert.equal(d.status === 'ok' && d.msg.source, null, `family 0x${fam.toString(16)}`);
    }
  });

  const malformed: [string, Uint8Array][] = [
    ['version 1', raw(0x11, 0x11, v4block)],
    ['version 3', raw(0x31, 0x11, v4block)],
    ['command 2', raw(0x22, 0x11, v4block)],
    ['command 0xf', raw(0x2f, 0x00, new Uint8Array(0))],
    ['family 0x4', raw(0x21, 0x41, v4block)],
    ['protocol 0x3', raw(0x21, 0x13, v4block)],
    ['AF_INET with UNSPEC protocol', raw(0x21, 0x10, v4block)],
    ['UNSPEC family with STREAM protocol', raw(0x21, 0x01, new Uint8Array(0))],
    ['IPv4 block cut short', raw(0x21, 0x11, v4block.subarray(0, 11))],
    ['IPv6 block cut short', raw(0x21, 0x21, new Uint8Array(35))],
    ['UNIX block cut short', raw(0x21, 0x31, new Uint8Array(108))],
    ['LOCAL with a family block cut short', raw(0x20, 0x11, new Uint8Array(4))],
    ['a TLV header cut short', raw(0x21, 0x11, concatBytes(v4block, Uint8Array.of(0x04, 0)))],
    ['a TLV running past the header', raw(0x21, 0x11, concatBytes(v4block, Uint8Array.of(0x04, 0, 5, 1, 2, 3, 4)))],
    ['a second TLV running past the header', raw(0x21, 0x00, Uint8Array.of(0x04, 0, 0, 0x05, 0xff, 0xff))],
  ];
  for (const [name, bytes] of malformed) {
    test(`refuses ${name} with ERR_PROXY_MALFORMED, however it is split`, () => {
      assert.equal(code(decodeProxyHeader(bytes)), 'ERR_PROXY_MALFORMED');
      splitsAgree(bytes);
    });
  }

  test('a wrong signature byte is ERR_PROXY_MISSING as soon as it is in; the length decides how much is waited for', () => {
    for (let i = 1; i < V2_SIGNATURE.length; i++) {
      const bad = V2_SIGNATURE.slice(0, i + 1);
      bad[i]! ^= 0x40;
      assert.equal(code(decodeProxyHeader(bad)), 'ERR_PROXY_MISSING', `byte ${i}`);
    }
    // a header announcing 65535 bytes is waited for (a balancer is trusted), then read whole
    const big = raw(0x21, 0x00, concatBytes(Uint8Array.of(0x04, 0xff, 0xfc), new Uint8Array(0xfffc)));
    assert.equal(code(decodeProxyHeader(big.subarray(0, 60000))), 'need');
    const d = decodeProxyHeader(big);
    assert.equal(d.status === 'ok' && d.size, 16 + 0xffff);
  });

  test('startsLikeProxyHeader: a full v1 prefix or v2 signature, nothing shorter, no SOCKS or HTTP', () => {
    assert.equal(startsLikeProxyHeader(text('PROXY ')), true);
    assert.equal(startsLikeProxyHeader(V2_SIGNATURE), true);
    assert.equal(startsLikeProxyHeader(text('PROXY')), false);
    assert.equal(startsLikeProxyHeader(V2_SIGNATURE.subarray(0, 11)), false);
    assert.equal(startsLikeProxyHeader(text('POST / HTTP/1.1\r\n')), false);
    assert.equal(startsLikeProxyHeader(SOCKS_GREETING), false);
  });
});
