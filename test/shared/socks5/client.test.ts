import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { replyError, Socks5ClientSession, type ClientCommand, type ClientRequest } from '../../../shared/socks5/client.js';
import { Socks5ServerSession, type ServerCommand } from '../../../shared/socks5/server.js';
import {
  concatBytes,
  encodeAuthReply,
  encodeAuthRequest,
  encodeFailureReply,
  encodeGreeting,
  encodeMethodSelection,
  encodeReply,
  encodeRequest,
} from '../../../shared/socks5/codec.js';
import { ATYP, CMD, METHOD, REP, REP_TEXT } from '../../../shared/socks5/constants.js';
import { DualsocksError, ERRORS, RequestError, SocksProtocolError, SocksReplyError, type ErrorCode } from '../../../shared/errors.js';
import { ascii, bytes, hex, prng, splits, trickle } from '../../helpers/bytes.js';

// ---- helpers ----

type Entry =
  | { type: 'send'; hex: string }
  | { type: 'reply'; reply: unknown }
  | { type: 'failed'; code: ErrorCode; rep: number; message: string }
  | { type: 'relay'; hex: string };

/**
 * Stands in for the I/O layer: feeds the server's bytes to the session until the tunnel is open
 * (one success reply, two for BIND), after which bytes belong to the relay, as do a reply's `rest`.
 */
function drive(req: ClientRequest, chunks: Uint8Array[], label?: string): Entry[] {
  const s = new Socks5ClientSession(req, label);
  const log: Entry[] = [];
  const need = req.cmd === CMD.BIND ? 2 : 1;
  let replies = 0;
  let done = false;
  let failed = false;
  let relay: Uint8Array = new Uint8Array(0);
  for (const cmd of s.start()) assert.equal(cmd.type, 'send');
  for (const chunk of chunks) {
    if (failed) break;
    if (done) {
      relay = concatBytes(relay, chunk);
      continue;
    }
    for (const c of s.feed(chunk)) {
      if (c.type === 'send') {
        const prev = log[log.length - 1];
        if (prev?.type === 'send') prev.hex += hex(c.data);
        else log.push({ type: 'send', hex: hex(c.data) });
      } else if (c.type === 'reply') {
        log.push({ type: 'reply', reply: { ...c.reply } });
        relay = concatBytes(relay, c.rest);
        if (++replies === need) done = true;
        else assert.equal(c.rest.length, 0, 'a first BIND reply has no relay data');
      } else {
        assert.ok(c.error instanceof DualsocksError);
        log.push({ type: 'failed', code: c.error.code, rep: c.error.rep, message: c.error.message });
        failed = true;
      }
    }
  }
  if (relay.length > 0) log.push({ type: 'relay', hex: hex(relay) });
  return log;
}

function assertSplitInvariant(req: ClientRequest, server: Uint8Array, label?: string): Entry[] {
  const whole = drive(req, [server], label);
  for (const chunks of splits(server)) {
    assert.deepEqual(drive(req, chunks, label), whole, `split ${chunks.map((c) => c.length).join('+')}`);
  }
  return whole;
}

function failedOf(cmds: ClientCommand[]): DualsocksError {
  assert.equal(cmds.length, 1, JSON.stringify(cmds.map((c) => c.type)));
  const c = cmds[0]!;
  assert.equal(c.type, 'failed');
  return (c as { error: DualsocksError }).error;
}

const AUTH = { username: 'bridge', password: 'pa55' };
const TARGET: ClientRequest = { host: 'v6only.example', port: 443 };
const REQ_BYTES = encodeRequest({ cmd: CMD.CONNECT, host: 'v6only.example', port: 443 });
const OK_REPLY = encodeReply({ rep: REP.SUCCEEDED, host: '2001:db8::1:7', port: 50123 });
const OK_REPLY_MSG = { rep: 0, atyp: ATYP.IPV6, host: '2001:db8::1:7', port: 50123 };

// ---- tests ----

