// The bridge's one port as `dualsocks start` runs it: every inbound protocol on the same port,
// the in-process gateway resolving names, and the PAC file it distributes; and what an idle tunnel
// keeps alive in the bridge.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { after, before, describe, test } from 'node:test';
import { createPacResolver } from 'pac-resolver';
import { QuickJS } from 'quickjs-wasi';
import { readAll, sha256, startOrigin, startTcp, type Origin } from '../../helpers/origin.js';
import { run, startCli, type Running } from '../../helpers/process.js';
import { socks5Connect, socks5Open } from '../../helpers/socks5.js';
import { requireCapability } from '../../helpers/env.js';
import { eventually } from '../../helpers/settle.js';
import { gatewayConfig } from '../../../bridge/gateway/config.js';
import { Gateway } from '../../../bridge/gateway/server.js';
import { bridgeConfig } from '../../../bridge/local/config.js';
import { Bridge } from '../../../bridge/local/server.js';
import type { BridgeLine } from '../../../bridge/log.js';
import { nativeRelayStatus, releasedToNative } from '../../../bridge/native/loader.js';
import { GatewayPool } from '../../../bridge/upstream/pool.js';
import { encodeSocks4Request } from '../../../shared/socks5/codec.js';
import { CMD } from '../../../shared/socks5/constants.js';

const dir = mkdtempSync(join(tmpdir(), 'dualsocks-start-'));
writeFileSync(join(dir, 'hosts'), '127.0.0.1 web.test\n');

