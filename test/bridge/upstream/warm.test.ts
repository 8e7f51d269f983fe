// Warm connections to a gateway (bridge/upstream/warm.ts, the bridge's --warm): requests use them,
// and they never outlive their use: bounded in number, closed when idle, when the gateway ends
// them and at stop(), with the descriptors of both ends counted back to where they were.
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { GatewayPool, type Tunnel } from '../../../bridge/upstream/pool.js';
import { startTcp } from '../../helpers/origin.js';
import { startCli, type Running } from '../../helpers/process.js';
import { eventually, openFds, openSockets } from '../../helpers/settle.js';
import { makeUsersFile } from '../../topology/fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'dualsocks-warm-'));

/** Sends one byte through the tunnel and reads its echo, then closes it. */
async function echoThrough(t: Tunnel): Promise<void> {
  const got = await new Promise<Buffer>((resolve, reject) => {
    t.socket.once('data', resolve).once('error', reject);
    t.socket.resume();
    t.socket.write('w');
  });
  assert.equal(got.toString(), 'w');
  await new Promise<void>((r) => {
    t.socket.once('close', () => r());
    t.socket.destroy();
  });
}

async function withGateway(args: string[], body: (gw: Running, echoPort: number) => Promise<void>): Promise<void> {
  const echo = await startTcp('127.0.0.1', (s) => s.pipe(s));
  const gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--allow', '127.0.0.1', ...args]);
  try {
    await body(gw, echo.port);
  } finally {
    await gw.stop();
    await echo.close();
  }
}

const gwSockets = (gw: Running): number => openSockets(gw.proc.pid!);
const hopOf = (gw: Running): { host: string; port: number } => ({ host: '127.0.0.1', port: gw.listening[0]!.port });

/**
 * Descriptors of this process, and sockets of the gateway (its native relay keeps a pool of idle
 * pipes besides), once one tunnel went through without warm connections.
 */
async function baseline(gw: Running, echoPort: number): Promise<{ self: number; gw: number }> {
  const cold = new GatewayPool([[hopOf(gw)]], { balance: 'round-robin', connectTimeoutMs: 5000, healthIntervalMs: 60_000 });
  await echoThrough(await cold.open('127.0.0.1', echoPort));
  cold.stop();
  // logged once the gateway's side of that tunnel is closed too
  await gw.waitRecord((r) => r.result === 'ok');
  return { self: openFds(process.pid), gw: gwSockets(gw) };
}

