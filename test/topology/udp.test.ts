// UDP ASSOCIATE across families in network namespaces: an IPv4-only client reaches a UDP echo on
// the IPv6-only server by a name only the gateway knows, and the reverse, with real clients
// (PySocks; the `socks` package's UDP frames). A datagram from another port of the client is
// not relayed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { canonicalHost } from '../../shared/net/address.js';
import { rootNetns } from '../helpers/env.js';
import { startCli, type Running } from '../helpers/process.js';
import { PYSOCKS_UDP } from '../helpers/udp.js';
import { startPyUdpEcho } from './fixtures.js';
import { createTopology, run, ADDR, ALLOW_DESTINATIONS, NAMES, type Topology } from './netns.js';

const skip = rootNetns();
const PORT = 1081;
const ECHO_PORT = 7007;

// Runs inside a client namespace: UDP ASSOCIATE with the `socks` package, one datagram from a
// second local port first (must not be relayed), then each message in turn, answers as JSON.
const SOCKS_UDP = `
const { SocksClient } = require(${JSON.stringify(createRequire(import.meta.url).resolve('socks'))});
const dgram = require('node:dgram');
const [proxyHost, proxyPort, host, port, ...msgs] = process.argv.slice(2);
const type = proxyHost.includes(':') ? 'udp6' : 'udp4';
const udp = dgram.createSocket(type), stranger = dgram.createSocket(type);
setTimeout(() => { console.log(JSON.stringify({ error: 'timeout' })); process.exit(2); }, 15000).unref();
udp.bind(0, () => stranger.bind(0, () => {
  const c = new SocksClient({ proxy: { host: proxyHost, port: +proxyPort, type: 5 }, command: 'associate',
    destination: { host: type === 'udp6' ? '::' : '0.0.0.0', port: udp.address().port }, timeout: 10000 });
  c.on('error', (e) => { console.log(JSON.stringify({ error: e.message })); process.exit(1); });
  c.on('established', ({ socket, remoteHost }) => {
    const frame = (data) => SocksClient.createUDPFrame({ remoteHost: { host, port: +port }, data: Buffer.from(data) });
    const relay = /^(0\\.0\\.0\\.0|::)$/.test(remoteHost.host) ? proxyHost : remoteHost.host;
    stranger.send(frame('from a third address'), remoteHost.port, relay);
    const answers = [];
    let i = 0;
    const next = () => {
      if (i < msgs.length) return udp.send(frame(msgs[i++]), remoteHost.port, relay);
      console.log(JSON.stringify({ relay: remoteHost, answers }));
      socket.destroy(); udp.close(); stranger.close();
    };
    udp.on('message', (m) => {
      const f = SocksClient.parseUDPFrame(m);
      answers.push({ data: f.data.toString(), from: [f.remoteHost.host, f.remoteHost.port] });
      next();
    });
    next();
  });
  c.connect();
}));
`;

type Answer = { data: string; from: [string, number] };