describe('dualsocks start (bridge with an in-process gateway)', () => {
  let origin: Origin;
  let bridge: Running;
  let port: number;

  before(async () => {
    origin = await startOrigin('127.0.0.1');
    bridge = await startCli(['start', '--listen', '127.0.0.1:0', '--hosts', join(dir, 'hosts'), '--dns', 'none', '--allow', '127.0.0.1', '--pac-proxy', 'proxy.example:3128']);
    port = bridge.listening[0]!.port;
  });
  after(async () => {
    await bridge.stop();
    await origin.close();
  });

  test('prints where the proxy, the PAC and the status page are', async () => {
    await bridge.waitStderr(/status:/);
    const text = bridge.stderr.join('\n');
    assert.match(text, /in process on 127\.0\.0\.1:\d+/);
    assert.match(text, new RegExp(`PAC file: +http://127\\.0\\.0\\.1:${port}/proxy\\.pac`));
    assert.match(text, /status: +http:\/\/127\.0\.0\.1:\d+\/ +and/);
  });

  test('HTTP, CONNECT, SOCKS5 and SOCKS4a on the one port reach a name only the gateway knows', async () => {
    const url = `http://web.test:${origin.port}/blob.bin`;
    for (const proxy of [['-x', `http://127.0.0.1:${port}`], ['-p', '-x', `http://127.0.0.1:${port}`], ['--socks5-hostname', `127.0.0.1:${port}`], ['--socks4a', `127.0.0.1:${port}`]]) {
      const r = await run('curl', ['-sS', '--max-time', '20', ...proxy, url]);
      assert.equal(r.code, 0, `${proxy.join(' ')}: ${r.stderr}`);
      assert.equal(sha256(r.stdout), origin.blobSha256, proxy.join(' '));
    }
    // the in-process gateway logs each connection with the name it resolved
    const rec = await bridge.waitRecord((x) => x.host === 'web.test' && x.result === 'ok' && x.inbound === undefined);
    assert.equal(rec.address, '127.0.0.1');
  });

  test('a first byte that is neither SOCKS nor HTTP gets a 400 in words, and the port keeps serving', async () => {
    const s = connect({ host: '127.0.0.1', port });
    s.end(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 13, 10, 13, 10]));
    const answer = (await readAll(s)).toString();
    assert.match(answer, /^HTTP\/1\.1 400 /);
    const r = await run('curl', ['-sS', '-x', `http://127.0.0.1:${port}`, `http://web.test:${origin.port}/`]);
    assert.equal(r.stdout.toString(), 'hello from origin');
  });

  test('one JSON line per finished connection: how it came in, the gateway and BND, bytes, result', async () => {
    const via = `127.0.0.1:${port}`;
    assert.equal((await run('curl', ['-sS', '-x', `http://${via}`, `http://web.test:${origin.port}/`])).code, 0);
    assert.equal((await run('curl', ['-sS', '-p', '-x', `http://${via}`, `http://web.test:${origin.port}/`])).code, 0);
    assert.equal((await run('curl', ['-sS', '--socks5-hostname', via, `http://web.test:${origin.port}/`])).code, 0);
    assert.notEqual((await run('curl', ['-sS', '--socks5-hostname', via, 'http://unknown.test/'])).code, 0);
    const http = await bridge.waitRecord((r) => r.inbound === 'http' && r.host === 'web.test');
    assert.equal(http.method, 'GET');
    assert.equal(http.status, 200);
    assert.equal(http.result, 'ok');
    assert.equal(http.client, '127.0.0.1');
    for (const inbound of ['connect', 'socks5']) {
      const r = await bridge.waitRecord((x) => x.inbound === inbound && x.host === 'web.test');
      assert.equal(r.result, 'ok');
      assert.equal(r.port, origin.port);
      // the in-process gateway asks the bridge for its password, which the log never shows
      assert.match(String(r.gateway), /^socks5:\/\/bridge:\*\*\*@127\.0\.0\.1:\d+$/);
      assert.match(String(r.bound), /^127\.0\.0\.1:\d+$/, 'BND from the gateway');
      assert.ok(Number(r.bytesDown) > 'hello from origin'.length, 'the response came back through the tunnel');
      assert.ok(Number(r.bytesUp) > 0);
    }
    const failed = await bridge.waitRecord((r) => r.inbound === 'socks5' && r.host === 'unknown.test');
    assert.equal(failed.result, 'ERR_NAME_NOT_FOUND', "the gateway's own code");
    assert.equal(failed.rep, 4, "the gateway's reply: name not found");
    // the in-process gateway logs its own line for the same request (resolved address, family)
    const gw = await bridge.waitRecord((r) => r.inbound === undefined && r.host === 'web.test' && r.cmd === 'connect');
    assert.equal(gw.address, '127.0.0.1');
  });

  test('the PAC names the configured proxy address and never a type that resolves locally', async () => {
    const r = await run('curl', ['-sS', `http://127.0.0.1:${port}/proxy.pac`]);
    const pac = r.stdout.toString();
    assert.doesNotMatch(pac, /"SOCKS |SOCKS4|dnsResolve\(|isInNet\(/);
    const qjs = await QuickJS.create();
    const find = createPacResolver(qjs, pac);
    assert.equal(await find('http://example.com/', 'example.com'), 'SOCKS5 proxy.example:3128; PROXY proxy.example:3128');
    assert.equal(await find('http://192.168.1.1/', '192.168.1.1'), 'DIRECT');
    assert.equal(await find('http://[2001:db8::1]/', '2001:db8::1'), 'SOCKS5 proxy.example:3128; PROXY proxy.example:3128');
  });
});

