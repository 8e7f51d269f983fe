import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Socks5ServerSession, type ServerCommand } from '../../../shared/socks5/server.js';
import {
  concatBytes,
  encodeAuthRequest,
  encodeFailureReply,
  encodeReply,
  encodeGreeting,
  encodeRequest,
} from '../../../shared/socks5/codec.js';
import { ATYP, CMD, METHOD, REP } from '../../../shared/socks5/constants.js';
import { DualsocksError, ERRORS, RequestError, SocksProtocolError, SocksReplyError, type ErrorCode } from '../../../shared/errors.js';
import { ascii, bytes, hex, prng, splits, trickle } from '../../helpers/bytes.js';

// ---- helpers ----

type Entry =
  | { type: 'send'; hex: string }
  | { type: 'data'; hex: string }
  | { type: 'authenticate'; username: string; password: string }
  | { type: 'request'; request: unknown }
  | { type: 'close'; error?: { code: ErrorCode; rep: number } };

/** Comparable log: bytes as hex, errors by code and rep, adjacent sends and data merged (chunking is not meaning). */
function normalise(cmds: ServerCommand[]): Entry[] {
  const out: Entry[] = [];
  for (const c of cmds) {
    const prev = out[out.length - 1];
    if ((c.type === 'send' || c.type === 'data') && prev?.type === c.type) {
      prev.hex += hex(c.data);
      continue;
    }
    switch (c.type) {
      case 'send':
      case 'data':
        if (c.data.length > 0) out.push({ type: c.type, hex: hex(c.data) });
        break;
      case 'authenticate':
        out.push({ type: 'authenticate', username: text(c.username), password: text(c.password) });
        break;
      case 'request':
        out.push({ type: 'request', request: { ...c.request } });
        break;
      case 'close':
        out.push(c.error ? { type: 'close', error: { code: c.error.code, rep: c.error.rep } } : { type: 'close' });
        break;
    }
  }
  return out;
}

const text = (b: Uint8Array): string => Buffer.from(b).toString('utf8');

interface Responder {
  auth?: (username: string, password: string) => boolean;
  request?: (s: Socks5ServerSession) => ServerCommand[];
}

const BOUND = { host: '198.51.100.7', port: 40000 };

/** Stands in for the I/O layer: answers 'authenticate' and 'request' as soon as they come out. */
function drive(session: Socks5ServerSession, chunks: Uint8Array[], r: Responder = {}): ServerCommand[] {
  const log: ServerCommand[] = [];
  const run = (cmds: ServerCommand[]): void => {
    for (const c of cmds) {
      log.push(c);
      if (c.type === 'authenticate') run(session.authResult(r.auth ? r.auth(text(c.username), text(c.password)) : true));
      if (c.type === 'request') run(r.request ? r.request(session) : session.succeed(BOUND));
    }
  };
  for (const chunk of chunks) run(session.feed(chunk));
  return log;
}

/** The same log whatever the split; returns it. */
function assertSplitInvariant(make: () => Socks5ServerSession, input: Uint8Array, r: Responder = {}): Entry[] {
  const raw = drive(make(), [input], r);
  const whole = normalise(raw);
  for (const chunks of splits(input)) {
    const log = drive(make(), chunks, r);
    const where = `split ${chunks.map((c) => c.length).join('+')}`;
    assert.deepEqual(normalise(log), whole, where);
    // the log line must not depend on segmentation either
    assert.deepEqual(closeMessages(log), closeMessages(raw), where);
  }
  return whole;
}

function closeMessages(cmds: ServerCommand[]): string[] {
  return cmds.flatMap((c) => (c.type === 'close' && c.error ? [c.error.message] : []));
}

function sends(cmds: ServerCommand[]): Uint8Array {
  return concatBytes(...cmds.flatMap((c) => (c.type === 'send' ? [c.data] : [])));
}

function closeOf(cmds: ServerCommand[]): { type: 'close'; error?: DualsocksError } {
  const last = cmds[cmds.length - 1];
  assert.ok(last && last.type === 'close', `expected a close, got ${JSON.stringify(normalise(cmds))}`);
  assert.equal(cmds.filter((c) => c.type === 'close').length, 1);
  return last;
}