describe('Socks5ClientSession', () => {
  test('start() offers no-auth, or only username/password when configured', () => {
    assert.deepEqual(new Socks5ClientSession(TARGET).start(), [{ type: 'send', data: encodeGreeting({ methods: [METHOD.NO_AUTH] }) }]);
    assert.deepEqual(new Socks5ClientSession({ ...TARGET, auth: AUTH }).start(), [{ type: 'send', data: bytes(5, 1, 2) }]);
  });

  test('no-auth CONNECT, step by step', () => {
    const s = new Socks5ClientSession(TARGET);
    s.start();
    assert.deepEqual(s.feed(encodeMethodSelection({ method: METHOD.NO_AUTH })), [{ type: 'send', data: REQ_BYTES }]);
    assert.deepEqual(s.feed(OK_REPLY), [{ type: 'reply', reply: OK_REPLY_MSG, rest: new Uint8Array(0) }]);
    // after the reply the socket belongs to the relay
    assert.deepEqual(s.feed(ascii('HTTP/1.1 200')), []);
  });

  test('relay data in the reply chunk comes out as rest, however the bytes were split', () => {
    const server = concatBytes(encodeMethodSelection({ method: 0 }), OK_REPLY, ascii('HTTP/1.1 200 OK\r\n'));
    assert.deepEqual(assertSplitInvariant(TARGET, server), [
      { type: 'send', hex: hex(REQ_BYTES) },
      { type: 'reply', reply: OK_REPLY_MSG },
      { type: 'relay', hex: hex(ascii('HTTP/1.1 200 OK\r\n')) },
    ]);
  });

  test('username/password flow, however the bytes were split', () => {
    const server = concatBytes(encodeMethodSelection({ method: METHOD.USERPASS }), encodeAuthReply({ status: 0 }), OK_REPLY);
    assert.deepEqual(assertSplitInvariant({ ...TARGET, auth: AUTH }, server), [
      { type: 'send', hex: hex(concatBytes(encodeAuthRequest(AUTH), REQ_BYTES)) },
      { type: 'reply', reply: OK_REPLY_MSG },
    ]);
  });

  test('pipelined: greeting, credentials and request in one write, then only replies are read, however split', () => {
    const req: ClientRequest = { ...TARGET, auth: AUTH, pipeline: true };
    assert.deepEqual(new Socks5ClientSession(req).start(), [{ type: 'send', data: concatBytes(bytes(5, 1, 2), encodeAuthRequest(AUTH), REQ_BYTES) }]);
    assert.deepEqual(new Socks5ClientSession({ ...TARGET, pipeline: true }).start(), [{ type: 'send', data: concatBytes(bytes(5, 1, 0), REQ_BYTES) }]);
    const server = concatBytes(encodeMethodSelection({ method: METHOD.USERPASS }), encodeAuthReply({ status: 0 }), OK_REPLY, ascii('early'));
    assert.deepEqual(assertSplitInvariant(req, server), [
      { type: 'reply', reply: OK_REPLY_MSG },
      { type: 'relay', hex: hex(ascii('early')) },
    ]);
  });

  test('pipelined: another method than the one offered, a refusal or bad credentials fail', () => {
    const req: ClientRequest = { ...TARGET, auth: AUTH, pipeline: true };
    // the server would read our credentials as a request: no going on
    assert.equal(failedOf(new Socks5ClientSession(req).feed(bytes(5, 0))).code, 'ERR_SOCKS_NO_METHOD');
    assert.equal(failedOf(new Socks5ClientSession(req).feed(bytes(5, 0xff))).code, 'ERR_SOCKS_NO_METHOD');
    const s = new Socks5ClientSession(req);
    assert.deepEqual(s.feed(bytes(5, 2)), []);
    assert.equal(failedOf(s.feed(encodeAuthReply({ status: 1 }))).code, 'ERR_SOCKS_AUTH_FAILED');
  });

  test('a server may skip auth even when we have credentials', () => {
    const s = new Socks5ClientSession({ ...TARGET, auth: AUTH });
    assert.deepEqual(s.feed(bytes(5, 0)), [{ type: 'send', data: REQ_BYTES }]);
  });

  test('failure replies keep the server REP', () => {
    for (const rep of [1, 2, 3, 4, 5, 6, 7, 8, 9, 0x7f, 0xff]) {
      const server = concatBytes(bytes(5, 0), encodeReply({ rep }), ascii('ignored'));
      const log = assertSplitInvariant(TARGET, server, 'gw.example:1081');
      assert.equal(log.length, 2);
      const failed = log[1]!;
      assert.equal(failed.type, 'failed');
      if (failed.type !== 'failed') return;
      assert.equal(failed.code, 'ERR_SOCKS_REPLY');
      assert.equal(failed.rep, rep);
      assert.match(failed.message, /gw\.example:1081/);
      assert.ok(failed.message.includes(REP_TEXT[rep] ?? `reply code 0x${rep.toString(16)}`), failed.message);
    }
  });

  test('a failure reply with a bound address still fails', () => {
    const s = new Socks5ClientSession(TARGET);
    s.feed(bytes(5, 0));
    const error = failedOf(s.feed(encodeReply({ rep: REP.CONNECTION_REFUSED, host: '2001:db8::9', port: 1 })));
    assert.ok(error instanceof SocksReplyError);
    assert.equal(error.rep, REP.CONNECTION_REFUSED);
    // a failed session stays quiet
    assert.deepEqual(s.feed(OK_REPLY), []);
  });

  test('BIND: two replies, relay data only after the second', () => {
    const req: ClientRequest = { cmd: CMD.BIND, host: '192.0.2.10', port: 20 };
    const first = encodeReply({ rep: 0, host: '198.51.100.7', port: 5000 });
    const second = encodeReply({ rep: 0, host: '192.0.2.10', port: 20 });
    const server = concatBytes(bytes(5, 0), first, second, ascii('220 ready'));
    assert.deepEqual(assertSplitInvariant(req, server), [
      { type: 'send', hex: hex(encodeRequest({ cmd: CMD.BIND, host: '192.0.2.10', port: 20 })) },
      { type: 'reply', reply: { rep: 0, atyp: ATYP.IPV4, host: '198.51.100.7', port: 5000 } },
      { type: 'reply', reply: { rep: 0, atyp: ATYP.IPV4, host: '192.0.2.10', port: 20 } },
      { type: 'relay', hex: hex(ascii('220 ready')) },
    ]);

    // step by step: the first reply's rest is empty even with the second right behind it
    const s = new Socks5ClientSession(req);
    s.feed(bytes(5, 0));
    const out = s.feed(concatBytes(first, second.subarray(0, 4)));
    assert.deepEqual(out, [{ type: 'reply', reply: { rep: 0, atyp: ATYP.IPV4, host: '198.51.100.7', port: 5000 }, rest: new Uint8Array(0) }]);
    assert.deepEqual(s.feed(second.subarray(4)), [{ type: 'reply', reply: { rep: 0, atyp: ATYP.IPV4, host: '192.0.2.10', port: 20 }, rest: new Uint8Array(0) }]);
  });

  test('BIND: a failed second reply keeps its REP', () => {
    const req: ClientRequest = { cmd: CMD.BIND, host: '192.0.2.10', port: 20 };
    const server = concatBytes(bytes(5, 0), encodeReply({ rep: 0, host: '198.51.100.7', port: 5000 }), encodeReply({ rep: REP.TTL_EXPIRED }));
    const log = assertSplitInvariant(req, server);
    assert.deepEqual(log.map((e) => e.type), ['send', 'reply', 'failed']);
    assert.equal((log[2] as { rep: number }).rep, REP.TTL_EXPIRED);
  });

  test('UDP ASSOCIATE has one reply', () => {
    const req: ClientRequest = { cmd: CMD.UDP_ASSOCIATE, host: '0.0.0.0', port: 0 };
    const log = assertSplitInvariant(req, concatBytes(bytes(5, 0), encodeReply({ rep: 0, host: '198.51.100.7', port: 9000 })));
    assert.deepEqual(log.map((e) => e.type), ['send', 'reply']);
  });

  test('method and auth refusals', () => {
    const cases: [ClientRequest, Uint8Array, ErrorCode, number][] = [
      [TARGET, bytes(5, 0xff), 'ERR_SOCKS_NO_METHOD', REP.NOT_ALLOWED],
      // the server wants credentials we do not have
      [TARGET, bytes(5, 2), 'ERR_SOCKS_NO_METHOD', REP.NOT_ALLOWED],
      [{ ...TARGET, auth: AUTH }, bytes(5, 1), 'ERR_SOCKS_NO_METHOD', REP.NOT_ALLOWED],
      [{ ...TARGET, auth: AUTH }, bytes(5, 2, 1, 1), 'ERR_SOCKS_AUTH_FAILED', REP.NOT_ALLOWED],
      [{ ...TARGET, auth: AUTH }, bytes(5, 2, 1, 0xff), 'ERR_SOCKS_AUTH_FAILED', REP.NOT_ALLOWED],
    ];
    for (const [req, server, code, rep] of cases) {
      const log = assertSplitInvariant(req, server, 'gw1');
      const last = log[log.length - 1]!;
      assert.deepEqual(last.type === 'failed' ? [last.code, last.rep] : last, [code, rep], hex(server));
    }
  });

  test('malformed server bytes fail with a typed error', () => {
    const cases: [ClientRequest, Uint8Array, ErrorCode, number][] = [
      [TARGET, bytes(4, 0), 'ERR_SOCKS_VERSION', 1],
      [TARGET, ascii('HTTP/1.1 400'), 'ERR_SOCKS_VERSION', 1],
      [{ ...TARGET, auth: AUTH }, bytes(5, 2, 5, 0), 'ERR_SOCKS_AUTH_VERSION', 1],
      [TARGET, bytes(5, 0, 4, 0, 0, 1, 0, 0, 0, 0, 0, 0), 'ERR_SOCKS_VERSION', 1],
      [TARGET, bytes(5, 0, 5, 0, 0, 9, 0, 0, 0, 0, 0, 0), 'ERR_SOCKS_ATYP', 8],
      [TARGET, bytes(5, 0, 5, 0, 0, 3, 0, 0, 0), 'ERR_SOCKS_NAME', 1],
    ];
    for (const [req, server, code, rep] of cases) {
      const log = assertSplitInvariant(req, server);
      const last = log[log.length - 1]!;
      assert.deepEqual(last.type === 'failed' ? [last.code, last.rep] : last, [code, rep], hex(server));
    }
  });

  test('truncated server bytes only wait', () => {
    const server = concatBytes(bytes(5, 2), encodeAuthReply({ status: 0 }), OK_REPLY);
    for (let i = 0; i < server.length; i++) {
      const log = drive({ ...TARGET, auth: AUTH }, [server.subarray(0, i)]);
      assert.ok(log.every((e) => e.type === 'send'), `prefix ${i}`);
    }
  });

  test('replyError', () => {
    const e = replyError(REP.HOST_UNREACHABLE, 'gw2');
    assert.ok(e instanceof SocksReplyError);
    assert.equal(e.code, 'ERR_SOCKS_REPLY');
    assert.equal(e.rep, 4);
    assert.equal(e.message, `${ERRORS.ERR_SOCKS_REPLY.text}: gw2: host unreachable`);
    assert.equal(replyError(0x42).message, `${ERRORS.ERR_SOCKS_REPLY.text}: reply code 0x42`);
    assert.equal(replyError(0x42).rep, 0x42);
  });

  test('errorCodes: METHOD.ERROR_CODES offered beside the auth method, pipelined too', () => {
    assert.deepEqual(new Socks5ClientSession({ ...TARGET, errorCodes: true }).start(), [{ type: 'send', data: bytes(5, 2, 0, METHOD.ERROR_CODES) }]);
    assert.deepEqual(new Socks5ClientSession({ ...TARGET, auth: AUTH, errorCodes: true }).start(), [{ type: 'send', data: bytes(5, 2, 2, METHOD.ERROR_CODES) }]);
    const req: ClientRequest = { ...TARGET, auth: AUTH, pipeline: true, errorCodes: true };
    assert.deepEqual(new Socks5ClientSession(req).start(), [{ type: 'send', data: concatBytes(bytes(5, 2, 2, METHOD.ERROR_CODES), encodeAuthRequest(AUTH), REQ_BYTES) }]);
    const server = concatBytes(encodeMethodSelection({ method: METHOD.USERPASS }), encodeAuthReply({ status: 0 }), OK_REPLY);
    assert.deepEqual(assertSplitInvariant(req, server), [{ type: 'reply', reply: OK_REPLY_MSG }]);
  });

  test("errorCodes: a failure reply's code becomes the error's code, the REP stays, however split", () => {
    const req: ClientRequest = { ...TARGET, errorCodes: true };
    for (const [code, rep] of [['ERR_NAME_NOT_FOUND', 4], ['ERR_HOST_UNREACHABLE', 4], ['ERR_NO_ADDRESS', 4], ['ERR_POLICY_DESTINATION', 2]] as [ErrorCode, number][]) {
      const server = concatBytes(encodeMethodSelection({ method: 0 }), encodeFailureReply(rep, code));
      const log = assertSplitInvariant(req, server, 'gw');
      assert.deepEqual(log.at(-1), { type: 'failed', code, rep, message: `${ERRORS[code].text}: gw: ${REP_TEXT[rep]}` });
      // a client that did not offer the method takes no code from the server
      assert.deepEqual(assertSplitInvariant(TARGET, server, 'gw').at(-1), { type: 'failed', code: 'ERR_SOCKS_REPLY', rep, message: `${ERRORS.ERR_SOCKS_REPLY.text}: gw: ${REP_TEXT[rep]}` });
    }
  });

  test('errorCodes: a BND name that is not a known code is ignored, never taken as text', () => {
    const req: ClientRequest = { ...TARGET, errorCodes: true };
    for (const name of ['ERR_NOT_A_CODE', 'err_name_not_found', 'constructor', '__proto__', 'toString', '<script>alert(1)</script>', 'v6only.example']) {
      const server = concatBytes(encodeMethodSelection({ method: 0 }), encodeReply({ rep: 4, host: name, port: 0 }));
      const failed = assertSplitInvariant(req, server).at(-1);
      assert.deepEqual(failed, { type: 'failed', code: 'ERR_SOCKS_REPLY', rep: 4, message: `${ERRORS.ERR_SOCKS_REPLY.text}: host unreachable` }, name);
    }
    // a name on a success is a bound address, as RFC 1928 allows
    const ok = encodeReply({ rep: 0, host: 'ERR_NAME_NOT_FOUND', port: 1 });
    assert.equal(assertSplitInvariant(req, concatBytes(encodeMethodSelection({ method: 0 }), ok)).at(-1)?.type, 'reply');
  });

  test('fuzz: feed never throws and fails only with typed errors', () => {
    const rnd = prng(0xc1e47);
    const openings = [bytes(5, 0), bytes(5, 2, 1, 0), bytes(5, 2), bytes(5)];
    for (let n = 0; n < 3000; n++) {
      const parts = [...openings[Math.floor(rnd() * openings.length)]!];
      if (rnd() < 0.5) parts.push(5, Math.floor(rnd() * 10), 0, [1, 3, 4, 0][Math.floor(rnd() * 4)]!);
      const len = Math.floor(rnd() * 40);
      for (let i = 0; i < len; i++) parts.push(Math.floor(rnd() * 256));
      if (rnd() < 0.2) parts[0] = Math.floor(rnd() * 256);
      const server = Uint8Array.from(parts);
      const req: ClientRequest = { cmd: [CMD.CONNECT, CMD.BIND, CMD.UDP_ASSOCIATE][Math.floor(rnd() * 3)]!, host: 'x.example', port: 1, auth: rnd() < 0.5 ? AUTH : undefined };
      const where = hex(server);
      const log = drive(req, [server]);
      for (const e of log) {
        if (e.type === 'failed') {
          assert.ok(Object.hasOwn(ERRORS, e.code), where);
          assert.equal(typeof e.rep, 'number', where);
        }
      }
      assert.ok(log.filter((e) => e.type === 'failed').length <= 1, where);
      assert.deepEqual(drive(req, trickle(server)), log, where);
    }
  });
});

