// BIND across families in network namespaces: an IPv4-only client asks the gateway to wait for a
// peer named by a name only the gateway knows (an IPv6-only server); the gateway listens on its
// IPv6 address toward that peer, and the peer's connection is relayed to the IPv4 client.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { rootNetns } from '../helpers/env.js';
import { type Running } from '../helpers/process.js';
import { createTopology, ADDR, ALLOW_DESTINATIONS, NAMES, type Topology } from './netns.js';
import { makeUsersFile, startGateway } from './fixtures.js';

const skip = rootNetns();
const USER = 'alice';
const PASS = 'bind-pass_3';
const PORT = 1081;
const SIZE = 3 * 1024 * 1024 + 17;
const SOCKS5_MODULE = fileURLToPath(new URL('../../bridge/upstream/socks5.js', import.meta.url));

// Client side (in c4): BIND, print the first reply, wait for the second, send random bytes and
// half-close, read to the end, print checksums.
const CLIENT = `
const crypto = require('node:crypto');
const [mod, host, port, user, pass, peer, size] = process.argv.slice(2);
import(mod).then(async ({ dialSocks5, bindSecondReply }) => {
  const dial = await dialSocks5({ host, port: +port, username: user, password: pass }, { cmd: 2, host: peer, port: 0 }, { timeoutMs: 10000 });
  console.log(JSON.stringify({ first: dial.reply }));
  const { reply } = await bindSecondReply(dial);
  const data = crypto.randomBytes(+size);
  const got = [];
  dial.socket.on('data', (d) => got.push(d));
  dial.socket.on('end', () => console.log(JSON.stringify({ second: reply,
    sent: crypto.createHash('sha256').update(data).digest('hex'), received: crypto.createHash('sha256').update(Buffer.concat(got)).digest('hex') })));
  dial.socket.resume();
  dial.socket.end(data);
}).catch((e) => { console.log(JSON.stringify({ error: e.message, rep: e.rep })); });
`;
// Peer side (in s6): connect to the announced address, same exchange the other way.
const PEER = `
const crypto = require('node:crypto');
const [host, port, size] = process.argv.slice(1);
const data = crypto.randomBytes(+size);
const got = [];
const s = require('node:net').connect({ host, port: +port, allowHalfOpen: true });
s.on('data', (d) => got.push(d));
s.on('end', () => console.log(JSON.stringify({ local: s.localAddress,
  sent: crypto.createHash('sha256').update(data).digest('hex'), received: crypto.createHash('sha256').update(Buffer.concat(got)).digest('hex') })));
s.on('error', (e) => console.log(JSON.stringify({ error: e.code })));
s.end(data);
`;

interface Out { first?: { host: string; port: number }; second?: { host: string; port: number }; sent?: string; received?: string; error?: string; local?: string }

test('BIND: IPv4-only client, IPv6-only peer by a gateway-only name', { skip }, async () => {
  const topo: Topology = await createTopology();
  let gw: Running | undefined;
  try {
    const usersFile = await makeUsersFile(topo.dir, USER, PASS);
    gw = await startGateway(topo.ns.gw, [`0.0.0.0:${PORT}`], ['--users', usersFile, '--hosts', topo.hostsFile, '--dns', 'none', '--bind-timeout', '20', ...ALLOW_DESTINATIONS]);

    const script = join(topo.dir, 'bind-client.cjs');
    writeFileSync(script, CLIENT);
    const client = spawn('ip', ['netns', 'exec', topo.ns.c4, process.execPath, script, SOCKS5_MODULE, ADDR.gw.c4, String(PORT), USER, PASS, NAMES.v6only, String(SIZE)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const lines: Out[] = [];
    let stderr = '';
    let pending = '';
    const wake: (() => void)[] = [];
    client.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    client.stdout.on('data', (d: Buffer) => {
      pending += d.toString();
      let i: number;
      while ((i = pending.indexOf('\n')) >= 0) {
        lines.push(JSON.parse(pending.slice(0, i)) as Out);
        pending = pending.slice(i + 1);
      }
      wake.splice(0).forEach((w) => w());
    });
    const exited = new Promise<void>((resolve) => client.once('exit', () => resolve()));
    const waitLine = async (n: number): Promise<Out> => {
      while (lines.length < n) {
        const more = new Promise<void>((resolve) => wake.push(resolve));
        const which = await Promise.race([more.then(() => 'data'), exited.then(() => 'exit')]);
        if (which === 'exit' && lines.length < n) throw new Error(`client exited: ${JSON.stringify(lines)} ${stderr}`);
      }
      return lines[n - 1]!;
    };
    const firstLine = waitLine(1);
    const first = await firstLine;
    assert.equal(first.error, undefined, stderr);
    assert.equal(first.first?.host, ADDR.gw.s6, "the gateway listens on its IPv6 address toward the peer");

    const peer = await topo.exec('s6', process.execPath, ['-e', PEER, first.first!.host, String(first.first!.port), String(SIZE)]);
    const peerOut = JSON.parse(peer.stdout.toString()) as Out;
    assert.equal(peerOut.error, undefined, peer.stderr);
    const done = await waitLine(2);
    assert.equal(done.second?.host, ADDR.s6);
    assert.equal(done.received, peerOut.sent, 'peer → client');
    assert.equal(peerOut.received, done.sent, 'client → peer');

    const rec = await gw.waitRecord((r) => r.cmd === 'bind');
    assert.equal(rec.result, 'ok');
    assert.equal(rec.family, 6);
    assert.equal(rec.peer, ADDR.s6);
    assert.equal(rec.client, ADDR.c4);
    assert.equal(topo.queriesFor('c4', NAMES.v6only), 0);
  } finally {
    await gw?.stop();
    await topo.destroy();
  }
});