const replyHex = (rep: number): string => hex(encodeReply({ rep }));

const noAuth = (): Socks5ServerSession => new Socks5ServerSession({ requireAuth: false });
const withAuth = (): Socks5ServerSession => new Socks5ServerSession({ requireAuth: true });

const GREET_NOAUTH = encodeGreeting({ methods: [METHOD.NO_AUTH] });
const GREET_BOTH = encodeGreeting({ methods: [METHOD.NO_AUTH, METHOD.USERPASS] });
const GREET_USERPASS = encodeGreeting({ methods: [METHOD.USERPASS] });
const AUTH = encodeAuthRequest({ username: 'alice', password: 'wonder land' });
const CONNECT = encodeRequest({ cmd: CMD.CONNECT, host: 'v6only.example', port: 443 });
const CONNECT_MSG = { cmd: CMD.CONNECT, atyp: ATYP.DOMAIN, host: 'v6only.example', port: 443 };

// ---- tests ----

describe('Socks5ServerSession without auth', () => {
  test('greeting, request, succeed, then relay data', () => {
    const s = noAuth();
    assert.equal(s.phase, 'greeting');
    assert.deepEqual(s.feed(GREET_NOAUTH), [{ type: 'send', data: bytes(5, 0) }]);
    assert.equal(s.phase, 'request');
    assert.deepEqual(s.feed(CONNECT), [{ type: 'request', request: CONNECT_MSG }]);
    assert.equal(s.phase, 'request-wait');
    assert.deepEqual(s.succeed({ host: '2001:db8::7', port: 1080 }), [
      { type: 'send', data: bytes(5, 0, 0, 4, 0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 4, 0x38) },
    ]);
    assert.equal(s.phase, 'open');
    assert.deepEqual(s.feed(ascii('GET /')), [{ type: 'data', data: ascii('GET /') }]);
    assert.equal(s.username, undefined);
  });

  test('every split of greeting + request + optimistic data gives the same commands', () => {
    const input = concatBytes(GREET_BOTH, CONNECT, ascii('\x16\x03\x01 early TLS bytes'));
    const log = assertSplitInvariant(noAuth, input);
    assert.deepEqual(log, [
      { type: 'send', hex: '0500' },
      { type: 'request', request: CONNECT_MSG },
      { type: 'send', hex: hex(concatBytes(bytes(5, 0, 0, 1, 198, 51, 100, 7), bytes(0x9c, 0x40))) },
      { type: 'data', hex: hex(ascii('\x16\x03\x01 early TLS bytes')) },
    ]);
  });

  test('optimistic data after the request comes out as a data command after succeed()', () => {
    const s = noAuth();
    const early = ascii('early');
    assert.deepEqual(s.feed(concatBytes(GREET_NOAUTH, CONNECT, early)), [
      { type: 'send', data: bytes(5, 0) },
      { type: 'request', request: CONNECT_MSG },
    ]);
    // more arrives while the gateway is still connecting
    assert.deepEqual(s.feed(ascii(' and more')), []);
    const out = s.succeed(BOUND);
    assert.equal(out.length, 2);
    assert.equal(out[0]!.type, 'send');
    assert.deepEqual(out[1], { type: 'data', data: ascii('early and more') });
    assert.deepEqual(s.feed(ascii('!')), [{ type: 'data', data: ascii('!') }]);
  });

  test('optimistic data larger than a handshake is kept whole (a TLS ClientHello can exceed 1 KiB)', () => {
    const s = noAuth();
    const early = new Uint8Array(4096).map((_, i) => i & 0xff);
    s.feed(concatBytes(GREET_NOAUTH, CONNECT));
    for (let i = 0; i < early.length; i += 512) assert.deepEqual(s.feed(early.subarray(i, i + 512)), []);
    const out = s.succeed(BOUND);
    assert.deepEqual(out[1], { type: 'data', data: early });
  });

  test('without users, a client that offers only username/password gets 05 FF, never an authenticate', () => {
    // issue 10 item 1: selecting 0x02 here made the gateway verify against no users and crash
    const log = assertSplitInvariant(noAuth, concatBytes(GREET_USERPASS, AUTH, CONNECT));
    assert.deepEqual(log, [{ type: 'send', hex: '05ff' }, { type: 'close', error: { code: 'ERR_SOCKS_NO_METHOD', rep: REP.GENERAL_FAILURE } }]);
    // offered both, it takes NO_AUTH
    assert.deepEqual(sends(noAuth().feed(GREET_BOTH)), bytes(5, 0));
  });

  test('greeting without an acceptable method sends 05 FF and closes', () => {
    for (const methods of [[METHOD.GSSAPI], [0x80, 0xfe, 0x03], [METHOD.NO_ACCEPTABLE]]) {
      const log = assertSplitInvariant(noAuth, encodeGreeting({ methods }));
      assert.deepEqual(log, [{ type: 'send', hex: '05ff' }, { type: 'close', error: { code: 'ERR_SOCKS_NO_METHOD', rep: REP.GENERAL_FAILURE } }]);
    }
  });

  test('a non-SOCKS5 opening closes without a reply', () => {
    for (const opening of [ascii('GET / HTTP/1.1\r\n'), bytes(4, 1, 0, 80, 1, 2, 3, 4, 0)]) {
      const s = noAuth();
      const out = s.feed(opening);
      assert.deepEqual(normalise(out), [{ type: 'close', error: { code: 'ERR_SOCKS_VERSION', rep: 1 } }]);
      assert.ok(closeOf(out).error instanceof SocksProtocolError);
      assert.equal(s.phase, 'closed');
    }
    assert.deepEqual(normalise(noAuth().feed(bytes(5, 0))), [{ type: 'close', error: { code: 'ERR_SOCKS_METHODS', rep: 1 } }]);
  });

  test('truncated handshakes ask for nothing and send nothing', () => {
    const input = concatBytes(GREET_NOAUTH, CONNECT);
    for (let i = 0; i < input.length; i++) {
      const out = noAuth().feed(input.subarray(0, i));
      assert.ok(out.every((c) => c.type === 'send'), `prefix ${i}`);
      assert.equal(out.length, i >= GREET_NOAUTH.length ? 1 : 0, `prefix ${i}`);
    }
  });
});

