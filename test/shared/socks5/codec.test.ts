import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  concatBytes,
  decodeAuthReply,
  decodeAuthRequest,
  decodeGreeting,
  decodeMethodSelection,
  decodeReply,
  decodeRequest,
  decodeSocks4Reply,
  decodeSocks4Request,
  decodeUdpHeader,
  decodeUdpLayers,
  encodeAuthReply,
  encodeAuthRequest,
  encodeFailureReply,
  encodeGreeting,
  encodeMethodSelection,
  encodeReply,
  encodeRequest,
  encodeSocks4Reply,
  encodeSocks4Request,
  encodeUdpHeader,
  encodeUdpLayers,
  failureCode,
  sniffProtocol,
  type Decoded,
} from '../../../shared/socks5/codec.js';
import { parseIp } from '../../../shared/net/address.js';
import { ATYP, CMD, METHOD, REP, REP_TEXT, SOCKS4_CD } from '../../../shared/socks5/constants.js';
import { ConfigError, DualsocksError, ERRORS, isDualsocksError, RequestError, SocksProtocolError, type ErrorCode } from '../../../shared/errors.js';
import { ascii, bytes, prng, splits } from '../../helpers/bytes.js';

// ---- helpers ----

type Decoder<T> = (buf: Uint8Array) => Decoded<T>;

/** Feeds chunks into a growing buffer as a stream reader would; stops at the first answer. */
function decodeChunks<T>(decode: Decoder<T>, chunks: Uint8Array[]): { result: Decoded<T>; needs: number } {
  let buf: Uint8Array = new Uint8Array(0);
  let needs = 0;
  for (const c of chunks) {
    buf = concatBytes(buf, c);
    const r = decode(buf);
    if (r.status !== 'need') return { result: r, needs };
    needs++;
  }
  return { result: { status: 'need' }, needs };
}

/** Comparable form: errors by code, rep and words (a log line must not depend on segmentation), not identity. */
function view<T>(r: Decoded<T>): unknown {
  if (r.status === 'error') return { status: 'error', code: r.error.code, rep: r.error.rep, message: r.error.message };
  return r;
}

function assertSplitInvariant<T>(decode: Decoder<T>, input: Uint8Array): Decoded<T> {
  const whole = decode(input);
  for (const chunks of splits(input, { threeWayUpTo: 40 })) {
    assert.deepEqual(view(decodeChunks(decode, chunks).result), view(whole), `split ${chunks.map((c) => c.length).join('+')}`);
  }
  return whole;
}

function assertOk<T>(r: Decoded<T>): { msg: T; size: number } {
  if (r.status !== 'ok') assert.fail(`expected ok, got ${JSON.stringify(view(r))}`);
  return r;
}

function assertError<T>(r: Decoded<T>, code: ErrorCode, rep?: number): SocksProtocolError {
  if (r.status !== 'error') assert.fail(`expected ${code}, got ${JSON.stringify(view(r))}`);
  assert.ok(r.error instanceof SocksProtocolError);
  assert.equal(r.error.code, code);
  assert.equal(r.error.rep, rep ?? ERRORS[code].rep);
  return r.error;
}

/** A complete message: every proper prefix needs more, every split agrees, trailing bytes are left alone. */
function assertMessage<T>(decode: Decoder<T>, input: Uint8Array, msg: T): void {
  for (let i = 0; i < input.length; i++) assert.equal(decode(input.subarray(0, i)).status, 'need', `prefix ${i} of ${input.length}`);
  const whole = assertOk(assertSplitInvariant(decode, input));
  assert.deepEqual(whole.msg, msg);
  assert.equal(whole.size, input.length);
  const more = assertOk(decode(concatBytes(input, bytes(5, 1, 0, 0xff, 0))));
  assert.deepEqual(more, whole);
}

/** A bad message: need until the bad byte arrives, then the same error however it was split. */
function assertBad<T>(decode: Decoder<T>, input: Uint8Array, code: ErrorCode, rep?: number): void {
  const err = assertError(assertSplitInvariant(decode, input), code, rep);
  assert.ok(err.message.startsWith(ERRORS[code].text));
  // more bytes never turn an error into a message
  assertError(decode(concatBytes(input, new Uint8Array(300))), code, rep);
}

// ---- tests ----

describe('sniffProtocol', () => {
  test('classifies the first byte', () => {
    assert.equal(sniffProtocol(5), 'socks5');
    assert.equal(sniffProtocol(4), 'socks4');
    assert.equal(sniffProtocol(0x47), 'other'); // 'G' of GET
    assert.equal(sniffProtocol(0x16), 'other'); // TLS
  });
});

