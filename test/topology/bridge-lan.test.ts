// A bridge facing a LAN (issue 10, item 3): a client on another machine must not reach the bridge
// host's loopback through the bypass list's direct connections (HTTP proxy, CONNECT, SOCKS5,
// SOCKS4), nor by a name the gateway resolves to loopback; a program on the bridge's own host
// still reaches a bypassed loopback service directly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { rootNetns } from '../helpers/env.js';
import { startCli, type Running } from '../helpers/process.js';
import { createLan, LAN_ADDR, type Lan } from './netns.js';

const skip = rootNetns();
const SERVICE_PORT = 8080;
const SECRET = 'loopback-only service of the bridge host';
const KEEPALIVE_SERVER = `
import functools, http.server, sys
http.server.SimpleHTTPRequestHandler.protocol_version = "HTTP/1.1"
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[3])
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), handler).serve_forever()
`;

test('a LAN client cannot reach the bridge host\'s loopback; a local program can', { skip }, async (t) => {
  const lan: Lan = await createLan();
  const running: Running[] = [];
  try {
    const www = join(lan.dir, 'www');
    mkdirSync(www);
    writeFileSync(join(www, 'index.html'), `${SECRET}\n`);
    // HTTP/1.1 keep-alive, so that the bridge keeps a local client's direct tunnel in its pool
    lan.spawnIn('b', 'service.out', '/usr/bin/python3', ['-c', KEEPALIVE_SERVER, '127.0.0.1', String(SERVICE_PORT), www]);
    await lan.waitListening('b', SERVICE_PORT);
    // the gateway with its default policy, on the bridge host's loopback; names from its /etc/hosts
    const gw = await startCli(['gateway', '--listen', '127.0.0.1:0'], { netns: lan.ns.b });
    running.push(gw);
    const bridge = await startCli(
      ['bridge', '--listen', `${LAN_ADDR.b}:1080`, '--listen', '127.0.0.1:1080', '--clients', '192.0.2.0/24', '--clients', '127.0.0.0/8',
        '--gateway', `socks5://127.0.0.1:${gw.listening[0]!.port}`, '--connect-timeout', '5'],
      { netns: lan.ns.b, expectListeners: 2 },
    );
    running.push(bridge);
    const target = `http://127.0.0.1:${SERVICE_PORT}/index.html`;
    const curl = (role: 'b' | 'c', args: string[]) => lan.exec(role, 'curl', ['-sS', '--max-time', '20', '-D', '-', ...args]);

    await t.test('a program on the bridge host reaches the bypassed loopback service directly (loopback and own address)', async () => {
      for (const proxy of ['http://127.0.0.1:1080', `http://${LAN_ADDR.b}:1080`]) {
        const r = await curl('b', ['-x', proxy, target]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout.toString(), /^HTTP\/1\.[01] 200/);
        assert.ok(r.stdout.toString().includes(SECRET));
      }
      const s = await curl('b', ['--socks5', '127.0.0.1:1080', target]);
      assert.equal(s.code, 0, s.stderr);
      assert.ok(s.stdout.toString().includes(SECRET));
    });

    await t.test('HTTP proxy: 403 in words, also right after a local client pooled a tunnel to the same service', async () => {
      for (const url of [target, `http://[::1]:${SERVICE_PORT}/`, `http://127.1.2.3:${SERVICE_PORT}/`]) {
        const r = await curl('c', ['-x', `http://${LAN_ADDR.b}:1080`, url]);
        const out = r.stdout.toString();
        assert.match(out, /^HTTP\/1\.1 403 Not Allowed By Bridge Policy/, url);
        assert.match(out, /X-Dualsocks-Error: ERR_POLICY_DESTINATION/i);
        assert.match(out, /loopback address/);
        assert.match(out, /only for programs on its own machine/);
        assert.ok(!out.includes(SECRET), url);
      }
    });

    await t.test('CONNECT: 403', async () => {
      const r = await curl('c', ['-p', '-x', `http://${LAN_ADDR.b}:1080`, target]);
      assert.notEqual(r.code, 0);
      assert.match(r.stdout.toString(), /^HTTP\/1\.1 403 /);
      assert.ok(!r.stdout.toString().includes(SECRET));
    });

    await t.test('SOCKS5: REP 0x02; SOCKS4: 0x5b', async () => {
      const s5 = await curl('c', ['--socks5', `${LAN_ADDR.b}:1080`, target]);
      assert.notEqual(s5.code, 0);
      assert.match(s5.stderr, /\(2\)/, s5.stderr);
      const s4 = await curl('c', ['--socks4', `${LAN_ADDR.b}:1080`, target]);
      assert.notEqual(s4.code, 0);
      assert.match(s4.stderr, /request rejected|failed/i, s4.stderr);
      for (const r of [s5, s4]) assert.ok(!r.stdout.toString().includes(SECRET));
      const refused = await bridge.waitRecord((rec) => rec.inbound === 'socks4' && rec.result === 'ERR_POLICY_DESTINATION');
      assert.equal(refused.client, LAN_ADDR.c);
      const s5rec = bridge.records().find((rec) => rec.inbound === 'socks5' && rec.result === 'ERR_POLICY_DESTINATION');
      assert.equal(s5rec?.rep, 2);
    });

    await t.test('by name: localhost goes to the gateway, whose policy refuses its loopback', async () => {
      const r = await curl('c', ['-x', `http://${LAN_ADDR.b}:1080`, `http://localhost:${SERVICE_PORT}/`]);
      const out = r.stdout.toString();
      assert.match(out, /^HTTP\/1\.1 502 Not Allowed By Gateway Policy/);
      assert.ok(!out.includes(SECRET));
      const s5 = await curl('c', ['--socks5-hostname', `${LAN_ADDR.b}:1080`, `http://localhost:${SERVICE_PORT}/`]);
      assert.notEqual(s5.code, 0);
      assert.match(s5.stderr, /\(2\)/, s5.stderr);
    });

    await t.test("the status (every client's destinations) is for the bridge host only, even with a forged loopback Host", async () => {
      for (const path of ['/api/status', '/']) {
        const lanRead = await curl('c', ['-H', 'Host: 127.0.0.1:1080', `http://${LAN_ADDR.b}:1080${path}`]);
        assert.match(lanRead.stdout.toString(), /^HTTP\/1\.1 403 /, `${path} from the LAN`);
        assert.match(lanRead.stdout.toString(), /only to programs on the bridge's own machine/);
        const local = await curl('b', [`http://127.0.0.1:1080${path}`]);
        assert.match(local.stdout.toString(), /^HTTP\/1\.1 200 /, `${path} on the bridge host`);
      }
    });
  } finally {
    await Promise.all(running.map((r) => r.stop()));
    await lan.destroy();
  }
});
