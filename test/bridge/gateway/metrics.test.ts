// The gateway's Prometheus metrics (--metrics) as an operator scrapes them: a real gateway, real
// clients (curl, the `socks` package, raw sockets), the answer read with a Prometheus text parser.
// Every count is checked by its exact change across the traffic the test made; byte counts
// against the gateway's own log lines.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import { CMD } from '../../../shared/socks5/constants.js';
import { readAll, startOrigin, type Origin } from '../../helpers/origin.js';
import { fetchText, scrape, type Metrics } from '../../helpers/metrics.js';
import { CLI, run, startCli, type Running } from '../../helpers/process.js';
import { eventually } from '../../helpers/settle.js';
import { socks5Request } from '../../helpers/socks5.js';
import { associate, closeAssociations, startUdpEcho } from '../../helpers/udp.js';

const dir = mkdtempSync(join(tmpdir(), 'dualsocks-metrics-'));
const hostsFile = join(dir, 'hosts');
writeFileSync(hostsFile, ['127.0.0.1 web.test', '::1 web6.test'].join('\n'));

async function curl(args: string[]): Promise<{ code: number | null; body: string; stderr: string }> {
  const r = await run('curl', ['-sS', '--max-time', '20', ...args]);
  return { code: r.code, body: r.stdout.toString(), stderr: r.stderr };
}

/** An HTTP/1.0 GET through the gateway with the name sent as DOMAINNAME; the whole answer. */
async function getVia(port: number, host: string, destPort: number, path: string): Promise<Buffer> {
  const { socket } = await SocksClient.createConnection({ proxy: { host: '127.0.0.1', port, type: 5 }, command: 'connect', destination: { host, port: destPort } });
  socket.write(`GET ${path} HTTP/1.0\r\nHost: ${host}\r\n\r\n`);
  return readAll(socket);
}

const metricsUrl = async (gw: Running): Promise<string> => {
  const line = await gw.waitStderr(/metrics on (http:\S+)/);
  return /metrics on (http:\S+)/.exec(line)![1]!;
};

/** The change of each named sample between two scrapes. */
function delta(before: Metrics, after: Metrics) {
  return {
    value: (name: string, labels: Record<string, string> = {}) => after.value(name, labels) - before.value(name, labels),
    count: (name: string, labels: Record<string, string> = {}) => after.count(name, labels) - before.count(name, labels),
  };
}