describe('greeting and method selection', () => {
  test('greeting round-trips for 1 to 255 methods', () => {
    for (const methods of [[METHOD.NO_AUTH], [METHOD.NO_AUTH, METHOD.USERPASS], [METHOD.GSSAPI, 0x80, 0xfe], Array.from({ length: 255 }, (_, i) => i)]) {
      const enc = encodeGreeting({ methods });
      assert.deepEqual(enc.subarray(0, 2), bytes(5, methods.length));
      assertMessage(decodeGreeting, enc, { methods });
    }
  });

  test('greeting errors', () => {
    assertBad(decodeGreeting, bytes(4, 1, 0), 'ERR_SOCKS_VERSION');
    assertBad(decodeGreeting, bytes(0x47, 0x45, 0x54), 'ERR_SOCKS_VERSION');
    assertBad(decodeGreeting, bytes(5, 0), 'ERR_SOCKS_METHODS');
    assert.throws(() => encodeGreeting({ methods: [] }), RangeError);
    assert.throws(() => encodeGreeting({ methods: new Array<number>(256).fill(0) }), RangeError);
  });

  test('method selection round-trips', () => {
    for (const method of [METHOD.NO_AUTH, METHOD.USERPASS, METHOD.NO_ACCEPTABLE]) {
      const enc = encodeMethodSelection({ method });
      assert.deepEqual(enc, bytes(5, method));
      assertMessage(decodeMethodSelection, enc, { method });
    }
    assertBad(decodeMethodSelection, bytes(4, 0), 'ERR_SOCKS_VERSION');
    assertBad(decodeMethodSelection, bytes(1), 'ERR_SOCKS_VERSION');
  });
});

describe('username/password (RFC 1929)', () => {
  test('auth request round-trips, including UTF-8 and an empty password', () => {
    const cases = [
      { username: 'alice', password: 's3cret' },
      { username: 'u', password: '' },
      { username: 'jürgen', password: 'pässwörd ✓' },
      { username: 'x'.repeat(255), password: 'y'.repeat(255) },
    ];
    for (const a of cases) {
      const enc = encodeAuthRequest(a);
      assert.equal(enc[0], 1);
      assertMessage(decodeAuthRequest, enc, { username: ascii(a.username), password: ascii(a.password) });
    }
  });

  test('credentials are bytes: invalid UTF-8 is kept exactly, and bytes encode as they are', () => {
    // two passwords that decode to the same replacement characters must stay different
    const a = bytes(0x70, 0xe4, 0x73, 0x73, 0x77, 0xf6, 0x72);
    const b = bytes(0x70, 0xfc, 0x73, 0x73, 0x77, 0xff, 0x72);
    for (const password of [a, b]) {
      const enc = encodeAuthRequest({ username: bytes(0xff, 0x61), password });
      assert.deepEqual(enc, concatBytes(bytes(1, 2, 0xff, 0x61, 7), password));
      assertMessage(decodeAuthRequest, enc, { username: bytes(0xff, 0x61), password });
    }
  });

  test('auth request errors', () => {
    assertBad(decodeAuthRequest, bytes(5, 1, 0x61, 0), 'ERR_SOCKS_AUTH_VERSION');
    assertBad(decodeAuthRequest, bytes(1, 0, 1, 0x61), 'ERR_SOCKS_AUTH_MALFORMED');
    assert.throws(() => encodeAuthRequest({ username: '', password: 'p' }), RangeError);
    assert.throws(() => encodeAuthRequest({ username: 'x'.repeat(256), password: 'p' }), RangeError);
    assert.throws(() => encodeAuthRequest({ username: 'u', password: 'é'.repeat(128) }), RangeError);
  });

  test('auth reply round-trips', () => {
    for (const status of [0, 1, 0xff]) {
      const enc = encodeAuthReply({ status });
      assert.deepEqual(enc, bytes(1, status));
      assertMessage(decodeAuthReply, enc, { status });
    }
    assertBad(decodeAuthReply, bytes(5, 0), 'ERR_SOCKS_AUTH_VERSION');
  });
});

