// The gateway's native front (splice_relay.c, "the front"): accept, handshake and the dial of a
// plain CONNECT in the addon's thread, anything else adopted by the SOCKS5 session. The oracle
// is the same gateway with DUALSOCKS_NATIVE_FRONT=0: for the same input the client must get the
// same bytes and the log the same record. frontStats says which path a connection took.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { gatewayConfig } from '../../../bridge/gateway/config.js';
import { Gateway } from '../../../bridge/gateway/server.js';
import { frontStats, nativeFrontStatus } from '../../../bridge/native/loader.js';
import { bindSecondReply, dialSocks5 } from '../../../bridge/upstream/socks5.js';
import { concatBytes, decodeMethodSelection, decodeReply, encodeGreeting, encodeRequest, failureCode } from '../../../shared/socks5/codec.js';
import { CMD, METHOD, REP } from '../../../shared/socks5/constants.js';
import { ascii, bytes, trickle } from '../../helpers/bytes.js';
import { requireCapability } from '../../helpers/env.js';
import { closedTcpPort, readAll, startOrigin, startTcp, type Origin } from '../../helpers/origin.js';
import { run, startCli } from '../../helpers/process.js';
import { eventually, fdLinks } from '../../helpers/settle.js';
import { corkedExchange, exchangeUntil, socks5Connect } from '../../helpers/socks5.js';
import { associate, closeAssociations, startUdpEcho } from '../../helpers/udp.js';

const status = nativeFrontStatus();
const skip = requireCapability('native front', status.available, status.reason);

