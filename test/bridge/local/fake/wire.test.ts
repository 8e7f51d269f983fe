// The fake-address DNS wired into the bridge: options (--dns-listen needs --clients beyond
// loopback, --help lists them), open() turning a fake address into its name (pinned while the
// tunnel lives) and refusing an unmapped one before anything is dialled, the failure words, and
// SOCKS5 UDP datagrams to a fake address leaving with the name in their header.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { bridgeConfig } from '../../../../bridge/local/config.js';
import { describeFailure } from '../../../../bridge/local/failure.js';
import { FakeAddressError } from '../../../../bridge/local/fake/table.js';
import { Bridge } from '../../../../bridge/local/server.js';
import type { GatewayPool, Tunnel } from '../../../../bridge/upstream/pool.js';
import { ConfigError, ERRORS, RequestError } from '../../../../shared/errors.js';
import { formatIp } from '../../../../shared/net/address.js';
import { decodeReply, encodeSocks4Request } from '../../../../shared/socks5/codec.js';
import { CMD, REP, SOCKS4_CD } from '../../../../shared/socks5/constants.js';
import { CLI, run, startCli, type Running } from '../../../helpers/process.js';
import { startOrigin, startTcp } from '../../../helpers/origin.js';
import { bridgeStatus, eventually } from '../../../helpers/settle.js';
import { exchangeAll, exchangeUntil, socks5Connect, socks5Head, socks5Request } from '../../../helpers/socks5.js';
import { associate, closeAssociations, startUdpEcho, type UdpEcho } from '../../../helpers/udp.js';

const GW = [[{ host: '127.0.0.1', port: 9 }]];

/** A pool that records what it was asked for; `tunnel` decides the answer. */
function recordingPool(tunnel: (host: string, port: number) => Promise<Tunnel>): { pool: GatewayPool; asked: string[] } {
  const asked: string[] = [];
  const pool = {
    health: [],
    open: (host: string, port: number) => {
      asked.push(`${host}:${port}`);
      return tunnel(host, port);
    },
    stop() {},
    startHealthChecks() {},
  } as unknown as GatewayPool;
  return { pool, asked };
}

/** Sends `bytes`, resolves with everything the bridge sent back once it closes. */
const exchange = (port: number, bytes: Uint8Array): Promise<Buffer> => exchangeAll(port, bytes);

describe('fake-address options', () => {
  test('defaults, the ranges checked, a non-loopback --dns-listen needs --clients', () => {
    const cfg = bridgeConfig({ listen: ['127.0.0.1:0'], dnsListen: ['127.0.0.1:5353', '[::1]'], dnsUpstream: ['192.0.2.53', '[2001:db8::53]:5300'] }, GW);
    assert.deepEqual(cfg.fake.dnsListen, [{ host: '127.0.0.1', port: 5353 }, { host: '::1', port: 53 }]);
    assert.deepEqual(cfg.fake.dnsUpstream, [{ host: '192.0.2.53', port: 53 }, { host: '2001:db8::53', port: 5300 }]);
    assert.throws(() => bridgeConfig({ dnsListen: ['192.0.2.1:53'] }, GW), (e: unknown) => e instanceof ConfigError && e.key === 'dnsListen' && /--clients/.test(e.message));
    assert.equal(bridgeConfig({ dnsListen: ['192.0.2.1:53'], clients: ['192.0.2.0/24'] }, GW).fake.dnsListen[0]!.host, '192.0.2.1');
    assert.throws(() => bridgeConfig({ dnsUpstream: ['dns.example'] }, GW), (e: unknown) => e instanceof ConfigError && e.key === 'dnsUpstream');
    const { pool } = recordingPool(() => Promise.reject(new Error('unused')));
    assert.throws(() => new Bridge(bridgeConfig({ fakeRange: '198.18.0.0/33' }, GW), pool, 'test'), ConfigError);
  });

  test('--help of bridge and start lists them; a public --dns-listen without --clients exits 2', async () => {
    for (const cmd of ['bridge', 'start']) {
      const r = await startCliOutput([cmd, '--help']);
      for (const flag of ['--dns-listen', '--dns-upstream', '--fake-range ', '--fake-range6', '--fake-state']) assert.ok(r.stdout.includes(flag), `${cmd} --help: ${flag}\n${r.stdout}`);
    }
    const r = await startCliOutput(['bridge', '--gateway', 'socks5://127.0.0.1:9', '--listen', '127.0.0.1:0', '--dns-listen', '0.0.0.0:0']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /dnsListen: 0\.0\.0\.0 is not loopback: give --clients/);
  });

  test('the codes are in ERRORS with their REP, and the failure words say how to fix it', () => {
    assert.equal(ERRORS.ERR_FAKE_UNMAPPED.rep, REP.HOST_UNREACHABLE);
    assert.equal(ERRORS.ERR_FAKE_RANGE_FULL.rep, REP.GENERAL_FAILURE);
    const e = new FakeAddressError('ERR_FAKE_UNMAPPED', '198.18.0.9 is not mapped');
    assert.ok(e instanceof RequestError);
    const f = describeFailure(e);
    assert.deepEqual([f.httpStatus, f.socks5Rep, f.socks4Code, f.code], [502, REP.HOST_UNREACHABLE, SOCKS4_CD.REJECTED, 'ERR_FAKE_UNMAPPED']);
    assert.match(f.text, /not \(or no longer\) mapped.*--fake-state/);
    assert.equal(describeFailure(new FakeAddressError('ERR_FAKE_RANGE_FULL', 'full')).socks5Rep, REP.GENERAL_FAILURE);
  });
});