describe('request and reply', () => {
  const name255 = 'a'.repeat(63) + '.' + 'b'.repeat(63) + '.' + 'c'.repeat(63) + '.' + 'd'.repeat(63);

  test('request round-trips for every command and address type', () => {
    const cases: { cmd: number; host: string; port: number; atyp: number; wire: number[] }[] = [
      { cmd: CMD.CONNECT, host: '192.0.2.1', port: 80, atyp: ATYP.IPV4, wire: [5, 1, 0, 1, 192, 0, 2, 1, 0, 80] },
      { cmd: CMD.BIND, host: '2001:db8::5', port: 0x1234, atyp: ATYP.IPV6, wire: [5, 2, 0, 4, 0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0x12, 0x34] },
      { cmd: CMD.UDP_ASSOCIATE, host: 'example.com', port: 65535, atyp: ATYP.DOMAIN, wire: [5, 3, 0, 3, 11, ...ascii('example.com'), 0xff, 0xff] },
      { cmd: CMD.CONNECT, host: '0.0.0.0', port: 0, atyp: ATYP.IPV4, wire: [5, 1, 0, 1, 0, 0, 0, 0, 0, 0] },
      { cmd: CMD.CONNECT, host: '::', port: 1, atyp: ATYP.IPV6, wire: [5, 1, 0, 4, ...new Array<number>(16).fill(0), 0, 1] },
    ];
    for (const c of cases) {
      const enc = encodeRequest({ cmd: c.cmd, host: c.host, port: c.port });
      assert.deepEqual(enc, Uint8Array.from(c.wire), c.host);
      assertMessage(decodeRequest, enc, { cmd: c.cmd, atyp: c.atyp, host: c.host, port: c.port });
    }
    const long = encodeRequest({ cmd: CMD.CONNECT, host: name255, port: 443 });
    assert.equal(long[4], 255);
    assertMessage(decodeRequest, long, { cmd: CMD.CONNECT, atyp: ATYP.DOMAIN, host: name255, port: 443 });
  });

  test('IPv4 travels as ATYP 1 whatever its text; v4-mapped bytes under ATYP 4 read as IPv4 text', () => {
    const mapped = encodeRequest({ cmd: CMD.CONNECT, host: '::ffff:198.51.100.1', port: 80 });
    assert.deepEqual(mapped, encodeRequest({ cmd: CMD.CONNECT, host: '198.51.100.1', port: 80 }));
    assert.equal(mapped[3], ATYP.IPV4);
    const v6wire = bytes(5, 1, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 51, 100, 1, 0, 80);
    assert.deepEqual(assertOk(decodeRequest(v6wire)).msg, { cmd: 1, atyp: ATYP.IPV6, host: '198.51.100.1', port: 80 });
    // IPv6 text comes back canonical
    const loud = encodeRequest({ cmd: CMD.CONNECT, host: '2001:DB8:0:0::0005', port: 1 });
    assert.equal(assertOk(decodeRequest(loud)).msg.host, '2001:db8::5');
  });

  test('unknown command is REP 0x07', () => {
    for (const cmd of [0, 4, 0x80, 0xff]) {
      const wire = encodeRequest({ cmd: CMD.CONNECT, host: '192.0.2.1', port: 80 });
      wire[1] = cmd;
      assertBad(decodeRequest, wire, 'ERR_SOCKS_COMMAND', REP.COMMAND_NOT_SUPPORTED);
      // known as soon as the command byte arrives
      assertError(decodeRequest(wire.subarray(0, 2)), 'ERR_SOCKS_COMMAND', 0x07);
    }
  });

  test('unknown ATYP is REP 0x08', () => {
    for (const atyp of [0, 2, 5, 0xff]) {
      assertBad(decodeRequest, bytes(5, 1, 0, atyp, 1, 2, 3, 4, 0, 80), 'ERR_SOCKS_ATYP', REP.ADDRESS_TYPE_NOT_SUPPORTED);
      assertError(decodeRequest(bytes(5, 1, 0, atyp)), 'ERR_SOCKS_ATYP', 0x08);
    }
  });

  test('bad version and bad names are REP 0x01', () => {
    assertBad(decodeRequest, bytes(4, 1, 0, 1, 1, 2, 3, 4, 0, 80), 'ERR_SOCKS_VERSION', REP.GENERAL_FAILURE);
    assertBad(decodeRequest, bytes(5, 1, 0, 3, 0, 0, 80), 'ERR_SOCKS_NAME', REP.GENERAL_FAILURE);
    for (const bad of [' ', '\x00', '\x7f', 'a b', 'ex\nample', 'é']) {
      const name = ascii(bad);
      assertBad(decodeRequest, concatBytes(bytes(5, 1, 0, 3, name.length), name, bytes(0, 80)), 'ERR_SOCKS_NAME', 1);
    }
    // names that are no host name (an empty one reached dns.lookup as "": DEP0118)
    for (const bad of ['.', '..', 'a..b', '.a', 'a.b..', `${'x'.repeat(64)}.test`, `a.${'x'.repeat(64)}`]) {
      const name = ascii(bad);
      assertBad(decodeRequest, concatBytes(bytes(5, 1, 0, 3, name.length), name, bytes(0, 80)), 'ERR_SOCKS_NAME', 1);
      assertBad(decodeSocks4Request, concatBytes(bytes(4, 1, 0, 80, 0, 0, 0, 1, 0), name, bytes(0)), 'ERR_SOCKS_NAME');
      assertError(decodeUdpHeader(concatBytes(bytes(0, 0, 0, 3, name.length), name, bytes(0, 53))), 'ERR_SOCKS_NAME');
    }
    // real-world names pass: underscores, a final dot, hyphens, one label, 63-byte labels, IP text
    for (const good of ['_sip._tcp.example.com', 'example.com.', 'my-host', 'localhost', `${'x'.repeat(63)}.test`, '::1', '[2001:db8::1]', '::ffff:192.0.2.1', 'xn--bcher-kva.example']) {
      const name = ascii(good);
      const d = decodeRequest(concatBytes(bytes(5, 1, 0, 3, name.length), name, bytes(0, 80)));
      assert.equal(d.status, 'ok', good);
      assert.doesNotThrow(() => encodeRequest({ cmd: CMD.CONNECT, host: good, port: 80 }), good);
    }
    // a name is judged only once the whole field is in
    assert.equal(decodeRequest(bytes(5, 1, 0, 3, 3, 0x20)).status, 'need');
  });

  test('encoders refuse what the decoders would refuse', () => {
    for (const host of ['', 'a b', 'x'.repeat(256), 'bad\u0000name', 'ünïcode', '.', 'a..b', `${'x'.repeat(64)}.test`]) {
      assert.throws(() => encodeRequest({ cmd: CMD.CONNECT, host, port: 80 }), (e: unknown) => e instanceof SocksProtocolError && e.code === 'ERR_SOCKS_NAME');
    }
    for (const port of [-1, 65536, 1.5, NaN]) {
      assert.throws(() => encodeRequest({ cmd: CMD.CONNECT, host: '192.0.2.1', port }), RangeError);
      assert.throws(() => encodeReply({ rep: 0, host: '192.0.2.1', port }), RangeError);
      assert.throws(() => encodeUdpHeader({ host: 'example.com', port }), RangeError);
    }
  });

  test('reply round-trips every REP and address type', () => {
    for (let rep = 0; rep <= 8; rep++) {
      for (const [host, port, atyp] of [['198.51.100.7', 1080, ATYP.IPV4], ['2001:db8::9', 40000, ATYP.IPV6], ['gw.example', 1, ATYP.DOMAIN]] as const) {
        assertMessage(decodeReply, encodeReply({ rep, host, port }), { rep, atyp, host, port });
      }
    }
  });

  test('a failure reply without an address carries 0.0.0.0:0', () => {
    const enc = encodeReply({ rep: REP.HOST_UNREACHABLE });
    assert.deepEqual(enc, bytes(5, 4, 0, 1, 0, 0, 0, 0, 0, 0));
    assertMessage(decodeReply, enc, { rep: 4, atyp: ATYP.IPV4, host: '0.0.0.0', port: 0 });
  });

  test("a failure reply naming its error code (METHOD.ERROR_CODES): every code, any split; other names are no code", () => {
    for (const code of Object.keys(ERRORS) as ErrorCode[]) {
      const rep = ERRORS[code].rep;
      const enc = encodeFailureReply(rep, code);
      assert.deepEqual(enc, concatBytes(bytes(5, rep, 0, ATYP.DOMAIN, code.length), ascii(code), bytes(0, 0)));
      const msg = { rep, atyp: ATYP.DOMAIN, host: code, port: 0 };
      assertMessage(decodeReply, enc, msg);
      assert.equal(failureCode(msg), code);
    }
    assert.deepEqual(encodeFailureReply(REP.HOST_UNREACHABLE), encodeReply({ rep: REP.HOST_UNREACHABLE }));
    assert.equal(failureCode({ rep: 4, atyp: ATYP.IPV4, host: '0.0.0.0', port: 0 }), null);
    // a success's BND is an address, whatever it spells
    assert.equal(failureCode({ rep: 0, atyp: ATYP.DOMAIN, host: 'ERR_NAME_NOT_FOUND', port: 0 }), null);
    for (const host of ['ERR_NOT_A_CODE', 'err_name_not_found', 'ERR_NAME_NOT_FOUND.', 'constructor', '__proto__', 'hasOwnProperty', 'gw.example']) {
      assert.equal(failureCode({ rep: 4, atyp: ATYP.DOMAIN, host, port: 0 }), null, host);
    }
    // a name that is no host name at all (bytes outside printable ASCII) keeps only the REP
    const junk = concatBytes(bytes(5, 4, 0, 3, 4), ascii('<b>\n'), bytes(0, 0));
    const r = assertOk(decodeReply(junk));
    assert.equal(failureCode(r.msg), null);
    assert.equal(r.msg.rep, 4);
  });

  test('reply errors', () => {
    assertBad(decodeReply, bytes(4, 0, 0, 1, 0, 0, 0, 0, 0, 0), 'ERR_SOCKS_VERSION');
    assertBad(decodeReply, bytes(5, 0, 0, 9, 0, 0, 0, 0, 0, 0), 'ERR_SOCKS_ATYP', 0x08);
    assertBad(decodeReply, bytes(5, 0, 0, 3, 0, 0, 0), 'ERR_SOCKS_NAME');
  });
});

