// Scale-out behind an existing balancer (issue 13, item 2): HAProxy in TCP mode in front of two
// `dualsocks gateway`s, `send-proxy-v2` on one frontend and `send-proxy` (v1) on another, health
// checks with `check-send-proxy` (a LOCAL header, or v1 with the check's own addresses). Clients on
// both families (curl --socks5-hostname, PySocks, the `socks` package for UDP) reach the server by
// name; the gateways log the real client addresses; one outside --clients is refused by its real
// address; UDP datagrams come straight from the client to the gateway holding the association,
// which pins the header's client; a gateway killed → new connections keep working.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { test } from 'node:test';
import { canonicalHost } from '../../shared/net/address.js';
import { haveCommand, requireCapability, rootNetns } from '../helpers/env.js';
import { startCli, type Running } from '../helpers/process.js';
import { eventually, fdLinks, openSockets } from '../helpers/settle.js';
import { createBalancerTopology, LB_ADDR as A, LB_NAMES, SRV_HTTP_PORT, SRV_UDP_PORT, type BalancerTopology } from './balancer.js';

const skip = rootNetns() || requireCapability('haproxy', haveCommand('haproxy', ['-v']), 'apt-get install haproxy');
const GW_PORT = 1081;
const V2_PORT = 1080;
const V1_PORT = 1090;

/** HAProxy as a site runs it for SOCKS: TCP mode, PROXY protocol to the gateways, fast health checks. */
function haproxyConfig(): string {
  const servers = (proxy: string): string =>
    (['g1', 'g2'] as const).map((g) => `  server ${g} ${A[g].v4}:${GW_PORT} ${proxy} check check-send-proxy inter 300 fall 1 rise 1`).join('\n');
  return `global
  log stderr format raw local0 info
defaults
  mode tcp
  log global
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  retries 2
  option redispatch
frontend socks_v2
  bind ${A.lb.c4}:${V2_PORT}
  bind [${A.lb.c6}]:${V2_PORT}
  default_backend gateways_v2
frontend socks_v1
  bind ${A.lb.c4}:${V1_PORT}
  bind [${A.lb.c6}]:${V1_PORT}
  default_backend gateways_v1
backend gateways_v2
  balance roundrobin
${servers('send-proxy-v2')}
backend gateways_v1
  balance roundrobin
${servers('send-proxy')}
`;
}

const PYSOCKS_HTTP = `
import socket, socks, sys
proxy, port, host = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socks.socksocket(socket.AF_INET6 if ":" in proxy else socket.AF_INET, socket.SOCK_STREAM)
s.set_proxy(socks.SOCKS5, proxy, port, rdns=True)
s.settimeout(20)
s.connect((host, ${SRV_HTTP_PORT}))
s.sendall(b"GET /index.html HTTP/1.0\\r\\nHost: " + host.encode() + b"\\r\\n\\r\\n")
data = b""
while True:
    d = s.recv(65536)
    if not d: break
    data += d
print(data.decode(errors="replace"))
`;

// UDP ASSOCIATE with the \`socks\` package, which sends to the BND.ADDR of the reply (PySocks sends
// to the proxy's own address, the balancer's, so it cannot use UDP behind one).
const SOCKS_UDP = `
const { SocksClient } = require(${JSON.stringify(createRequire(import.meta.url).resolve('socks'))});
const dgram = require('node:dgram');
const [proxyHost, proxyPort, host, port, msg] = process.argv.slice(1);
const type = proxyHost.includes(':') ? 'udp6' : 'udp4';
const udp = dgram.createSocket(type);
setTimeout(() => { console.log(JSON.stringify({ error: 'timeout' })); process.exit(2); }, 15000).unref();
udp.bind(0, () => {
  const c = new SocksClient({ proxy: { host: proxyHost, port: +proxyPort, type: 5 }, command: 'associate',
    destination: { host: type === 'udp6' ? '::' : '0.0.0.0', port: udp.address().port }, timeout: 10000 });
  c.on('error', (e) => { console.log(JSON.stringify({ error: e.message })); process.exit(1); });
  c.on('established', ({ socket, remoteHost }) => {
    udp.on('message', (m) => {
      const f = SocksClient.parseUDPFrame(m);
      console.log(JSON.stringify({ relay: remoteHost, data: f.data.toString(), localPort: udp.address().port }));
      socket.destroy(); udp.close();
    });
    udp.send(SocksClient.createUDPFrame({ remoteHost: { host, port: +port }, data: Buffer.from(msg) }), remoteHost.port, remoteHost.host);
  });
  c.connect();
});
`;

