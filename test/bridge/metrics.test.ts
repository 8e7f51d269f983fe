// Who may scrape (bridge/metrics.ts), with a client on another machine: a gateway's --metrics on
// every address and a bridge facing a LAN, in network namespaces. By default only this machine
// may scrape either; --metrics-clients lets a Prometheus elsewhere read the gateway's.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { rootNetns } from '../helpers/env.js';
import { parseMetrics } from '../helpers/metrics.js';
import { startCli, type Running } from '../helpers/process.js';
import { createLan, LAN_ADDR, type Lan } from '../topology/netns.js';

const skip = rootNetns();
const METRICS_PORT = 9100;
const OPEN_METRICS_PORT = 9101;
const BRIDGE_PORT = 1080;

test('a scrape from another machine is refused in words unless --metrics-clients names it; the bridge\'s /metrics is this machine\'s only', { skip }, async (t) => {
  const lan: Lan = await createLan();
  const running: Running[] = [];
  try {
    const gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--metrics', `0.0.0.0:${METRICS_PORT}`], { netns: lan.ns.b });
    running.push(gw);
    const open = await startCli(['gateway', '--listen', '127.0.0.1:0', '--metrics', `[::]:${OPEN_METRICS_PORT}`, '--metrics-clients', `${LAN_ADDR.c}/32`, '--metrics-clients', `${LAN_ADDR.c6}/128`], { netns: lan.ns.b });
    running.push(open);
    const bridge = await startCli(
      ['bridge', '--listen', `${LAN_ADDR.b}:${BRIDGE_PORT}`, '--listen', `[${LAN_ADDR.b6}]:${BRIDGE_PORT}`, '--listen', `127.0.0.1:${BRIDGE_PORT}`, '--clients', '192.0.2.0/24', '--clients', '2001:db8:b::/64', '--clients', '127.0.0.0/8', '--gateway', `socks5://127.0.0.1:${gw.listening[0]!.port}`, '--health-interval', '3600'],
      { netns: lan.ns.b, expectListeners: 3 },
    );
    running.push(bridge);
    const get = async (role: 'b' | 'c', url: string): Promise<{ status: string; body: string }> => {
      const r = await lan.exec(role, 'curl', ['-sS', '--max-time', '10', '-w', '\n%{http_code}', url]);
      assert.equal(r.code, 0, `${r.stderr}\n${bridge.stderr.join('\n')}`);
      const out = r.stdout.toString();
      const cut = out.lastIndexOf('\n');
      return { body: out.slice(0, cut), status: out.slice(cut + 1) };
    };

    await t.test('the gateway on every address: loopback scrapes, the LAN client gets a 403', async () => {
      const local = await get('b', `http://127.0.0.1:${METRICS_PORT}/metrics`);
      assert.equal(local.status, '200');
      assert.equal((await parseMetrics(local.body)).value('dualsocks_gateway_open_tunnels'), 0);
      const remote = await get('c', `http://${LAN_ADDR.b}:${METRICS_PORT}/metrics`);
      assert.equal(remote.status, '403');
      assert.equal(remote.body, `Forbidden. Metrics are served only to loopback clients (widen with --metrics-clients CIDR); ${LAN_ADDR.c} is not one of them.\n`);
      // the gateway's own LAN address is not loopback either
      assert.equal((await get('b', `http://${LAN_ADDR.b}:${METRICS_PORT}/metrics`)).status, '403');
    });

    await t.test('--metrics-clients: the LAN client scrapes over both families; loopback no longer may', async () => {
      for (const host of [LAN_ADDR.b, `[${LAN_ADDR.b6}]`]) {
        const r = await get('c', `http://${host}:${OPEN_METRICS_PORT}/metrics`);
        assert.equal(r.status, '200', host);
        assert.equal((await parseMetrics(r.body)).value('dualsocks_gateway_handshakes'), 0);
      }
      assert.equal((await get('b', `http://127.0.0.1:${OPEN_METRICS_PORT}/metrics`)).status, '403');
    });

    await t.test('the bridge: a LAN client it serves as a proxy is refused /metrics; a program on its host is not', async () => {
      for (const host of [LAN_ADDR.b, `[${LAN_ADDR.b6}]`]) {
        const r = await get('c', `http://${host}:${BRIDGE_PORT}/metrics`);
        assert.equal(r.status, '403', host);
        assert.match(r.body, /^Forbidden\. Metrics are served only to clients on the bridge's own machine \(loopback\); (192\.0\.2\.2|2001:db8:b::2) is not one of them\./);
      }
      const local = await get('b', `http://127.0.0.1:${BRIDGE_PORT}/metrics`);
      assert.equal(local.status, '200');
      assert.deepEqual((await parseMetrics(local.body)).labelSets('dualsocks_bridge_gateway_up'), [{ gateway: `socks5://127.0.0.1:${gw.listening[0]!.port}` }]);
    });
  } finally {
    for (const r of running) await r.stop();
    await lan.destroy();
  }
});
