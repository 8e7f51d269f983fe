// RFC 3089 end to end: curl in an IPv4-only or IPv6-only client namespace reaches an IPv4-only or
// IPv6-only server by name through `dualsocks gateway` in the dual-stack namespace. Names are
// resolved only at the gateway; the clients' own resolvers must never be asked.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { rootNetns } from '../helpers/env.js';
import { type Running } from '../helpers/process.js';
import { createTopology, ADDR, ALLOW_DESTINATIONS, NAMES, HTTP_PORT, SHA_PORT, GW_DNS, BLOB_SIZE, UNROUTED_V4, UNROUTED_V6, BLACKHOLE_V4, BLACKHOLE_V6, type Topology } from './netns.js';
import { anyAddress, makeUsersFile, startGateway } from './fixtures.js';

const skip = rootNetns();
const USER = 'alice';
const PASS = 'correct-horse_7';
const PORT = 1081;
const PREFER_V4_PORT = 1082;

type Client = 'c4' | 'c6';

function proxyUrl(client: Client, port: number, pass = PASS): string {
  const host = client === 'c4' ? ADDR.gw.c4 : `[${ADDR.gw.c6}]`;
  return `socks5h://${USER}:${pass}@${host}:${port}`;
}

/** curl 7.88 ends a refused SOCKS5 request with "Can't complete SOCKS5 connection to X. (REP)". */
function repFromCurl(stderr: string): number | null {
  const m = /SOCKS5 connection to .*\((\d+)\)/.exec(stderr);
  return m ? Number(m[1]) : null;
}

// Runs inside a client namespace: SOCKS5 CONNECT by name with the `socks` package, uploads random
// bytes, half-closes, and prints what the server says it received next to what was sent.
const UPLOAD_SCRIPT = `
const { SocksClient } = require(${JSON.stringify(createRequire(import.meta.url).resolve('socks'))});
const crypto = require('node:crypto');
const [proxyHost, proxyPort, userId, password, host, port, size] = process.argv.slice(2);
const data = crypto.randomBytes(Number(size));
SocksClient.createConnection({ proxy: { host: proxyHost, port: +proxyPort, type: 5, userId, password },
  command: 'connect', destination: { host, port: +port }, timeout: 30000 }).then(({ socket }) => {
  const chunks = [];
  socket.on('data', (d) => chunks.push(d));
  socket.on('end', () => console.log(JSON.stringify({ sent: data.length + ' ' + crypto.createHash('sha256').update(data).digest('hex'),
    received: Buffer.concat(chunks).toString().trim() })));
  socket.end(data);
}, (e) => console.log(JSON.stringify({ error: e.message })));
`;

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