async function startCliOutput(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const r = await run(process.execPath, [CLI, ...args], { timeoutMs: 20000 });
  return { code: r.code, stdout: r.stdout.toString(), stderr: r.stderr };
}

describe('Bridge.open() and fake addresses', () => {
  test('without --dns-listen every fake address is refused as unmapped and never dialled: SOCKS5 REP 0x04, SOCKS4 0x5b', async () => {
    const { pool, asked } = recordingPool(() => Promise.reject(new RequestError('ERR_NO_GATEWAY', 'none')));
    const bridge = new Bridge(bridgeConfig({ listen: ['127.0.0.1:0'] }, GW), pool, 'test');
    const port = (await bridge.listen())[0]!.port;
    try {
      for (const host of ['198.18.0.1', '198.19.255.254', '2001:2::5']) {
        const r = await exchange(port, socks5Connect(host, 80));
        // method selection (2 bytes), then the reply
        assert.equal(r[3], REP.HOST_UNREACHABLE, `${host}: ${r.toString('hex')}`);
      }
      const s4 = await exchange(port, encodeSocks4Request({ cmd: CMD.CONNECT, host: '198.18.0.1', port: 80, userId: '' }));
      assert.equal(s4[1], SOCKS4_CD.REJECTED, s4.toString('hex'));
      assert.deepEqual(asked, []);
      assert.equal(bridge.state.snapshot().fake, null);
    } finally {
      await bridge.close();
    }
  });

  test('a mapped fake address goes to the gateway as its name, pinned while the tunnel lives and released after; a failed open releases it too', async () => {
    const origin = await startTcp('127.0.0.1', (s) => {
      s.on('data', (d) => s.write(d));
      s.on('end', () => s.end());
    });
    let fail = false;
    const { pool, asked } = recordingPool(async () => {
      if (fail) throw new RequestError('ERR_NAME_NOT_FOUND', 'test');
      const socket = await new Promise<Socket>((resolve, reject) => {
        const s = connect({ host: '127.0.0.1', port: origin.port }, () => resolve(s));
        s.once('error', reject);
      });
      return { socket, reply: { rep: 0, atyp: 1, host: '127.0.0.1', port: 1 }, gateway: 'test', overhead: { up: 0, down: 0 }, release: () => {} } as Tunnel;
    });
    const bridge = new Bridge(bridgeConfig({ listen: ['127.0.0.1:0'], dnsListen: ['127.0.0.1:0'], dnsUpstream: ['127.0.0.1:9'] }, GW), pool, 'test');
    const port = (await bridge.listen())[0]!.port;
    try {
      assert.match((await bridge.startFakeDns()) ?? '', /^fake-address DNS on 127\.0\.0\.1:\d+ \(fake 198\.18\.0\.0\/15 and 2001:2::\/48; upstream 127\.0\.0\.1:9\)$/);
      const table = bridge.fake!.table;
      const ip4 = table.assign('Pinned.Test.', 4);
      const ip6 = table.assign('pinned.test', 6);
      const refs = (): number[] => bridge.state.snapshot().fake!.recent.filter((r) => r.name === 'pinned.test').map((r) => r.refs);
      const client = connect({ host: '127.0.0.1', port });
      client.write(socks5Connect(formatIp(ip4), 7));
      const got: Buffer[] = [];
      client.on('data', (d: Buffer) => got.push(d));
      await eventually(() => Buffer.concat(got).length >= 12, 'SOCKS5 reply');
      assert.equal(Buffer.concat(got)[3], REP.SUCCEEDED);
      assert.deepEqual(asked, ['pinned.test:7']);
      assert.deepEqual(refs(), [1, 0]);
      client.write('ping');
      await eventually(() => Buffer.concat(got).subarray(12).toString() === 'ping', 'echo through the tunnel');
      client.end();
      await eventually(() => refs().every((n) => n === 0), 'released when the tunnel ends', { describe: refs });
      fail = true;
      const r = await exchange(port, socks5Connect(formatIp(ip6), 7));
      assert.equal(r[3], REP.HOST_UNREACHABLE);
      assert.deepEqual(asked, ['pinned.test:7', 'pinned.test:7']);
      assert.deepEqual(refs(), [0, 0]);
    } finally {
      await bridge.close();
      await origin.close();
    }
  });
});