describe('UDP header', () => {
  test('round-trips and points at the payload', () => {
    for (const [host, port, atyp] of [['192.0.2.1', 53, ATYP.IPV4], ['2001:db8::1', 443, ATYP.IPV6], ['dns.example', 5353, ATYP.DOMAIN]] as const) {
      for (const frag of [0, 1, 0x7f]) {
        const head = encodeUdpHeader({ host, port, frag });
        assert.deepEqual(head.subarray(0, 3), bytes(0, 0, frag));
        const payload = ascii('payload');
        const dgram = concatBytes(head, payload);
        const r = assertOk(decodeUdpHeader(dgram));
        assert.deepEqual(r.msg, { frag, atyp, host, port, dataOffset: head.length });
        assert.equal(r.size, dgram.length);
        assert.deepEqual(dgram.subarray(r.msg.dataOffset), payload);
        // an empty payload is still a datagram
        assert.equal(assertOk(decodeUdpHeader(head)).msg.dataOffset, head.length);
      }
    }
  });

  test('a short datagram is an error, never "need"', () => {
    const head = encodeUdpHeader({ host: 'dns.example', port: 53 });
    for (let i = 0; i < head.length; i++) {
      const r = decodeUdpHeader(head.subarray(0, i));
      assertError(r, 'ERR_SOCKS_TRUNCATED');
    }
  });

  test('reserved bytes, ATYP and names are checked', () => {
    assertError(decodeUdpHeader(bytes(0, 1, 0, 1, 1, 2, 3, 4, 0, 53)), 'ERR_SOCKS_RESERVED');
    assertError(decodeUdpHeader(bytes(1, 0, 0, 1, 1, 2, 3, 4, 0, 53)), 'ERR_SOCKS_RESERVED');
    assertError(decodeUdpHeader(bytes(0, 0, 0, 7, 1, 2, 3, 4, 0, 53)), 'ERR_SOCKS_ATYP', 0x08);
    assertError(decodeUdpHeader(bytes(0, 0, 0, 3, 1, 0x20, 0, 53)), 'ERR_SOCKS_NAME');
  });
});