test('gateway across address families in network namespaces', { skip }, async (t) => {
  const topo: Topology = await createTopology();
  const running: Running[] = [];
  try {
    const usersFile = await makeUsersFile(topo.dir, USER, PASS);
    assert.match(readFileSync(usersFile, 'utf8'), new RegExp(`^${USER}:\\S+\\n$`));

    const common = ['--users', usersFile, '--hosts', topo.hostsFile, '--dns', `${GW_DNS.host}:${GW_DNS.port}`, '--connect-timeout', '1', ...ALLOW_DESTINATIONS];
    const gw = await startGateway(topo.ns.gw, anyAddress(PORT), common, running);
    assert.deepEqual(gw.listening, [{ host: '0.0.0.0', port: PORT }, { host: '::', port: PORT }]);
    const gw4 = await startGateway(topo.ns.gw, anyAddress(PREFER_V4_PORT), ['--prefer', 'ipv4', ...common], running);

    /** One curl through the gateway, and the gateway's log record of that connection. */
    const curl = async (client: Client, url: string, opts: { gateway?: Running; port?: number; pass?: string } = {}) => {
      const g = opts.gateway ?? gw;
      const before = g.records().length;
      const r = await topo.exec(client, 'curl', ['-sS', '--max-time', '60', '--proxy', proxyUrl(client, opts.port ?? PORT, opts.pass), url]);
      const record = (await g.waitRecords(before + 1))[before]!;
      return { ...r, record };
    };

    const cases = [
      { type: 'A', client: 'c4', name: NAMES.v4only, server: 's4', family: 4 },
      { type: 'B', client: 'c4', name: NAMES.v6only, server: 's6', family: 6 },
      { type: 'C', client: 'c6', name: NAMES.v4only, server: 's4', family: 4 },
      { type: 'D', client: 'c6', name: NAMES.v6only, server: 's6', family: 6 },
    ] as const;
    for (const c of cases) {
      await t.test(`type ${c.type}: ${c.client} → ${c.name} (IPv${c.family} server)`, async () => {
        const page = await curl(c.client, `http://${c.name}/index.html`);
        assert.equal(page.code, 0, page.stderr);
        assert.equal(page.stdout.toString(), topo.index[c.server]);
        assert.equal(page.record.family, c.family);
        assert.equal(page.record.address, ADDR[c.server]);
        assert.equal(page.record.host, c.name);
        assert.equal(page.record.port, HTTP_PORT);
        assert.equal(page.record.user, USER);
        assert.equal(page.record.cmd, 'connect');
        assert.equal(page.record.result, 'ok');
        assert.equal(page.record.client, ADDR[c.client]);

        const blob = await curl(c.client, `http://${c.name}/blob.bin`);
        assert.equal(blob.code, 0, blob.stderr);
        assert.equal(blob.stdout.length, BLOB_SIZE);
        assert.equal(sha256(blob.stdout), topo.blobSha256[c.server]);
        assert.equal(blob.record.family, c.family);
        assert.equal(blob.record.result, 'ok');
        assert.ok(Number(blob.record.bytesDown) > BLOB_SIZE, `bytesDown ${blob.record.bytesDown}`);
        assert.ok(Number(blob.record.bytesUp) > 0);
      });
    }

    for (const [client, name] of [['c4', NAMES.v6only], ['c6', NAMES.v4only]] as const) {
      await t.test(`upload with half-close (socks package): ${client} → ${name}`, async () => {
        const script = join(topo.dir, 'upload.cjs');
        writeFileSync(script, UPLOAD_SCRIPT);
        const before = gw.records().length;
        const proxyHost = client === 'c4' ? ADDR.gw.c4 : ADDR.gw.c6;
        const r = await topo.exec(client, process.execPath, [script, proxyHost, String(PORT), USER, PASS, name, String(SHA_PORT), String(BLOB_SIZE)]);
        const out = JSON.parse(r.stdout.toString()) as { sent?: string; received?: string; error?: string };
        assert.equal(out.error, undefined, r.stderr);
        assert.match(out.sent ?? '', new RegExp(`^${BLOB_SIZE} [0-9a-f]{64}$`));
        assert.equal(out.received, out.sent);
        const record = (await gw.waitRecords(before + 1))[before]!;
        assert.equal(record.result, 'ok');
        assert.equal(record.bytesUp, BLOB_SIZE);
        assert.equal(record.family, client === 'c4' ? 6 : 4);
      });
    }

    await t.test('Happy Eyeballs: a black-holed AAAA falls back to the A record', async () => {
      const r = await curl('c6', `http://${NAMES.brokenV6}/index.html`);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.toString(), topo.index.s4);
      assert.equal(r.record.family, 4);
    });

    await t.test('dual-stack name: --prefer picks the family', async () => {
      const v6 = await curl('c4', `http://${NAMES.dual}/index.html`);
      assert.equal(v6.code, 0, v6.stderr);
      assert.equal(v6.stdout.toString(), topo.index.s6);
      assert.equal(v6.record.family, 6);
      const v4 = await curl('c6', `http://${NAMES.dual}/index.html`, { gateway: gw4, port: PREFER_V4_PORT });
      assert.equal(v4.code, 0, v4.stderr);
      assert.equal(v4.stdout.toString(), topo.index.s4);
      assert.equal(v4.record.family, 4);
    });

    await t.test('--dns: a name only the gateway-side resolver knows', async () => {
      const r = await curl('c4', `http://${NAMES.dnsOnly}/index.html`);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.toString(), topo.index.s6);
      assert.equal(r.record.family, 6);
      assert.ok(topo.queriesFor('gw', NAMES.dnsOnly) > 0);
    });

    await t.test('--dns answers are kept for their TTL: the same name again asks the resolver nothing', async () => {
      const before = topo.queriesFor('gw', NAMES.dnsOnly);
      for (let i = 0; i < 3; i++) {
        const r = await curl('c4', `http://${NAMES.dnsOnly}/index.html`);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout.toString(), topo.index.s6);
      }
      assert.equal(topo.queriesFor('gw', NAMES.dnsOnly), before);
    });

    await t.test('REP 0x04: unknown name (NXDOMAIN from --dns)', async () => {
      const r = await curl('c6', `http://${NAMES.unknown}/`);
      assert.notEqual(r.code, 0);
      assert.equal(repFromCurl(r.stderr), 4, r.stderr);
      assert.equal(r.record.rep, 4);
      assert.equal(r.record.result, 'ERR_NAME_NOT_FOUND');
      assert.ok(topo.queriesFor('gw', NAMES.unknown) > 0);
    });

    await t.test('REP 0x03: destination the gateway has no route to', async () => {
      // Linux fails connect() to an unrouted address with ENETUNREACH at once.
      for (const [client, ip] of [['c4', UNROUTED_V4], ['c6', `[${UNROUTED_V6}]`]] as const) {
        const r = await curl(client, `http://${ip}/`);
        assert.equal(repFromCurl(r.stderr), 3, r.stderr);
        assert.equal(r.record.rep, 3);
        assert.equal(r.record.result, 'ERR_NETWORK_UNREACHABLE');
      }
    });

    await t.test('REP 0x06: connect timeout (--connect-timeout 1, packets silently dropped)', async () => {
      for (const [client, ip] of [['c6', BLACKHOLE_V4], ['c4', `[${BLACKHOLE_V6}]`]] as const) {
        const r = await curl(client, `http://${ip}/`);
        assert.equal(repFromCurl(r.stderr), 6, r.stderr);
        assert.equal(r.record.rep, 6);
        assert.equal(r.record.result, 'ERR_CONNECT_TIMEOUT');
      }
    });

    await t.test("REP 0x02: the gateway's own addresses are not destinations (no loops, no reaching its local services)", async () => {
      for (const [client, ip] of [['c4', ADDR.gw.c4], ['c6', `[${ADDR.gw.c6}]`]] as const) {
        const r = await curl(client, `http://${ip}:${PORT}/`);
        assert.equal(repFromCurl(r.stderr), 2, r.stderr);
        assert.equal(r.record.result, 'ERR_POLICY_DESTINATION');
      }
    });

    await t.test('wrong password is refused before any request', async () => {
      const r = await curl('c4', `http://${NAMES.v4only}/`, { pass: 'wrong' });
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /rejected/i);
      assert.notEqual(r.record.result, 'ok');
      assert.equal(r.record.host, undefined);
    });

    await t.test('the clients never resolved a test name themselves', () => {
      for (const client of ['c4', 'c6'] as const) {
        for (const name of Object.values(NAMES)) assert.equal(topo.queriesFor(client, name), 0, `${client} asked for ${name}`);
      }
    });
  } finally {
    await Promise.all(running.map((r) => r.stop()));
    await topo.destroy();
  }
});
