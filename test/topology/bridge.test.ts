// The local bridge inside a single-family client namespace: curl in the IPv4-only client c4 reaches
// the IPv6-only server by a name only the gateway knows, through `dualsocks bridge` (HTTP proxy
// with absolute URIs, CONNECT, SOCKS5 with the name, SOCKS4a) and `dualsocks gateway` in gw; and
// the IPv6-only client c6 reaches the IPv4-only server the same ways. The clients' resolvers log
// every query and know none of the test names: zero queries is the proof that no code path on the
// bridge (or curl) resolved a destination name locally.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { parseIp } from '../../shared/net/address.js';
import { rootNetns } from '../helpers/env.js';
import { startCli, type Running } from '../helpers/process.js';
import { eventually } from '../helpers/settle.js';
import { createTopology, ADDR, ALLOW_DESTINATIONS, NAMES, GW_DNS, BLOB_SIZE, HTTP_PORT, SHA_PORT, type Server, type Topology } from './netns.js';
import { anyAddress, makeUsersFile, startGateway } from './fixtures.js';

const skip = rootNetns();
const USER = 'alice';
const PASS = 'correct-horse_7';
/** The gateway everything goes through. */
const GW_PORT = 1081;
/** A second gateway for the failover case; stopped mid-test. */
const GW2_PORT = 1083;
/** Nothing listens here in gw: connections are refused. */
const DEAD_PORT = 1099;

type Client = 'c4' | 'c6';
type Via = 'http' | 'connect' | 'socks5' | 'socks4';

/** What the test reads from GET /api/status (a subset; kept local so the test states its contract). */
interface Status {
  gateways: { url: string; up: boolean; failed: number; opened: number }[];
  recent: { host: string; port: number; via: Via; family: 4 | 6 | null; bound: string | null; gateway: string | null; result: string }[];
}

const METHODS: { via: Via; label: string; args: (proxy: string) => string[] }[] = [
  { via: 'http', label: 'HTTP proxy, absolute URI (curl -x http://)', args: (p) => ['-x', `http://${p}`] },
  { via: 'connect', label: 'HTTP CONNECT (curl -p -x http://)', args: (p) => ['-p', '-x', `http://${p}`] },
  { via: 'socks5', label: 'SOCKS5 with the name (curl --socks5-hostname)', args: (p) => ['--socks5-hostname', p] },
  { via: 'socks4', label: 'SOCKS4a (curl --socks4a)', args: (p) => ['--socks4a', p] },
];

/** Each client's way across: its own family toward the gateway, the other family beyond it. */
const CASES = [
  { client: 'c4', loopback: '127.0.0.1', gwHost: ADDR.gw.c4, name: NAMES.v6only, server: 's6', family: 6, bound: ADDR.gw.s6 },
  { client: 'c6', loopback: '[::1]', gwHost: `[${ADDR.gw.c6}]`, name: NAMES.v4only, server: 's4', family: 4, bound: ADDR.gw.s4 },
] as const satisfies readonly { client: Client; loopback: string; gwHost: string; name: string; server: Server; family: 4 | 6; bound: string }[];

// Runs inside a client namespace: opens a tunnel through the bridge (SOCKS5 with the `socks`
// package, or a hand-written HTTP CONNECT), uploads random bytes, half-closes, and prints what
// the server says it received next to what was sent.
const UPLOAD_SCRIPT = `
const net = require('node:net');
const crypto = require('node:crypto');
const { SocksClient } = require(${JSON.stringify(createRequire(import.meta.url).resolve('socks'))});
const [mode, proxyHost, proxyPort, host, port, size] = process.argv.slice(2);
const data = crypto.randomBytes(Number(size));
const sent = data.length + ' ' + crypto.createHash('sha256').update(data).digest('hex');
const fail = (e) => { console.log(JSON.stringify({ error: String(e && e.message || e) })); process.exit(0); };
function pump(socket, first) {
  const chunks = first && first.length ? [first] : [];
  socket.on('data', (d) => chunks.push(d));
  socket.on('error', fail);
  socket.on('end', () => console.log(JSON.stringify({ sent, received: Buffer.concat(chunks).toString().trim() })));
  socket.end(data);
}
if (mode === 'socks5') {
  SocksClient.createConnection({ proxy: { host: proxyHost, port: +proxyPort, type: 5 }, command: 'connect',
    destination: { host, port: +port }, timeout: 30000 }).then(({ socket }) => pump(socket), fail);
} else {
  const s = net.connect(+proxyPort, proxyHost, () => s.write('CONNECT ' + host + ':' + port + ' HTTP/1.1\\r\\nHost: ' + host + ':' + port + '\\r\\n\\r\\n'));
  s.on('error', fail);
  let buf = Buffer.alloc(0);
  const onData = (d) => {
    buf = Buffer.concat([buf, d]);
    const i = buf.indexOf('\\r\\n\\r\\n');
    if (i < 0) return;
    s.off('data', onData);
    const head = buf.subarray(0, i).toString();
    if (!/^HTTP\\/1\\.[01] 200 /.test(head)) return fail(head);
    pump(s, buf.subarray(i + 4));
  };
  s.on('data', onData);
}
`;

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const gatewayUrl = (gwHost: string, port: number): string => `socks5://${USER}:${PASS}@${gwHost}:${port}`;
const redacted = (gwHost: string, port: number): string => `socks5://${USER}:***@${gwHost}:${port}`;