describe('Socks5ServerSession request errors carry their REP', () => {
  const cases: [string, Uint8Array, ErrorCode, number][] = [
    ['unknown command', bytes(5, 9, 0, 1, 192, 0, 2, 1, 0, 80), 'ERR_SOCKS_COMMAND', 0x07],
    ['command 0', bytes(5, 0, 0, 1, 192, 0, 2, 1, 0, 80), 'ERR_SOCKS_COMMAND', 0x07],
    ['unknown ATYP', bytes(5, 1, 0, 2, 192, 0, 2, 1, 0, 80), 'ERR_SOCKS_ATYP', 0x08],
    ['ATYP 0', bytes(5, 1, 0, 0), 'ERR_SOCKS_ATYP', 0x08],
    ['bad version', bytes(4, 1, 0, 1, 192, 0, 2, 1, 0, 80), 'ERR_SOCKS_VERSION', 0x01],
    ['empty name', bytes(5, 1, 0, 3, 0, 0, 80), 'ERR_SOCKS_NAME', 0x01],
    ['name with a space', concatBytes(bytes(5, 1, 0, 3, 3), ascii('a b'), bytes(0, 80)), 'ERR_SOCKS_NAME', 0x01],
  ];
  for (const [what, request, code, rep] of cases) {
    test(`${what} → REP 0x${rep.toString(16).padStart(2, '0')} and close`, () => {
      const log = assertSplitInvariant(noAuth, concatBytes(GREET_NOAUTH, request));
      // adjacent sends merge in the log: method selection, then the failure reply
      assert.deepEqual(log, [
        { type: 'send', hex: '0500' + replyHex(rep) },
        { type: 'close', error: { code, rep } },
      ]);
    });
  }
});

