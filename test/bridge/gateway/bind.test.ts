// BIND on loopback with the real gateway process: our own client (dialSocks5 + bindSecondReply)
// and the `socks` package as an independent one. A test peer connects to the announced address;
// data is checksummed both ways.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import { CMD, REP } from '../../../shared/socks5/constants.js';
import { bindSecondReply, dialSocks5 } from '../../../bridge/upstream/socks5.js';
import { readAll, sha256 } from '../../helpers/origin.js';
import { startCli, type Running } from '../../helpers/process.js';

const dir = mkdtempSync(join(tmpdir(), 'dualsocks-bind-'));
const hostsFile = join(dir, 'hosts');
writeFileSync(hostsFile, '127.0.0.2 peer.test\n');

function connectFrom(port: number, localAddress?: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, ...(localAddress ? { localAddress } : {}), allowHalfOpen: true });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** Sends `data` and half-closes on each side, reads the other side to its end. */
async function exchange(a: Socket, b: Socket, upSize: number, downSize: number): Promise<void> {
  const up = randomBytes(upSize);
  const down = randomBytes(downSize);
  const gotAtB = readAll(b);
  const gotAtA = readAll(a);
  a.resume();
  b.resume();
  a.end(up);
  b.end(down);
  assert.equal(sha256(await gotAtB), sha256(up), 'client → peer');
  assert.equal(sha256(await gotAtA), sha256(down), 'peer → client');
}

describe('gateway BIND on loopback', () => {
  let gw: Running;
  let port: number;
  const hop = (): { host: string; port: number } => ({ host: '127.0.0.1', port });

  before(async () => {
    gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.0/8', '--bind-timeout', '1']);
    port = gw.listening[0]!.port;
  });
  after(async () => {
    await gw.stop();
  });

  test('round trip: first reply announces the listener, second names the peer, data both ways', async () => {
    const dial = await dialSocks5(hop(), { cmd: CMD.BIND, host: '127.0.0.1', port: 0 }, { timeoutMs: 5000 });
    assert.equal(dial.reply.rep, REP.SUCCEEDED);
    assert.equal(dial.reply.host, '127.0.0.1');
    assert.ok(dial.reply.port > 0);
    const second = bindSecondReply(dial);
    const peer = await connectFrom(dial.reply.port);
    const { reply } = await second;
    assert.equal(reply.host, '127.0.0.1');
    assert.equal(reply.port, peer.localPort);
    await exchange(dial.socket, peer, 3 * 1024 * 1024 + 7, 2 * 1024 * 1024 + 11);
    const rec = await gw.waitRecord((r) => r.cmd === 'bind' && r.result === 'ok');
    assert.equal(rec.peer, '127.0.0.1');
    assert.equal(rec.family, 4);
    assert.equal(rec.bound, `127.0.0.1:${dial.reply.port}`);
  });

  test('only the expected peer is accepted; others are closed and the wait goes on', async () => {
    const dial = await dialSocks5(hop(), { cmd: CMD.BIND, host: '127.0.0.2', port: 0 }, { timeoutMs: 5000 });
    const second = bindSecondReply(dial);
    const stranger = await connectFrom(dial.reply.port, '127.0.0.1');
    assert.equal((await readAll(stranger).catch(() => Buffer.alloc(0))).length, 0);
    const peer = await connectFrom(dial.reply.port, '127.0.0.2');
    const { reply } = await second;
    assert.equal(reply.host, '127.0.0.2');
    await exchange(dial.socket, peer, 1024 * 1024, 1024 * 1024);
    const rec = await gw.waitRecord((r) => r.cmd === 'bind' && r.peer === '127.0.0.2');
    assert.equal(rec.refusedPeers, 1);
    assert.equal(rec.result, 'ok');
  });

  test('no peer within --bind-timeout: second reply is REP 0x06', async () => {
    const dial = await dialSocks5(hop(), { cmd: CMD.BIND, host: '127.0.0.1', port: 0 }, { timeoutMs: 5000 });
    await assert.rejects(bindSecondReply(dial), (e: { rep: number; code: string }) => e.rep === REP.TTL_EXPIRED && e.code === 'ERR_CONNECT_TIMEOUT');
    const rec = await gw.waitRecord((r) => r.cmd === 'bind' && r.result === 'ERR_CONNECT_TIMEOUT');
    assert.equal(rec.rep, REP.TTL_EXPIRED);
    // the listener is gone with the request
    await assert.rejects(connectFrom(dial.reply.port), /ECONNREFUSED/);
  });

  test('a client that leaves while waiting releases the listener', async () => {
    const dial = await dialSocks5(hop(), { cmd: CMD.BIND, host: '0.0.0.0', port: 0 }, { timeoutMs: 5000 });
    const bound = dial.reply.port;
    dial.socket.destroy();
    await gw.waitRecord((r) => r.cmd === 'bind' && r.result === 'ERR_CLIENT_CLOSED' && r.bound === `127.0.0.1:${bound}`);
    await assert.rejects(connectFrom(bound), /ECONNREFUSED/);
  });

  test('policy: an expected peer in a refused range gets REP 0x02; an unknown name 0x04', async () => {
    await assert.rejects(dialSocks5(hop(), { cmd: CMD.BIND, host: '10.1.2.3', port: 0 }, { timeoutMs: 5000 }), (e: { rep: number }) => e.rep === REP.NOT_ALLOWED);
    await assert.rejects(dialSocks5(hop(), { cmd: CMD.BIND, host: 'nowhere.test', port: 0 }, { timeoutMs: 5000 }), (e: { rep: number }) => e.rep === REP.HOST_UNREACHABLE);
  });

  test('the socks npm client: bound, then established with a peer given by name', async () => {
    const client = new SocksClient({ proxy: { host: '127.0.0.1', port, type: 5 }, command: 'bind', destination: { host: 'peer.test', port: 0 }, timeout: 5000 });
    const bound = new Promise<{ host: string; port: number }>((resolve, reject) => {
      client.once('bound', (info: { remoteHost?: { host: string; port: number } }) => resolve(info.remoteHost!));
      client.once('error', reject);
    });
    const established = new Promise<{ socket: Socket; remoteHost?: { host: string; port: number } }>((resolve, reject) => {
      client.once('established', resolve);
      client.once('error', reject);
    });
    client.connect();
    const at = await bound;
    assert.equal(at.host, '127.0.0.1');
    const peer = await connectFrom(at.port, '127.0.0.2');
    const info = await established;
    assert.equal(info.remoteHost?.host, '127.0.0.2');
    assert.equal(info.remoteHost?.port, peer.localPort);
    await exchange(info.socket, peer, 2 * 1024 * 1024, 512 * 1024 + 3);
  });
});