describe('UDP relay layers (chains of gateways)', () => {
  const relays = [{ host: '198.51.100.130', port: 40000 }, { host: '2001:db8:12::2', port: 40001 }, { host: 'relay.example', port: 40002 }];

  test('one header per further relay, in order, each relay taking the first', () => {
    const final = concatBytes(encodeUdpHeader({ host: 'dns.example', port: 53 }), ascii('query'));
    let dgram = concatBytes(encodeUdpLayers(relays), final);
    for (const r of relays) {
      const d = assertOk(decodeUdpHeader(dgram));
      assert.deepEqual([d.msg.host, d.msg.port], [r.host, r.port]);
      dgram = dgram.subarray(d.msg.dataOffset);
    }
    assert.deepEqual(dgram, final, 'what the last relay gets is the client datagram, untouched');
    assert.equal(encodeUdpLayers([]).length, 0, 'one relay: nothing added');
  });

  test('a reply loses exactly the headers the further relays added', () => {
    const reply = concatBytes(encodeUdpHeader({ host: '2001:db8::53', port: 53 }), ascii('answer'));
    const wrapped = concatBytes(encodeUdpHeader(relays[1]!), encodeUdpHeader(relays[0]!), reply);
    const r = assertOk(decodeUdpLayers(wrapped, 2));
    assert.deepEqual(r.msg, reply);
    assert.equal(r.size, wrapped.length);
    assert.deepEqual(assertOk(decodeUdpLayers(reply, 0)).msg, reply);
  });

  test('a short, reserved-byte or fragmented layer is an error', () => {
    const layer = encodeUdpHeader(relays[0]!);
    assertError(decodeUdpLayers(layer.subarray(0, 5), 1), 'ERR_SOCKS_TRUNCATED');
    assertError(decodeUdpLayers(concatBytes(layer, bytes(0, 0)), 2), 'ERR_SOCKS_TRUNCATED');
    assertError(decodeUdpLayers(concatBytes(bytes(0, 1), layer.subarray(2)), 1), 'ERR_SOCKS_RESERVED');
    assertError(decodeUdpLayers(encodeUdpHeader({ ...relays[0]!, frag: 1 }), 1), 'ERR_SOCKS_RESERVED');
  });
});