describe('SOCKS5 UDP to a fake address', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dualsocks-fake-udp-'));
  const hostsFile = join(dir, 'hosts');
  writeFileSync(hostsFile, '127.0.0.1 echo4.test\n');
  let gw: Running;
  let bridge: Running;
  let echo: UdpEcho;
  let dnsPort = 0;

  before(async () => {
    echo = await startUdpEcho('127.0.0.1');
    gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1']);
    bridge = await startCli(['bridge', '--listen', '127.0.0.1:0', '--gateway', `socks5://127.0.0.1:${gw.listening[0]!.port}`, '--dns-listen', '127.0.0.1:0', '--dns-upstream', '127.0.0.1:9']);
    const line = await bridge.waitStderr(/fake-address DNS on 127\.0\.0\.1:(\d+) /);
    dnsPort = Number(/127\.0\.0\.1:(\d+) /.exec(line)![1]);
  });
  after(async () => {
    closeAssociations();
    await bridge.stop();
    await gw.stop();
    await echo.close();
  });

  test('a datagram to a fake address reaches its name through the gateway; one to an unmapped fake address is dropped', async () => {
    const d = await run('dig', ['+short', '+time=3', '+tries=1', '-p', String(dnsPort), '@127.0.0.1', 'echo4.test', 'A'], { timeoutMs: 10000 });
    const fake = d.stdout.toString().trim();
    assert.match(fake, /^198\.18\.\d+\.\d+$/, d.stderr);
    const a = await associate(bridge.listening[0]!);
    a.send('198.18.200.200', echo.port, 'to nobody');
    a.send(fake, echo.port, 'to echo4.test');
    const r = await a.receive();
    assert.equal(r.data.toString(), 'to echo4.test');
    assert.deepEqual(echo.seen.map((s) => s.data.toString()), ['to echo4.test']);
    a.close();
    const rec = await bridge.waitRecord((x) => x.cmd === 'udp');
    assert.equal(rec.dropped, 1);
    assert.equal(rec.datagramsUp, 1);
  });
});