test('UDP ASSOCIATE across address families in network namespaces', { skip }, async (t) => {
  const topo: Topology = await createTopology();
  const running: Running[] = [];
  const echoes: ChildProcess[] = [];
  const heard: Record<'s4' | 's6', string[]> = { s4: [], s6: [] };
  try {
    for (const s of ['s4', 's6'] as const) echoes.push(await startPyUdpEcho(topo, s, ADDR[s], ECHO_PORT, heard[s]));
    const gw = await startCli(['gateway', '--listen', `0.0.0.0:${PORT}`, '--listen', `[::]:${PORT}`, '--no-auth', '--hosts', topo.hostsFile, '--dns', 'none', ...ALLOW_DESTINATIONS], { netns: topo.ns.gw, expectListeners: 2 });
    running.push(gw);
    const udpRecords = (): Record<string, unknown>[] => gw.records().filter((r) => r.cmd === 'udp');
    const socksScript = join(topo.dir, 'socks-udp.cjs');
    writeFileSync(socksScript, SOCKS_UDP);

    const pysocks = async (client: 'c4' | 'c6', proxy: string, port: number, name: string, tag: string): Promise<Answer[]> => {
      const msgs = [`${tag} 1`, `${tag} 2`];
      const r = await topo.exec(client, '/usr/bin/python3', ['-c', PYSOCKS_UDP, proxy, String(port), name, String(ECHO_PORT), ...msgs], { timeoutMs: 30000 });
      assert.equal(r.code, 0, r.stderr);
      const answers = r.stdout.toString().trim().split('\n').map((l) => JSON.parse(l) as Answer);
      assert.deepEqual(answers.map((a) => a.data), msgs);
      return answers;
    };

    await t.test('PySocks in the IPv4-only client reaches the IPv6-only server by name', async () => {
      const before = udpRecords().length;
      const answers = await pysocks('c4', ADDR.gw.c4, PORT, NAMES.v6only, 'c4 to s6');
      assert.deepEqual(answers[0]!.from, [ADDR.s6, ECHO_PORT], 'the reply header names the IPv6 sender');
      assert.deepEqual(heard.s6.filter((h) => h.startsWith('c4 to s6')), ['c4 to s6 1', 'c4 to s6 2']);
      await gw.waitRecord(() => udpRecords().length > before);
      const rec = udpRecords().at(-1)!;
      assert.equal(rec.client, ADDR.c4);
      assert.match(String(rec.bound), new RegExp(`^${ADDR.gw.c4.replaceAll('.', '\\.')}:\\d+$`), 'relay socket in the client family');
      assert.deepEqual([rec.datagramsUp, rec.datagramsDown], [2, 2]);
      assert.equal(topo.queriesFor('c4', NAMES.v6only), 0, 'the client resolved the name itself');
    });

    for (const [client, server, name, proxy] of [
      ['c6', 's4', NAMES.v4only, ADDR.gw.c6],
      ['c4', 's6', NAMES.v6only, ADDR.gw.c4],
    ] as const) {
      await t.test(`the socks package in ${client} reaches ${server} by name; another client port is not relayed`, async () => {
        const before = udpRecords().length;
        const tag = `${client} to ${server} via socks`;
        const r = await topo.exec(client, process.execPath, [socksScript, proxy, String(PORT), name, String(ECHO_PORT), `${tag} 1`, `${tag} 2`], { timeoutMs: 30000 });
        assert.equal(r.code, 0, `${r.stdout.toString()} ${r.stderr}`);
        const out = JSON.parse(r.stdout.toString()) as { relay: { host: string }; answers: Answer[] };
        assert.equal(canonicalHost(out.relay.host), proxy, 'BND.ADDR is the gateway address the client reached');
        assert.deepEqual(out.answers.map((a) => [a.data, canonicalHost(a.from[0]), a.from[1]]), [
          [`${tag} 1`, ADDR[server], ECHO_PORT],
          [`${tag} 2`, ADDR[server], ECHO_PORT],
        ]);
        await gw.waitRecord(() => udpRecords().length > before);
        const rec = udpRecords().at(-1)!;
        assert.equal(rec.droppedSource, 1);
        // the stranger's datagram went first: had it been relayed, the echo would have printed it before these
        assert.ok(heard[server].includes(`${tag} 2`));
        assert.ok(!heard[server].includes('from a third address'), 'a datagram from another client port reached the server');
        assert.equal(topo.queriesFor(client, name), 0);
      });
    }

    await t.test('PySocks in the IPv6-only client, through a bridge there, reaches the IPv4-only server by name', async () => {
      // PySocks opens its UDP control connection over IPv4 only: the bridge on loopback carries it on over IPv6
      const bridge = await startCli(['bridge', '--listen', '127.0.0.1:1080', '--gateway', `socks5://[${ADDR.gw.c6}]:${PORT}`], { netns: topo.ns.c6 });
      running.push(bridge);
      const before = udpRecords().length;
      const answers = await pysocks('c6', '127.0.0.1', 1080, NAMES.v4only, 'c6 bridge to s4');
      assert.deepEqual(answers[0]!.from, [ADDR.s4, ECHO_PORT]);
      await bridge.stop();
      await gw.waitRecord(() => udpRecords().length > before);
      const rec = udpRecords().at(-1)!;
      assert.equal(rec.client, ADDR.c6);
      assert.deepEqual([rec.datagramsUp, rec.datagramsDown], [2, 2]);
      assert.equal(topo.queriesFor('c6', NAMES.v4only), 0);
    });
  } finally {
    for (const r of running) await r.stop();
    for (const p of echoes) p.kill('SIGKILL');
    await topo.destroy();
  }
});
