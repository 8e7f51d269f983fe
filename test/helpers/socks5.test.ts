// The shared SOCKS5 test drivers against a real gateway: what the other tests rely on them for.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { CMD, METHOD, REP } from '../../shared/socks5/constants.js';
import { decodeReply, encodeGreeting, encodeRequest } from '../../shared/socks5/codec.js';
import { readAll, startTcp } from './origin.js';
import { startCli, type Running } from './process.js';
import { exchangeUntil, socks5Connect, socks5Head, socks5Open } from './socks5.js';

describe('test/helpers/socks5.ts against a gateway', () => {
  let gw: Running;
  let echo: Awaited<ReturnType<typeof startTcp>>;
  let closed: Awaited<ReturnType<typeof startTcp>>;
  before(async () => {
    echo = await startTcp('127.0.0.1', (s) => s.pipe(s));
    // a port that was listening and is not any more: the gateway's dial is refused
    closed = await startTcp('127.0.0.1', () => {});
    await closed.close();
    gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--dns', 'none', '--allow', '127.0.0.1', '--quiet']);
  });
  after(async () => {
    await gw.stop();
    await echo.close();
  });

  for (const pipeline of [false, true]) {
    test(`socks5Open${pipeline ? ', pipelined' : ''}: a tunnel that carries bytes both ways`, async () => {
      const t = await socks5Open(gw.listening[0]!.port, { host: '127.0.0.1', port: echo.port, pipeline });
      assert.equal(t.reply.rep, REP.SUCCEEDED);
      assert.equal(t.rest.length, 0);
      t.socket.end('ping');
      assert.equal((await readAll(t.socket)).toString(), 'ping');
    });
  }

  test('socks5Open: a failure reply rejects with its code', async () => {
    await assert.rejects(socks5Open(gw.listening[0]!.port, { host: '127.0.0.1', port: closed.port }), (e: { rep?: number }) => e.rep === REP.CONNECTION_REFUSED);
  });

  test('exchangeUntil: split writes and pipelined bytes get the same method selection and reply', async () => {
    const split = [encodeGreeting({ methods: [METHOD.NO_AUTH] }), encodeRequest({ cmd: CMD.CONNECT, host: '127.0.0.1', port: echo.port })];
    for (const bytes of [split, socks5Connect('127.0.0.1', echo.port)]) {
      const got = await exchangeUntil(gw.listening[0]!.port, bytes, (b) => socks5Head(b) !== null);
      assert.equal(got.subarray(0, 2).toString('hex'), '0500');
      const r = decodeReply(got.subarray(2));
      assert.ok(r.status === 'ok' && r.msg.rep === REP.SUCCEEDED, got.toString('hex'));
    }
  });
});
