// Smoke test of the namespace harness itself: the isolation the gateway tests rely on is real.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { rootNetns } from '../helpers/env.js';
import { createTopology, run, ADDR, NAMES, HTTP_PORT, SHA_PORT, GW_DNS, ROLES, UNROUTED_V4, BLACKHOLE_V4 } from './netns.js';

const skip = rootNetns();

test('netns topology: isolation, servers, resolvers, cleanup', { skip }, async (t) => {
  const topo = await createTopology();
  try {
    await t.test('clients have no route to servers; the gateway does not forward', async () => {
      // IPv6 is disabled in c4, so there is not even a source address.
      assert.equal(await topo.connectProbe('c4', ADDR.s6, HTTP_PORT), 'EADDRNOTAVAIL');
      assert.equal(await topo.connectProbe('c4', ADDR.s4, HTTP_PORT), 'ENETUNREACH');
      assert.equal(await topo.connectProbe('c6', ADDR.s4, HTTP_PORT), 'ENETUNREACH');
      assert.equal(await topo.connectProbe('c6', ADDR.s6, HTTP_PORT), 'ENETUNREACH');
      const fwd = await topo.exec('gw', 'sysctl', ['-n', 'net.ipv4.ip_forward', 'net.ipv6.conf.all.forwarding']);
      assert.equal(fwd.stdout.toString(), '0\n0\n');
    });

    await t.test('clients reach the gateway on their link (refused = a packet came back)', async () => {
      assert.equal(await topo.connectProbe('c4', ADDR.gw.c4, 1), 'ECONNREFUSED');
      assert.equal(await topo.connectProbe('c6', ADDR.gw.c6, 1), 'ECONNREFUSED');
    });

    await t.test('single-stack clients really are single-stack', async () => {
      const v6 = await topo.exec('c4', 'ip', ['-6', '-o', 'addr']);
      assert.equal(v6.stdout.toString(), '');
      const v4 = await topo.exec('c6', 'ip', ['-4', '-o', 'addr']);
      assert.deepEqual(v4.stdout.toString().trim().split('\n').map((l) => l.split(/\s+/)[1]), ['lo']);
    });

    await t.test('servers answer inside their namespace', async () => {
      const page = await topo.exec('s6', 'curl', ['-sS', '--max-time', '10', `http://[${ADDR.s6}]:${HTTP_PORT}/index.html`]);
      assert.equal(page.code, 0, page.stderr);
      assert.equal(page.stdout.toString(), topo.index.s6);
      const blob = await topo.exec('s4', 'curl', ['-sS', '--max-time', '30', `http://${ADDR.s4}:${HTTP_PORT}/blob.bin`]);
      assert.equal(blob.code, 0, blob.stderr);
      assert.equal(createHash('sha256').update(blob.stdout).digest('hex'), topo.blobSha256.s4);
      assert.notEqual(topo.index.s4, topo.index.s6);
      const script = `const s = require('net').connect(+process.argv[2], process.argv[1], () => s.end('hello'));
        let r = ''; s.on('data', d => r += d); s.on('end', () => console.log(r.trim()))`;
      const sum = await topo.exec('s6', process.execPath, ['-e', script, ADDR.s6, String(SHA_PORT)]);
      assert.equal(sum.stdout.toString().trim(), `5 ${createHash('sha256').update('hello').digest('hex')}`, sum.stderr);
    });

    await t.test('gateway routes: unrouted and black-holed destinations', async () => {
      assert.equal(await topo.connectProbe('gw', UNROUTED_V4, HTTP_PORT), 'ENETUNREACH');
      assert.equal(await topo.connectProbe('gw', BLACKHOLE_V4, HTTP_PORT, 1000), 'ETIMEDOUT');
    });

    await t.test('client resolvers know no test name, answer NXDOMAIN and log the query', async () => {
      for (const [role, fn] of [['c4', 'resolve4'], ['c6', 'resolve6']] as const) {
        const before = topo.queriesFor(role, NAMES.v6only);
        const r = await topo.exec(role, process.execPath, ['-e', `require('dns').promises.${fn}(process.argv[1]).then(a => console.log(a), e => console.log(e.code))`, NAMES.v6only]);
        assert.equal(r.stdout.toString().trim(), 'ENOTFOUND', `${role}: ${r.stderr}`);
        assert.equal(topo.queriesFor(role, NAMES.v6only), before + 1);
        const hosts = await topo.exec(role, 'getent', ['hosts', NAMES.v4only]);
        assert.equal(hosts.code, 2, `${role} must not know ${NAMES.v4only}`);
      }
    });

    await t.test('gateway-side resolver knows only its own record', async () => {
      const script = `const r = new (require('dns').promises.Resolver)(); r.setServers([process.argv[1]]);
        Promise.all([r.resolve6(process.argv[2]), r.resolve4(process.argv[3]).catch(e => e.code)]).then(a => console.log(JSON.stringify(a)))`;
      const r = await topo.exec('gw', process.execPath, ['-e', script, `${GW_DNS.host}:${GW_DNS.port}`, NAMES.dnsOnly, NAMES.v4only]);
      assert.deepEqual(JSON.parse(r.stdout.toString()), [[ADDR.s6], 'ENOTFOUND']);
      assert.equal(topo.queriesFor('gw', NAMES.dnsOnly), 1);
    });
  } finally {
    await topo.destroy();
  }
  const list = (await run('ip', ['netns', 'list'])).stdout.toString();
  for (const r of ROLES) {
    assert.ok(!list.split('\n').some((l) => l.split(' ')[0] === topo.ns[r]), `namespace ${topo.ns[r]} left behind`);
    assert.ok(!existsSync(`/etc/netns/${topo.ns[r]}`));
  }
  assert.ok(!existsSync(topo.dir));
});