test('bridge in single-family client namespaces: the other family by a name only the gateway knows', { skip }, async (t) => {
  const topo: Topology = await createTopology();
  const running: Running[] = [];
  try {
    const usersFile = await makeUsersFile(topo.dir, USER, PASS);
    const startGw = (port: number): Promise<Running> =>
      startGateway(topo.ns.gw, anyAddress(port), ['--users', usersFile, '--hosts', topo.hostsFile, '--dns', `${GW_DNS.host}:${GW_DNS.port}`, '--connect-timeout', '5', ...ALLOW_DESTINATIONS], running);
    const gw = await startGw(GW_PORT);

    /** Starts a bridge inside `client` on an ephemeral loopback port; returns it and "host:port" to give curl. */
    const startBridge = async (c: (typeof CASES)[number], gateways: string[], extra: string[] = []): Promise<{ bridge: Running; proxy: string; host: string; port: number }> => {
      const args = ['bridge', '--listen', `${c.loopback}:0`, ...gateways.flatMap((g) => ['--gateway', g]), '--connect-timeout', '5', ...extra];
      const bridge = await startCli(args, { netns: topo.ns[c.client] });
      running.push(bridge);
      const l = bridge.listening[0]!;
      assert.equal(l.host, c.client === 'c4' ? '127.0.0.1' : '::1', bridge.stderr.join('\n'));
      assert.ok(l.port > 0);
      return { bridge, proxy: `${c.loopback}:${l.port}`, host: l.host, port: l.port };
    };

    const curl = (client: Client, args: string[], url: string) => topo.exec(client, 'curl', ['-sS', '--fail', '--max-time', '60', ...args, url], { timeoutMs: 90000 });

    /** GET /api/status from inside the client, as a same-host tool would: no proxy, no Origin. */
    const status = async (client: Client, proxy: string): Promise<{ json: Status; text: string }> => {
      const r = await topo.exec(client, 'curl', ['-sS', '--fail', '--noproxy', '*', '--max-time', '10', `http://${proxy}/api/status`]);
      assert.equal(r.code, 0, r.stderr);
      const text = r.stdout.toString();
      return { json: JSON.parse(text) as Status, text };
    };

    /** Page and blob by `name` through the bridge with one method, checked byte for byte. */
    const fetchBoth = async (c: (typeof CASES)[number], proxy: string, m: (typeof METHODS)[number]): Promise<void> => {
      const page = await curl(c.client, m.args(proxy), `http://${c.name}/index.html`);
      assert.equal(page.code, 0, `${m.label}: ${page.stderr}`);
      assert.equal(page.stdout.toString(), topo.index[c.server]);
      const blob = await curl(c.client, m.args(proxy), `http://${c.name}/blob.bin`);
      assert.equal(blob.code, 0, `${m.label}: ${blob.stderr}`);
      assert.equal(blob.stdout.length, BLOB_SIZE);
      assert.equal(sha256(blob.stdout), topo.blobSha256[c.server]);
    };

    for (const c of CASES) {
      await t.test(`${c.client} (IPv${c.family === 6 ? 4 : 6}-only) → ${c.name} (IPv${c.family}-only server) through a bridge in ${c.client}`, async (st) => {
        const { proxy, host, port } = await startBridge(c, [gatewayUrl(c.gwHost, GW_PORT)]);
        for (const m of METHODS) {
          await st.test(m.label, () => fetchBoth(c, proxy, m));
        }

        await st.test(`/api/status lists ${c.name} reached over IPv${c.family} for every inbound protocol`, async () => {
          const { json, text } = await status(c.client, proxy);
          for (const m of METHODS) {
            const seen = json.recent.filter((r) => r.host === c.name && r.via === m.via);
            // page + blob
            assert.ok(seen.length >= 2, `${m.via}: ${JSON.stringify(json.recent)}`);
            for (const r of seen) {
              assert.equal(r.result, 'ok');
              assert.equal(r.port, HTTP_PORT);
              assert.equal(r.family, c.family);
              // BND.ADDR: the gateway's own address on the server's link
              assert.equal(r.bound, c.bound);
              assert.equal(r.gateway, redacted(c.gwHost, GW_PORT));
            }
          }
          assert.deepEqual(json.gateways.map((g) => [g.url, g.up]), [[redacted(c.gwHost, GW_PORT), true]]);
          assert.ok(!text.includes(PASS), 'the status must not show the gateway password');
        });

        await st.test(`8 MiB upload with half-close to ${c.name}: SOCKS5 (socks package) and CONNECT`, async () => {
          const script = join(topo.dir, 'upload.cjs');
          writeFileSync(script, UPLOAD_SCRIPT);
          for (const mode of ['socks5', 'connect']) {
            const r = await topo.exec(c.client, process.execPath, [script, mode, host, String(port), c.name, String(SHA_PORT), String(BLOB_SIZE)], { timeoutMs: 90000 });
            const out = JSON.parse(r.stdout.toString() || '{}') as { sent?: string; received?: string; error?: string };
            assert.equal(out.error, undefined, `${mode}: ${r.stderr}`);
            assert.match(out.sent ?? '', new RegExp(`^${BLOB_SIZE} [0-9a-f]{64}$`), r.stderr);
            assert.equal(out.received, out.sent, mode);
          }
        });

        // A failure must not fall back to a local lookup either (counted in the last subtest).
        await st.test(`a name nobody knows (${NAMES.unknown}): the gateway's "not found" reaches each client`, async () => {
          const url = `http://${NAMES.unknown}/`;
          const [http, connect, socks5, socks4] = METHODS.map((m) => m.args(proxy));
          const page = await topo.exec(c.client, 'curl', ['-sS', '-i', '--max-time', '30', ...http!, url]);
          assert.equal(page.code, 0, page.stderr);
          const text = page.stdout.toString();
          assert.match(text, /^HTTP\/1\.1 502 Name Not Found\r\n/, text);
          assert.match(text, /\r\nX-Dualsocks-Error: ERR_NAME_NOT_FOUND\r\n/i, text);
          assert.match(text, /\r\nX-Dualsocks-Rep: 0x04\r\n/i, text);
          const tunnel = await topo.exec(c.client, 'curl', ['-sS', '--max-time', '30', ...connect!, url]);
          assert.notEqual(tunnel.code, 0);
          assert.match(tunnel.stderr, /CONNECT tunnel failed, response 502/, tunnel.stderr);
          const s5 = await topo.exec(c.client, 'curl', ['-sS', '--max-time', '30', ...socks5!, url]);
          assert.notEqual(s5.code, 0);
          assert.match(s5.stderr, /SOCKS5 connection to .*\(4\)/, s5.stderr);
          const s4 = await topo.exec(c.client, 'curl', ['-sS', '--max-time', '30', ...socks4!, url]);
          assert.notEqual(s4.code, 0);
          assert.match(s4.stderr, /SOCKS4.*(rejected|failed)/i, s4.stderr);
          const { json } = await status(c.client, proxy);
          const seen = json.recent.filter((r) => r.host === NAMES.unknown);
          assert.deepEqual(seen.map((r) => r.via).sort(), ['connect', 'http', 'socks4', 'socks5']);
          for (const r of seen) assert.equal(r.result, 'ERR_NAME_NOT_FOUND', JSON.stringify(r));
        });
      });
    }

    await t.test('failover: a dead gateway listed first, and a live one stopped mid-test', async (st) => {
      const c = CASES[0];
      const gw2 = await startGw(GW2_PORT);
      const dead = gatewayUrl(c.gwHost, DEAD_PORT);
      // health checks only at start-up, so the stopped gateway is found out by a new connection
      const { proxy } = await startBridge(c, [dead, gatewayUrl(c.gwHost, GW_PORT), gatewayUrl(c.gwHost, GW2_PORT)], ['--health-interval', '3600']);
      const gatewayOf = (s: Status, port: number) => s.gateways.find((g) => g.url === redacted(c.gwHost, port))!;

      await st.test('both live gateways carry requests; the dead one is skipped', async () => {
        for (const m of METHODS) await fetchBoth(c, proxy, m);
        const { json } = await status(c.client, proxy);
        assert.equal(gatewayOf(json, DEAD_PORT).up, false);
        assert.equal(gatewayOf(json, GW_PORT).up, true);
        assert.equal(gatewayOf(json, GW2_PORT).up, true);
        // round-robin over the healthy two
        assert.ok(gatewayOf(json, GW_PORT).opened > 0 && gatewayOf(json, GW2_PORT).opened > 0, JSON.stringify(json.gateways));
        assert.ok(json.recent.every((r) => r.result === 'ok'), JSON.stringify(json.recent));
      });

      await st.test('after one gateway stops, every new connection still succeeds', async () => {
        await gw2.stop();
        const before = (await status(c.client, proxy)).json.recent.length;
        for (const m of METHODS) await fetchBoth(c, proxy, m);
        const { json } = await status(c.client, proxy);
        const fresh = json.recent.slice(0, json.recent.length - before);
        assert.equal(fresh.length, METHODS.length * 2, JSON.stringify(json.recent));
        for (const r of fresh) {
          assert.equal(r.result, 'ok');
          assert.equal(r.family, 6);
          assert.equal(r.gateway, redacted(c.gwHost, GW_PORT));
        }
        const stopped = gatewayOf(json, GW2_PORT);
        assert.equal(stopped.up, false, JSON.stringify(json.gateways));
        assert.ok(stopped.failed >= 1, 'a new connection tried the stopped gateway and failed over');
      });
    });

    await t.test('the gateway received every destination as a name (SOCKS5 DOMAINNAME), never an address', async () => {
      const fromClient = (client: Client) => gw.records().filter((r) => r.client === ADDR[client] && r.cmd !== undefined);
      // 4 methods × (page + blob) per bridge, 2 uploads, 4 failed lookups of the unknown name; plus 2 rounds of the failover case through c4 (part of them via the second gateway)
      await eventually(() => fromClient('c4').length >= 8 + 2 + 4 + 8 && fromClient('c6').length >= 8 + 2 + 4, 'the gateway log records');
      for (const c of CASES) {
        const records = fromClient(c.client);
        for (const r of records) {
          assert.equal(parseIp(String(r.host)), null, JSON.stringify(r));
          assert.equal(r.user, USER);
          if (r.host === NAMES.unknown) {
            assert.equal(r.result, 'ERR_NAME_NOT_FOUND', JSON.stringify(r));
          } else {
            assert.equal(r.host, c.name, JSON.stringify(r));
            assert.equal(r.result, 'ok', JSON.stringify(r));
            assert.equal(r.family, c.family);
          }
        }
        assert.equal(records.filter((r) => r.host === NAMES.unknown).length, METHODS.length);
      }
    });

    await t.test("the clients' resolvers were never asked for a test name", async () => {
      for (const client of ['c4', 'c6'] as const) {
        for (const name of Object.values(NAMES)) assert.equal(topo.queriesFor(client, name), 0, `${client} asked its resolver for ${name}`);
      }
      // control: a lookup in the clients is logged, so the zeros above are not a blind log
      const canary = 'bridge-canary.test';
      for (const client of ['c4', 'c6'] as const) {
        await topo.exec(client, 'getent', ['hosts', canary]);
        await eventually(() => topo.queriesFor(client, canary) > 0, `${client}'s resolver to log ${canary}`, { timeoutMs: 10000 });
      }
    });
  } finally {
    await Promise.all(running.map((r) => r.stop()));
    await topo.destroy();
  }
});
