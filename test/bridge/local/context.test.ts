// One guard per accepted socket on the bridge's mixed port: a defect while serving a connection
// ends that connection (ERR_INTERNAL, its stack on stderr), never the process; hostile first
// bytes leave the port serving.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { Bridge } from '../../../bridge/local/server.js';
import { bridgeConfig } from '../../../bridge/local/config.js';
import type { GatewayPool } from '../../../bridge/upstream/pool.js';
import { RequestError } from '../../../shared/errors.js';
import { encodeSocks4Request } from '../../../shared/socks5/codec.js';
import { CMD } from '../../../shared/socks5/constants.js';
import type { BridgeLine } from '../../../bridge/log.js';
import { prng } from '../../helpers/bytes.js';
import { run, startCli } from '../../helpers/process.js';
import { eventually, openFds } from '../../helpers/settle.js';
import { exchangeAll, socks5Connect } from '../../helpers/socks5.js';

/** A pool with no gateway: every tunnel is refused (the bridge's failure path). */
const noGateway = {
  health: [],
  open: () => Promise.reject(new RequestError('ERR_NO_GATEWAY', 'none in this test')),
  associate: () => Promise.reject(new RequestError('ERR_NO_GATEWAY', 'none in this test')),
  stop() {},
  startHealthChecks() {},
} as unknown as GatewayPool;

/** Sends `bytes` (then FIN) and resolves with what came back once the bridge closes. */
const exchange = (port: number, bytes: Uint8Array): Promise<Buffer> => exchangeAll(port, bytes, { end: true });

describe('bridge connection guard', () => {
  test('a defect in a socket event (SOCKS5 first byte) and in a handler promise (SOCKS4 failure path) ends only that connection, logged as ERR_INTERNAL', async () => {
    const bridge = new Bridge(bridgeConfig({ listen: ['127.0.0.1:0'] }, [[{ host: '127.0.0.1', port: 9 }]]), noGateway, 'test');
    const records: BridgeLine[] = [];
    const defects = { opened: 1, log: 1 };
    // the defects: counting a SOCKS5 connection throws once (inside the socket's 'data' event),
    // logging a refused SOCKS4 request throws once (inside the handler's promise)
    const opened = bridge.state.opened.bind(bridge.state);
    bridge.state.opened = (via) => {
      if (via === 'socks5' && defects.opened-- > 0) throw new TypeError('defect while counting');
      return opened(via);
    };
    bridge.state.log = (rec) => {
      if (rec.inbound === 'socks4' && defects.log-- > 0) throw new TypeError('defect while logging');
      records.push(rec);
    };
    const stderr: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      stderr.push(String(chunk));
      return (write as (c: string | Uint8Array, ...r: unknown[]) => boolean)(chunk, ...rest);
    }) as typeof process.stderr.write;
    const port = (await bridge.listen())[0]!.port;
    try {
      const socks5 = socks5Connect('example.test', 80);
      assert.equal((await exchange(port, socks5)).length, 0, 'closed without an answer');
      const socks4 = encodeSocks4Request({ cmd: CMD.CONNECT, host: '192.0.2.1', port: 80, userId: '' });
      const answer4 = await exchange(port, socks4);
      assert.equal(answer4.length, 0, 'the defect came before the reply: closed, nothing sent');
      const internal = records.filter((r) => r.result === 'ERR_INTERNAL');
      assert.equal(internal.length, 2, JSON.stringify(records));
      assert.match(String(internal[0]!.error), /defect while counting/);
      assert.match(String(internal[1]!.error), /defect while logging/);
      assert.equal(stderr.filter((l) => /internal error serving 127\.0\.0\.1:\d+, connection closed: TypeError: defect/.test(l)).length, 2, 'one stack each');
      // the same requests now work as usual (refused: no gateway), and the port still serves
      const again = await exchange(port, socks5);
      assert.equal(again.subarray(0, 4).toString('hex'), '05000501', 'NO_AUTH, then REP 0x01 (no gateway)');
      assert.equal((await exchange(port, socks4))[1], 0x5b, 'SOCKS4 rejected');
      const status = (await exchange(port, Buffer.from(`GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`))).toString();
      assert.match(status, /^HTTP\/1\.1 200 /);
    } finally {
      process.stderr.write = write;
      await bridge.close();
    }
  });

  test('random and odd first bytes on the mixed port: the process lives and serves a valid request after', async () => {
    const b = await startCli(['bridge', '--listen', '127.0.0.1:0', '--gateway', 'socks5://127.0.0.1:9', '--handshake-timeout', '2', '--health-interval', '3600', '--quiet']);
    const port = b.listening[0]!.port;
    try {
      const rnd = prng(0x5eed);
      const bytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => Math.floor(rnd() * 256)));
      const odd: Buffer[] = [
        Buffer.from([0x04]),
        Buffer.from([0x04, 0x05]),
        Buffer.from([0x05]),
        Buffer.from([0x05, 0x05]),
        Buffer.from([0x05, 0x01, 0x02, 0x01, 0x01, 0x61]),
        Buffer.from([0x05, 0x00]),
        Buffer.from([0x05, 0xff, ...randomBytes(255)]),
        Buffer.from([0x04, 0x01, 0x00, 0x50, 0, 0, 0, 1, ...Buffer.alloc(300, 0x41)]),
        Buffer.from([0x04, 0x02, 0x00, 0x00, 0, 0, 0, 0, 0]),
        Buffer.from([0x04, 0x03, 0, 0, 0, 0, 0, 0, 0]),
        Buffer.from('FOO http://x/ HTTP/1.1\r\n\r\n'),
        Buffer.from('CONNECT :0 HTTP/1.1\r\n\r\n'),
        Buffer.from('CONNECT [::1 HTTP/1.1\r\n\r\n'),
        Buffer.from('GET http://[::1/ HTTP/1.1\r\n\r\n'),
        Buffer.from('GET gopher://x/ HTTP/1.0\r\n\r\n'),
        Buffer.from(`GET http://x/${'a'.repeat(70_000)} HTTP/1.1\r\n\r\n`),
        Buffer.from(`GET / HTTP/1.1\r\nX: ${'b'.repeat(40_000)}\r\n\r\n`),
        Buffer.from('GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nzz\r\n'),
        Buffer.from('\r\n\r\n\r\n'),
        Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00]),
      ];
      for (let i = 0; i < 300; i++) odd.push(bytes(1 + Math.floor(rnd() * 64)));
      const base = openFds(b);
      for (let i = 0; i < odd.length; i += 20) await Promise.all(odd.slice(i, i + 20).map((x) => exchange(port, x)));
      assert.equal(b.proc.exitCode, null, 'still running');
      // every one of them closed (by its FIN, a reply, or the handshake timeout): nothing left open
      await eventually(() => openFds(b) <= base, `descriptors back to ${base}`, { describe: () => openFds(b) });
      const r = await run('curl', ['-sS', '--max-time', '10', `http://127.0.0.1:${port}/api/status`]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal((JSON.parse(r.stdout.toString()) as { name: string }).name, 'dualsocks-bridge');
      assert.ok(!b.stderr.some((l) => /internal error/.test(l)), b.stderr.join('\n'));
    } finally {
      await b.stop();
    }
  });
});