describe('SOCKS4 and SOCKS4a', () => {
  test('SOCKS4 request round-trips', () => {
    const enc = encodeSocks4Request({ cmd: SOCKS4_CD.CONNECT, port: 80, host: '198.51.100.1', userId: 'bob' });
    assert.deepEqual(enc, bytes(4, 1, 0, 80, 198, 51, 100, 1, ...ascii('bob'), 0));
    assertMessage(decodeSocks4Request, enc, { cmd: 1, port: 80, host: '198.51.100.1', socks4a: false, userId: 'bob' });
    const bind = encodeSocks4Request({ cmd: SOCKS4_CD.BIND, port: 65535, host: '0.0.0.0', userId: '' });
    assertMessage(decodeSocks4Request, bind, { cmd: 2, port: 65535, host: '0.0.0.0', socks4a: false, userId: '' });
  });

  test('SOCKS4a request carries the name after the user id', () => {
    const enc = encodeSocks4Request({ cmd: SOCKS4_CD.CONNECT, port: 443, host: 'v6only.example', userId: 'bob' });
    assert.deepEqual(enc.subarray(4, 8), bytes(0, 0, 0, 1));
    assertMessage(decodeSocks4Request, enc, { cmd: 1, port: 443, host: 'v6only.example', socks4a: true, userId: 'bob' });
    const anon = encodeSocks4Request({ cmd: SOCKS4_CD.CONNECT, port: 443, host: 'a.example', userId: '' });
    assertMessage(decodeSocks4Request, anon, { cmd: 1, port: 443, host: 'a.example', socks4a: true, userId: '' });
    // any 0.0.0.x with x != 0 announces a name
    const x = bytes(4, 1, 0, 80, 0, 0, 0, 0xff, 0, ...ascii('h.example'), 0);
    assertMessage(decodeSocks4Request, x, { cmd: 1, port: 80, host: 'h.example', socks4a: true, userId: '' });
  });

  test('SOCKS4 cannot carry IPv6', () => {
    assert.throws(() => encodeSocks4Request({ cmd: 1, port: 80, host: '2001:db8::1', userId: '' }), (e: unknown) => e instanceof SocksProtocolError && e.code === 'ERR_SOCKS_ATYP');
  });

  test('user id or name over 255 bytes without a NUL is an error, not an endless "need"', () => {
    const head = bytes(4, 1, 0, 80, 198, 51, 100, 1);
    // 255 bytes may still be a user id
    assert.equal(decodeSocks4Request(concatBytes(head, new Uint8Array(255).fill(0x61))).status, 'need');
    assertBad(decodeSocks4Request, concatBytes(head, new Uint8Array(256).fill(0x61)), 'ERR_SOCKS4_USERID');
    assertBad(decodeSocks4Request, concatBytes(head, new Uint8Array(300).fill(0x61), bytes(0)), 'ERR_SOCKS4_USERID');
    assertMessage(decodeSocks4Request, concatBytes(head, new Uint8Array(255).fill(0x61), bytes(0)), {
      cmd: 1,
      port: 80,
      host: '198.51.100.1',
      socks4a: false,
      userId: 'a'.repeat(255),
    });
    const head4a = bytes(4, 1, 0, 80, 0, 0, 0, 1, 0);
    assertBad(decodeSocks4Request, concatBytes(head4a, new Uint8Array(256).fill(0x62)), 'ERR_SOCKS4_USERID');
    assert.equal(decodeSocks4Request(concatBytes(head4a, new Uint8Array(255).fill(0x62))).status, 'need');
  });

  test('SOCKS4 request errors', () => {
    assertBad(decodeSocks4Request, bytes(5, 1, 0, 80, 1, 2, 3, 4, 0), 'ERR_SOCKS_VERSION');
    assertBad(decodeSocks4Request, bytes(4, 3, 0, 80, 1, 2, 3, 4, 0), 'ERR_SOCKS_COMMAND', 0x07);
    assertBad(decodeSocks4Request, bytes(4, 0, 0, 80, 1, 2, 3, 4, 0), 'ERR_SOCKS_COMMAND', 0x07);
    // SOCKS4a with an empty or unprintable name
    assertBad(decodeSocks4Request, bytes(4, 1, 0, 80, 0, 0, 0, 1, 0, 0), 'ERR_SOCKS_NAME');
    assertBad(decodeSocks4Request, bytes(4, 1, 0, 80, 0, 0, 0, 1, 0, 0x61, 0x20, 0x62, 0), 'ERR_SOCKS_NAME');
  });

  test('SOCKS4 reply round-trips', () => {
    const granted = encodeSocks4Reply({ cd: SOCKS4_CD.GRANTED, port: 1080, host: '192.0.2.1' });
    assert.deepEqual(granted, bytes(0, 0x5a, 4, 0x38, 192, 0, 2, 1));
    assertMessage(decodeSocks4Reply, granted, { cd: 0x5a, port: 1080, host: '192.0.2.1' });
    const rejected = encodeSocks4Reply({ cd: SOCKS4_CD.REJECTED });
    assertMessage(decodeSocks4Reply, rejected, { cd: 0x5b, port: 0, host: '0.0.0.0' });
    // an IPv6 bound address cannot be said in SOCKS4; it becomes 0.0.0.0
    assert.deepEqual(encodeSocks4Reply({ cd: 0x5a, port: 1, host: '2001:db8::1' }).subarray(4), bytes(0, 0, 0, 0));
    assertBad(decodeSocks4Reply, bytes(4, 0x5a, 0, 0, 0, 0, 0, 0), 'ERR_SOCKS_VERSION');
  });
});