describe('Socks5ServerSession with requireAuth', () => {
  test('authenticate, authResult(true), then the request', () => {
    const s = withAuth();
    assert.deepEqual(s.feed(GREET_BOTH), [{ type: 'send', data: bytes(5, 2) }]);
    assert.deepEqual(s.feed(AUTH), [{ type: 'authenticate', username: ascii('alice'), password: ascii('wonder land') }]);
    assert.equal(s.phase, 'auth-wait');
    assert.equal(s.username, 'alice');
    assert.deepEqual(s.authResult(true), [{ type: 'send', data: bytes(1, 0) }]);
    assert.equal(s.phase, 'request');
    assert.deepEqual(s.feed(CONNECT), [{ type: 'request', request: CONNECT_MSG }]);
  });

  test('authResult(false) sends 01 01 and closes', () => {
    const s = withAuth();
    s.feed(concatBytes(GREET_USERPASS, AUTH));
    const out = s.authResult(false);
    assert.deepEqual(sends(out), bytes(1, 1));
    const { error } = closeOf(out);
    assert.ok(error instanceof SocksProtocolError);
    assert.equal(error.code, 'ERR_SOCKS_AUTH_FAILED');
    assert.equal(error.rep, REP.NOT_ALLOWED);
    assert.match(error.message, /alice/);
    assert.equal(s.phase, 'closed');
    // nothing more comes out of a closed session
    assert.deepEqual(s.feed(CONNECT), []);
    assert.deepEqual(s.authResult(true), []);
    assert.deepEqual(s.succeed(BOUND), []);
    assert.deepEqual(s.fail(new RequestError('ERR_DNS_FAILED')), []);
  });

  test('a pipelined request waits for the auth result', () => {
    const s = withAuth();
    assert.deepEqual(normalise(s.feed(concatBytes(GREET_USERPASS, AUTH, CONNECT))), [
      { type: 'send', hex: '0502' },
      { type: 'authenticate', username: 'alice', password: 'wonder land' },
    ]);
    assert.deepEqual(s.authResult(true), [
      { type: 'send', data: bytes(1, 0) },
      { type: 'request', request: CONNECT_MSG },
    ]);
    // and a pipelined request is dropped when auth fails
    const t = withAuth();
    t.feed(concatBytes(GREET_USERPASS, AUTH, CONNECT));
    assert.ok(t.authResult(false).every((c) => c.type !== 'request'));
  });

  test('every split of the whole exchange gives the same commands, for good and bad passwords', () => {
    const input = concatBytes(GREET_BOTH, AUTH, CONNECT, ascii('hello'));
    const good = assertSplitInvariant(withAuth, input, { auth: (u, p) => u === 'alice' && p === 'wonder land' });
    assert.deepEqual(good.map((e) => e.type), ['send', 'authenticate', 'send', 'request', 'send', 'data']);
    const bad = assertSplitInvariant(withAuth, input, { auth: () => false });
    assert.deepEqual(bad, [
      { type: 'send', hex: '0502' },
      { type: 'authenticate', username: 'alice', password: 'wonder land' },
      { type: 'send', hex: '0101' },
      { type: 'close', error: { code: 'ERR_SOCKS_AUTH_FAILED', rep: REP.NOT_ALLOWED } },
    ]);
  });

  test('greeting without username/password sends 05 FF and closes', () => {
    const log = assertSplitInvariant(withAuth, GREET_NOAUTH);
    assert.deepEqual(log, [{ type: 'send', hex: '05ff' }, { type: 'close', error: { code: 'ERR_SOCKS_NO_METHOD', rep: 1 } }]);
  });

  test('a malformed auth request sends 01 01 and closes', () => {
    const cases: [Uint8Array, ErrorCode][] = [
      [bytes(5, 5, 0x61, 0x61, 0x61, 0x61, 0x61, 0), 'ERR_SOCKS_AUTH_VERSION'],
      [bytes(1, 0, 1, 0x70), 'ERR_SOCKS_AUTH_MALFORMED'],
    ];
    for (const [auth, code] of cases) {
      const log = assertSplitInvariant(withAuth, concatBytes(GREET_USERPASS, auth));
      assert.deepEqual(log, [{ type: 'send', hex: '05020101' }, { type: 'close', error: { code, rep: 1 } }]);
    }
  });

  test('FIN while the password is checked: the check matters only if the request came before the FIN', () => {
    const GONE = [{ type: 'close', clientGone: true }];
    // credentials, then FIN: no request can follow, the pending check is for nothing
    const a = withAuth();
    a.feed(concatBytes(GREET_USERPASS, AUTH));
    assert.deepEqual(a.end(), GONE);
    assert.equal(a.phase, 'closed');
    assert.deepEqual(a.authResult(true), [], 'a late answer does nothing');
    // a pipelining client that sent everything, then FIN, is answered
    const b = withAuth();
    b.feed(concatBytes(GREET_USERPASS, AUTH, CONNECT));
    assert.deepEqual(b.end(), []);
    assert.deepEqual(normalise(b.authResult(true)), [{ type: 'send', hex: '0100' }, { type: 'request', request: CONNECT_MSG }]);
    assert.deepEqual(b.end(), [], 'after the request, FIN belongs to the relay');
    // half a request, then FIN: it can never be served either
    const c = withAuth();
    c.feed(concatBytes(GREET_USERPASS, AUTH, CONNECT.subarray(0, 4)));
    assert.deepEqual(c.end(), GONE);
    // a wrong password is still refused with its reason when the request was complete
    const d = withAuth();
    d.feed(concatBytes(GREET_USERPASS, AUTH, CONNECT));
    d.end();
    assert.deepEqual(normalise(d.authResult(false)), [{ type: 'send', hex: '0101' }, { type: 'close', error: { code: 'ERR_SOCKS_AUTH_FAILED', rep: REP.NOT_ALLOWED } }]);
  });

  test('FIN during greeting or before the request closes at once; FIN with a whole request waits for the answer', () => {
    const GONE = [{ type: 'close', clientGone: true }];
    const a = noAuth();
    a.feed(GREET_NOAUTH.subarray(0, 2));
    assert.deepEqual(a.end(), GONE);
    const b = noAuth();
    b.feed(GREET_NOAUTH);
    assert.deepEqual(b.end(), GONE);
    const c = noAuth();
    c.feed(concatBytes(GREET_NOAUTH, CONNECT));
    assert.deepEqual(c.end(), []);
    assert.equal(c.phase, 'request-wait');
    assert.deepEqual(noAuth().end(), GONE);
  });

  test('authResult outside auth-wait does nothing', () => {
    const s = withAuth();
    assert.deepEqual(s.authResult(true), []);
    s.feed(GREET_USERPASS);
    assert.deepEqual(s.authResult(true), []);
    assert.equal(s.phase, 'auth');
  });
});

