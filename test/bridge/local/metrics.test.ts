// GET /metrics on the bridge's own port: a real gateway and bridge, curl through every inbound
// protocol, the scrape read with prometheus_client's parser and checked by exact deltas (bytes
// against the bridge's own log lines). For this machine only: web pages (DNS rebinding, another
// origin) are refused here; a client on another machine in test/bridge/metrics.test.ts.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startOrigin, type Origin } from '../../helpers/origin.js';
import { fetchText, scrape, type Metrics } from '../../helpers/metrics.js';
import { run, startCli, type Running } from '../../helpers/process.js';
import { eventually } from '../../helpers/settle.js';

const dir = mkdtempSync(join(tmpdir(), 'dualsocks-bmetrics-'));
const hostsFile = join(dir, 'hosts');
writeFileSync(hostsFile, ['127.0.0.1 web.test', '::1 web6.test'].join('\n'));

async function curl(args: string[]): Promise<{ code: number | null; stderr: string }> {
  const r = await run('curl', ['-sS', '--max-time', '20', '-o', '/dev/null', ...args]);
  return { code: r.code, stderr: r.stderr };
}

describe('bridge GET /metrics', () => {
  let gw: Running;
  let bridge: Running;
  let origin: Origin;
  let origin6: Origin;
  let port: number;
  let gwUrl: string;
  let url: string;

  before(async () => {
    origin = await startOrigin('127.0.0.1', 64 * 1024);
    origin6 = await startOrigin('::1', 64 * 1024);
    gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1', '--allow', '::1', '--quiet']);
    gwUrl = `socks5://127.0.0.1:${gw.listening[0]!.port}`;
    bridge = await startCli(['bridge', '--listen', '127.0.0.1:0', '--gateway', gwUrl, '--health-interval', '3600']);
    port = bridge.listening[0]!.port;
    url = `http://127.0.0.1:${port}/metrics`;
  });
  after(async () => {
    await bridge.stop();
    await gw.stop();
    await origin.close();
    await origin6.close();
  });

  test('connections by inbound, command, result and family; bytes; tunnel latency; gateway health', async () => {
    const s0 = await scrape(url);
    const records0 = bridge.records().length;
    const proxy = `127.0.0.1:${port}`;
    for (const args of [
      ['-x', `http://${proxy}`, `http://web.test:${origin.port}/`],
      ['-p', '-x', `http://${proxy}`, `http://web.test:${origin.port}/blob.bin`],
      ['--socks5-hostname', proxy, `http://web6.test:${origin6.port}/blob.bin`],
      ['--socks4a', proxy, `http://web.test:${origin.port}/`],
    ]) {
      const r = await curl(args);
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    }
    const missing = await curl(['-p', '-x', `http://${proxy}`, `http://nowhere.test:${origin.port}/`]);
    assert.notEqual(missing.code, 0);
    const lines = (await bridge.waitRecords(records0 + 5)).slice(records0);
    const s1 = await scrape(url);
    const d = (name: string, labels: Record<string, string> = {}, m: (s: Metrics) => number = (s) => s.value(name, labels)): number => m(s1) - m(s0);
    const C = 'dualsocks_bridge_connections_total';
    assert.equal(d(C, { inbound: 'http', cmd: 'forward', result: 'ok', family: 'none' }), 1);
    assert.equal(d(C, { inbound: 'connect', cmd: 'connect', result: 'ok', family: '4' }), 1);
    assert.equal(d(C, { inbound: 'socks5', cmd: 'connect', result: 'ok', family: '6' }), 1);
    assert.equal(d(C, { inbound: 'socks4', cmd: 'connect', result: 'ok', family: '4' }), 1);
    // the code the bridge can tell from the gateway's REP (see the log line)
    const failed = lines.find((l) => l.host === 'nowhere.test')!;
    assert.match(String(failed.result), /^ERR_/);
    assert.equal(d(C, { inbound: 'connect', cmd: 'connect', result: String(failed.result), family: 'none' }), 1);
    assert.equal(d(C), 5, 'nothing else counted');
    for (const inbound of ['connect', 'socks5', 'socks4']) {
      const ours = lines.filter((l) => l.inbound === inbound && l.result === 'ok');
      for (const [field, direction] of [['bytesUp', 'up'], ['bytesDown', 'down']] as const) {
        const sum = ours.reduce((n, l) => n + (l[field] as number), 0);
        assert.ok(sum > 0, `${inbound} ${direction}`);
        assert.equal(d('dualsocks_bridge_bytes_total', { inbound, direction }), sum, `${inbound} ${direction}`);
      }
    }
    const T = 'dualsocks_bridge_tunnel_open_seconds';
    assert.equal(d(T, { inbound: 'connect' }, (s) => s.count(T, { inbound: 'connect' })), 2, 'the failed one too');
    assert.equal(d(T, { inbound: 'socks5' }, (s) => s.count(T, { inbound: 'socks5' })), 1);
    assert.equal(d(T, { inbound: 'socks4' }, (s) => s.count(T, { inbound: 'socks4' })), 1);
    assert.equal(s1.value('dualsocks_bridge_gateway_up', { gateway: gwUrl }), 1);
    assert.ok(s1.value('dualsocks_bridge_gateway_latency_seconds', { gateway: gwUrl }) > 0);
    assert.deepEqual(s1.labelSets('dualsocks_bridge_gateway_open_tunnels'), [{ gateway: gwUrl }]);
    // five tunnels asked of the gateway (the HTTP request's too); nowhere.test was refused by it
    assert.equal(d('dualsocks_bridge_gateway_tunnels_total', { gateway: gwUrl, outcome: 'opened' }), 4);
    assert.equal(d('dualsocks_bridge_gateway_tunnels_total', { gateway: gwUrl, outcome: 'failed' }), 1);
    await eventually(async () => (await scrape(url)).value('dualsocks_bridge_open_connections') === 0, 'no connection open');
    for (const secret of ['web.test', 'web6.test', 'nowhere.test']) assert.ok(!s1.text.includes(secret), `${secret} in the metrics`);
  });

  test('a web page cannot read it: a DNS-rebound Host or a web Origin gets a 403 in words', async () => {
    const rebound = await fetchText(url, { headers: { Host: `evil.example:${port}` } });
    assert.equal(rebound.status, 403);
    assert.match(rebound.text, /^Forbidden\. The Host header "evil\.example:\d+" is not a loopback address or localhost/);
    const origin = await fetchText(url, { headers: { Origin: 'https://evil.example' } });
    assert.equal(origin.status, 403);
    assert.match(origin.text, /web origin "https:\/\/evil\.example" are refused/);
    assert.equal((await fetchText(url, { headers: { Host: `localhost:${port}` } })).status, 200);
  });
});

describe('start GET /metrics', () => {
  test('one scrape holds both parts: the bridge and its in-process gateway', async () => {
    const origin = await startOrigin('127.0.0.1', 1024);
    const start = await startCli(['start', '--listen', '127.0.0.1:0', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1']);
    try {
      const port = start.listening[0]!.port;
      const r = await curl(['--socks5-hostname', `127.0.0.1:${port}`, `http://web.test:${origin.port}/`]);
      assert.equal(r.code, 0, r.stderr);
      await start.waitRecord((l) => l.inbound === 'socks5');
      const m = await scrape(`http://127.0.0.1:${port}/metrics`);
      assert.equal(m.value('dualsocks_bridge_connections_total', { inbound: 'socks5', result: 'ok' }), 1);
      assert.equal(m.value('dualsocks_gateway_connections_total', { cmd: 'connect', result: 'ok', family: '4' }), 1);
    } finally {
      await start.stop();
      await origin.close();
    }
  });
});