describe('client and server sessions wired together', () => {
  /** Runs both machines over an in-memory pipe; the gateway's answer decides the request. */
  function handshake(
    req: ClientRequest,
    requireAuth: boolean,
    gateway: (s: Socks5ServerSession, request: ServerCommand & { type: 'request' }) => ServerCommand[],
    checkAuth: (u: string, p: string) => boolean = () => true,
  ): { client: ClientCommand[]; server: ServerCommand[] } {
    const client = new Socks5ClientSession(req, 'gw');
    const server = new Socks5ServerSession({ requireAuth });
    const clientLog: ClientCommand[] = [];
    const serverLog: ServerCommand[] = [];
    const toServer: Uint8Array[] = [];
    const toClient: Uint8Array[] = [];
    const onClient = (cmds: ClientCommand[]): void => {
      for (const c of cmds) {
        clientLog.push(c);
        if (c.type === 'send') toServer.push(c.data);
      }
    };
    const onServer = (cmds: ServerCommand[]): void => {
      for (const c of cmds) {
        serverLog.push(c);
        if (c.type === 'send') toClient.push(c.data);
        if (c.type === 'authenticate') onServer(server.authResult(checkAuth(Buffer.from(c.username).toString(), Buffer.from(c.password).toString())));
        if (c.type === 'request') onServer(gateway(server, c));
      }
    };
    onClient(client.start());
    // one byte at a time in both directions
    while (toServer.length > 0 || toClient.length > 0) {
      for (const chunk of toServer.splice(0)) for (const b of chunk) onServer(server.feed(Uint8Array.of(b)));
      for (const chunk of toClient.splice(0)) for (const b of chunk) onClient(client.feed(Uint8Array.of(b)));
    }
    return { client: clientLog, server: serverLog };
  }

  test('pipelined: the server session reads greeting, credentials and request from one write', () => {
    const { client, server } = handshake({ ...TARGET, auth: AUTH, pipeline: true }, true, (s) => s.succeed({ host: '2001:db8::1:7', port: 50123 }));
    assert.equal(client.filter((c) => c.type === 'send').length, 1, 'one write');
    assert.deepEqual(server.find((c) => c.type === 'request'), { type: 'request', request: { cmd: 1, atyp: ATYP.DOMAIN, host: 'v6only.example', port: 443 } });
    assert.deepEqual(client.at(-1), { type: 'reply', reply: OK_REPLY_MSG, rest: new Uint8Array(0) });
    // wrong credentials: the request that came with them is never acted on
    const denied = handshake({ ...TARGET, auth: AUTH, pipeline: true }, true, () => assert.fail('no request after failed auth'), () => false);
    assert.equal(denied.client.at(-1)?.type, 'failed');
    assert.equal(denied.server.some((c) => c.type === 'request'), false);
  });

  test('a success carries the bound address through', () => {
    const { client, server } = handshake({ ...TARGET, auth: AUTH }, true, (s) => s.succeed({ host: '2001:db8::1:7', port: 50123 }));
    assert.deepEqual(server.find((c) => c.type === 'request'), { type: 'request', request: { cmd: 1, atyp: ATYP.DOMAIN, host: 'v6only.example', port: 443 } });
    assert.deepEqual(client.at(-1), { type: 'reply', reply: OK_REPLY_MSG, rest: new Uint8Array(0) });
  });

  test("the gateway's REP reaches the client unchanged", () => {
    const errors: DualsocksError[] = [
      new RequestError('ERR_NAME_NOT_FOUND'),
      new RequestError('ERR_POLICY_DESTINATION'),
      new RequestError('ERR_CONNECTION_REFUSED'),
      new RequestError('ERR_NETWORK_UNREACHABLE'),
      new RequestError('ERR_CONNECT_TIMEOUT'),
      // a code relayed from a further hop
      replyError(REP.HOST_UNREACHABLE, 'gw2'),
    ];
    for (const error of errors) {
      const { client } = handshake(TARGET, false, (s) => s.fail(error));
      const failed = client.at(-1);
      assert.equal(failed?.type, 'failed');
      if (failed?.type !== 'failed') return;
      assert.equal(failed.error.rep, error.rep, error.code);
      assert.equal(failed.error.code, 'ERR_SOCKS_REPLY');
    }
  });

  test("with errorCodes the gateway's exact code reaches the client, pipelined or not, and passes on along a chain", () => {
    const errors: DualsocksError[] = [
      new RequestError('ERR_NAME_NOT_FOUND'),
      new RequestError('ERR_HOST_UNREACHABLE'),
      new RequestError('ERR_NO_ADDRESS'),
      new RequestError('ERR_CONNECT_TIMEOUT'),
      // what a gateway heard from the next one
      replyError(REP.HOST_UNREACHABLE, 'gw2', 'ERR_NAME_NOT_FOUND'),
      replyError(REP.CONNECTION_REFUSED, 'gw2'),
    ];
    for (const error of errors) {
      for (const req of [{ ...TARGET, errorCodes: true }, { ...TARGET, auth: AUTH, pipeline: true, errorCodes: true }]) {
        const { client } = handshake(req, req.auth !== undefined, (s) => s.fail(error));
        const failed = client.at(-1);
        assert.ok(failed?.type === 'failed', JSON.stringify(client));
        assert.ok(failed.error instanceof SocksReplyError);
        assert.deepEqual([failed.error.code, failed.error.rep], [error.code, error.rep]);
      }
    }
  });

  test('wrong credentials fail on both sides', () => {
    const { client, server } = handshake({ ...TARGET, auth: AUTH }, true, (s) => s.succeed({ host: '0.0.0.0', port: 0 }), () => false);
    assert.equal(server.at(-1)?.type, 'close');
    const failed = client.at(-1);
    assert.ok(failed?.type === 'failed' && failed.error.code === 'ERR_SOCKS_AUTH_FAILED');
  });

  test('a client without credentials meets a gateway that requires them', () => {
    const { client, server } = handshake(TARGET, true, (s) => s.succeed({ host: '0.0.0.0', port: 0 }));
    const close = server.at(-1);
    assert.ok(close?.type === 'close' && close.error?.code === 'ERR_SOCKS_NO_METHOD');
    const failed = client.at(-1);
    assert.ok(failed?.type === 'failed' && failed.error.code === 'ERR_SOCKS_NO_METHOD' && failed.error.rep === REP.NOT_ALLOWED);
  });
});