describe('Socks5ServerSession fail, succeed and reply', () => {
  test('fail(error) replies with error.rep and closes', () => {
    const errors: [DualsocksError, number][] = [
      [new RequestError('ERR_NAME_NOT_FOUND', 'v6only.example'), REP.HOST_UNREACHABLE],
      [new RequestError('ERR_POLICY_DESTINATION'), REP.NOT_ALLOWED],
      [new RequestError('ERR_CONNECTION_REFUSED'), REP.CONNECTION_REFUSED],
      [new RequestError('ERR_NETWORK_UNREACHABLE'), REP.NETWORK_UNREACHABLE],
      [new RequestError('ERR_CONNECT_TIMEOUT'), REP.TTL_EXPIRED],
      // an upstream's code passed through unchanged
      [new SocksProtocolError('ERR_SOCKS_REPLY', 'gw2', { rep: 0x05 }), 0x05],
      [new SocksProtocolError('ERR_SOCKS_REPLY', 'gw2', { rep: 0x2a }), 0x2a],
    ];
    for (const [error, rep] of errors) {
      const s = noAuth();
      s.feed(concatBytes(GREET_NOAUTH, CONNECT));
      const out = s.fail(error);
      assert.deepEqual(out, [
        { type: 'send', data: bytes(5, rep, 0, 1, 0, 0, 0, 0, 0, 0) },
        { type: 'close', error },
      ]);
      assert.equal(s.phase, 'closed');
      assert.deepEqual(s.fail(error), []);
    }
  });

  test('fail() before the request closes without a reply', () => {
    const s = withAuth();
    const timeout = new SocksProtocolError('ERR_HANDSHAKE_TIMEOUT');
    assert.deepEqual(s.fail(timeout), [{ type: 'close', error: timeout }]);
    const t = withAuth();
    t.feed(concatBytes(GREET_USERPASS, AUTH));
    const out = t.fail(new SocksProtocolError('ERR_HANDSHAKE_TIMEOUT'));
    assert.deepEqual(out.map((c) => c.type), ['close']);
  });

  test('succeed() outside request-wait does nothing', () => {
    const s = noAuth();
    assert.deepEqual(s.succeed(BOUND), []);
    s.feed(GREET_NOAUTH);
    assert.deepEqual(s.succeed(BOUND), []);
    s.feed(CONNECT);
    assert.equal(s.succeed(BOUND).length, 1);
    assert.deepEqual(s.succeed(BOUND), []);
  });

  test('BIND: first reply from succeed(), second from reply(), a failed accept from fail()', () => {
    const bind = encodeRequest({ cmd: CMD.BIND, host: '192.0.2.10', port: 20 });
    const s = noAuth();
    assert.deepEqual(normalise(s.feed(concatBytes(GREET_NOAUTH, bind))).at(-1), {
      type: 'request',
      request: { cmd: CMD.BIND, atyp: ATYP.IPV4, host: '192.0.2.10', port: 20 },
    });
    assert.deepEqual(s.succeed({ host: '198.51.100.7', port: 5000 }), [{ type: 'send', data: bytes(5, 0, 0, 1, 198, 51, 100, 7, 0x13, 0x88) }]);
    assert.deepEqual(s.reply(REP.SUCCEEDED, { host: '192.0.2.10', port: 20 }), [{ type: 'send', data: bytes(5, 0, 0, 1, 192, 0, 2, 10, 0, 20) }]);

    const t = noAuth();
    t.feed(concatBytes(GREET_NOAUTH, bind));
    t.succeed({ host: '198.51.100.7', port: 5000 });
    const error = new RequestError('ERR_CONNECT_TIMEOUT');
    assert.deepEqual(t.fail(error), [{ type: 'send', data: bytes(5, 6, 0, 1, 0, 0, 0, 0, 0, 0) }, { type: 'close', error }]);
  });
});