describe('gateway --metrics', () => {
  let gw: Running;
  let origin: Origin;
  let origin6: Origin;
  let port: number;
  let url: string;

  before(async () => {
    origin = await startOrigin('127.0.0.1', 64 * 1024);
    origin6 = await startOrigin('::1', 64 * 1024);
    gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--hosts', hostsFile, '--allow', '127.0.0.1/32', '--allow', '::1', '--clients', '127.0.0.1/32', '--clients', '::1', '--metrics', '127.0.0.1:0']);
    port = gw.listening[0]!.port;
    url = await metricsUrl(gw);
  });
  after(async () => {
    closeAssociations();
    await gw.stop();
    await origin.close();
    await origin6.close();
  });

  test('connections by command, result and family; bytes; latencies; name lookups and cache hits; refusals by class', async () => {
    const s0 = await scrape(url);
    const records0 = gw.records().length;
    const proxy = ['--socks5-hostname', `127.0.0.1:${port}`];
    for (const target of [`http://web.test:${origin.port}/`, `http://web6.test:${origin6.port}/blob.bin`]) {
      const r = await curl([...proxy, '-o', '/dev/null', target]);
      assert.equal(r.code, 0, `${target}: ${r.stderr}`);
    }
    // curl may answer "localhost" itself: the socks package sends the name as it is
    for (const path of ['/', '/blob.bin']) assert.match((await getVia(port, 'localhost', origin.port, path)).toString(), /^HTTP\/1\.1 200 /);
    // a loopback address outside --allow: refused by the special-purpose table
    const refused = await curl([...proxy, `http://127.0.0.2:${origin.port}/`]);
    assert.notEqual(refused.code, 0);
    // a client outside --clients is refused before its handshake
    const stranger = connect({ host: '127.0.0.1', port, localAddress: '127.0.0.2' });
    stranger.on('error', () => {});
    stranger.write(socks5Request(CMD.CONNECT, 'web.test', origin.port));
    await readAll(stranger).catch(() => Buffer.alloc(0));
    const lines = await gw.waitRecords(records0 + 6);
    const s1 = await scrape(url);
    const d = delta(s0, s1);
    const C = 'dualsocks_gateway_connections_total';
    assert.equal(d.value(C, { cmd: 'connect', result: 'ok', family: '4' }), 3, 'web.test and localhost twice (::1 refused the connection, 127.0.0.1 took it)');
    assert.equal(d.value(C, { cmd: 'connect', result: 'ok', family: '6' }), 1, 'web6.test');
    assert.equal(d.value(C, { cmd: 'connect', result: 'ERR_POLICY_DESTINATION', family: 'none' }), 1);
    assert.equal(d.value(C, { cmd: 'none', result: 'ERR_POLICY_CLIENT', family: 'none' }), 1);
    assert.equal(d.value(C), 6, 'nothing else counted');
    // bytes: the same numbers as the log lines
    const ours = lines.slice(records0).filter((l) => l.cmd === 'connect' && l.result === 'ok');
    const sum = (k: string): number => ours.reduce((n, l) => n + (l[k] as number), 0);
    assert.ok(sum('bytesDown') > 2 * 64 * 1024, 'both blobs came down');
    assert.equal(d.value('dualsocks_gateway_bytes_total', { cmd: 'connect', direction: 'up' }), sum('bytesUp'));
    assert.equal(d.value('dualsocks_gateway_bytes_total', { cmd: 'connect', direction: 'down' }), sum('bytesDown'));
    // five requests were read; four were answered with success
    assert.equal(d.count('dualsocks_gateway_handshake_seconds'), 5);
    assert.equal(d.count('dualsocks_gateway_connect_seconds', { cmd: 'connect' }), 4);
    // names: the hosts file twice, localhost from the system resolver once, then from the cache; 127.0.0.2 is no name
    assert.equal(d.value('dualsocks_gateway_dns_lookups_total', { source: 'hosts' }), 2);
    assert.equal(d.value('dualsocks_gateway_dns_lookups_total', { source: 'dns' }), 1);
    assert.equal(d.value('dualsocks_gateway_dns_lookups_total', { source: 'cache' }), 1);
    assert.equal(d.value('dualsocks_gateway_dns_failures_total'), 0);
    assert.equal(d.value('dualsocks_gateway_policy_refusals_total', { class: 'loopback' }), 1);
    assert.equal(d.value('dualsocks_gateway_policy_refusals_total', { class: 'client' }), 1);
    assert.equal(s1.value('dualsocks_gateway_open_tunnels'), 0);
    // no label names a client or a destination
    const text = s1.text;
    for (const secret of ['127.0.0.2', 'web.test', 'localhost', String(origin.port)]) assert.ok(!text.includes(secret), `${secret} in the metrics`);
  });

  test('UDP datagrams each way and drops by reason, counted when the association ends', async () => {
    const echo = await startUdpEcho('127.0.0.1');
    try {
      const s0 = await scrape(url);
      const udpBefore = gw.records().filter((r) => r.cmd === 'udp').length;
      const a = await associate({ host: '127.0.0.1', port });
      for (const n of [1, 2, 3]) {
        a.send('127.0.0.1', echo.port, `ping ${n}`);
        assert.equal((await a.receive()).data.toString(), `ping ${n}`);
      }
      // fragments are not supported (RFC 1928 allows dropping them)
      a.send('127.0.0.1', echo.port, 'fragment', 1);
      a.send('127.0.0.1', echo.port, 'last');
      assert.equal((await a.receive()).data.toString(), 'last');
      a.close();
      const line = await gw.waitRecord((l) => l.cmd === 'udp' && gw.records().filter((r) => r.cmd === 'udp').length > udpBefore);
      assert.equal(line.droppedFrag, 1);
      const d = delta(s0, await scrape(url));
      assert.equal(d.value('dualsocks_gateway_udp_datagrams_total', { direction: 'up' }), 4);
      assert.equal(d.value('dualsocks_gateway_udp_datagrams_total', { direction: 'down' }), 4);
      assert.equal(d.value('dualsocks_gateway_udp_drops_total', { reason: 'frag' }), 1);
      assert.equal(d.value('dualsocks_gateway_udp_drops_total'), 1);
      assert.equal(d.value('dualsocks_gateway_bytes_total', { cmd: 'udp', direction: 'up' }), line.bytesUp);
      assert.equal(d.value('dualsocks_gateway_connections_total', { cmd: 'udp', result: 'ok', family: 'none' }), 1);
      assert.equal(d.count('dualsocks_gateway_connect_seconds', { cmd: 'udp' }), 1);
    } finally {
      await echo.close();
    }
  });

  test('open tunnels: a gauge of the connections being served', async () => {
    const { socket } = await SocksClient.createConnection({ proxy: { host: '127.0.0.1', port, type: 5 }, command: 'connect', destination: { host: 'web.test', port: origin.port } });
    try {
      assert.equal((await scrape(url)).value('dualsocks_gateway_open_tunnels'), 1);
    } finally {
      socket.destroy();
    }
    await eventually(async () => (await scrape(url)).value('dualsocks_gateway_open_tunnels') === 0, 'the tunnel no longer counted');
  });

  test('only /metrics, only GET; a scrape from an address outside the default (loopback) is refused in words', async () => {
    assert.equal((await fetchText(url.replace('/metrics', '/'))).status, 404);
    const post = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-X', 'POST', url]);
    assert.equal(post.stdout.toString(), '405');
    // 127.0.0.2 is loopback too: allowed by default
    assert.equal((await fetchText(url, { localAddress: '127.0.0.2' })).status, 200);
  });
});