describe('dualsocks bridge reloads --rules on SIGHUP', () => {
  test('the PAC follows the new file; a file that does not parse keeps the previous rules', async () => {
    const rules = join(dir, 'reload-rules.json');
    writeFileSync(rules, JSON.stringify({ mode: 'all', bypass: [] }));
    // the gateway need not answer: only the rules are looked at
    const b = await startCli(['bridge', '--listen', '127.0.0.1:0', '--gateway', 'socks5://127.0.0.1:9', '--rules', rules, '--health-interval', '3600']);
    const qjs = await QuickJS.create();
    const route = async (url: string, host: string): Promise<string> => {
      const pac = (await run('curl', ['-sS', `http://127.0.0.1:${b.listening[0]!.port}/proxy.pac`])).stdout.toString();
      return createPacResolver(qjs, pac)(url, host);
    };
    try {
      assert.match(await route('http://example.com/', 'example.com'), /^SOCKS5 /);
      writeFileSync(rules, JSON.stringify({ mode: 'all', bypass: ['example.com'] }));
      b.proc.kill('SIGHUP');
      await b.waitStderr(/SIGHUP: rules reloaded from /);
      assert.equal(await route('http://example.com/', 'example.com'), 'DIRECT');
      writeFileSync(rules, '{ "mode": ');
      b.proc.kill('SIGHUP');
      assert.match(await b.waitStderr(/SIGHUP: --rules not reloaded/), /not valid JSON/);
      assert.equal(await route('http://example.com/', 'example.com'), 'DIRECT', 'the previous rules stay');
      assert.equal(b.proc.exitCode, null, 'still running');
    } finally {
      await b.stop();
    }
  });
});

/** Sends `bytes` one every `everyMs` until the peer closes (a paced client: the time between bytes is the point); resolves with what came back. */
function trickle(port: number, bytes: Uint8Array, everyMs: number): Promise<{ answer: Buffer; sent: number }> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    const parts: Buffer[] = [];
    let sent = 0;
    const timer = setInterval(() => {
      if (sent < bytes.length && s.writable) s.write(bytes.subarray(sent, ++sent));
    }, everyMs);
    s.on('data', (d: Buffer) => parts.push(d));
    s.on('error', () => {});
    s.once('close', () => {
      clearInterval(timer);
      resolve({ answer: Buffer.concat(parts), sent });
    });
  });
}

describe('bridge handshake timeout (slow clients)', () => {
  test('an HTTP head, a SOCKS5 and a SOCKS4 handshake trickled byte by byte, and a silent client, are closed by --handshake-timeout (HTTP with a 408); an oversized head gets a 431', async () => {
    // the gateway need not answer: no request is ever complete
    const b = await startCli(['bridge', '--listen', '127.0.0.1:0', '--gateway', 'socks5://127.0.0.1:9', '--handshake-timeout', '1', '--health-interval', '3600']);
    const port = b.listening[0]!.port;
    try {
      const head = Buffer.from('GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nX-Slow: ' + 'a'.repeat(200) + '\r\n\r\n');
      const socks5 = Buffer.from(socks5Connect('example.com', 80));
      const socks4 = Buffer.from(encodeSocks4Request({ cmd: CMD.CONNECT, host: 'example.com', port: 80, userId: 'someone' }));
      // one byte every 200 ms: the bridge closes each long before it is complete (bounded by the test runner only)
      const [http, s5, s4, silent] = await Promise.all([trickle(port, head, 200), trickle(port, Buffer.concat([socks5, Buffer.alloc(400)]), 200), trickle(port, Buffer.concat([socks4, Buffer.alloc(400)]), 200), trickle(port, new Uint8Array(0), 200)]);
      assert.match(http.answer.toString(), /^HTTP\/1\.1 408 Request Timeout\r\n/);
      assert.ok(http.sent < head.length, 'closed before the head was complete');
      assert.ok(s5.sent < socks5.length, 'SOCKS5 closed before the request was complete');
      assert.ok(s4.sent < socks4.length, 'SOCKS4 closed before the request was complete');
      assert.equal(silent.answer.length, 0);
      // the head size cap (request line included)
      const big = connect({ host: '127.0.0.1', port });
      big.on('error', () => {});
      big.write(`GET http://example.com/${'x'.repeat(20_000)} HTTP/1.1\r\nHost: example.com\r\n\r\n`);
      assert.match((await readAll(big)).toString(), /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/);
      assert.equal(b.proc.exitCode, null, 'still running');
    } finally {
      await b.stop();
    }
  });
});

