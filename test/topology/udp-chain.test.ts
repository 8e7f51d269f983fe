// UDP through two chained gateways in network namespaces (bridge/upstream/udp-chain.ts): the
// client has no route to g2 and g1 none to the servers, so a datagram can only arrive through an
// association at g1 that sends it on to one at g2, asked for through g1. Once with the chain in
// the bridge's gateway URL, once as a local gateway's --upstream hops, across families each time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { rootNetns } from '../helpers/env.js';
import { startCli, type Running } from '../helpers/process.js';
import { PYSOCKS_UDP } from '../helpers/udp.js';
import { createChainTopology, allowArgs, ALLOW_CHAIN_DESTINATIONS, CHAIN_ADDR as A, G1_DNS, NAMES, type ChainTopology } from './netns.js';
import { anyAddress, makeUsersFile, startGateway, startPyUdpEcho } from './fixtures.js';

const skip = rootNetns();
const USER = 'carol';
const PASS = 'udp-chain_7';
const PORT = 1081;
const ECHO_PORT = 7008;

type Answer = { data: string; from: [string, number] };

test('UDP over two chained gateways across address families in network namespaces', { skip }, async (t) => {
  const topo: ChainTopology = await createChainTopology();
  const running: Running[] = [];
  const echoes: ChildProcess[] = [];
  const heard: Record<'s4' | 's6', string[]> = { s4: [], s6: [] };
  try {
    for (const s of ['s4', 's6'] as const) echoes.push(await startPyUdpEcho(topo, s, A[s], ECHO_PORT, heard[s]));
    const usersFile = await makeUsersFile(topo.dir, USER, PASS);
    const g2 = await startGateway(topo.ns.g2, [`${A.g2.g1v4}:${PORT}`, `[${A.g2.g1v6}]:${PORT}`], ['--users', usersFile, '--hosts', topo.hostsFile, '--dns', 'none', ...ALLOW_CHAIN_DESTINATIONS], running);
    // a chain of hops set by the client reaches g2 through g1 as an ordinary destination
    const g1 = await startGateway(topo.ns.g1, anyAddress(PORT), ['--users', usersFile, '--dns', `${G1_DNS.host}:${G1_DNS.port}`, ...allowArgs([A.g2.g1v4, A.g2.g1v6])], running);
    const hop = (host: string): string => `socks5://${USER}:${PASS}@${host}:${PORT}`;
    const udpOf = (g: Running): Record<string, unknown>[] => g.records().filter((r) => r.cmd === 'udp');

    const pysocks = async (client: 'c4' | 'c6', port: number, name: string, tag: string): Promise<Answer[]> => {
      const msgs = [`${tag} 1`, `${tag} 2`];
      const r = await topo.exec(client, '/usr/bin/python3', ['-c', PYSOCKS_UDP, '127.0.0.1', String(port), name, String(ECHO_PORT), ...msgs], { timeoutMs: 30000 });
      assert.equal(r.code, 0, r.stderr);
      const answers = r.stdout.toString().trim().split('\n').map((l) => JSON.parse(l) as Answer);
      assert.deepEqual(answers.map((a) => a.data), msgs);
      return answers;
    };

    await t.test('topology: the clients have no route to g2, g1 none to the servers', async () => {
      assert.equal(await topo.connectProbe('c4', A.g2.g1v4, PORT), 'ENETUNREACH');
      assert.equal(await topo.connectProbe('c6', A.g2.g1v6, PORT), 'ENETUNREACH');
      assert.equal(await topo.connectProbe('g1', A.s6, ECHO_PORT), 'ENETUNREACH');
    });

    await t.test('bridge in the IPv4-only client, chain g1 → IPv6 → g2: PySocks reaches the IPv6-only server by name', async () => {
      const bridge = await startCli(['bridge', '--listen', '127.0.0.1:1080', '--gateway', `${hop(A.g1.c4)},${hop(`[${A.g2.g1v6}]`)}`], { netns: topo.ns.c4 });
      running.push(bridge);
      const [b1, b2] = [udpOf(g1).length, udpOf(g2).length];
      const answers = await pysocks('c4', 1080, NAMES.v6only, 'c4 chain to s6');
      assert.deepEqual(answers[0]!.from, [A.s6, ECHO_PORT], "g2's header names the IPv6 sender; g1's was taken off");
      assert.deepEqual(heard.s6.filter((h) => h.startsWith('c4 chain to s6')), ['c4 chain to s6 1', 'c4 chain to s6 2']);
      await bridge.stop();
      await g1.waitRecord(() => udpOf(g1).length > b1);
      await g2.waitRecord(() => udpOf(g2).length > b2);
      const near = udpOf(g1).at(-1)!;
      const far = udpOf(g2).at(-1)!;
      assert.equal(near.client, A.c4);
      assert.deepEqual([near.datagramsUp, near.datagramsDown], [2, 2], 'g1 carried the datagrams both ways');
      assert.equal(far.client, A.g1.g2v6, "g2's association was asked for from g1, over IPv6");
      assert.deepEqual([far.datagramsUp, far.datagramsDown], [2, 2]);
      assert.equal(topo.queriesFor('c4', NAMES.v6only), 0);
      assert.equal(topo.queriesFor('g1', NAMES.v6only), 0);
    });

    await t.test('gateway in the IPv6-only client with --upstream g1 --upstream g2 (IPv4 middle): PySocks reaches the IPv4-only server by name', async () => {
      // PySocks opens its UDP control connection over IPv4 only: the local gateway listens on loopback
      const local = await startCli(['gateway', '--listen', '127.0.0.1:1090', '--dns', 'none', '--upstream', hop(`[${A.g1.c6}]`), '--upstream', hop(A.g2.g1v4)], { netns: topo.ns.c6 });
      running.push(local);
      const [b1, b2] = [udpOf(g1).length, udpOf(g2).length];
      const answers = await pysocks('c6', 1090, NAMES.v4only, 'c6 chain to s4');
      assert.deepEqual(answers[0]!.from, [A.s4, ECHO_PORT]);
      assert.deepEqual(heard.s4.filter((h) => h.startsWith('c6 chain to s4')), ['c6 chain to s4 1', 'c6 chain to s4 2']);
      await local.stop();
      const mine = local.records().find((r) => r.cmd === 'udp')!;
      assert.deepEqual([mine.datagramsUp, mine.datagramsDown, mine.droppedUpstream], [2, 2, 0]);
      await g1.waitRecord(() => udpOf(g1).length > b1);
      await g2.waitRecord(() => udpOf(g2).length > b2);
      assert.equal(udpOf(g1).at(-1)!.client, A.c6);
      const far = udpOf(g2).at(-1)!;
      assert.equal(far.client, A.g1.g2v4, 'middle leg over IPv4');
      assert.deepEqual([far.datagramsUp, far.datagramsDown], [2, 2]);
      assert.equal(topo.queriesFor('c6', NAMES.v4only), 0);
      assert.equal(topo.queriesFor('g1', NAMES.v4only), 0);
    });
  } finally {
    await Promise.all(running.map((g) => g.stop()));
    for (const p of echoes) p.kill('SIGKILL');
    await topo.destroy();
  }
});