describe('client session on a connection greeted ahead (the bridge --warm)', () => {
  test('only the request is sent, and only the reply is read', () => {
    for (const auth of [undefined, { username: 'u', password: 'p' }]) {
      const s = new Socks5ClientSession({ host: '192.0.2.7', port: 80, auth, greeted: true });
      const start = s.start();
      assert.deepEqual(start, [{ type: 'send', data: encodeRequest({ cmd: CMD.CONNECT, host: '192.0.2.7', port: 80 }) }]);
      const out = s.feed(concatBytes(encodeReply({ rep: REP.SUCCEEDED, host: '198.51.100.1', port: 4321 }), bytes(1, 2)));
      assert.equal(out.length, 1);
      const r = out[0]!;
      assert.ok(r.type === 'reply');
      assert.equal(r.reply.port, 4321);
      assert.deepEqual([...r.rest], [1, 2]);
    }
  });

  test("a refusal is the gateway's reply code, as on a fresh connection", () => {
    const s = new Socks5ClientSession({ host: 'example.com', port: 443, greeted: true });
    s.start();
    const [f] = s.feed(encodeReply({ rep: REP.HOST_UNREACHABLE }));
    assert.ok(f?.type === 'failed');
    assert.equal(f.error.rep, REP.HOST_UNREACHABLE);
  });
});
