// The transparent mode (issue 11) with programs that know nothing of proxies: in the IPv4-only
// client c4, whose DNS goes only to the bridge (nftables sends every port-53 query there), with
// `dualsocks transparent nft` applied, curl, wget and Python's urllib — run as another user,
// with a clean environment and no proxy option — load a page from the IPv6-only server by a name
// only the gateway knows; the IPv6-only client c6 does the same with the IPv4-only server (fake
// AAAA). The bridge's own traffic is not caught (its upstream DNS query for a DIRECT name reaches
// dnsmasq), UDP to a fake address fails at once (QUIC falls back), an unmapped fake address is
// reset and logged, and a connection straight to the transparent port is refused, not looped.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { rootNetns, requireCapability, haveCommand } from '../helpers/env.js';
import { CLI, startCli, type Running } from '../helpers/process.js';
import { createTopology, ADDR, ALLOW_DESTINATIONS, NAMES, GW_DNS, type Topology } from './netns.js';
import { anyAddress, makeUsersFile, startGateway } from './fixtures.js';

const skip = rootNetns() || requireCapability('nft', haveCommand('nft', ['--version']), 'install nftables') || requireCapability('wget', haveCommand('wget', ['--version']), 'install wget');
const USER = 'alice';
const PASS = 'correct-horse_7';
const GW_PORT = 1081;
const TPORT = 1082;
/** The bridge's DNS port; nftables sends port 53 here (the bridge runs as root, needing no privilege for it anyway). */
const DNS_PORT = 5300;
/** A resolver address nobody has: only the nftables redirect makes a query to it work. */
const RESOLVER = { c4: '192.0.2.53', c6: '2001:db8::53' } as const;
const DIRECT_NAME = 'directhost';
/** The clients run as nobody: the bridge's uid (root) is the one nftables leaves alone. */
const AS_NOBODY = ['env', '-i', 'PATH=/usr/sbin:/usr/bin:/sbin:/bin', 'setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];

const PY_GET = 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=30).read().decode())';
// connect + send + recv on UDP: an error at once, not a timeout, is what lets QUIC fall back
const PY_UDP = `
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
try:
    s.connect((sys.argv[1], 443)); s.send(b"quic?"); s.recv(100); print("answered")
except Exception as e:
    print(type(e).__name__)
`;
const PY_TCP = `
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
    s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n"); print("read", len(s.recv(100)))
except Exception as e:
    print(type(e).__name__)
`;

interface Side {
  role: 'c4' | 'c6';
  bridge: Running;
}