describe('gateway --metrics-clients', () => {
  test('replaces the loopback default: only the ranges given may scrape, others get a 403 in words', async () => {
    const gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--metrics', '127.0.0.1:0', '--metrics-clients', '127.0.0.2/32']);
    try {
      const url = await metricsUrl(gw);
      const allowed = await fetchText(url, { localAddress: '127.0.0.2' });
      assert.equal(allowed.status, 200);
      const refused = await fetchText(url, { localAddress: '127.0.0.1' });
      assert.equal(refused.status, 403);
      assert.match(refused.text, /^Forbidden\. Metrics are served only to the --metrics-clients ranges; 127\.0\.0\.1 is not one of them\./);
    } finally {
      await gw.stop();
    }
  });
});

describe('gateway --workers 2 --metrics', () => {
  test('the primary serves the sum over the workers', async () => {
    const origin = await startOrigin('127.0.0.1', 1024);
    const gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--workers', '2', '--allow', '127.0.0.1/32', '--metrics', '127.0.0.1:0'], { expectListeners: 2 });
    try {
      const url = await metricsUrl(gw);
      const port = gw.listening[0]!.port;
      const s0 = await scrape(url);
      const N = 8;
      for (let i = 0; i < N; i++) {
        const r = await curl(['--socks5', `127.0.0.1:${port}`, '-o', '/dev/null', `http://127.0.0.1:${origin.port}/`]);
        assert.equal(r.code, 0, r.stderr);
      }
      const lines = await gw.waitRecords(N);
      const s1 = await scrape(url);
      assert.equal(s1.value('dualsocks_gateway_connections_total', { cmd: 'connect', result: 'ok' }) - s0.value('dualsocks_gateway_connections_total', { cmd: 'connect', result: 'ok' }), N);
      const down = lines.reduce((n, l) => n + (l.bytesDown as number), 0);
      assert.equal(s1.value('dualsocks_gateway_bytes_total', { direction: 'down' }), down);
    } finally {
      await gw.stop();
      await origin.close();
    }
  });
});

describe('--metrics is checked like the other HOST:PORT options', () => {
  for (const [args, key] of [
    [['--metrics', 'nonsense'], 'metrics'],
    [['--metrics', '127.0.0.1:99999'], 'metrics'],
    [['--metrics', 'metrics.example:9100'], 'metrics'],
    [['--metrics-clients', '127.0.0.1/32'], 'metricsClients'],
    [['--metrics', '127.0.0.1:0', '--metrics-clients', '10.0.0.0/33'], 'metricsClients'],
  ] as const) {
    test(`${args.join(' ')}: exit 2 naming ${key}`, async () => {
      const r = await run(process.execPath, [CLI, 'gateway', '--listen', '127.0.0.1:0', ...args]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, new RegExp(`^dualsocks: .*\\b${key}: `));
    });
  }

  test('the JSON config key: a number is refused, a HOST:PORT string works', async () => {
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify({ metrics: 9100 }));
    const r = await run(process.execPath, [CLI, 'gateway', '--config', bad]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^dualsocks: .*\bmetrics: must be a non-empty string/);
    const good = join(dir, 'good.json');
    writeFileSync(good, JSON.stringify({ listen: ['127.0.0.1:0'], metrics: '127.0.0.1:0', metricsClients: ['127.0.0.0/8'] }));
    const gw = await startCli(['gateway', '--config', good]);
    try {
      assert.equal((await scrape(await metricsUrl(gw))).value('dualsocks_gateway_open_tunnels'), 0);
    } finally {
      await gw.stop();
    }
  });
});