const dir = mkdtempSync(join(tmpdir(), 'dualsocks-front-'));
const hostsFile = join(dir, 'hosts');
writeFileSync(hostsFile, ['127.0.0.1 web.test', '127.0.0.2 mixed.test', '127.0.0.1 mixed.test', '10.0.0.1 refused.test'].join('\n'));
const BASE = ['--listen', '127.0.0.1:0', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1'];

/** A log record as JSON has it. */
type Line = Record<string, unknown>;

/** Descriptors of this process other than pipes (the addon keeps up to 64 idle pipes pooled). */
const descriptors = (): string[] => fdLinks(process.pid).filter((l) => !l.startsWith('pipe:'));

/** How long a client waits for the gateway to end its connection (a hang bound, not a speed claim). */
const HANG_LIMIT_MS = 15_000;

interface Side {
  gw: Gateway;
  port: number;
  records: Line[];
}

/** An in-process gateway; `front` false: as with DUALSOCKS_NATIVE_FRONT=0 (read when it listens). */
async function side(args: string[], front: boolean): Promise<Side> {
  const records: Line[] = [];
  const gw = new Gateway(gatewayConfig(args), (r) => void records.push(r as unknown as Line));
  if (!front) process.env.DUALSOCKS_NATIVE_FRONT = '0';
  try {
    const [bound] = await gw.listen();
    return { gw, port: bound!.port, records };
  } finally {
    delete process.env.DUALSOCKS_NATIVE_FRONT;
  }
}

interface Pair {
  front: Side;
  oracle: Side;
  close(): Promise<void>;
}

async function pair(args: string[]): Promise<Pair> {
  const front = await side(args, true);
  const oracle = await side(args, false);
  return { front, oracle, close: async () => void (await Promise.all([front.gw.close(), oracle.gw.close()])) };
}

interface Outcome {
  /** Everything the client got until the gateway ended the connection. */
  got: Buffer;
  /** The connection's log record, or undefined when it is not logged. */
  record: Line | undefined;
}

/**
 * A raw client: writes each piece (with a pause between pieces, so that the gateway reads them
 * apart where it can), sends its FIN if `end`, and reads until the gateway ends the connection.
 * Then waits for its log record, or (`logged` false) for the gateway to hold nothing of it.
 */
async function exchange(s: Side, pieces: Uint8Array[], { end = false, logged = true }: { end?: boolean; logged?: boolean } = {}): Promise<Outcome> {
  const accepted = s.gw.stats.accepted;
  const c = connect({ host: '127.0.0.1', port: s.port, allowHalfOpen: true });
  c.setNoDelay(true);
  const got = readAll(c).catch(() => Buffer.alloc(0));
  await new Promise((r) => c.once('connect', r));
  const clientPort = c.localPort!;
  for (const [i, p] of pieces.entries()) {
    if (i > 0) await sleep(3);
    c.write(p);
  }
  if (end) c.end();
  // a gateway that never lets the client go fails here rather than hanging the file
  let timer: NodeJS.Timeout | undefined;
  const stuck = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the gateway kept the connection of client port ${clientPort} open`)), HANG_LIMIT_MS);
  });
  const out = await Promise.race([got, stuck]).finally(() => {
    clearTimeout(timer);
    c.destroy();
  });
  const mine = (): Line | undefined => s.records.find((r) => r.clientPort === clientPort);
  if (logged) await eventually(() => mine() !== undefined, `the record of client port ${clientPort}`, { describe: () => s.records });
  // counted (by the front when it ends the handshake itself), and nothing of it held
  else await eventually(() => s.gw.stats.accepted > accepted && s.gw.stats.handshaking === 0 && s.gw.stats.active === 0, 'nothing held', { describe: () => s.gw.stats });
  return { got: out, record: mine() };
}

/** The client's bytes with the port of a success reply's BND zeroed (an ephemeral port). */
function comparable(got: Buffer): string {
  const b = Buffer.from(got);
  const m = decodeMethodSelection(b);
  if (m.status !== 'ok') return b.toString('hex');
  const r = decodeReply(b.subarray(m.size));
  if (r.status === 'ok' && r.msg.rep === REP.SUCCEEDED) b.fill(0, m.size + r.size - 2, m.size + r.size);
  return b.toString('hex');
}

/** A record without what differs from one connection to the next: ports, duration. */
function stable(r: Line | undefined): Record<string, unknown> | undefined {
  if (!r) return undefined;
  const { clientPort: _p, durationMs: _d, ...rest } = r;
  if (typeof rest.bound === 'string') rest.bound = rest.bound.replace(/:\d+$/, '');
  return rest;
}

/** Counters moved by `fn` (a snapshot difference of frontStats). */
async function counting<T>(fn: () => Promise<T>): Promise<{ result: T; dialed: number; adopted: number; ended: number }> {
  const before = { ...frontStats };
  const result = await fn();
  return { result, dialed: frontStats.dialed - before.dialed, adopted: frontStats.adopted - before.adopted, ended: frontStats.ended - before.ended };
}

/**
 * The same input to the front and to the session: the same bytes, the same record. Returns the
 * front's outcome and what the front did with it.
 */
async function same(p: Pair, pieces: Uint8Array[], opts: { end?: boolean; logged?: boolean } = {}): Promise<Outcome & { dialed: number; adopted: number; ended: number }> {
  const f = await counting(() => exchange(p.front, pieces, opts));
  const o = await counting(() => exchange(p.oracle, pieces, opts));
  assert.deepEqual([o.dialed, o.adopted, o.ended], [0, 0, 0], 'the oracle runs without the front');
  const what = Buffer.from(concatBytes(...pieces)).toString('hex');
  assert.equal(comparable(f.result.got), comparable(o.result.got), `bytes to the client for ${what}`);
  assert.deepEqual(stable(f.result.record), stable(o.result.record), `log record for ${what}`);
  return { ...f.result, dialed: f.dialed, adopted: f.adopted, ended: f.ended };
}

const G = (...methods: number[]): Uint8Array => encodeGreeting({ methods });
const connectReq = (host: string, port: number): Uint8Array => encodeRequest({ cmd: CMD.CONNECT, host, port });
const NO_AUTH = G(METHOD.NO_AUTH);
const WITH_CODES = G(METHOD.NO_AUTH, METHOD.ERROR_CODES);

/** The reply after the method selection 05 00. */
function replyOf(got: Buffer): ReturnType<typeof decodeReply> {
  assert.equal(got.subarray(0, 2).toString('hex'), '0500', 'NO_AUTH selected');
  return decodeReply(got.subarray(2));
}

/** An origin that reads to the client's FIN and then answers "echo:" and what it read. */
async function startEchoAfterFin(): Promise<{ port: number; seen: Buffer[]; close(): Promise<void> }> {
  const seen: Buffer[] = [];
  const t = await startTcp('127.0.0.1', (s) => {
    void readAll(s).then((b) => {
      seen.push(b);
      s.end(Buffer.concat([Buffer.from('echo:'), b]));
    }, () => s.destroy());
  });
  return { port: t.port, seen, close: () => t.close() };
}

/**
 * A listener whose accept queue is full (backlog 0, one connection never accepted): a SYN to it
 * is dropped, so a dial to it waits for the dialer's deadline. python3 holds it until stdin closes.
 */
async function startBlackhole(): Promise<{ port: number; close(): void }> {
  const script = `
import socket, sys
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(0)
port = s.getsockname()[1]
filler = socket.create_connection(('127.0.0.1', port))
print(port, flush=True)
sys.stdin.read()
`;
  const p: ChildProcess = spawn('python3', ['-c', script], { stdio: ['pipe', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    p.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
    p.once('exit', (code) => reject(new Error(`blackhole exited ${code}`)));
  });
  return { port, close: () => p.stdin!.end() };
}

let baseline: string[] = [];

describe('native front', { skip }, () => {
  let origin: Origin;
  let echo: Awaited<ReturnType<typeof startEchoAfterFin>>;

  before(async () => {
    origin = await startOrigin('127.0.0.1', 64 * 1024);
    echo = await startEchoAfterFin();
    // the addon's thread, its queue and a first pipe exist from the first tunnel on: the baseline after one
    const warm = await side(BASE, true);
    const t = await dialSocks5({ host: '127.0.0.1', port: warm.port }, { host: '127.0.0.1', port: echo.port }, { timeoutMs: 5000 });
    const drained = readAll(t.socket);
    t.socket.resume();
    t.socket.end();
    await drained;
    await eventually(() => warm.records.length === 1, 'the warm-up tunnel logged');
    await warm.gw.close();
    baseline = descriptors();
  });
  after(async () => {
    closeAssociations();
    await origin.close();
    await echo.close();
  });

  describe('real clients', () => {
    let p: Pair;
    before(async () => {
      p = await pair(BASE);
    });
    after(() => p.close());

    test('curl --socks5 (an IPv4 address) is served by the front: dialed there, byte-exact, logged as the session logs it', async () => {
      const f = await counting(() => run('curl', ['-sS', '--max-time', '20', '--socks5', `127.0.0.1:${p.front.port}`, `http://127.0.0.1:${origin.port}/`]));
      assert.equal(f.result.code, 0, f.result.stderr);
      assert.equal(f.result.stdout.toString(), 'hello from origin');
      assert.equal(f.dialed, 1, 'dialed by the front');
      assert.equal(f.adopted, 0);
      const o = await run('curl', ['-sS', '--max-time', '20', '--socks5', `127.0.0.1:${p.oracle.port}`, `http://127.0.0.1:${origin.port}/`]);
      assert.equal(o.code, 0, o.stderr);
      await eventually(() => p.front.records.length === 1 && p.oracle.records.length === 1, 'both logged');
      const rec = p.front.records[0]!;
      assert.equal(rec.result, 'ok');
      assert.equal(rec.cmd, 'connect');
      assert.equal(rec.host, '127.0.0.1');
      assert.equal(rec.address, '127.0.0.1');
      assert.equal(rec.family, 4);
      assert.match(String(rec.bound), /^127\.0\.0\.1:\d+$/);
      assert.ok(typeof rec.bytesDown === 'number' && rec.bytesDown > 'hello from origin'.length, `bytesDown ${rec.bytesDown}`);
      assert.deepEqual(stable(rec), stable(p.oracle.records[0]), 'the record the session writes');
    });

    test('PySocks to an IP destination is served by the front', async () => {
      const script = `
import socket, socks, sys
s = socks.socksocket()
s.set_proxy(socks.SOCKS5, '127.0.0.1', int(sys.argv[1]), rdns=False)
s.settimeout(10)
s.connect(('127.0.0.1', int(sys.argv[2])))
s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')
out = b''
while True:
    d = s.recv(65536)
    if not d: break
    out += d
sys.stdout.buffer.write(out)
`;
      const f = await counting(() => run('/usr/bin/python3', ['-c', script, String(p.front.port), String(origin.port)], { timeoutMs: 20000 }));
      assert.equal(f.result.code, 0, f.result.stderr);
      assert.match(f.result.stdout.toString(), /hello from origin$/);
      assert.equal(f.dialed, 1, 'dialed by the front');
      const rec = await eventually(() => p.front.records.length === 2, 'logged').then(() => p.front.records[1]!);
      assert.equal(rec.result, 'ok');
      assert.equal(rec.bytesUp, 'GET / HTTP/1.0\r\n\r\n'.length);
    });

    test('curl --socks5-hostname (a --hosts name): resolved by the gateway, dialed by the front, logged as the session logs it', async () => {
      const f = await counting(() => run('curl', ['-sS', '--max-time', '20', '--socks5-hostname', `127.0.0.1:${p.front.port}`, `http://web.test:${origin.port}/`]));
      assert.equal(f.result.code, 0, f.result.stderr);
      assert.equal(f.result.stdout.toString(), 'hello from origin');
      assert.equal(f.dialed, 1, 'dialed by the front');
      assert.equal(f.adopted, 0);
      const o = await run('curl', ['-sS', '--max-time', '20', '--socks5-hostname', `127.0.0.1:${p.oracle.port}`, `http://web.test:${origin.port}/`]);
      assert.equal(o.code, 0, o.stderr);
      await eventually(() => p.front.records.length === 3 && p.oracle.records.length === 2, 'logged');
      const rec = p.front.records[2]!;
      assert.equal(rec.result, 'ok');
      assert.equal(rec.host, 'web.test');
      assert.equal(rec.address, '127.0.0.1');
      assert.deepEqual(stable(rec), stable(p.oracle.records[1]));
    });
  });

  describe('framing: the front answers as the session does', () => {
    let p: Pair;
    let refused: number;
    before(async () => {
      p = await pair(BASE);
      refused = await closedTcpPort();
    });
    after(() => p.close());

    const data = ascii('early bytes for the origin');

    test('greeting and request whole, data and FIN after the reply: dialed by the front', async () => {
      const r = await same(p, [concatBytes(NO_AUTH, connectReq('127.0.0.1', echo.port)), data], { end: true });
      assert.equal(r.dialed, 1);
      const reply = replyOf(r.got);
      assert.ok(reply.status === 'ok' && reply.msg.rep === REP.SUCCEEDED && reply.msg.host === '127.0.0.1');
      assert.equal(r.got.subarray(2 + 10).toString(), `echo:${Buffer.from(data).toString()}`);
      assert.equal(r.record?.result, 'ok');
      assert.equal(r.record?.bound, `127.0.0.1:${reply.status === 'ok' ? reply.msg.port : -1}`);
      assert.equal(r.record?.bytesUp, data.length);
      assert.equal(r.record?.bytesDown, data.length + 'echo:'.length);
      assert.equal(r.record?.end, 'closed');
    });

    test('greeting and request one byte a write: dialed by the front, the same answer', async () => {
      const r = await same(p, [...trickle(concatBytes(NO_AUTH, connectReq('127.0.0.1', echo.port))), data], { end: true });
      assert.equal(r.dialed, 1);
      assert.equal(r.got.subarray(12).toString(), `echo:${Buffer.from(data).toString()}`);
    });

    test('greeting, request and early data in one write: the early data reaches the origin, counted up', async () => {
      const seen = echo.seen.length;
      const r = await same(p, [concatBytes(WITH_CODES, connectReq('127.0.0.1', echo.port), data)], { end: true });
      assert.equal(r.dialed, 1);
      assert.equal(echo.seen[seen]?.toString(), Buffer.from(data).toString(), 'the origin got the early data (front)');
      assert.equal(r.got.subarray(12).toString(), `echo:${Buffer.from(data).toString()}`);
      assert.equal(r.record?.bytesUp, data.length);
    });

    test('FIN right behind the request (same write): half-closed, the reply and the origin answer still come', async () => {
      const r = await same(p, [concatBytes(NO_AUTH, connectReq('127.0.0.1', echo.port), data)], { end: true });
      assert.equal(r.dialed, 1);
      assert.equal(r.got.subarray(12).toString(), `echo:${Buffer.from(data).toString()}`);
      // request, early data and FIN in one segment: the front reads the end with the request
      const before = { ...frontStats };
      const corked = await corkedExchange(p.front.port, concatBytes(NO_AUTH, connectReq('127.0.0.1', echo.port)), 20000);
      assert.equal(frontStats.dialed - before.dialed, 1);
      const reply = replyOf(corked.stdout);
      assert.ok(reply.status === 'ok' && reply.msg.rep === REP.SUCCEEDED);
      assert.equal(corked.stdout.subarray(12).toString(), 'echo:');
    });

    // [name, input, expected bytes (hex) or null for "as the session", expected result, logged]
    const refusals: [string, Uint8Array, string | null, string | undefined, boolean][] = [
      ['version 4 (a SOCKS4 CONNECT)', bytes(4, 1, 0, 80, 127, 0, 0, 1, 0), '', 'ERR_SOCKS_VERSION', true],
      ['a PROXY header from a source not in --proxy-protocol', ascii('PROXY TCP4 192.0.2.1 127.0.0.1 5555 1080\r\n'), '', 'ERR_PROXY_UNTRUSTED', true],
      ['a greeting without NO_AUTH', G(METHOD.USERPASS), '05ff', 'ERR_SOCKS_NO_METHOD', true],
      ['NMETHODS 0', bytes(5, 0), '', 'ERR_SOCKS_METHODS', true],
      ['ATYP 5', concatBytes(NO_AUTH, bytes(5, 1, 0, 5, 1, 2, 3, 4, 0, 80)), '0500' + '05080001000000000000', 'ERR_SOCKS_ATYP', true],
      ['DOMAINNAME of length 0', concatBytes(NO_AUTH, bytes(5, 1, 0, 3, 0, 0, 80)), '0500' + '05010001000000000000', 'ERR_SOCKS_NAME', true],
      ['command 0x04', concatBytes(NO_AUTH, bytes(5, 4, 0, 1, 127, 0, 0, 1, 0, 80)), '0500' + '05070001000000000000', 'ERR_SOCKS_COMMAND', true],
      ['request version 4', concatBytes(NO_AUTH, bytes(4, 1, 0, 1, 127, 0, 0, 1, 0, 80)), null, 'ERR_SOCKS_VERSION', true],
      ['greeting then FIN', NO_AUTH, '0500', undefined, false],
      ['nothing then FIN', new Uint8Array(0), '', undefined, false],
      ['half a request then FIN', concatBytes(NO_AUTH, bytes(5, 1, 0, 1, 127)), '0500', undefined, false],
    ];
    for (const [name, input, want, result, logged] of refusals) {
      test(`${name}: whole and one byte a write`, async () => {
        const eof = !logged;
        for (const pieces of [[input], trickle(input)]) {
          if (pieces.length === 0) continue;
          const r = await same(p, pieces, { end: eof, logged });
          if (want !== null) assert.equal(r.got.toString('hex'), want, `${name} (${pieces.length} writes)`);
          // a header trickled in is seen as such by no reader: its first read is "P", a version error
          const proxyTrickled = pieces.length > 1 && name.startsWith('a PROXY');
          assert.equal(r.record?.result, proxyTrickled ? 'ERR_SOCKS_VERSION' : result);
          assert.equal(r.dialed, 0);
          if (logged && result !== undefined && want !== null && want.length > 4) assert.equal(r.record?.rep, parseInt(want.slice(6, 8), 16));
        }
      });
    }

    test('RSV not 0: adopted, and served as the session serves it', async () => {
      const req = connectReq('127.0.0.1', echo.port);
      req[2] = 1;
      const r = await same(p, [concatBytes(NO_AUTH, req), data], { end: true });
      assert.equal(r.dialed, 0);
      assert.equal(r.adopted, 1);
      assert.equal(r.record?.result, 'ok');
      assert.equal(r.got.subarray(12).toString(), `echo:${Buffer.from(data).toString()}`);
    });

    test('port 0: adopted, the session answers', async () => {
      for (const g of [NO_AUTH, WITH_CODES]) {
        const r = await same(p, [concatBytes(g, connectReq('127.0.0.1', 0))]);
        assert.equal(r.dialed, 0);
        assert.equal(r.adopted, 1);
        const reply = replyOf(r.got);
        assert.ok(reply.status === 'ok' && reply.msg.rep !== REP.SUCCEEDED, `refused: ${r.got.toString('hex')}`);
      }
    });

    test('a destination policy refuses (10.0.0.1): REP 0x02, its code in BND when 0xD5 was offered', async () => {
      for (const [g, code] of [[NO_AUTH, null], [WITH_CODES, 'ERR_POLICY_DESTINATION']] as const) {
        const r = await same(p, [concatBytes(g, connectReq('10.0.0.1', 80))]);
        // answered by the gateway for the front: neither dialed nor given to the session
        assert.equal(r.dialed, 0);
        assert.equal(r.adopted, 0);
        const reply = replyOf(r.got);
        assert.ok(reply.status === 'ok');
        assert.equal(reply.msg.rep, REP.NOT_ALLOWED);
        assert.equal(failureCode(reply.msg), code);
        assert.equal(r.record?.result, 'ERR_POLICY_DESTINATION');
        assert.equal(r.record?.rep, REP.NOT_ALLOWED);
      }
    });

    test('names: one of whose addresses policy refuses is dialed at the other; one nobody knows is refused as the session refuses it', async () => {
      const ok = await same(p, [concatBytes(NO_AUTH, connectReq('mixed.test', echo.port)), data], { end: true });
      assert.equal(ok.dialed, 1);
      assert.equal(ok.record?.result, 'ok');
      assert.equal(ok.record?.address, '127.0.0.1');
      assert.equal(ok.got.subarray(12).toString(), `echo:${Buffer.from(data).toString()}`);
      for (const [name, result] of [['refused.test', 'ERR_POLICY_DESTINATION'], ['nowhere.test', undefined]] as const) {
        for (const g of [NO_AUTH, WITH_CODES]) {
          const r = await same(p, [concatBytes(g, connectReq(name, echo.port))]);
          assert.equal(r.dialed, 0, name);
          const reply = replyOf(r.got);
          assert.ok(reply.status === 'ok' && reply.msg.rep !== REP.SUCCEEDED, name);
          if (result) assert.equal(r.record?.result, result);
          assert.equal(failureCode(reply.msg), g === WITH_CODES ? r.record?.result : null, name);
        }
      }
    });

    test('a name whose every address refuses: the front tries each (RFC 8305) and reports as dialDirect does', async () => {
      const wide = await pair([...BASE, '--allow', '127.0.0.0/8']);
      try {
        for (const g of [NO_AUTH, WITH_CODES]) {
          const r = await same(wide, [concatBytes(g, connectReq('mixed.test', refused))]);
          assert.equal(r.dialed, 1);
          assert.equal(r.record?.result, 'ERR_CONNECTION_REFUSED');
          const reply = replyOf(r.got);
          assert.ok(reply.status === 'ok' && reply.msg.rep === REP.CONNECTION_REFUSED);
        }
      } finally {
        await wide.close();
      }
    });

    test('connection refused: dialed by the front, REP 0x05, its code in BND when 0xD5 was offered, logged as the session logs it', async () => {
      for (const [g, code] of [[NO_AUTH, null], [WITH_CODES, 'ERR_CONNECTION_REFUSED']] as const) {
        for (const pieces of [[concatBytes(g, connectReq('127.0.0.1', refused))], trickle(concatBytes(g, connectReq('127.0.0.1', refused)))]) {
          const r = await same(p, pieces);
          assert.equal(r.dialed, 1);
          const reply = replyOf(r.got);
          assert.ok(reply.status === 'ok');
          assert.equal(reply.msg.rep, REP.CONNECTION_REFUSED);
          assert.equal(failureCode(reply.msg), code);
          assert.equal(r.record?.result, 'ERR_CONNECTION_REFUSED');
          assert.equal(r.record?.rep, REP.CONNECTION_REFUSED);
        }
      }
      // the client's FIN right behind its request: the failure reply still comes
      const r = await same(p, [concatBytes(WITH_CODES, connectReq('127.0.0.1', refused))], { end: true });
      assert.equal(r.dialed, 1);
      const reply = replyOf(r.got);
      assert.ok(reply.status === 'ok' && failureCode(reply.msg) === 'ERR_CONNECTION_REFUSED');
    });

    test('early data beyond the front\'s 1024-byte buffer, in the same write: all of it reaches the origin, in order', async () => {
      const big = Buffer.alloc(200 * 1024);
      for (let i = 0; i < big.length; i++) big[i] = (i * 7) % 251;
      const seen = echo.seen.length;
      const r = await same(p, [concatBytes(NO_AUTH, connectReq('127.0.0.1', echo.port), big)], { end: true });
      assert.equal(r.dialed, 1);
      assert.ok(echo.seen[seen]?.equals(big), 'the origin got every early byte in order (front)');
      assert.ok(r.got.subarray(12 + 5).equals(big));
      assert.equal(r.record?.bytesUp, big.length);
      assert.equal(r.record?.bytesDown, big.length + 5);
    });

    test('a client that resets while the front dials: ERR_CLIENT_CLOSED, logged as the session logs it', async () => {
      const hole = await startBlackhole();
      try {
        const outcomes: (Line | undefined)[] = [];
        for (const s of [p.front, p.oracle]) {
          const c = connect({ host: '127.0.0.1', port: s.port });
          c.on('error', () => {});
          await new Promise((r) => c.once('connect', r));
          const active = s.gw.stats.active;
          c.write(socks5Connect('127.0.0.1', hole.port));
          await eventually(() => s.gw.stats.active === active + 1, 'dialing', { describe: () => s.gw.stats });
          const port = c.localPort;
          c.resetAndDestroy();
          await eventually(() => s.records.some((r) => r.clientPort === port) && s.gw.stats.active === active, 'logged', { describe: () => s.gw.stats });
          outcomes.push(s.records.find((r) => r.clientPort === port));
        }
        assert.equal(outcomes[0]?.result, 'ERR_CLIENT_CLOSED');
        assert.deepEqual(stable(outcomes[0]), stable(outcomes[1]));
      } finally {
        hole.close();
      }
    });

    test('a request adopted after a wait: its record counts the time spent in the front', async () => {
      for (const s of [p.front, p.oracle]) {
        const c = connect({ host: '127.0.0.1', port: s.port });
        const got = readAll(c);
        await new Promise((r) => c.once('connect', r));
        const port = c.localPort;
        c.write(NO_AUTH);
        await new Promise((r) => c.once('data', r));
        // the gateway accepted the connection before this answer came
        const answered = Date.now();
        await sleep(300);
        const waited = Date.now() - answered;
        // port 0: not the front's to dial, the session refuses it at once
        c.write(connectReq('127.0.0.1', 0));
        await got;
        await eventually(() => s.records.some((r) => r.clientPort === port), 'logged');
        const rec = s.records.find((r) => r.clientPort === port)!;
        assert.ok((rec.durationMs as number) >= waited, `durationMs ${String(rec.durationMs)} covers the ${waited} ms the client waited`);
      }
    });

    test('BIND: adopted after the greeting was answered, both replies and the data come', async () => {
      const before = { ...frontStats };
      const dial = await dialSocks5({ host: '127.0.0.1', port: p.front.port }, { cmd: CMD.BIND, host: '127.0.0.1', port: 0 }, { timeoutMs: 5000 });
      assert.equal(dial.reply.rep, REP.SUCCEEDED);
      assert.equal(frontStats.adopted - before.adopted, 1);
      const second = bindSecondReply(dial);
      const peer = connect({ host: '127.0.0.1', port: dial.reply.port, allowHalfOpen: true });
      await new Promise((r) => peer.once('connect', r));
      const { reply } = await second;
      assert.equal(reply.port, peer.localPort);
      const atPeer = readAll(peer);
      const atClient = readAll(dial.socket);
      dial.socket.resume();
      dial.socket.end('up');
      peer.end('down');
      assert.equal((await atPeer).toString(), 'up');
      assert.equal((await atClient).toString(), 'down');
      await eventually(() => p.front.records.some((r) => r.cmd === 'bind'), 'BIND logged');
      const rec = p.front.records.find((r) => r.cmd === 'bind')!;
      assert.equal(rec.result, 'ok');
    });

    test('UDP ASSOCIATE: adopted, a datagram goes through', async () => {
      const udpEcho = await startUdpEcho('127.0.0.1');
      const before = { ...frontStats };
      const a = await associate({ host: '127.0.0.1', port: p.front.port });
      try {
        assert.equal(frontStats.adopted - before.adopted, 1);
        a.send('127.0.0.1', udpEcho.port, 'through the front');
        const back = await a.receive();
        assert.equal(back.data.toString(), 'through the front');
      } finally {
        a.close();
        await udpEcho.close();
      }
      await eventually(() => p.front.records.some((r) => r.cmd === 'udp'), 'UDP logged');
    });
  });

  describe('IPv6', () => {
    test('an IPv6 listener and destination (ATYP 4): dialed by the front, the same answer and record', async () => {
      const echo6 = await startTcp('::1', (s) => void readAll(s).then((b) => s.end(Buffer.concat([Buffer.from('echo:'), b])), () => s.destroy()));
      const p = await pair(['--listen', '[::1]:0', '--allow', '::1', '--clients', '::1/128']);
      try {
        const exchange6 = (s: Side): Promise<Outcome & { dialed: number }> =>
          counting(async () => {
            const c = connect({ host: '::1', port: s.port, allowHalfOpen: true });
            const got = readAll(c);
            await new Promise((r) => c.once('connect', r));
            const port = c.localPort;
            c.end(concatBytes(NO_AUTH, connectReq('::1', echo6.port), ascii('six')));
            const out = await got;
            await eventually(() => s.records.some((r) => r.clientPort === port), 'logged');
            return { got: out, record: s.records.find((r) => r.clientPort === port) };
          }).then((r) => ({ ...r.result, dialed: r.dialed }));
        const f = await exchange6(p.front);
        const o = await exchange6(p.oracle);
        assert.equal(f.dialed, 1);
        assert.equal(comparable(f.got), comparable(o.got));
        assert.deepEqual(stable(f.record), stable(o.record));
        const reply = replyOf(f.got);
        assert.ok(reply.status === 'ok' && reply.msg.host === '::1');
        assert.equal(f.got.subarray(2 + 22).toString(), 'echo:six');
        assert.equal(f.record?.client, '::1');
        assert.equal(f.record?.family, 6);
        assert.equal(f.record?.bound, `[::1]:${reply.status === 'ok' ? reply.msg.port : -1}`);
      } finally {
        await p.close();
        await echo6.close();
      }
    });
  });

  describe('served limits', () => {
    test('--max-connections full: the front gives the request to the session, which refuses it (ERR_CONNECTION_CAP)', async () => {
      const p = await pair([...BASE, '--max-connections', '1']);
      const held: Socket[] = [];
      try {
        for (const s of [p.front, p.oracle]) {
          const t = await dialSocks5({ host: '127.0.0.1', port: s.port }, { host: '127.0.0.1', port: echo.port }, { timeoutMs: 5000 });
          held.push(t.socket);
        }
        for (const g of [NO_AUTH, WITH_CODES]) {
          const r = await same(p, [concatBytes(g, connectReq('127.0.0.1', echo.port))]);
          assert.equal(r.dialed, 0);
          assert.equal(r.adopted, 1);
          const reply = replyOf(r.got);
          assert.ok(reply.status === 'ok' && reply.msg.rep === REP.GENERAL_FAILURE);
          assert.equal(failureCode(reply.msg), g === WITH_CODES ? 'ERR_CONNECTION_CAP' : null);
          assert.equal(r.record?.result, 'ERR_CONNECTION_CAP');
        }
      } finally {
        for (const c of held) c.destroy();
        await p.close();
      }
    });

    test('--idle-timeout: a tunnel the front dialed ends "idle", logged as the session logs it', async () => {
      const p = await pair([...BASE, '--idle-timeout', '0.3']);
      try {
        const r = await same(p, [socks5Connect('127.0.0.1', echo.port)]);
        assert.equal(r.dialed, 1);
        assert.equal(r.record?.result, 'ok');
        assert.equal(r.record?.end, 'idle');
      } finally {
        await p.close();
      }
    });
  });

  describe('connect timeout', () => {
    test('a dial the front gives up at --connect-timeout: REP 0x06, logged as the session logs it', async () => {
      const hole = await startBlackhole();
      const p = await pair([...BASE, '--connect-timeout', '0.5']);
      try {
        for (const g of [NO_AUTH, WITH_CODES]) {
          const r = await same(p, [concatBytes(g, connectReq('127.0.0.1', hole.port))]);
          assert.equal(r.dialed, 1);
          const reply = replyOf(r.got);
          assert.ok(reply.status === 'ok');
          assert.equal(reply.msg.rep, REP.TTL_EXPIRED);
          assert.equal(failureCode(reply.msg), g === WITH_CODES ? 'ERR_CONNECT_TIMEOUT' : null);
          assert.equal(r.record?.result, 'ERR_CONNECT_TIMEOUT');
        }
      } finally {
        await p.close();
        hole.close();
      }
    });
  });

  describe('handshake limits', () => {
    test('--handshake-timeout: ended by the front in the greeting or the request, logged with its phase', async () => {
      const p = await pair([...BASE, '--handshake-timeout', '0.3']);
      try {
        const cases: [Uint8Array[], string, string][] = [
          [[], '', 'greeting'],
          [[bytes(5, 2, 0)], '', 'greeting'],
          [[NO_AUTH], '0500', 'request'],
          [trickle(concatBytes(NO_AUTH, bytes(5, 1, 0, 1, 127, 0))), '0500', 'request'],
        ];
        for (const [pieces, want, phase] of cases) {
          const r = await same(p, pieces);
          assert.equal(r.got.toString('hex'), want);
          assert.equal(r.record?.result, 'ERR_HANDSHAKE_TIMEOUT');
          assert.equal(r.record?.phase, phase);
          assert.equal(r.ended, 1, 'ended by the front');
        }
      } finally {
        await p.close();
      }
    });

    test('--clients: a client outside is refused (05 FF, ERR_POLICY_CLIENT); one inside is dialed by the front', async () => {
      const out = await pair([...BASE, '--clients', '10.0.0.0/8']);
      const inside = await pair([...BASE, '--clients', '127.0.0.0/8', '--clients', '2001:db8::/32']);
      try {
        for (const pieces of [[socks5Connect('127.0.0.1', echo.port)], []]) {
          const r = await same(out, pieces);
          assert.equal(r.got.toString('hex'), '05ff');
          assert.equal(r.record?.result, 'ERR_POLICY_CLIENT');
          assert.equal(r.record?.rep, REP.NOT_ALLOWED);
          assert.equal(r.dialed, 0);
          assert.equal(r.adopted, 1);
        }
        const r = await same(inside, [socks5Connect('127.0.0.1', echo.port)], { end: true });
        assert.equal(r.dialed, 1);
        assert.equal(r.got.subarray(12).toString(), 'echo:');
      } finally {
        await out.close();
        await inside.close();
      }
    });

    test('the handshake budget (--max-connections 50: 16): the oldest of 20 silent clients make room, counted in stats.handshaking', async () => {
      const p = await pair([...BASE, '--max-connections', '50']);
      const silent: Socket[] = [];
      try {
        for (const s of [p.front, p.oracle]) {
          const closed: boolean[] = [];
          for (let i = 0; i < 20; i++) {
            const c = connect({ host: '127.0.0.1', port: s.port });
            c.on('error', () => {});
            const i = closed.push(false) - 1;
            c.once('close', () => (closed[i] = true));
            await new Promise((r) => c.once('connect', r));
            silent.push(c);
          }
          await eventually(() => s.records.length === 4 && s.gw.stats.handshaking === 16, '4 evicted, 16 handshaking', { describe: () => ({ stats: s.gw.stats, records: s.records.length }) });
          await eventually(() => closed.slice(0, 4).every(Boolean), 'the 4 oldest let go', { describe: () => closed });
          assert.equal(s.gw.stats.evicted, 4);
          // a real CONNECT still gets through (and evicts one more)
          const t = await dialSocks5({ host: '127.0.0.1', port: s.port }, { host: '127.0.0.1', port: echo.port }, { timeoutMs: 5000 });
          const answer = readAll(t.socket);
          t.socket.resume();
          t.socket.end();
          assert.equal((await answer).toString(), 'echo:');
          await eventually(() => s.records.length === 6, 'the fifth eviction and the tunnel logged');
          assert.equal(s.gw.stats.evicted, 5);
        }
        const caps = (s: Side): unknown[] => s.records.filter((r) => r.result === 'ERR_CONNECTION_CAP').map(stable);
        assert.equal(caps(p.front).length, 5);
        assert.deepEqual(caps(p.front), caps(p.oracle));
        assert.deepEqual(caps(p.front)[0], { client: '127.0.0.1', result: 'ERR_CONNECTION_CAP', phase: 'greeting', error: '16 handshakes at once: the oldest made room' });
        for (const c of silent) c.destroy();
        await eventually(() => p.front.gw.stats.handshaking === 0 && p.oracle.gw.stats.handshaking === 0, 'no handshake left', { describe: () => [p.front.gw.stats, p.oracle.gw.stats] });
      } finally {
        for (const c of silent) c.destroy();
        await p.close();
      }
    });

    test('stats.handshaking counts the front\'s handshakes as it does the session\'s', async () => {
      const p = await pair(BASE);
      const held: Socket[] = [];
      try {
        for (const s of [p.front, p.oracle]) {
          for (const first of [new Uint8Array(0), bytes(5), NO_AUTH]) {
            const c = connect({ host: '127.0.0.1', port: s.port });
            c.on('error', () => {});
            await new Promise((r) => c.once('connect', r));
            if (first.length) c.write(first);
            held.push(c);
          }
          await eventually(() => s.gw.stats.handshaking === 3, '3 handshaking', { describe: () => s.gw.stats });
          held.pop()!.destroy();
          await eventually(() => s.gw.stats.handshaking === 2, '2 handshaking', { describe: () => s.gw.stats });
        }
        for (const c of held.splice(0)) c.destroy();
        await eventually(() => p.front.gw.stats.handshaking === 0 && p.oracle.gw.stats.handshaking === 0, 'none', { describe: () => [p.front.gw.stats, p.oracle.gw.stats] });
        assert.equal(p.front.gw.stats.accepted, p.oracle.gw.stats.accepted);
        assert.equal(p.front.gw.stats.failed, p.oracle.gw.stats.failed);
      } finally {
        for (const c of held) c.destroy();
        await p.close();
      }
    });
  });

  describe('descriptors', () => {
    test('close() with handshakes, dials and a tunnel in flight ends them all, logged', async () => {
      const hole = await startBlackhole();
      const s = await side(BASE, true);
      const clients: Socket[] = [];
      const ends: (Buffer | undefined)[] = [];
      const open = async (first: Uint8Array): Promise<void> => {
        const c = connect({ host: '127.0.0.1', port: s.port, allowHalfOpen: true });
        const i = ends.push(undefined) - 1;
        void readAll(c).then((b) => (ends[i] = b), () => (ends[i] = Buffer.alloc(0)));
        await new Promise((r) => c.once('connect', r));
        if (first.length) c.write(first);
        clients.push(c);
      };
      try {
        await open(new Uint8Array(0));
        await open(bytes(5, 1));
        await open(NO_AUTH);
        const dialed = frontStats.dialed;
        await open(socks5Connect('127.0.0.1', hole.port));
        await open(socks5Connect('127.0.0.1', hole.port));
        await open(socks5Connect('127.0.0.1', echo.port));
        await eventually(() => frontStats.dialed === dialed + 3 && s.gw.stats.handshaking === 3 && s.gw.stats.active === 3, 'three handshaking, three dialed', { describe: () => s.gw.stats });
        await s.gw.close();
        // every client is let go: the gateway ended each connection
        await eventually(() => ends.every((b) => b !== undefined), 'every client let go', { describe: () => ends.map((b) => b?.toString('hex')) });
        const got = ends as Buffer[];
        assert.deepEqual(got.map((b) => b.subarray(0, 2).toString('hex')), ['', '', '0500', '0500', '0500', '0500']);
        await eventually(() => s.records.length === 3 && s.gw.stats.active === 0 && s.gw.stats.handshaking === 0, 'the dials and the tunnel logged', { describe: () => ({ stats: s.gw.stats, records: s.records }) });
        assert.deepEqual(s.records.map((r) => r.result).sort(), ['ERR_CLIENT_CLOSED', 'ERR_CLIENT_CLOSED', 'ok']);
      } finally {
        for (const c of clients) c.destroy();
        hole.close();
      }
    });

    test('the CLI gateway process: after clients of every kind, and handshakes and dials cut off, its descriptors are back to where they were', async () => {
      const hole = await startBlackhole();
      const refused = await closedTcpPort();
      const gw = await startCli(['gateway', ...BASE, '--handshake-timeout', '1', '--connect-timeout', '1']);
      const port = gw.listening[0]!.port;
      const pid = gw.proc.pid!;
      const own = (): string[] => fdLinks(pid).filter((l) => !l.startsWith('pipe:'));
      // everything the gateway sends until it ends the connection (bounded: a leak fails, not hangs)
      const toEnd = (b: Uint8Array): Promise<Buffer> => exchangeUntil(port, b, () => false);
      const curl = (): ReturnType<typeof run> => run('curl', ['-sS', '--max-time', '20', '--socks5', `127.0.0.1:${port}`, `http://127.0.0.1:${origin.port}/`]);
      try {
        assert.equal((await curl()).code, 0);
        await gw.waitRecords(1);
        const base = own();
        const cut: Socket[] = [];
        const gone: Promise<unknown>[] = [];
        const hold = async (bytes: Uint8Array): Promise<void> => {
          const c = connect({ host: '127.0.0.1', port });
          c.on('error', () => {});
          gone.push(new Promise((r) => c.once('close', r)));
          await new Promise((r) => c.once('connect', r));
          c.write(bytes);
          cut.push(c);
        };
        const results = await Promise.all([
          curl(),
          curl(),
          toEnd(concatBytes(NO_AUTH, bytes(5, 1, 0, 5))),
          toEnd(G(METHOD.USERPASS)),
          toEnd(concatBytes(WITH_CODES, connectReq('127.0.0.1', refused))),
          toEnd(concatBytes(NO_AUTH, connectReq('10.0.0.1', 80))),
          toEnd(concatBytes(NO_AUTH, connectReq('127.0.0.1', hole.port))),
          toEnd(NO_AUTH),
        ]);
        assert.deepEqual(results.slice(0, 2).map((r) => (r as { code: number }).code), [0, 0]);
        const coded = decodeReply((results[4] as Buffer).subarray(2));
        assert.ok(coded.status === 'ok' && failureCode(coded.msg) === 'ERR_CONNECTION_REFUSED', (results[4] as Buffer).toString('hex'));
        // handshakes and a dial in flight, cut off by their clients
        for (const b of [new Uint8Array(0), bytes(5, 1), NO_AUTH, socks5Connect('127.0.0.1', hole.port)]) await hold(b);
        for (const c of cut) c.resetAndDestroy();
        await Promise.all(gone);
        await gw.waitRecord((r) => r.result === 'ERR_CONNECT_TIMEOUT');
        await gw.waitRecord((r) => r.result === 'ERR_HANDSHAKE_TIMEOUT' && r.phase === 'request');
        await eventually(() => own().length <= base.length, `gateway descriptors back to ${base.length}`, { describe: () => own().filter((l) => !base.includes(l)) });
        assert.doesNotMatch(gw.stderr.join('\n'), /internal error/);
      } finally {
        await gw.stop();
        hole.close();
      }
    });

    test('after every test above, this process holds no more descriptors than before them (pipes aside)', async () => {
      await eventually(() => descriptors().length <= baseline.length, `descriptors back to ${baseline.length}`, {
        describe: () => descriptors().filter((l) => !baseline.includes(l)),
      });
    });
  });
});