describe('fuzz', () => {
  const decoders: [string, Decoder<unknown>][] = [
    ['greeting', decodeGreeting],
    ['method', decodeMethodSelection],
    ['authRequest', decodeAuthRequest],
    ['authReply', decodeAuthReply],
    ['request', decodeRequest],
    ['reply', decodeReply],
    ['socks4Request', decodeSocks4Request],
    ['socks4Reply', decodeSocks4Reply],
  ];

  const seeds: Uint8Array[] = [
    encodeGreeting({ methods: [0, 2] }),
    encodeMethodSelection({ method: 2 }),
    encodeAuthRequest({ username: 'user', password: 'pass' }),
    encodeAuthReply({ status: 0 }),
    encodeRequest({ cmd: 1, host: 'example.com', port: 443 }),
    encodeRequest({ cmd: 3, host: '2001:db8::1', port: 53 }),
    encodeReply({ rep: 0, host: '192.0.2.1', port: 1080 }),
    encodeSocks4Request({ cmd: 1, port: 80, host: 'name.example', userId: 'u' }),
    encodeSocks4Request({ cmd: 2, port: 80, host: '192.0.2.1', userId: 'u' }),
    encodeSocks4Reply({ cd: 0x5a, port: 1, host: '192.0.2.1' }),
    encodeUdpHeader({ host: 'example.com', port: 53 }),
  ];

  /** Random bytes, often biased towards valid openings so the decoders get past the version byte. */
  function randomInput(rnd: () => number): Uint8Array {
    const r = rnd();
    if (r < 0.4) {
      const out = new Uint8Array(Math.floor(rnd() * 48));
      for (let i = 0; i < out.length; i++) out[i] = Math.floor(rnd() * 256);
      if (out.length > 0 && rnd() < 0.5) out[0] = rnd() < 0.5 ? 5 : rnd() < 0.5 ? 4 : rnd() < 0.5 ? 1 : 0;
      if (out.length > 3 && rnd() < 0.5) out[3] = [1, 3, 4][Math.floor(rnd() * 3)]!;
      return out;
    }
    // a mutated valid message: flip, drop or append bytes
    const base = seeds[Math.floor(rnd() * seeds.length)]!;
    const out = Array.from(base);
    const edits = 1 + Math.floor(rnd() * 3);
    for (let e = 0; e < edits; e++) {
      const at = Math.floor(rnd() * (out.length + 1));
      const kind = rnd();
      if (kind < 0.5 && at < out.length) out[at] = Math.floor(rnd() * 256);
      else if (kind < 0.75) out.splice(at, 1);
      else out.splice(at, 0, Math.floor(rnd() * 256));
    }
    if (rnd() < 0.3) out.length = Math.floor(rnd() * out.length);
    return Uint8Array.from(out);
  }

  function checkShape(name: string, input: Uint8Array, r: Decoded<unknown>): void {
    const where = `${name} on ${Buffer.from(input).toString('hex')}`;
    switch (r.status) {
      case 'need':
        return;
      case 'ok':
        assert.ok(Number.isInteger(r.size) && r.size > 0 && r.size <= input.length, where);
        return;
      case 'error':
        assert.ok(r.error instanceof SocksProtocolError, where);
        assert.equal(typeof r.error.rep, 'number', where);
        assert.ok(r.error.rep >= 0 && r.error.rep <= 0xff, where);
        assert.ok(Object.hasOwn(ERRORS, r.error.code), where);
        return;
      default:
        assert.fail(`${where}: status ${JSON.stringify(r)}`);
    }
  }

  test('decoders never throw and answer need, ok or a typed error', () => {
    const rnd = prng(0xd5a11);
    for (let n = 0; n < 4000; n++) {
      const input = randomInput(rnd);
      for (const [name, decode] of decoders) checkShape(name, input, decode(input));
      checkShape('udp', input, decodeUdpHeader(input));
      assert.notEqual(decodeUdpHeader(input).status, 'need');
    }
  });

  test('on random input, growing the buffer gives need… then one fixed answer', () => {
    const rnd = prng(0xfeed);
    for (let n = 0; n < 1500; n++) {
      const input = randomInput(rnd);
      for (const [name, decode] of decoders) {
        let settled: unknown;
        for (let i = 0; i <= input.length; i++) {
          const r = decode(input.subarray(0, i));
          if (settled === undefined) {
            if (r.status !== 'need') settled = view(r);
          } else {
            assert.deepEqual(view(r), settled, `${name} on ${Buffer.from(input).toString('hex')} at ${i}`);
          }
        }
      }
    }
  });

  test('decoded messages re-encode to the same bytes', () => {
    const rnd = prng(0xc0dec);
    let checked = 0;
    for (let n = 0; n < 4000; n++) {
      const input = randomInput(rnd);
      const req = decodeRequest(input);
      if (req.status === 'ok') {
        // lossy on purpose: v4-mapped bytes under ATYP 4, and names that are IP texts
        const lossy = req.msg.atyp === ATYP.IPV6 ? !req.msg.host.includes(':') : req.msg.atyp === ATYP.DOMAIN && parseIp(req.msg.host) !== null;
        if (!lossy) {
          assert.deepEqual(encodeRequest(req.msg), input.subarray(0, req.size).map((b, i) => (i === 2 ? 0 : b)));
          checked++;
        }
      }
      const s4 = decodeSocks4Request(input);
      if (s4.status === 'ok' && s4.msg.socks4a) {
        const again = assertOk(decodeSocks4Request(encodeSocks4Request(s4.msg)));
        assert.deepEqual(again.msg, s4.msg);
        checked++;
      }
    }
    assert.ok(checked > 50, `only ${checked} messages decoded`);
  });
});

