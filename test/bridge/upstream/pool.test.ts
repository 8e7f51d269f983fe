// Handshake pipelining toward gateways: probed against real servers (our gateway reads greeting
// and credentials from one write; microsocks drops what follows the greeting and waits), shown in
// the bridge's status, used for requests, and a bridge whose gateway cannot pipeline still works.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { PipeliningCache, probePipelining } from '../../../bridge/upstream/pipelining.js';
import type { GatewayHealth } from '../../../bridge/upstream/pool.js';
import { dialChain } from '../../../bridge/upstream/socks5.js';
import { spawnDaemon, freePort, which } from '../../bench/peers.js';
import { requireCapability } from '../../helpers/env.js';
import { startOrigin } from '../../helpers/origin.js';
import { makeUsersFile } from '../../topology/fixtures.js';
import { run, startCli, type Running } from '../../helpers/process.js';
import { eventually } from '../../helpers/settle.js';

const dir = mkdtempSync(join(tmpdir(), 'dualsocks-pool-'));
const rules = join(dir, 'rules.json');
// everything through the gateway, loopback included
writeFileSync(rules, JSON.stringify({ mode: 'all', bypass: [] }));
const skipMicrosocks = requireCapability('microsocks', which('microsocks') !== null, 'apt-get install microsocks');

async function gatewaysOf(bridge: Running): Promise<GatewayHealth[]> {
  const r = await run('curl', ['-sS', `http://127.0.0.1:${bridge.listening[0]!.port}/api/status`]);
  return (JSON.parse(r.stdout.toString()) as { gateways: GatewayHealth[] }).gateways;
}

/** Waits for the bridge's first health check, probe included, to settle. */
async function probed(bridge: Running): Promise<GatewayHealth> {
  let g: GatewayHealth | undefined;
  await eventually(async () => {
    [g] = await gatewaysOf(bridge);
    return g !== undefined && g.pipelining !== null;
  }, 'the probe finished', { timeoutMs: 10_000, describe: () => g });
  return g!;
}

describe('handshake pipelining', () => {
  test('our gateway takes greeting, credentials and request in one write; the bridge uses it', async () => {
    const users = await makeUsersFile(dir, 'bridge', 'pipe-pass_1');
    const gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--users', users, '--allow', '127.0.0.1']);
    const origin = await startOrigin();
    const port = gw.listening[0]!.port;
    const bridge = await startCli(['bridge', '--listen', '127.0.0.1:0', '--gateway', `socks5://bridge:pipe-pass_1@127.0.0.1:${port}`, '--rules', rules]);
    try {
      assert.equal(await probePipelining({ host: '127.0.0.1', port, username: 'bridge', password: 'pipe-pass_1' }, 2000), true);
      assert.equal((await probed(bridge)).pipelining, true);
      const r = await run('curl', ['-sS', '-x', `http://127.0.0.1:${bridge.listening[0]!.port}`, `http://127.0.0.1:${origin.port}/`]);
      assert.equal(r.stdout.toString(), 'hello from origin', r.stderr);
      const rec = await gw.waitRecord((x) => x.cmd === 'connect' && x.port === origin.port);
      assert.deepEqual([rec.result, rec.user], ['ok', 'bridge']);
      // the probe asked for nothing and, having authenticated and left, is not worth a log line
      assert.equal(gw.records().length, 1, JSON.stringify(gw.records()));
      // the gateway's --upstream asks a cache: no until its probe has said yes
      const cache = new PipeliningCache(2000);
      const creds = { host: '127.0.0.1', port, username: 'bridge', password: 'pipe-pass_1' };
      assert.equal(cache.allows(creds), false);
      assert.equal(await cache.probe(creds), true);
      assert.equal(cache.allows(creds), true);
      cache.forget(creds);
      assert.equal(cache.allows(creds), false, 'forgotten: asked again');
      assert.equal(await cache.probe({ ...creds, password: 'wrong' }), true, 'a refused login still answers both messages');
      await gw.waitRecord((x) => x.result === 'ERR_SOCKS_AUTH_FAILED');
      // what the bridge does once the probe said yes: greeting, credentials and CONNECT in one write
      const hop = { host: '127.0.0.1', port, username: 'bridge', password: 'pipe-pass_1' };
      const d = await dialChain([hop], { host: '127.0.0.1', port: origin.port }, 5000, { pipelineFirst: true });
      d.socket.end('GET / HTTP/1.0\r\n\r\n');
      d.socket.resume();
      const body = await new Promise<string>((resolve) => {
        let text = '';
        d.socket.on('data', (c: Buffer) => (text += c.toString()));
        d.socket.once('end', () => resolve(text));
      });
      assert.match(body, /hello from origin$/);
      // without credentials there is nothing to send along with the greeting: no pipelining, no connection
      assert.equal(await probePipelining({ host: '127.0.0.1', port: 9 }, 2000), false);
    } finally {
      await Promise.all([bridge.stop(), gw.stop(), origin.close()]);
    }
  });

  test('microsocks does not, and a bridge in front of it still works', { skip: skipMicrosocks }, async () => {
    const port = await freePort();
    const micro = await spawnDaemon('microsocks', which('microsocks')!, ['-i', '127.0.0.1', '-p', String(port), '-u', 'bridge', '-P', 'micro-pass'], port, 0, () => {});
    const origin = await startOrigin();
    let bridge: Running | undefined;
    try {
      assert.equal(await probePipelining({ host: '127.0.0.1', port, username: 'bridge', password: 'micro-pass' }, 1000), false);
      bridge = await startCli(['bridge', '--listen', '127.0.0.1:0', '--gateway', `socks5://bridge:micro-pass@127.0.0.1:${port}`, '--rules', rules]);
      const g = await probed(bridge);
      assert.deepEqual([g.up, g.pipelining], [true, false]);
      const r = await run('curl', ['-sS', '-x', `http://127.0.0.1:${bridge.listening[0]!.port}`, `http://127.0.0.1:${origin.port}/`]);
      assert.equal(r.stdout.toString(), 'hello from origin', r.stderr);
    } finally {
      await bridge?.stop();
      await Promise.all([micro.stop(), origin.close()]);
    }
  });
});