describe('bridge: what a tunnel the native relay took over keeps alive', () => {
  const status = nativeRelayStatus();
  const skip = requireCapability('native splice relay', status.available, status.reason);
  test('not the client socket nor the tunnel\'s (SOCKS5, HTTP CONNECT): only the log line waits for the end', { skip, timeout: 60_000 }, async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    // idle until the client leaves, then it closes too
    const held = await startTcp('127.0.0.1', (s) => s.resume().once('end', () => s.end()));
    const gw = new Gateway(gatewayConfig(['--listen', '127.0.0.1:0', '--hosts', join(dir, 'hosts'), '--dns', 'none', '--allow', '127.0.0.1']), () => {});
    const gwPort = (await gw.listen())[0]!.port;
    const hops = [[{ host: '127.0.0.1', port: gwPort }]];
    const pool = new GatewayPool(hops, { balance: 'round-robin', connectTimeoutMs: 5000, healthIntervalMs: 60_000 });
    const bridge = new Bridge(bridgeConfig({ listen: ['127.0.0.1:0'] }, hops), pool, 'test');
    const records: BridgeLine[] = [];
    bridge.state.log = (r) => records.push(r);
    // the socket of each tunnel through the gateway, and the bridge's side of each client
    // connection, watched without being held
    let upstream: WeakRef<Socket> | undefined;
    const open = pool.open.bind(pool);
    pool.open = async (...args) => {
      const t = await open(...args);
      upstream = new WeakRef(t.socket);
      return t;
    };
    const proto = Bridge.prototype as unknown as { accept(s: Socket): void };
    const accept = proto.accept;
    let accepted: WeakRef<Socket> | undefined;
    proto.accept = function (this: Bridge, s: Socket) {
      accepted = new WeakRef(s);
      accept.call(this, s);
    };
    try {
      const port = (await bridge.listen())[0]!.port;
      const dials: [string, () => Promise<Socket>][] = [
        ['socks5', async () => (await socks5Open(port, { cmd: CMD.CONNECT, host: 'web.test', port: held.port })).socket],
        ['connect', () => httpConnect(port, `web.test:${held.port}`)],
      ];
      for (const [inbound, dial] of dials) {
        accepted = upstream = undefined;
        const client = await dial();
        client.write('x');
        client.resume();
        const released = (w: WeakRef<Socket> | undefined): boolean => w?.deref()?.destroyed === true && releasedToNative(w.deref()!);
        await eventually(() => released(accepted) && released(upstream), `${inbound}: both sockets handed to the native relay and released`);
        // the tunnel is still open (idle), so its end has not come: nothing may hold the sockets now
        await eventually(async () => {
          gc();
          await new Promise((r) => setImmediate(r));
          return accepted!.deref() === undefined && upstream!.deref() === undefined;
        }, `${inbound}: the released sockets collected while their tunnel is open`, { describe: () => ({ client: accepted!.deref() !== undefined, upstream: upstream!.deref() !== undefined }) });
        assert.equal(bridge.state.open, 1, inbound);
        assert.equal(records.length, 0, inbound);
        // and the end is still logged, with its counts
        client.end();
        await eventually(() => records.length === 1, `${inbound}: the log line at the end`);
        const line = records.pop()! as Record<string, unknown>;
        assert.deepEqual([line.inbound, line.result, line.bytesUp], [inbound, 'ok', 1]);
        await eventually(() => bridge.state.open === 0 && pool.health[0]!.active === 0, `${inbound}: the open counts back to 0`);
        client.destroy();
      }
    } finally {
      proto.accept = accept;
      await bridge.close();
      await gw.close();
      await held.close();
    }
  });
});

/** An HTTP CONNECT tunnel through the proxy at `port`: the socket, once the 200 is read. */
function httpConnect(port: number, authority: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port }, () => s.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`));
    let head = '';
    const onData = (d: Buffer): void => {
      head += d.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      s.off('data', onData);
      s.pause();
      if (/^HTTP\/1\.1 200 /.test(head)) resolve(s);
      else reject(new Error(`CONNECT refused: ${head}`));
    };
    s.on('data', onData);
    s.once('error', reject);
  });
}