type Client = 'c4' | 'c6';
const lbHost = (c: Client): string => (c === 'c4' ? A.lb.c4 : `[${A.lb.c6}]`);
const clientIp = (c: Client): string => (c === 'c4' ? A.c4 : A.c6);

test('gateways behind HAProxy with the PROXY protocol, in network namespaces', { skip }, async (t) => {
  const topo: BalancerTopology = await createBalancerTopology();
  const gws: Partial<Record<'g1' | 'g2', Running>> = {};
  try {
    const startGw = async (g: 'g1' | 'g2'): Promise<Running> => {
      const lbSide = g === 'g1' ? A.lb.g1 : A.lb.g2;
      gws[g] = await startCli([
        'gateway', '--listen', `${A[g].v4}:${GW_PORT}`, '--no-auth', '--hosts', topo.hostsFile, '--dns', 'none',
        '--allow', A.srv.v4, '--allow', A.srv.v6,
        '--proxy-protocol', lbSide,
        // the clients, and the balancer itself: its health checks' LOCAL headers stand for it
        '--clients', A.c4, '--clients', A.c6, '--clients', lbSide,
        // datagrams come straight to this gateway, not through the balancer
        '--udp-advertise', A[g].v4, '--udp-advertise', A[g].v6,
      ], { netns: topo.ns[g] });
      return gws[g];
    };
    const g1 = await startGw('g1');
    const g2 = await startGw('g2');
    const cfg = join(topo.dir, 'haproxy.cfg');
    writeFileSync(cfg, haproxyConfig());
    const check = await topo.exec('lb', 'haproxy', ['-c', '-f', cfg]);
    assert.equal(check.code, 0, check.stderr + check.stdout.toString());
    const haproxy = topo.spawnIn('lb', 'haproxy.out', 'haproxy', ['-db', '-f', cfg]);
    const haproxyLog = (): string => readFileSync(join(topo.dir, 'haproxy.out'), 'utf8');
    await eventually(async () => (await topo.exec('lb', 'ss', ['-Hltn', 'sport', '=', `:${V1_PORT}`])).stdout.length > 0, 'HAProxy listening', { describe: haproxyLog });

    const curl = (client: Client, port: number, name: string, extra: string[] = []) =>
      topo.exec(client, 'curl', ['-sS', '--max-time', '20', ...extra, '--socks5-hostname', `${lbHost(client)}:${port}`, `http://${name}/index.html`]);
    const all = (): Record<string, unknown>[] => [...(gws.g1?.records() ?? []), ...(gws.g2?.records() ?? [])];
    const servedFor = (ip: string, proxy: string): Record<string, unknown>[] => all().filter((r) => r.client === ip && r.proxy === proxy && r.result === 'ok');

    await t.test('curl on both families through send-proxy-v2: served by both gateways, logged with the real client', async () => {
      for (let i = 0; i < 2; i++) {
        for (const c of ['c4', 'c6'] as const) {
          for (const name of [LB_NAMES.v4only, LB_NAMES.v6only]) {
            const r = await curl(c, V2_PORT, name);
            assert.equal(r.code, 0, `${c} → ${name}: ${r.stderr}`);
            assert.equal(r.stdout.toString(), topo.index);
          }
        }
      }
      await eventually(() => servedFor(A.c4, 'v2').length >= 4 && servedFor(A.c6, 'v2').length >= 4, 'eight log lines with the real clients', { describe: all });
      for (const g of [g1, g2]) {
        const mine = g.records().filter((r) => r.proxy === 'v2');
        assert.ok(mine.length > 0, 'round robin reached both gateways');
        for (const r of mine) assert.match(String(r.via), /^192\.0\.2\.[15]:\d+$/, 'via is the balancer');
      }
      assert.ok(all().some((r) => r.client === A.c6 && r.family === 4), 'an IPv6 client reached the IPv4-only name');
    });

    await t.test('send-proxy (v1): the same, with the v1 header', async () => {
      for (const c of ['c4', 'c6'] as const) {
        const r = await curl(c, V1_PORT, LB_NAMES.dual);
        assert.equal(r.code, 0, `${c}: ${r.stderr}`);
        assert.equal(r.stdout.toString(), topo.index);
      }
      await eventually(() => servedFor(A.c4, 'v1').length >= 1 && servedFor(A.c6, 'v1').length >= 1, 'v1 log lines with the real clients', { describe: all });
    });

    await t.test('PySocks on both families', async () => {
      for (const c of ['c4', 'c6'] as const) {
        const proxy = c === 'c4' ? A.lb.c4 : A.lb.c6;
        const r = await topo.exec(c, '/usr/bin/python3', ['-c', PYSOCKS_HTTP, proxy, String(V2_PORT), LB_NAMES.dual], { timeoutMs: 30000 });
        assert.equal(r.code, 0, r.stderr);
        assert.ok(r.stdout.toString().includes(topo.index.trim()), r.stdout.toString());
      }
    });

    await t.test('UDP ASSOCIATE on both families: BND.ADDR is the gateway\'s own, the datagrams go there, the header\'s client is pinned', async () => {
      for (const c of ['c4', 'c6'] as const) {
        const proxy = c === 'c4' ? A.lb.c4 : A.lb.c6;
        const r = await topo.exec(c, process.execPath, ['-e', SOCKS_UDP, proxy, String(V2_PORT), LB_NAMES.dual, String(SRV_UDP_PORT), `udp from ${c}`], { timeoutMs: 30000 });
        assert.equal(r.code, 0, r.stderr + r.stdout.toString());
        const out = JSON.parse(r.stdout.toString()) as { relay: { host: string }; data: string; localPort: number };
        assert.equal(out.data, `udp from ${c}`);
        const own: string[] = c === 'c4' ? [A.g1.v4, A.g2.v4] : [A.g1.v6, A.g2.v6];
        assert.ok(own.includes(canonicalHost(out.relay.host)), `BND.ADDR ${out.relay.host} is a gateway's --udp-advertise in the client's family`);
        const rec = await eventually(() => all().some((x) => x.cmd === 'udp' && x.client === clientIp(c)), `the UDP log line of ${c}`, { describe: all }).then(() => all().find((x) => x.cmd === 'udp' && x.client === clientIp(c))!);
        assert.equal(rec.datagramsUp, 1);
        assert.equal(rec.droppedSource, 0);
      }
    });

    await t.test('a client outside --clients is refused by its real address', async () => {
      const r = await curl('c4', V2_PORT, LB_NAMES.dual, ['--interface', A.c4Outsider]);
      assert.notEqual(r.code, 0);
      const rec = await eventually(() => all().some((x) => x.client === A.c4Outsider), 'the refusal logged', { describe: all }).then(() => all().find((x) => x.client === A.c4Outsider)!);
      assert.equal(rec.result, 'ERR_POLICY_CLIENT');
      assert.equal(rec.proxy, 'v2');
    });

    await t.test('the health checks\' headers are accepted and not logged; nothing was refused for its header', () => {
      assert.doesNotMatch(haproxyLog(), /Server gateways_v[12]\/g[12] is DOWN/);
      assert.deepEqual(all().filter((r) => String(r.result).startsWith('ERR_PROXY') || (r.result === 'ERR_POLICY_CLIENT' && r.client !== A.c4Outsider)), []);
    });

    await t.test('one gateway killed: HAProxy marks it down, new connections keep working on the other', async () => {
      const base = openSockets(g2.proc.pid!);
      await g1.stop();
      await eventually(() => /gateways_v2\/g1 is DOWN/.test(haproxyLog()) && /gateways_v1\/g1 is DOWN/.test(haproxyLog()), 'HAProxy sees g1 down', { describe: haproxyLog });
      const before = g2.records().length;
      for (const c of ['c4', 'c6'] as const) {
        for (const port of [V2_PORT, V1_PORT]) {
          const r = await curl(c, port, LB_NAMES.dual);
          assert.equal(r.code, 0, `${c} :${port}: ${r.stderr}`);
          assert.equal(r.stdout.toString(), topo.index);
        }
      }
      await eventually(() => g2.records().length >= before + 4, 'g2 served the four', { describe: () => g2.records().slice(before) });
      assert.deepEqual(g2.records().slice(before).map((r) => r.client).sort(), [A.c4, A.c4, A.c6, A.c6].sort());
      // the tunnels and the health checks' connections are all released (the splice relay's pipe
      // pool may keep a pair: sockets are what a leak would hold)
      await eventually(() => openSockets(g2.proc.pid!) <= base, 'g2 back to its sockets', { describe: () => ({ base, now: fdLinks(g2.proc.pid!) }) });
    });
    haproxy.kill('SIGTERM');
  } finally {
    for (const g of Object.values(gws)) await g?.stop();
    await topo.destroy();
  }
});