describe('warm connections to a gateway', () => {
  test('requests take them; they are refilled up to the bound, then closed when idle at both ends', async () => {
    await withGateway([], async (gw, echoPort) => {
      const pool = new GatewayPool([[hopOf(gw)]], { balance: 'round-robin', connectTimeoutMs: 5000, healthIntervalMs: 60_000, warm: { size: 3, idleMs: 1500 } });
      const base = await baseline(gw, echoPort);
      try {
        // the first request dials cold and leaves 3 warm connections behind it
        await echoThrough(await pool.open('127.0.0.1', echoPort));
        await eventually(() => pool.warm.ready === 3, '3 warm connections ready', { describe: () => pool.warm.ready });
        // the next ones take a warm connection each (and one is opened behind each)
        for (let i = 0; i < 5; i++) await echoThrough(await pool.open('127.0.0.1', echoPort));
        await eventually(() => pool.warm.ready === 3, 'never more than 3', { describe: () => pool.warm.ready });
        assert.equal(pool.warm.ready, 3);
        assert.ok(gwSockets(gw) >= base.gw + 3, 'the gateway holds them, in their handshake');
        // unused, they close (before the gateway's handshake timeout of 10 s) and nothing is opened again
        await eventually(() => pool.warm.ready === 0, 'idle warm connections closed', { describe: () => pool.warm.ready });
        await eventually(() => openFds(process.pid) <= base.self, `bridge descriptors back to ${base.self}`, { describe: () => openFds(process.pid) });
        await eventually(() => gwSockets(gw) <= base.gw, `gateway sockets back to ${base.gw}`, { describe: () => gwSockets(gw) });
      } finally {
        pool.stop();
      }
    });
  });

  test('stop() closes the ready ones and any still opening', async () => {
    await withGateway([], async (gw, echoPort) => {
      const pool = new GatewayPool([[hopOf(gw)]], { balance: 'round-robin', connectTimeoutMs: 5000, healthIntervalMs: 60_000, warm: { size: 4, idleMs: 60_000 } });
      const base = await baseline(gw, echoPort);
      await echoThrough(await pool.open('127.0.0.1', echoPort));
      await eventually(() => pool.warm.ready === 4, '4 warm connections ready', { describe: () => pool.warm.ready });
      // one more taken: its replacement is opening when stop() comes
      await echoThrough(await pool.open('127.0.0.1', echoPort));
      pool.stop();
      assert.equal(pool.warm.ready, 0);
      await eventually(() => openFds(process.pid) <= base.self, `bridge descriptors back to ${base.self}`, { describe: () => openFds(process.pid) });
      await eventually(() => gwSockets(gw) <= base.gw, `gateway sockets back to ${base.gw}`, { describe: () => gwSockets(gw) });
      assert.equal(pool.warm.ready, 0, 'nothing refilled after stop()');
    });
  });

  test('ones the gateway ends (its handshake timeout) are dropped, and requests still go through', async () => {
    await withGateway(['--handshake-timeout', '0.3'], async (gw, echoPort) => {
      const pool = new GatewayPool([[hopOf(gw)]], { balance: 'round-robin', connectTimeoutMs: 5000, healthIntervalMs: 60_000, warm: { size: 2, idleMs: 60_000 } });
      const base = await baseline(gw, echoPort);
      try {
        await echoThrough(await pool.open('127.0.0.1', echoPort));
        // opened, then ended by the gateway long before the bridge's own idle limit
        await eventually(() => pool.warm.ready === 0 && openFds(process.pid) <= base.self, 'warm connections the gateway ended are closed', { describe: () => [pool.warm.ready, openFds(process.pid), base.self] });
        for (let i = 0; i < 3; i++) await echoThrough(await pool.open('127.0.0.1', echoPort));
      } finally {
        pool.stop();
      }
      await eventually(() => openFds(process.pid) <= base.self, `bridge descriptors back to ${base.self}`, { describe: () => openFds(process.pid) });
    });
  });

  test('credentials: warm connections log in once each; wrong ones stop the warming, and each request fails as before', async () => {
    const users = await makeUsersFile(dir, 'warm', 'warm-pass_1');
    await withGateway(['--users', users], async (gw, echoPort) => {
      const good = new GatewayPool([[{ ...hopOf(gw), username: 'warm', password: 'warm-pass_1' }]], { balance: 'round-robin', connectTimeoutMs: 5000, healthIntervalMs: 60_000, warm: { size: 2, idleMs: 60_000 } });
      try {
        await echoThrough(await good.open('127.0.0.1', echoPort));
        await eventually(() => good.warm.ready === 2, '2 warm connections ready', { describe: () => good.warm.ready });
        await echoThrough(await good.open('127.0.0.1', echoPort));
      } finally {
        good.stop();
      }
      const bad = new GatewayPool([[{ ...hopOf(gw), username: 'warm', password: 'wrong' }]], { balance: 'round-robin', connectTimeoutMs: 5000, healthIntervalMs: 60_000, warm: { size: 2, idleMs: 60_000 } });
      try {
        for (let i = 0; i < 3; i++) await assert.rejects(bad.open('127.0.0.1', echoPort), /ERR_SOCKS_AUTH_FAILED|auth/i);
        assert.equal(bad.warm.ready, 0);
      } finally {
        bad.stop();
      }
    });
  });
});