describe('Socks5ServerSession against floods and garbage', () => {
  test('no decoding state can hold a handshake buffer over 1024 bytes', () => {
    // The largest messages are 257 (greeting), 513 (auth) and 262 (request) bytes, so a flood
    // is always decided — as a message or a typed error — long before the 1024-byte cap.
    const flood = new Uint8Array(2048).fill(0x41);
    for (const [make, prefix] of [
      [noAuth, new Uint8Array(0)],
      [noAuth, GREET_NOAUTH],
      [withAuth, GREET_USERPASS],
    ] as const) {
      const s = make();
      const out = drive(s, [prefix, flood]);
      const { error } = closeOf(out);
      assert.ok(error instanceof SocksProtocolError);
      assert.equal(s.phase, 'closed');
    }
    // the biggest messages, trickled, still succeed
    const bigGreeting = encodeGreeting({ methods: Array.from({ length: 255 }, (_, i) => 255 - i) });
    const bigAuth = encodeAuthRequest({ username: 'u'.repeat(255), password: 'p'.repeat(255) });
    const bigRequest = encodeRequest({ cmd: CMD.CONNECT, host: ['a', 'b', 'c', 'd'].map((c) => c.repeat(63)).join('.'), port: 1 });
    const log = assertSplitInvariant(withAuth, concatBytes(bigGreeting, bigAuth, bigRequest));
    assert.deepEqual(log.map((e) => e.type), ['send', 'authenticate', 'send', 'request', 'send']);
  });

  test('a flood after a malformed field stops at the first error', () => {
    const s = noAuth();
    const out = s.feed(concatBytes(GREET_NOAUTH, bytes(5, 1, 0, 3, 1, 0x20, 0, 80), new Uint8Array(5000)));
    assert.deepEqual(normalise(out).at(-1), { type: 'close', error: { code: 'ERR_SOCKS_NAME', rep: 1 } });
    assert.deepEqual(s.feed(new Uint8Array(5000)), []);
  });

  const REQUESTS = [
    CONNECT,
    encodeRequest({ cmd: CMD.BIND, host: '192.0.2.1', port: 21 }),
    encodeRequest({ cmd: CMD.UDP_ASSOCIATE, host: '2001:db8::1', port: 53 }),
  ];

  function randomInput(rnd: () => number): Uint8Array {
    const parts: number[] = [];
    // usually a valid opening, so the fuzz reaches the later states
    const r = rnd();
    if (r < 0.3) parts.push(...GREET_NOAUTH);
    else if (r < 0.6) parts.push(...GREET_USERPASS);
    if (rnd() < 0.3) parts.push(...AUTH);
    const q = rnd();
    if (q < 0.3) parts.push(...REQUESTS[Math.floor(rnd() * REQUESTS.length)]!);
    else if (q < 0.6) parts.push(5, [0, 1, 2, 3, 4][Math.floor(rnd() * 5)]!, 0, [0, 1, 2, 3, 4][Math.floor(rnd() * 5)]!);
    const n = Math.floor(rnd() * 64);
    for (let i = 0; i < n; i++) parts.push(Math.floor(rnd() * 256));
    // flip a few bytes of the valid part too
    for (let i = 0; i < 2; i++) if (rnd() < 0.3 && parts.length > 0) parts[Math.floor(rnd() * parts.length)] = Math.floor(rnd() * 256);
    return Uint8Array.from(parts);
  }

  function randomChunks(rnd: () => number, input: Uint8Array): Uint8Array[] {
    const chunks: Uint8Array[] = [];
    for (let i = 0; i < input.length; ) {
      const n = 1 + Math.floor(rnd() * 16);
      chunks.push(input.subarray(i, i + n));
      i += n;
    }
    return chunks;
  }

  /** `injected` is the one non-codec error the responder may hand to fail(). */
  function checkCommands(cmds: ServerCommand[], where: string, injected?: DualsocksError): void {
    let closed = false;
    for (const c of cmds) {
      assert.ok(!closed, `${where}: command after close`);
      switch (c.type) {
        case 'send':
        case 'data':
          assert.ok(c.data instanceof Uint8Array, where);
          break;
        case 'authenticate':
          assert.ok(c.username instanceof Uint8Array && c.username.length > 0, where);
          assert.ok(c.password instanceof Uint8Array, where);
          break;
        case 'request':
          assert.ok([CMD.CONNECT, CMD.BIND, CMD.UDP_ASSOCIATE].includes(c.request.cmd as 1 | 2 | 3), where);
          break;
        case 'close':
          closed = true;
          if (c.error && c.error !== injected) {
            assert.ok(c.error instanceof SocksProtocolError, where);
            assert.equal(typeof c.error.rep, 'number', where);
            assert.ok(Object.hasOwn(ERRORS, c.error.code), where);
          }
          break;
        default:
          assert.fail(`${where}: unknown command ${JSON.stringify(c)}`);
      }
    }
  }

  test('fuzz: feed never throws and only gives well-formed commands', () => {
    const rnd = prng(0x50c55);
    for (let n = 0; n < 3000; n++) {
      const input = randomInput(rnd);
      const where = `input ${hex(input)}`;
      const accept = rnd() < 0.5;
      const granted = rnd() < 0.5;
      const refusal = new RequestError('ERR_HOST_UNREACHABLE');
      const responder: Responder = {
        auth: () => accept,
        request: (s) => (granted ? s.succeed(BOUND) : s.fail(refusal)),
      };
      const requireAuth = rnd() < 0.5;
      const make = (): Socks5ServerSession => new Socks5ServerSession({ requireAuth });
      const whole = drive(make(), [input], responder);
      checkCommands(whole, where, refusal);
      // a reply sent before a close carries that close's REP
      const close = whole.find((c) => c.type === 'close');
      if (close?.type === 'close' && close.error) {
        const last = whole[whole.length - 2];
        if (last?.type === 'send' && last.data[0] === 5 && last.data.length >= 10) assert.equal(last.data[1], close.error.rep, where);
      }
      // random chunking and a trickle agree with the single feed
      assert.deepEqual(normalise(drive(make(), randomChunks(rnd, input), responder)), normalise(whole), where);
      assert.deepEqual(normalise(drive(make(), trickle(input), responder)), normalise(whole), where);
    }
  });

  test('fuzz: pure random bytes without a responder', () => {
    const rnd = prng(0xbadc0de);
    for (let n = 0; n < 3000; n++) {
      const input = new Uint8Array(Math.floor(rnd() * 80)).map(() => Math.floor(rnd() * 256));
      const s = new Socks5ServerSession({ requireAuth: rnd() < 0.5 });
      const out = [...s.feed(input.subarray(0, input.length >> 1)), ...s.feed(input.subarray(input.length >> 1))];
      checkCommands(out, `input ${hex(input)}`);
    }
  });
});

