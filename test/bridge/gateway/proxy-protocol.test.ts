// --proxy-protocol on a real gateway process, over loopback (127.0.0.2 plays the balancer,
// 127.0.0.3 a host that is not one, 127.0.0.5 a client whose datagrams come straight to the
// gateway): the header's client is the one the log, --clients and UDP pinning see; the bytes
// after the header in the same write are SOCKS; a header from a source not listed, a listed
// source without one, a malformed one and a slow one close the connection, logged, and leave
// no descriptor behind. The HAProxy topology is test/topology/proxy-protocol.test.ts.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { connect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { encodeProxyV1, encodeProxyV2, V2_SIGNATURE } from '../../../shared/proxy-protocol/codec.js';
import { concatBytes, decodeMethodSelection, decodeReply, decodeUdpHeader, encodeGreeting, encodeRequest, encodeUdpHeader } from '../../../shared/socks5/codec.js';
import { CMD, METHOD, REP } from '../../../shared/socks5/constants.js';
import { trickle } from '../../helpers/bytes.js';
import { startTcp } from '../../helpers/origin.js';
import { CLI, run, startCli, type Running } from '../../helpers/process.js';
import { eventually, openFds } from '../../helpers/settle.js';
import { socks5Connect, socks5Credentials, socks5Head } from '../../helpers/socks5.js';
import { makeUsersFile } from '../../topology/fixtures.js';

const BALANCER = '127.0.0.2';
const STRANGER = '127.0.0.3';
const UDP_CLIENT = '127.0.0.5';
const ANSWER_LIMIT_MS = 15_000;

interface Talk {
  got: Buffer;
  /** How the gateway left: it ended or reset the connection, or the test stopped waiting. */
  end: 'closed' | 'enough';
  socket: Socket;
  /** The client's port (a closed socket no longer says). */
  localPort: number;
}

