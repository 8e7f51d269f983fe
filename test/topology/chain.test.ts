// RFC 3089 §4, all eight two-hop types E–L: client (family X) → g1 → (family Y) → g2 → (family Z)
// → server, in network namespaces. X is the client namespace running curl, Y the address of g2
// that g1's --upstream names (two g1 gateways), Z the server the name points at. Names are known
// only to g2; the client's and g1's resolvers must never be asked.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { rootNetns } from '../helpers/env.js';
import { type Running } from '../helpers/process.js';
import { createChainTopology, ALLOW_CHAIN_DESTINATIONS, CHAIN_ADDR as A, G1_DNS, NAMES, HTTP_PORT, BLOB_SIZE, type ChainTopology } from './netns.js';
import { anyAddress, makeUsersFile, startGateway } from './fixtures.js';

const skip = rootNetns();
const USER = 'alice';
const PASS = 'chain-pass_9';
const PORT = 1081;
/** g1 listens here for the chain whose middle leg is IPv4 (Y = 4), and on PORT + 1 for Y = 6. */
const g1Port = (y: 4 | 6): number => (y === 4 ? PORT : PORT + 1);

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

// The draft's table, in order.
const TYPES = [
  ['E', 4, 4, 4],
  ['F', 4, 4, 6],
  ['G', 4, 6, 4], // tunnel-like: IPv4 ends over an IPv6 middle
  ['H', 4, 6, 6],
  ['I', 6, 4, 4],
  ['J', 6, 4, 6], // tunnel-like: IPv6 ends over an IPv4 middle
  ['K', 6, 6, 4],
  ['L', 6, 6, 6],
] as const;

test('chained gateways: types E–L across address families in network namespaces', { skip }, async (t) => {
  const topo: ChainTopology = await createChainTopology();
  const running: Running[] = [];
  try {
    const usersFile = await makeUsersFile(topo.dir, USER, PASS);
    const g2 = await startGateway(topo.ns.g2, [`${A.g2.g1v4}:${PORT}`, `[${A.g2.g1v6}]:${PORT}`], ['--users', usersFile, '--hosts', topo.hostsFile, '--dns', 'none', '--connect-timeout', '2', ...ALLOW_CHAIN_DESTINATIONS], running);
    const g1: Record<4 | 6, Running> = {} as Record<4 | 6, Running>;
    for (const y of [4, 6] as const) {
      const g2Host = y === 4 ? A.g2.g1v4 : `[${A.g2.g1v6}]`;
      g1[y] = await startGateway(topo.ns.g1, anyAddress(g1Port(y)),
        ['--users', usersFile, '--dns', `${G1_DNS.host}:${G1_DNS.port}`, '--connect-timeout', '5', '--upstream', `socks5://${USER}:${PASS}@${g2Host}:${PORT}`], running);
    }

    await t.test('topology: g1 has no route to the servers, clients none to g2', async () => {
      assert.equal(await topo.connectProbe('g1', A.s4, HTTP_PORT), 'ENETUNREACH');
      assert.equal(await topo.connectProbe('g1', A.s6, HTTP_PORT), 'ENETUNREACH');
      assert.equal(await topo.connectProbe('c4', A.g2.g1v4, PORT), 'ENETUNREACH');
      assert.equal(await topo.connectProbe('c6', A.g2.g1v6, PORT), 'ENETUNREACH');
      assert.equal(await topo.connectProbe('g2', A.s6, HTTP_PORT), 'connected');
    });

    for (const [type, x, y, z] of TYPES) {
      await t.test(`type ${type}: IPv${x} client → g1 → IPv${y} → g2 → IPv${z} server`, async () => {
        const client = x === 4 ? 'c4' : 'c6';
        const server = z === 4 ? 's4' : 's6';
        const name = z === 4 ? NAMES.v4only : NAMES.v6only;
        const proxyHost = x === 4 ? A.g1.c4 : `[${A.g1.c6}]`;
        const near = g1[y];
        const nearBefore = near.records().length;
        const farBefore = g2.records().length;

        const r = await topo.exec(client, 'curl', ['-sS', '--max-time', '120', '--proxy', `socks5h://${USER}:${PASS}@${proxyHost}:${g1Port(y)}`, `http://${name}/blob.bin`]);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout.length, BLOB_SIZE);
        assert.equal(sha256(r.stdout), topo.blobSha256[server]);

        const nearRec = (await near.waitRecords(nearBefore + 1))[nearBefore]!;
        assert.equal(nearRec.result, 'ok');
        assert.equal(nearRec.host, name);
        assert.equal(nearRec.client, A[client]);
        assert.equal(nearRec.upstream, `socks5://${USER}:***@${y === 4 ? A.g2.g1v4 : `[${A.g2.g1v6}]`}:${PORT}`);
        assert.equal(nearRec.address, undefined, 'g1 resolved nothing');
        // BND.ADDR from g2 (its socket toward the server) came back through g1
        assert.match(String(nearRec.bound), new RegExp(`^\\[?${(z === 4 ? A.g2.s4 : A.g2.s6).replace(/\./g, '\\.')}\\]?:\\d+$`));

        const farRec = (await g2.waitRecords(farBefore + 1))[farBefore]!;
        assert.equal(farRec.result, 'ok');
        assert.equal(farRec.host, name, 'the name reached g2 unresolved');
        assert.equal(farRec.family, z);
        assert.equal(farRec.address, A[server]);
        assert.equal(farRec.client, y === 4 ? A.g1.g2v4 : A.g1.g2v6, `middle leg over IPv${y}`);
        assert.ok(Number(farRec.bytesDown) > BLOB_SIZE);

        assert.equal(topo.queriesFor(client, name), 0, `${client}'s resolver was asked for ${name}`);
        assert.equal(topo.queriesFor('g1', name), 0, `g1's resolver was asked for ${name}`);
      });
    }

    await t.test('control: the client resolvers do log lookups', async () => {
      for (const client of ['c4', 'c6'] as const) {
        await topo.exec(client, 'getent', ['ahosts', 'control.test']);
        assert.ok(topo.queriesFor(client, 'control.test') > 0, `${client} logged no query`);
      }
    });
  } finally {
    await Promise.all(running.map((g) => g.stop()));
    await topo.destroy();
  }
});