describe('Socks5ServerSession: error codes for a client that offers METHOD.ERROR_CODES', () => {
  const GREET_CODES = encodeGreeting({ methods: [METHOD.NO_AUTH, METHOD.ERROR_CODES] });
  const nameNotFound = (): RequestError => new RequestError('ERR_NAME_NOT_FOUND', 'v6only.example');
  const failing = { request: (s: Socks5ServerSession) => s.fail(nameNotFound()) };

  test('the method chosen stays 0x00 (or 0x02); the failure reply names the code in BND, however split', () => {
    const log = assertSplitInvariant(noAuth, concatBytes(GREET_CODES, CONNECT), failing);
    assert.deepEqual(log, [
      { type: 'send', hex: '0500' },
      { type: 'request', request: CONNECT_MSG },
      { type: 'send', hex: hex(encodeFailureReply(REP.HOST_UNREACHABLE, 'ERR_NAME_NOT_FOUND')) },
      { type: 'close', error: { code: 'ERR_NAME_NOT_FOUND', rep: REP.HOST_UNREACHABLE } },
    ]);
    assert.equal(hex(encodeFailureReply(REP.HOST_UNREACHABLE, 'ERR_NAME_NOT_FOUND')), hex(concatBytes(bytes(5, 4, 0, 3, 18), ascii('ERR_NAME_NOT_FOUND'), bytes(0, 0))));
    // with users: 0x02 chosen, and a pipelined client's greeting, credentials and request still read
    const greet = encodeGreeting({ methods: [METHOD.USERPASS, METHOD.ERROR_CODES] });
    const auth = assertSplitInvariant(withAuth, concatBytes(greet, AUTH, CONNECT), failing);
    assert.equal(auth[0]?.type, 'send');
    assert.ok((auth[0] as { hex: string }).hex.startsWith('0502'), JSON.stringify(auth));
    assert.ok(auth.some((e) => e.type === 'send' && e.hex.endsWith(hex(encodeFailureReply(REP.HOST_UNREACHABLE, 'ERR_NAME_NOT_FOUND')))), JSON.stringify(auth));
  });

  test('every code fits a DOMAINNAME, and an upstream code passes on', () => {
    for (const code of Object.keys(ERRORS) as ErrorCode[]) {
      const s = noAuth();
      s.feed(concatBytes(GREET_CODES, CONNECT));
      const err = new RequestError(code);
      assert.equal(hex(sends(s.fail(err))), hex(encodeFailureReply(err.rep, code)), code);
    }
    const s = noAuth();
    s.feed(concatBytes(GREET_CODES, CONNECT));
    assert.equal(hex(sends(s.fail(new SocksReplyError('ERR_HOST_UNREACHABLE', 'gw2', { rep: REP.HOST_UNREACHABLE })))), hex(encodeFailureReply(4, 'ERR_HOST_UNREACHABLE')));
  });

  test('a malformed request gets its code too', () => {
    const bad = concatBytes(GREET_CODES, bytes(5, 1, 0, 9, 1, 2, 3, 4, 0, 80));
    const log = assertSplitInvariant(noAuth, bad);
    assert.deepEqual(log[0], { type: 'send', hex: hex(concatBytes(bytes(5, 0), encodeFailureReply(REP.ADDRESS_TYPE_NOT_SUPPORTED, 'ERR_SOCKS_ATYP'))) });
  });

  test('a client that does not offer it gets 0.0.0.0:0 as before; the method alone is not acceptable', () => {
    const log = assertSplitInvariant(noAuth, concatBytes(GREET_NOAUTH, CONNECT), failing);
    assert.deepEqual(log.filter((e) => e.type === 'send'), [{ type: 'send', hex: '0500' }, { type: 'send', hex: hex(bytes(5, 4, 0, 1, 0, 0, 0, 0, 0, 0)) }]);
    const only = drive(noAuth(), [encodeGreeting({ methods: [METHOD.ERROR_CODES] })]);
    assert.equal(hex(sends(only)), '05ff');
  });
});