test('dualsocks start --dns-listen: curl --socks4 to the fake address of a name only the inner gateway knows', async () => {
  const origin = await startOrigin('127.0.0.1', 1024, 'page behind a fake address');
  const dir = mkdtempSync(join(tmpdir(), 'dualsocks-fake-start-'));
  const hostsFile = join(dir, 'hosts');
  writeFileSync(hostsFile, '127.0.0.1 origin.test\n');
  const start = await startCli(['start', '--listen', '127.0.0.1:0', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1', '--dns-listen', '127.0.0.1:0', '--dns-upstream', '127.0.0.1:9', '--quiet']);
  try {
    const line = await start.waitStderr(/fake-address DNS on 127\.0\.0\.1:(\d+) /);
    const dnsPort = /127\.0\.0\.1:(\d+) /.exec(line)![1]!;
    const d = await run('dig', ['+short', '+time=3', '+tries=1', '-p', dnsPort, '@127.0.0.1', 'origin.test', 'A'], { timeoutMs: 10000 });
    const fake = d.stdout.toString().trim();
    assert.match(fake, /^198\.18\.\d+\.\d+$/, d.stderr);
    const proxy = `127.0.0.1:${start.listening[0]!.port}`;
    for (const via of [['--socks4', proxy], ['-x', `http://${proxy}`], ['-p', '-x', `http://${proxy}`]]) {
      const r = await run('curl', ['-sS', '--fail', '--max-time', '20', ...via, `http://${fake}:${origin.port}/`], { timeoutMs: 30000 });
      assert.equal(r.code, 0, `${via.join(' ')}: ${r.stderr}`);
      assert.equal(r.stdout.toString(), 'page behind a fake address');
    }
    // every lease ends with its connection (the HTTP proxy's keep-alive to the origin included)
    await eventually(async () => {
      const { recent } = (await bridgeStatus(start.listening[0]!.port)).fake!;
      return recent.some((e) => e.name === 'origin.test') && recent.every((e) => e.refs === 0);
    }, 'leases released');
  } finally {
    await start.stop();
    await origin.close();
  }
});

describe('dualsocks start --dns-listen: what is sent on for a fake address', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dualsocks-fake-name-'));
  const hostsFile = join(dir, 'hosts');
  writeFileSync(hostsFile, '127.0.0.1 origin.test\n');
  let start: Running;
  let proxyPort: number;
  let fake: string;
  let web: HttpServer;
  let webPort: number;

  before(async () => {
    // answers with the Host header it was sent
    web = createHttpServer((req, res) => res.end(`host=${req.headers.host}`));
    await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
    webPort = (web.address() as AddressInfo).port;
    start = await startCli(['start', '--listen', '127.0.0.1:0', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1', '--dns-listen', '127.0.0.1:0', '--dns-upstream', '127.0.0.1:9']);
    proxyPort = start.listening[0]!.port;
    const line = await start.waitStderr(/fake-address DNS on 127\.0\.0\.1:(\d+) /);
    const dnsPort = /127\.0\.0\.1:(\d+) /.exec(line)![1]!;
    const d = await run('dig', ['+short', '+time=3', '+tries=1', '-p', dnsPort, '@127.0.0.1', 'origin.test', 'A'], { timeoutMs: 10000 });
    fake = d.stdout.toString().trim();
    assert.match(fake, /^198\.18\.\d+\.\d+$/, d.stderr);
  });
  after(async () => {
    await start.stop();
    await new Promise((r) => web.close(r));
  });

  test('an HTTP proxy request to a fake literal carries the name in Host:, not the fake address', async () => {
    const r = await run('curl', ['-sS', '--fail', '--max-time', '20', '-x', `http://127.0.0.1:${proxyPort}`, `http://${fake}:${webPort}/`], { timeoutMs: 30000 });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), `host=origin.test:${webPort}`);
    // and the bridge's log line names it, the fake address beside it
    const rec = await start.waitRecord((x) => x.inbound === 'http' && x.result === 'ok');
    assert.equal(rec.host, 'origin.test');
    assert.equal(rec.fakeAddress, fake);
  });

  test('SOCKS5 BIND to a fake address goes to the gateway as the name; an unmapped one is refused with 0x04', async () => {
    // the gateway resolves origin.test to 127.0.0.1 (allowed) and listens; as 198.18.x.y it would refuse (0x02)
    const got = await exchangeUntil(proxyPort, socks5Request(CMD.BIND, fake, 0), (b) => socks5Head(b) !== null);
    const reply = decodeReply(got.subarray(2));
    assert.equal(reply.status === 'ok' && reply.msg.rep, REP.SUCCEEDED, got.toString('hex'));
    const unmapped = await exchangeAll(proxyPort, socks5Request(CMD.BIND, '198.19.255.254', 0));
    const r2 = decodeReply(unmapped.subarray(2));
    assert.equal(r2.status === 'ok' && r2.msg.rep, REP.HOST_UNREACHABLE, unmapped.toString('hex'));
  });
});