test('transparent mode: programs with no proxy support reach the other family by name', { skip }, async (t) => {
  const topo: Topology = await createTopology();
  const running: Running[] = [];
  const nobody = (role: 'c4' | 'c6', cmd: string, args: string[]) => topo.exec(role, AS_NOBODY[0]!, [...AS_NOBODY.slice(1), cmd, ...args], { timeoutMs: 60000 });
  const setUp = async (role: 'c4' | 'c6'): Promise<Side> => {
    const v6 = role === 'c6';
    const lo = v6 ? '[::1]' : '127.0.0.1';
    // a default route, as a real host has (toward gw, which forwards nothing): the fake ranges need one
    const r = await topo.exec(role, 'ip', [v6 ? '-6' : '-4', 'route', 'add', 'default', 'via', ADDR.gw[role]]);
    assert.equal(r.code, 0, r.stderr);
    writeFileSync(`/etc/netns/${topo.ns[role]}/resolv.conf`, `nameserver ${RESOLVER[role]}\noptions timeout:3 attempts:1\n`);
    const gwAt = v6 ? `[${ADDR.gw.c6}]` : ADDR.gw.c4;
    const bridge = await startCli(['bridge', '--listen', `${lo}:0`, '--gateway', `socks5://${USER}:${PASS}@${gwAt}:${GW_PORT}`, '--connect-timeout', '5', '--dns-listen', `${lo}:${DNS_PORT}`, '--dns-upstream', `${v6 ? '[::1]' : '127.0.0.1'}:53`, '--transparent', `${lo}:${TPORT}`], { netns: topo.ns[role] });
    running.push(bridge);
    await bridge.waitStderr(/fake-address DNS on /);
    const nft = await topo.exec(role, process.execPath, [CLI, 'transparent', 'nft', '--port', String(TPORT), '--dns-port', String(DNS_PORT), '--uid', '0', '--apply']);
    assert.equal(nft.code, 0, nft.stderr);
    return { role, bridge };
  };
  const loads = async (side: Side, name: string, want: string): Promise<void> => {
    const url = `http://${name}/index.html`;
    const clients: [string, string, string[]][] = [
      ['curl', 'curl', ['-sS', '--fail', '--max-time', '30', url]],
      ['wget', 'wget', ['-q', '-T', '30', '-t', '1', '-O', '-', url]],
      ['urllib', '/usr/bin/python3', ['-c', PY_GET, url]],
    ];
    for (const [what, cmd, args] of clients) {
      const before = side.bridge.records().length;
      const r = await nobody(side.role, cmd, args);
      assert.equal(r.code, 0, `${what}: ${r.stderr}\n${side.bridge.stderr.join('\n')}`);
      assert.equal(r.stdout.toString(), want, what);
      const ok = (x: Record<string, unknown>): boolean => x.inbound === 'transparent' && x.result === 'ok';
      await side.bridge.waitRecord(() => side.bridge.records().slice(before).some(ok));
      const rec = side.bridge.records().slice(before).find(ok)!;
      // logged by the name, the fake address beside it
      assert.equal(rec.host, name, JSON.stringify(rec));
      assert.match(String(rec.fakeAddress), side.role === 'c4' ? /^198\.1[89]\./ : /^2001:2::/, JSON.stringify(rec));
      assert.equal(rec.port, 80);
    }
  };
  try {
    const usersFile = await makeUsersFile(topo.dir, USER, PASS);
    await startGateway(topo.ns.gw, anyAddress(GW_PORT), ['--users', usersFile, '--hosts', topo.hostsFile, '--dns', `${GW_DNS.host}:${GW_DNS.port}`, '--connect-timeout', '5', ...ALLOW_DESTINATIONS], running);
    const c4 = await setUp('c4');

    await t.test(`IPv4-only c4: curl, wget and urllib with no proxy option load ${NAMES.v6only} from the IPv6-only server`, async () => {
      await loads(c4, NAMES.v6only, topo.index.s6);
      // the proxied name never left c4 in a query; the resolver named in resolv.conf got nothing
      assert.equal(topo.queriesFor('c4', NAMES.v6only), 0);
      const st = await topo.exec('c4', 'curl', ['-sS', '--fail', '--max-time', '10', `http://127.0.0.1:${c4.bridge.listening[0]!.port}/api/status`]);
      assert.equal(st.code, 0, st.stderr);
      const status = JSON.parse(st.stdout.toString()) as { transparent?: string[]; connections: { byInbound: Record<string, number> }; recent: { via: string; host: string; fakeAddress?: string }[] };
      assert.deepEqual(status.transparent, [`127.0.0.1:${TPORT}`]);
      assert.equal(status.connections.byInbound.transparent, 3);
      assert.ok(status.recent.some((r) => r.via === 'transparent' && r.host === NAMES.v6only && /^198\.1[89]\./.test(r.fakeAddress ?? '')), JSON.stringify(status.recent));
    });

    await t.test("the bridge's own traffic is not redirected: a DIRECT name's query reaches the upstream through it", async () => {
      const r = await nobody('c4', 'dig', ['+time=3', '+tries=1', DIRECT_NAME, 'A']);
      assert.match(r.stdout.toString(), /status: NXDOMAIN/, `${r.stdout}${r.stderr}`);
      assert.ok(topo.queriesFor('c4', DIRECT_NAME) >= 1, 'the bridge forwarded it to dnsmasq (its own port-53 query was not sent back to itself)');
    });

    let fakeIp = '';
    await t.test('UDP (QUIC) to a fake address fails at once with an error, not a timeout', async () => {
      const a = await nobody('c4', 'dig', ['+short', '+time=3', '+tries=1', NAMES.v6only, 'A']);
      fakeIp = a.stdout.toString().trim();
      assert.match(fakeIp, /^198\.1[89]\.\d+\.\d+$/, a.stderr);
      const r = await nobody('c4', '/usr/bin/python3', ['-c', PY_UDP, fakeIp]);
      assert.match(r.stdout.toString().trim(), /^(PermissionError|ConnectionRefusedError|OSError)$/, `${r.stdout}${r.stderr}`);
    });

    await t.test('an unmapped fake address is reset and logged; a connection straight to the transparent port is refused, not looped', async () => {
      const unmapped = '198.19.255.254';
      const r = await nobody('c4', '/usr/bin/python3', ['-c', PY_TCP, unmapped, '80']);
      assert.match(r.stdout.toString(), /ConnectionResetError|read 0/, `${r.stdout}${r.stderr}`);
      const rec = await c4.bridge.waitRecord((x) => x.inbound === 'transparent' && x.fakeAddress === unmapped);
      assert.equal(rec.result, 'ERR_FAKE_UNMAPPED', JSON.stringify(rec));
      const self = await nobody('c4', '/usr/bin/python3', ['-c', PY_TCP, '127.0.0.1', String(TPORT)]);
      assert.match(self.stdout.toString(), /ConnectionResetError|read 0/, `${self.stdout}${self.stderr}`);
      const loop = await c4.bridge.waitRecord((x) => x.inbound === 'transparent' && x.result === 'ERR_POLICY_DESTINATION');
      assert.equal(loop.host, '127.0.0.1');
      assert.equal(loop.port, TPORT);
    });

    await t.test(`IPv6-only c6: the same programs load ${NAMES.v4only} from the IPv4-only server through a fake AAAA`, async () => {
      const c6 = await setUp('c6');
      await loads(c6, NAMES.v4only, topo.index.s4);
      assert.equal(topo.queriesFor('c6', NAMES.v4only), 0);
    });
  } finally {
    await Promise.all(running.map((r) => r.stop()));
    await topo.destroy();
  }
});
