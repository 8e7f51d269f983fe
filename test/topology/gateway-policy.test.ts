// The gateway's destination policy, live (issue 10, item 2): one address per row of the
// special-purpose table is refused by default and not refused once --allow names its block; the
// four addresses that used to get through (IPv4-compatible, local-use NAT64, SIIT, site-local)
// are refused by address, by name and as UDP datagrams. The gateway runs in a namespace with no
// route out, so an allowed destination fails there (REP 0x03/0x05) without a packet leaving it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { rootNetns } from '../helpers/env.js';
import { startCli, type Running } from '../helpers/process.js';
import { canonicalHost } from '../../shared/net/address.js';
import { SPECIAL_BLOCKS } from '../../shared/net/policy.js';
import { LOOPBACK_INSIDE, SAMPLES } from '../shared/net/samples.js';
import { startPyUdpEcho } from './fixtures.js';
import { createLan, type Lan } from './netns.js';

const skip = rootNetns();
const CODEC = fileURLToPath(new URL('../../shared/socks5/codec.js', import.meta.url));
const REP_NOT_ALLOWED = 2;

/** The addresses of issue 10 and a name for each in the gateway's hosts file. */
const HOLES: [string, string][] = [
  ['::127.0.0.1', 'compat.test'],
  ['64:ff9b:1::7f00:1', 'nat64local.test'],
  ['::ffff:0:127.0.0.1', 'siit.test'],
  ['fec0::1', 'sitelocal.test'],
];

// A SOCKS5 client built on the project's codec. connect: prints the REP of each CONNECT [host, port].
// udp: one association, a datagram to each [host, port], then one to the echo, waits for the echo.
const CLIENT = `
import net from 'node:net';
import dgram from 'node:dgram';
const [codecPath, gwPort, mode, json, echoHost, echoPort] = process.argv.slice(2);
const codec = await import(codecPath);
const jobs = JSON.parse(json);
function ask(cmd, host, port) {
  return new Promise((resolve, reject) => {
    const s = net.connect(+gwPort, '127.0.0.1', () => s.write(codec.concatBytes(codec.encodeGreeting({ methods: [0] }), codec.encodeRequest({ cmd, host, port }))));
    let buf = new Uint8Array(0);
    s.on('data', (d) => {
      buf = codec.concatBytes(buf, d);
      const m = codec.decodeMethodSelection(buf);
      if (m.status !== 'ok') return;
      const r = codec.decodeReply(buf.subarray(m.size));
      if (r.status === 'need') return;
      s.removeAllListeners('data');
      resolve({ s, reply: r.status === 'ok' ? r.msg : { rep: -1 } });
    });
    s.on('error', reject);
    s.on('end', () => resolve({ s, reply: { rep: -2 } }));
  });
}
if (mode === 'connect') {
  const reps = [];
  for (const [host, port] of jobs) {
    const { s, reply } = await ask(1, host, port);
    s.destroy();
    reps.push(reply.rep);
  }
  console.log(JSON.stringify(reps));
} else {
  const { s, reply } = await ask(3, '0.0.0.0', 0);
  if (reply.rep !== 0) throw new Error('UDP ASSOCIATE refused: ' + reply.rep);
  const u = dgram.createSocket('udp4');
  await new Promise((r) => u.bind(0, '127.0.0.1', r));
  const send = (host, port, text) => u.send(codec.concatBytes(codec.encodeUdpHeader({ host, port }), Buffer.from(text)), reply.port, reply.host);
  for (const [host, port] of jobs) send(host, port, 'to ' + host);
  const echoed = new Promise((r) => u.once('message', r));
  send(echoHost, +echoPort, 'control');
  const timer = setTimeout(() => { console.log(JSON.stringify({ echoed: false })); process.exit(1); }, 15000);
  await echoed;
  clearTimeout(timer);
  s.end();
  await new Promise((r) => s.once('close', r));
  u.close();
  console.log(JSON.stringify({ echoed: true }));
}
`;

test('gateway policy: the special-purpose table, live', { skip }, async (t) => {
  const lan: Lan = await createLan();
  const running: Running[] = [];
  try {
    const script = join(lan.dir, 'client.mjs');
    writeFileSync(script, CLIENT);
    const hosts = join(lan.dir, 'hosts');
    writeFileSync(hosts, HOLES.map(([a, n]) => `${a}\t${n}\n`).join(''));
    const gateway = async (extra: string[]): Promise<Running> => {
      const gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--hosts', hosts, '--dns', 'none', '--connect-timeout', '2', ...extra], { netns: lan.ns.b });
      running.push(gw);
      return gw;
    };
    const connect = async (gw: Running, targets: string[]): Promise<number[]> => {
      const r = await lan.exec('b', process.execPath, [script, CODEC, String(gw.listening[0]!.port), 'connect', JSON.stringify(targets.map((h) => [h, 9]))]);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout.toString()) as number[];
    };

    const denied = SPECIAL_BLOCKS.filter((b) => b.deny);
    const samples = [...denied.map((b) => SAMPLES[b.cidr]!), ...LOOPBACK_INSIDE.map(([, a]) => a)];

    await t.test('by default: one address per denied row, and each translation form carrying 127.0.0.1, get REP 0x02', async () => {
      const gw = await gateway([]);
      const reps = await connect(gw, samples);
      samples.forEach((a, i) => assert.equal(reps[i], REP_NOT_ALLOWED, `${a}: REP ${reps[i]}`));
      const records = await gw.waitRecords(samples.length);
      for (const a of samples) assert.ok(records.some((r) => r.result === 'ERR_POLICY_DESTINATION' && canonicalHost(String(r.host)) === canonicalHost(a)), a);
    });

    await t.test('with --allow of each block (and of 127.0.0.0/8 for the IPv4 inside): none is refused by policy', async () => {
      const gw = await gateway([...denied.flatMap((b) => ['--allow', b.cidr]), '--allow', '127.0.0.0/8']);
      const reps = await connect(gw, samples);
      samples.forEach((a, i) => assert.ok(reps[i] !== REP_NOT_ALLOWED && reps[i]! > 0, `${a}: REP ${reps[i]}`));
    });

    await t.test('the four addresses of issue 10: refused by address and by name', async () => {
      const gw = await gateway([]);
      const targets = HOLES.flatMap(([a, n]) => [a, n]);
      const reps = await connect(gw, targets);
      targets.forEach((a, i) => assert.equal(reps[i], REP_NOT_ALLOWED, `${a}: REP ${reps[i]}`));
    });

    await t.test('the four addresses of issue 10: UDP datagrams, by address and by name, are dropped by policy', async () => {
      const heard: string[] = [];
      await startPyUdpEcho(lan, 'b', '127.0.0.2', 7777, heard);
      // the echo's own address is allowed; the four carry 127.0.0.1, which is not
      const gw = await gateway(['--allow', '127.0.0.2/32']);
      const targets = HOLES.flatMap(([a, n]) => [a, n]);
      const r = await lan.exec('b', process.execPath, [script, CODEC, String(gw.listening[0]!.port), 'udp', JSON.stringify(targets.map((h) => [h, 7777])), '127.0.0.2', '7777']);
      assert.equal(r.code, 0, r.stderr + r.stdout.toString());
      const rec = await gw.waitRecord((x) => typeof x.droppedPolicy === 'number');
      assert.equal(rec.droppedPolicy, targets.length, JSON.stringify(rec));
      assert.deepEqual(heard, ['control']);
    });
  } finally {
    await Promise.all(running.map((r) => r.stop()));
    await lan.destroy();
  }
});