describe('errors', () => {
  const repValues = new Set<number>(Object.values(REP));

  test('every code maps to a real REP and has words', () => {
    for (const [code, def] of Object.entries(ERRORS)) {
      assert.match(code, /^ERR_[A-Z0-9_]+$/);
      assert.ok(repValues.has(def.rep), code);
      assert.notEqual(def.rep, REP.SUCCEEDED, code);
      assert.ok(def.text.length > 0, code);
      assert.ok(REP_TEXT[def.rep], code);
    }
  });

  test('the REP a failure is reported as', () => {
    assert.equal(ERRORS.ERR_NAME_NOT_FOUND.rep, REP.HOST_UNREACHABLE);
    assert.equal(ERRORS.ERR_POLICY_DESTINATION.rep, REP.NOT_ALLOWED);
    assert.equal(ERRORS.ERR_CONNECTION_REFUSED.rep, REP.CONNECTION_REFUSED);
    assert.equal(ERRORS.ERR_NETWORK_UNREACHABLE.rep, REP.NETWORK_UNREACHABLE);
    assert.equal(ERRORS.ERR_CONNECT_TIMEOUT.rep, REP.TTL_EXPIRED);
    assert.equal(ERRORS.ERR_SOCKS_COMMAND.rep, REP.COMMAND_NOT_SUPPORTED);
    assert.equal(ERRORS.ERR_SOCKS_ATYP.rep, REP.ADDRESS_TYPE_NOT_SUPPORTED);
  });

  test('DualsocksError carries code, rep, message, name and cause', () => {
    const plain = new SocksProtocolError('ERR_SOCKS_ATYP');
    assert.equal(plain.code, 'ERR_SOCKS_ATYP');
    assert.equal(plain.rep, 0x08);
    assert.equal(plain.message, 'address type not supported');
    assert.equal(plain.name, 'SocksProtocolError');
    assert.equal(plain.cause, undefined);
    assert.ok(plain instanceof DualsocksError && plain instanceof Error);

    const cause = new Error('ECONNREFUSED');
    const e = new RequestError('ERR_CONNECTION_REFUSED', '192.0.2.1:80', { cause });
    assert.equal(e.message, 'connection refused by destination: 192.0.2.1:80');
    assert.equal(e.rep, REP.CONNECTION_REFUSED);
    assert.equal(e.cause, cause);
    assert.equal(e.name, 'RequestError');
    assert.match(String(e.stack), /^RequestError: connection refused/);

    // an upstream's REP overrides the code's default, so it survives the hop
    const relayed = new SocksProtocolError('ERR_SOCKS_REPLY', 'gw2: host unreachable', { rep: REP.HOST_UNREACHABLE });
    assert.equal(relayed.rep, 0x04);
    assert.equal(new SocksProtocolError('ERR_SOCKS_REPLY', undefined, { rep: 0 }).rep, 0);
  });

  test('ConfigError names the offending key', () => {
    const e = new ConfigError('--listen', 'not HOST:PORT');
    assert.equal(e.code, 'ERR_CONFIG');
    assert.equal(e.key, '--listen');
    assert.equal(e.message, 'invalid configuration: --listen: not HOST:PORT');
    assert.equal(e.name, 'ConfigError');
  });

  test('isDualsocksError', () => {
    assert.equal(isDualsocksError(new RequestError('ERR_DNS_FAILED')), true);
    assert.equal(isDualsocksError(new Error('x')), false);
    assert.equal(isDualsocksError({ code: 'ERR_DNS_FAILED', rep: 4 }), false);
    assert.equal(isDualsocksError(undefined), false);
  });
});