/** Connects from `from`, writes each piece in turn, reads until `enough` or the gateway closes. */
function talk(port: number, from: string, pieces: Uint8Array[], enough: (got: Buffer) => boolean = () => false, { end = false } = {}): Promise<Talk> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, localAddress: from });
    let got = Buffer.alloc(0);
    let localPort = 0;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer from the gateway; got ${got.toString('hex')}`));
    }, ANSWER_LIMIT_MS);
    const done = (end: Talk['end']): void => {
      clearTimeout(timer);
      resolve({ got, end, socket, localPort });
    };
    socket.on('connect', async () => {
      localPort = socket.localPort!;
      for (const p of pieces) {
        if (socket.destroyed) return;
        socket.write(p);
        // one segment each: the gateway reads them apart
        if (pieces.length > 1) await new Promise((r) => setTimeout(r, 2));
      }
      if (end) socket.end();
    });
    socket.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (enough(got)) done('enough');
    });
    socket.on('close', () => done('closed'));
    socket.on('error', () => {});
  });
}

const header2 = (host: string, port: number): Uint8Array =>
  encodeProxyV2({ command: 'proxy', source: { host, port }, destination: { host: '127.0.0.1', port: 1 } });

describe('gateway --proxy-protocol', { concurrency: false }, () => {
  let gw: Running;
  let echo: Awaited<ReturnType<typeof startTcp>>;
  let port: number;

  before(async () => {
    echo = await startTcp('127.0.0.1', (s) => s.pipe(s));
    gw = await startCli([
      'gateway', '--listen', '127.0.0.1:0', '--allow-private', '--handshake-timeout', '2',
      '--proxy-protocol', `${BALANCER}/32`,
      '--clients', BALANCER, '--clients', STRANGER, '--clients', UDP_CLIENT, '--clients', '192.0.2.0/24', '--clients', '2001:db8::/32',
      '--udp-advertise', '127.0.0.1',
    ]);
    port = gw.listening[0]!.port;
  });
  after(async () => {
    await gw?.stop();
    await echo?.close();
  });

  /** The log record of the connection `from` host:port made, once the gateway has written it. */
  const recordOf = (client: string, clientPort: number): Promise<Record<string, unknown>> =>
    gw.waitRecord((r) => r.client === client && r.clientPort === clientPort);

  test('a v2 header, greeting and CONNECT in one write: served, logged with the header\'s client and the balancer as via', async () => {
    const t = await talk(port, BALANCER, [concatBytes(header2('192.0.2.7', 4242), socks5Connect('127.0.0.1', echo.port), Buffer.from('ping'))], (g) => {
      const n = socks5Head(g);
      return n !== null && g.length >= n + 4;
    });
    const n = socks5Head(t.got)!;
    assert.equal(t.got[3], REP.SUCCEEDED);
    assert.equal(t.got.subarray(n).toString(), 'ping');
    t.socket.destroy();
    const r = await recordOf('192.0.2.7', 4242);
    assert.equal(r.result, 'ok');
    assert.equal(r.proxy, 'v2');
    assert.match(String(r.via), /^127\.0\.0\.2:\d+$/);
  });

  test('a v1 header and the SOCKS bytes trickled one byte a write: the same', async () => {
    const bytes = concatBytes(encodeProxyV1({ host: '2001:db8::7', port: 999 }, { host: '2001:db8::1', port: 1081 }), socks5Connect('127.0.0.1', echo.port));
    const t = await talk(port, BALANCER, trickle(bytes), (g) => socks5Head(g) !== null);
    assert.equal(t.got[3], REP.SUCCEEDED, t.got.toString('hex'));
    t.socket.destroy();
    const r = await recordOf('2001:db8::7', 999);
    assert.equal(r.result, 'ok');
    assert.equal(r.proxy, 'v1');
  });

  test('--clients judges the header\'s client: one outside is refused (X\'FF\'), logged by its real address', async () => {
    const t = await talk(port, BALANCER, [concatBytes(encodeProxyV1({ host: '198.51.100.9', port: 5000 }, { host: '127.0.0.1', port: 1 }), encodeGreeting({ methods: [METHOD.NO_AUTH] }))]);
    assert.deepEqual([...t.got], [5, METHOD.NO_ACCEPTABLE]);
    const r = await recordOf('198.51.100.9', 5000);
    assert.equal(r.result, 'ERR_POLICY_CLIENT');
  });

  test('a LOCAL header (a health check) stands for the balancer itself; one that leaves at once is not logged', async () => {
    // HAProxy's `check` with `check-send-proxy`: connect, the header, close
    const check = await talk(port, BALANCER, [encodeProxyV2({ command: 'local' })], undefined, { end: true });
    const t = await talk(port, BALANCER, [concatBytes(encodeProxyV2({ command: 'local' }), socks5Connect('127.0.0.1', echo.port))], (g) => socks5Head(g) !== null);
    assert.equal(t.got[3], REP.SUCCEEDED);
    const local = t.localPort;
    t.socket.destroy();
    const r = await recordOf(BALANCER, local);
    assert.equal(r.proxy, 'v2 local');
    assert.equal(gw.records().filter((x) => x.client === BALANCER && x.clientPort === check.localPort).length, 0, 'the health check left no line');
  });

  const refusals: [string, string, Uint8Array[], string][] = [
    ['a listed source without a header', BALANCER, [socks5Connect('127.0.0.1', 1)], 'ERR_PROXY_MISSING'],
    ['a listed source with a malformed header (v2 version 1)', BALANCER, [concatBytes(V2_SIGNATURE, Uint8Array.of(0x11, 0x11, 0, 12), new Uint8Array(12))], 'ERR_PROXY_MALFORMED'],
    ['a listed source with a v1 line ending in LF only', BALANCER, [Buffer.from('PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n')], 'ERR_PROXY_MALFORMED'],
    ['a source not in --proxy-protocol sending a v1 header', STRANGER, [encodeProxyV1({ host: '192.0.2.1', port: 1 }, { host: '192.0.2.2', port: 2 })], 'ERR_PROXY_UNTRUSTED'],
    ['a source not in --proxy-protocol sending a v2 header', STRANGER, [header2('192.0.2.1', 1)], 'ERR_PROXY_UNTRUSTED'],
  ];
  for (const [name, from, pieces, code] of refusals) {
    test(`${name}: closed without a reply, logged as ${code}`, async () => {
      const t = await talk(port, from, pieces);
      assert.equal(t.end, 'closed');
      assert.equal(t.got.length, 0, `no reply, got ${t.got.toString('hex')}`);
      const r = await recordOf(from, t.localPort);
      assert.equal(r.result, code);
      assert.equal(r.phase, 'proxy');
      assert.equal(r.client, from, 'the connection\'s own address: no header was taken');
    });
  }

  test('a header that does not come whole within --handshake-timeout: closed, ERR_HANDSHAKE_TIMEOUT in phase proxy', async () => {
    const t = await talk(port, BALANCER, [header2('192.0.2.1', 1).subarray(0, 14)]);
    assert.equal(t.end, 'closed');
    const r = await recordOf(BALANCER, t.localPort);
    assert.equal(r.result, 'ERR_HANDSHAKE_TIMEOUT');
    assert.equal(r.phase, 'proxy');
  });

  test('UDP ASSOCIATE pins the header\'s client: its datagrams are relayed, the balancer\'s dropped; BND.ADDR is --udp-advertise', async () => {
    const echoUdp = await udpSocket('127.0.0.1');
    echoUdp.on('message', (m, from) => echoUdp.send(m, from.port, from.address));
    const client = await udpSocket(UDP_CLIENT);
    const balancerUdp = await udpSocket(BALANCER);
    try {
      const req = concatBytes(header2(UDP_CLIENT, client.address().port), encodeGreeting({ methods: [METHOD.NO_AUTH] }), encodeRequest({ cmd: CMD.UDP_ASSOCIATE, host: '0.0.0.0', port: 0 }));
      const t = await talk(port, BALANCER, [req], (g) => socks5Head(g) !== null);
      const m = decodeMethodSelection(t.got);
      assert.ok(m.status === 'ok');
      const reply = decodeReply(t.got.subarray(m.size));
      assert.ok(reply.status === 'ok' && reply.msg.rep === REP.SUCCEEDED, t.got.toString('hex'));
      assert.equal(reply.msg.host, '127.0.0.1', 'BND.ADDR is the --udp-advertise address');
      const frame = (text: string): Uint8Array => concatBytes(encodeUdpHeader({ host: '127.0.0.1', port: echoUdp.address().port }), Buffer.from(text));
      balancerUdp.send(frame('from the balancer'), reply.msg.port, reply.msg.host);
      client.send(frame('from the client'), reply.msg.port, reply.msg.host);
      const back = await new Promise<Buffer>((resolve) => client.once('message', resolve));
      const h = decodeUdpHeader(back);
      assert.equal(h.status === 'ok' && back.subarray(h.msg.dataOffset).toString(), 'from the client');
      t.socket.destroy();
      const r = await recordOf(UDP_CLIENT, client.address().port);
      assert.equal(r.cmd, 'udp');
      assert.equal(r.datagramsUp, 1);
      assert.equal(r.droppedSource, 1, 'the balancer\'s datagram was not the client\'s');
    } finally {
      for (const s of [echoUdp, client, balancerUdp]) s.close();
    }
  });

  test('refused and timed-out headers leave no descriptor behind', async () => {
    const base = openFds(gw);
    for (let round = 0; round < 3; round++) {
      const slow = talk(port, BALANCER, [header2('192.0.2.1', 1).subarray(0, 20)]);
      await Promise.all([
        ...refusals.map(([, from, pieces]) => talk(port, from, pieces)),
        talk(port, BALANCER, [concatBytes(header2('192.0.2.1', 1), encodeGreeting({ methods: [METHOD.NO_AUTH] }))]).then((t) => t.socket.destroy()),
        talk(port, BALANCER, [header2('192.0.2.1', 1).subarray(0, 20)]).then(() => {}),
        slow,
      ]);
    }
    await eventually(() => openFds(gw) <= base, 'the gateway back to its descriptors', { describe: () => ({ base, now: openFds(gw) }) });
  });
});

test('the login back-off counts failures per real client, not per balancer', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'dualsocks-pp-'));
  const users = await makeUsersFile(dir, 'alice', 'right-password');
  const gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--users', users, '--proxy-protocol', BALANCER]);
  try {
    const port = gw.listening[0]!.port;
    const login = async (client: string, password: string): Promise<unknown> => {
      const clientPort = 1000 + Math.floor(Math.random() * 60000);
      // a request after the credentials: a login that succeeds is logged with the request's outcome
      const bytes = concatBytes(header2(client, clientPort), socks5Credentials('alice', password), encodeRequest({ cmd: CMD.CONNECT, host: '127.0.0.1', port: 1 }));
      await talk(port, BALANCER, [bytes]);
      return (await gw.waitRecord((r) => r.client === client && r.clientPort === clientPort)).auth;
    };
    // five free failures from one client (DEFAULT_CHECK_LIMITS.freeFailures), then a refusal period
    for (let i = 0; i < 5; i++) assert.equal(await login('192.0.2.50', 'wrong'), 'fail');
    const [again, other] = await Promise.all([login('192.0.2.50', 'right-password'), login('192.0.2.51', 'right-password')]);
    assert.equal(again, 'backoff', 'the failing client waits');
    assert.equal(other, 'ok', 'another client behind the same balancer does not');
  } finally {
    await gw.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

function udpSocket(host: string): Promise<UdpSocket> {
  const s = createSocket('udp4');
  return new Promise((resolve) => s.bind(0, host, () => resolve(s)));
}

test('--udp-advertise and --proxy-protocol: a bad value exits 2 naming the flag', async () => {
  for (const [args, flag] of [
    [['--udp-advertise', 'gateway.example'], '--udp-advertise'],
    [['--udp-advertise', '0.0.0.0'], '--udp-advertise'],
    [['--udp-advertise', '192.0.2.1', '--udp-advertise', '192.0.2.2'], '--udp-advertise'],
    [['--proxy-protocol', '192.0.2.0/33'], '--proxy-protocol'],
  ] as const) {
    const r = await run(process.execPath, [CLI, 'gateway', '--listen', '127.0.0.1:0', ...args], { timeoutMs: 20000 });
    assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}, stderr: ${r.stderr}`);
    assert.ok(r.stderr.includes(`${flag}:`), r.stderr);
  }
});
