// The bridge's HTTP proxy side with real clients (curl, http-proxy-agent, raw sockets) in front
// of a real gateway process. Names live only in the gateway's hosts file, so every success proves
// the bridge passed the name on unresolved.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { get as httpGet, request as httpRequest, createServer as createHttpServer, type IncomingMessage, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { HttpProxyAgent } from 'http-proxy-agent';
import { createHttpFrontend, endToEndHeaders, parseAbsoluteUri, parseAuthority } from '../../../bridge/local/http.js';
import type { BridgeContext } from '../../../bridge/local/context.js';
import { BridgeState } from '../../../bridge/local/state.js';
import { relay } from '../../../bridge/relay.js';
import { GatewayPool } from '../../../bridge/upstream/pool.js';
import { DEFAULT_SETTINGS } from '../../../shared/rules/index.js';
import { haveCommand, requireCapability } from '../../helpers/env.js';
import { sha256, startOrigin, startTcp, type Origin } from '../../helpers/origin.js';
import { run, startCli, type Running } from '../../helpers/process.js';
import { eventually } from '../../helpers/settle.js';

const dir = mkdtempSync(join(tmpdir(), 'dualsocks-http-'));
const hostsFile = join(dir, 'hosts');
writeFileSync(hostsFile, ['127.0.0.1 web.test', '127.0.0.1 other.test', '127.0.0.1 pooled.test', '127.0.0.1 stale.test', '127.0.0.2 denied.test', '::1 web6.test'].join('\n'));
const GW_ARGS = ['gateway', '--listen', '127.0.0.1:0', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1', '--allow', '::1'];

interface TestBridge {
  port: number;
  ctx: BridgeContext;
  /** Client connections the listener accepted. */
  accepted(): number;
  close(): Promise<void>;
}

/** A bridge built from the real pieces: pool → gateway, state, the HTTP frontend behind a sniffing listener. */
async function startBridge(gatewayPort: number): Promise<TestBridge> {
  const pool = new GatewayPool([[{ host: '127.0.0.1', port: gatewayPort }]], { balance: 'round-robin', connectTimeoutMs: 5000, healthIntervalMs: 60_000 });
  const state = new BridgeState('test', pool, DEFAULT_SETTINGS);
  const ctx: BridgeContext = {
    state,
    open: (host, port) => pool.open(host, port),
    relay: (c, t) => relay(c, t.socket, { idleTimeoutMs: 0 }).finally(() => t.release()),
    rules: () => DEFAULT_SETTINGS,
    idleTimeoutMs: 0,
    port: 0,
  };
  const http = createHttpFrontend(ctx);
  const sockets = new Set<Socket>();
  let accepted = 0;
  // like the mixed-port listener: peek the first byte, put it back, hand the socket over
  const server: Server = createServer({ allowHalfOpen: true }, (s) => {
    accepted++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
    s.once('data', (first: Buffer) => {
      s.pause();
      s.unshift(first);
      http.emit('connection', s);
      s.resume();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  ctx.port = port;
  state.listen = [`127.0.0.1:${port}`];
  return {
    port,
    ctx,
    accepted: () => accepted,
    close: () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy();
        http.close();
        server.close(() => r());
      }),
  };
}

const curl = (args: string[]) => run('curl', ['-sS', '--max-time', '20', ...args]);

/** Sends raw bytes and reads until the server closes (or `until` matches what arrived). */
function rawExchange(port: number, data: string | Buffer, until?: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port });
    let got = '';
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (until?.test(got)) {
        s.destroy();
        resolve(got);
      }
    });
    s.on('close', () => resolve(got));
    s.on('error', reject);
    s.write(data);
  });
}

/** Parses "HTTP/1.1 502 Reason\r\nheaders\r\n\r\nbody". */
function parseResponse(raw: string): { status: number; reason: string; headers: Record<string, string>; body: string } {
  const [head, ...rest] = raw.split('\r\n\r\n');
  const [statusLine, ...lines] = head!.split('\r\n');
  const m = /^HTTP\/1\.1 (\d{3}) (.*)$/.exec(statusLine!);
  assert.ok(m, `status line: ${JSON.stringify(statusLine)}`);
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const i = l.indexOf(':');
    headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
  }
  let body = rest.join('\r\n\r\n');
  if (headers['transfer-encoding'] === 'chunked') {
    let out = '';
    for (let at = 0; ; ) {
      const eol = body.indexOf('\r\n', at);
      const size = parseInt(body.slice(at, eol), 16);
      if (!(size > 0)) break;
      out += body.slice(eol + 2, eol + 2 + size);
      at = eol + 2 + size + 2;
    }
    body = out;
  }
  return { status: Number(m[1]), reason: m[2]!, headers, body };
}

/** An origin for what the helper origin does not do: upload checksums and hop-by-hop response headers. */
async function startUploadOrigin(): Promise<{ server: HttpServer; port: number; close(): Promise<void> }> {
  const server = createHttpServer((req, res) => {
    if (req.url === '/sha') {
      const h = createHash('sha256');
      let n = 0;
      req.on('data', (d: Buffer) => {
        h.update(d);
        n += d.length;
      });
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ sha256: h.digest('hex'), bytes: n, method: req.method, te: req.headers['transfer-encoding'] ?? null, cl: req.headers['content-length'] ?? null }));
      });
    } else if (req.url === '/hop-response') {
      res.writeHead(200, [
        'Content-Type', 'text/plain',
        'Connection', 'X-Secret-Hop',
        'X-Secret-Hop', 'should not pass',
        'Keep-Alive', 'timeout=5',
        'Via', '1.0 upstream-cache',
        'X-End-To-End', 'kept',
      ]);
      res.end('hop');
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    server,
    port: (server.address() as AddressInfo).port,
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}

describe('parsing request targets', () => {
  test('authority form for CONNECT', () => {
    assert.deepEqual(parseAuthority('web.test:443'), { host: 'web.test', port: 443 });
    assert.deepEqual(parseAuthority('[2001:db8::1]:443'), { host: '2001:db8::1', port: 443 });
    assert.deepEqual(parseAuthority('192.0.2.1:8080'), { host: '192.0.2.1', port: 8080 });
    for (const bad of ['web.test', 'web.test:0', 'web.test:65536', 'web.test:-1', '2001:db8::1:443', '[web.test]:443', 'bad host:443', 'bücher.de:443', ':443', '[::1]443']) {
      assert.equal(parseAuthority(bad), null, bad);
    }
  });

  test('absolute URIs: only http, userinfo dropped, path kept as sent', () => {
    const ok = parseAbsoluteUri('http://user:pw@web.test:8080/a/../b?q=%41#frag');
    assert.ok(ok.ok);
    assert.deepEqual([ok.target, ok.authority, ok.path], [{ host: 'web.test', port: 8080 }, 'web.test:8080', '/a/../b?q=%41']);
    const bare = parseAbsoluteUri('HTTP://[::1]?x');
    assert.ok(bare.ok);
    assert.deepEqual([bare.target, bare.path], [{ host: '::1', port: 80 }, '/?x']);
    const https = parseAbsoluteUri('https://web.test/');
    assert.ok(!https.ok && https.status === 501 && /CONNECT/.test(https.text));
    const ftp = parseAbsoluteUri('ftp://web.test/file');
    assert.ok(!ftp.ok && ftp.status === 501 && /ftp:\/\//.test(ftp.text));
    const port = parseAbsoluteUri('http://web.test:99999/');
    assert.ok(!port.ok && port.status === 400);
    assert.ok(!parseAbsoluteUri('web.test/').ok);
  });

  test('hop-by-hop headers, including those Connection lists, are removed', () => {
    const raw = ['Host', 'a', 'Connection', 'keep-alive, X-Foo', 'X-Foo', '1', 'Keep-Alive', '5', 'TE', 'trailers', 'Trailer', 'X', 'Transfer-Encoding', 'chunked', 'Upgrade', 'h2c', 'Proxy-Connection', 'keep-alive', 'Proxy-Authorization', 'Basic x', 'Proxy-Authenticate', 'Basic', 'Accept', '*/*'];
    assert.deepEqual(endToEndHeaders(raw), ['Host', 'a', 'Accept', '*/*']);
  });
});

describe('HTTP proxy through a real gateway', () => {
  let gw: Running;
  let bridge: TestBridge;
  let origin: Origin;
  let upload: Awaited<ReturnType<typeof startUploadOrigin>>;

  before(async () => {
    origin = await startOrigin('127.0.0.1');
    upload = await startUploadOrigin();
    gw = await startCli(GW_ARGS);
    bridge = await startBridge(gw.listening[0]!.port);
  });
  after(async () => {
    await bridge.close();
    await gw.stop();
    await origin.close();
    await upload.close();
  });

  test('curl -x fetches by a name only the gateway knows: page and a multi-MB blob, byte-exact', async () => {
    const page = await curl(['-x', `http://127.0.0.1:${bridge.port}`, `http://web.test:${origin.port}/`]);
    assert.equal(page.code, 0, page.stderr);
    assert.equal(page.stdout.toString(), 'hello from origin');
    const blob = await curl(['-x', `http://127.0.0.1:${bridge.port}`, `http://web.test:${origin.port}/blob.bin`]);
    assert.equal(blob.code, 0, blob.stderr);
    assert.equal(sha256(blob.stdout), origin.blobSha256);
    const rec = await gw.waitRecord((r) => r.host === 'web.test');
    assert.equal(rec.address, '127.0.0.1', 'the gateway resolved the name');
    assert.equal(origin.hosts.at(-1), `web.test:${origin.port}`, 'Host as the client sent it');
  });

  test('the status records the destination and the family the gateway reached it over', () => {
    const snap = bridge.ctx.state.snapshot();
    const r = snap.recent.find((x) => x.host === 'web.test' && x.via === 'http');
    assert.ok(r, JSON.stringify(snap.recent));
    assert.equal(r.result, 'ok');
    assert.equal(r.family, 4);
    assert.ok(snap.connections.byInbound.http >= 2);
  });

  test('uploads are streamed: Content-Length and chunked bodies arrive intact', async () => {
    const body = Buffer.alloc(3 * 1024 * 1024, 7);
    for (let i = 0; i < body.length; i += 997) body[i] = i & 0xff;
    const file = join(dir, 'upload.bin');
    writeFileSync(file, body);
    const fixed = await curl(['-x', `http://127.0.0.1:${bridge.port}`, '--data-binary', `@${file}`, `http://web.test:${upload.port}/sha`]);
    assert.equal(fixed.code, 0, fixed.stderr);
    const a = JSON.parse(fixed.stdout.toString()) as { sha256: string; bytes: number; cl: string | null };
    assert.deepEqual([a.sha256, a.bytes, a.cl], [sha256(body), body.length, String(body.length)]);
    // -T - sends a chunked PUT from stdin
    const chunked = await run('curl', ['-sS', '--max-time', '20', '-x', `http://127.0.0.1:${bridge.port}`, '-T', '-', `http://web.test:${upload.port}/sha`], { input: body });
    assert.equal(chunked.code, 0, chunked.stderr);
    const b = JSON.parse(chunked.stdout.toString()) as { sha256: string; method: string; te: string | null };
    assert.deepEqual([b.sha256, b.method, b.te], [sha256(body), 'PUT', 'chunked']);
  });

  test("hop-by-hop headers are stripped both ways; Via is added; Host is the target URI's", async () => {
    const req =
      `GET http://web.test:${origin.port}/echo-headers HTTP/1.1\r\n` +
      `Host: web.test:${origin.port}\r\n` +
      'Connection: X-Foo, close\r\nX-Foo: secret\r\nKeep-Alive: 300\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\n' +
      'Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic dXNlcjpwdw==\r\nVia: 1.0 client-side\r\nX-Kept: yes\r\n\r\n';
    const res = parseResponse(await rawExchange(bridge.port, req));
    assert.equal(res.status, 200);
    const seen = JSON.parse(res.body) as Record<string, string>;
    for (const h of ['x-foo', 'keep-alive', 'te', 'trailer', 'upgrade', 'proxy-connection', 'proxy-authorization']) assert.equal(seen[h], undefined, h);
    assert.equal(seen['x-kept'], 'yes');
    assert.equal(seen.via, '1.0 client-side, 1.1 dualsocks');
    assert.equal(seen.host, `web.test:${origin.port}`);
    // RFC 9112 §3.2.2: a Host that disagrees with the absolute-form target is replaced, not passed on
    const mismatched = parseResponse(await rawExchange(bridge.port, `GET http://web.test:${origin.port}/echo-headers HTTP/1.1\r\nHost: other.example\r\nhost: third.example\r\nConnection: close\r\n\r\n`));
    assert.equal(mismatched.status, 200);
    assert.equal((JSON.parse(mismatched.body) as Record<string, string>).host, `web.test:${origin.port}`);

    const back = parseResponse(await rawExchange(bridge.port, `GET http://web.test:${upload.port}/hop-response HTTP/1.1\r\nHost: web.test:${upload.port}\r\nConnection: close\r\n\r\n`));
    assert.equal(back.status, 200);
    assert.equal(back.headers['x-secret-hop'], undefined);
    assert.equal(back.headers['x-end-to-end'], 'kept');
    assert.equal(back.headers.via, '1.0 upstream-cache, 1.1 dualsocks');
    assert.equal(back.body, 'hop');
  });

  test('client keep-alive: several URLs on different hosts over one client connection', async () => {
    const before = bridge.accepted();
    const r = await curl(['-v', '-x', `http://127.0.0.1:${bridge.port}`, `http://web.test:${origin.port}/`, `http://other.test:${origin.port}/`, `http://127.0.0.1:${upload.port}/hop-response`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString(), 'hello from originhello from originhop');
    assert.match(r.stderr, /Re-using existing connection/);
    assert.equal(bridge.accepted() - before, 1, 'one client connection for all three');
  });

  test('keep-alive to the origin: repeated requests reuse a pooled tunnel', async () => {
    const before = gw.records().length;
    const agent = new HttpProxyAgent(`http://127.0.0.1:${bridge.port}`, { keepAlive: true });
    for (let i = 0; i < 5; i++) {
      const body = await fetchVia(agent, `http://pooled.test:${origin.port}/`);
      assert.equal(body.toString(), 'hello from origin');
    }
    agent.destroy();
    const tunnels = bridge.ctx.state.snapshot().recent.filter((x) => x.host === 'pooled.test').length;
    assert.equal(tunnels, 1, 'five requests, one tunnel through the gateway');
    // nothing new finished at the gateway: the pooled tunnel is still open
    assert.equal(gw.records().filter((r, i) => i >= before && r.host === 'pooled.test').length, 0);
  });

  test('an origin closing idle keep-alive connections never fails the next request', async () => {
    const agent = new HttpProxyAgent(`http://127.0.0.1:${bridge.port}`, { keepAlive: true });
    try {
      // whether the FIN reaches the pooled tunnel before the next request or not, it must succeed
      for (let i = 0; i < 20; i++) {
        const body = await fetchVia(agent, `http://stale.test:${upload.port}/hop-response`);
        assert.equal(body.toString(), 'hop', `request ${i}`);
        upload.server.closeIdleConnections();
      }
    } finally {
      agent.destroy();
    }
  });

  test('HEAD and 304-style bodiless answers do not hang the client connection', async () => {
    const r = await curl(['-sS', '-I', '-x', `http://127.0.0.1:${bridge.port}`, `http://web.test:${origin.port}/blob.bin`, `http://web.test:${origin.port}/`]);
    assert.equal(r.code, 0, r.stderr);
    const text = r.stdout.toString();
    assert.match(text, new RegExp(`content-length: ${origin.blob.length}`, 'i'));
    assert.equal((text.match(/^HTTP\/1\.1 200 /gm) ?? []).length, 2);
  });

  test('http-proxy-agent as a Node client: GET and a POST with a body', async () => {
    const agent = new HttpProxyAgent(`http://127.0.0.1:${bridge.port}`);
    const blob = await fetchVia(agent, `http://web.test:${origin.port}/blob.bin`);
    assert.equal(sha256(blob), origin.blobSha256);
    const payload = Buffer.from('x'.repeat(100_000));
    const posted = await new Promise<Buffer>((resolve, reject) => {
      const req = httpRequest(`http://web.test:${upload.port}/sha`, { agent, method: 'POST', headers: { 'content-length': payload.length } }, (res) => collect(res).then(resolve, reject));
      req.on('error', reject);
      req.end(payload);
    });
    assert.equal((JSON.parse(posted.toString()) as { sha256: string }).sha256, sha256(payload));
    agent.destroy();
  });

  test('CONNECT (curl -p) to an HTTP origin and a raw echo server, with pipelined bytes', async () => {
    const tunnelled = await curl(['-p', '-x', `http://127.0.0.1:${bridge.port}`, `http://web.test:${origin.port}/blob.bin`]);
    assert.equal(tunnelled.code, 0, tunnelled.stderr);
    assert.equal(sha256(tunnelled.stdout), origin.blobSha256);

    const echo = await startTcp('127.0.0.1', (s) => s.pipe(s));
    try {
      // bytes sent right behind the CONNECT head (the `head` Node hands over) must not be lost
      const got = await rawExchange(bridge.port, `CONNECT web.test:${echo.port} HTTP/1.1\r\nHost: web.test:${echo.port}\r\n\r\nping-early`, /ping-early/);
      assert.match(got, /^HTTP\/1\.1 200 Connection Established\r\n\r\nping-early/);
    } finally {
      await echo.close();
    }
    const r = bridge.ctx.state.snapshot().recent.find((x) => x.via === 'connect');
    assert.equal(r?.result, 'ok');
  });

  test('CONNECT to an IPv6 literal and to a name the gateway maps to ::1', async () => {
    const echo = await startTcp('::1', (s) => s.pipe(s));
    try {
      for (const authority of [`[::1]:${echo.port}`, `web6.test:${echo.port}`]) {
        const got = await rawExchange(bridge.port, `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\nv6-hello`, /v6-hello/);
        assert.match(got, /^HTTP\/1\.1 200 /, authority);
      }
      const r = bridge.ctx.state.snapshot().recent.find((x) => x.host === 'web6.test');
      assert.equal(r?.family, 6, 'BND.ADDR shows the gateway reached it over IPv6');
    } finally {
      await echo.close();
    }
  });

  test('https through CONNECT to a TLS origin (curl -k, certificate made by openssl)', { skip: requireCapability('openssl', haveCommand('openssl', ['version']), 'install openssl') }, async () => {
    const key = join(dir, 'key.pem');
    const cert = join(dir, 'cert.pem');
    const gen = await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=web.test', '-addext', 'subjectAltName=DNS:web.test']);
    assert.equal(gen.code, 0, gen.stderr);
    const tls = createHttpsServer({ key: readFileSync(key), cert: readFileSync(cert) }, (_req, res) => res.end(origin.blob));
    await new Promise<void>((r) => tls.listen(0, '127.0.0.1', r));
    try {
      const port = (tls.address() as AddressInfo).port;
      const r = await curl(['-k', '-x', `http://127.0.0.1:${bridge.port}`, `https://web.test:${port}/`]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(sha256(r.stdout), origin.blobSha256);
      // and with the certificate checked against the name the browser asked for
      const strict = await curl(['--cacert', cert, '-x', `http://127.0.0.1:${bridge.port}`, `https://web.test:${port}/`]);
      assert.equal(strict.code, 0, strict.stderr);
    } finally {
      tls.closeAllConnections();
      await new Promise((r) => tls.close(r));
    }
  });

  test('failures become plain-words 502 pages with X-Dualsocks-Error, for plain requests and CONNECT', async () => {
    const closed = await freePort();
    // the gateway names its exact error (METHOD.ERROR_CODES), which picks the words and the header
    const cases: [string, RegExp, RegExp, string][] = [
      [`nowhere.test:80`, /^Name Not Found$/, /could not find this name/, 'ERR_NAME_NOT_FOUND'],
      [`web.test:${closed}`, /^Refused By Destination$/, /refused/, 'ERR_CONNECTION_REFUSED'],
      [`denied.test:${origin.port}`, /^Not Allowed By Gateway Policy$/, /policy/, 'ERR_POLICY_DESTINATION'],
    ];
    for (const [authority, reason, text, code] of cases) {
      const r = await curl(['-i', '-x', `http://127.0.0.1:${bridge.port}`, `http://${authority}/`]);
      assert.equal(r.code, 0, r.stderr);
      const res = parseResponse(r.stdout.toString('latin1'));
      assert.equal(res.status, 502, authority);
      assert.match(res.reason, reason);
      assert.equal(res.headers['x-dualsocks-error'], code);
      assert.match(res.body, text);
      assert.ok(res.body.includes(authority), res.body);

      const raw = parseResponse(await rawExchange(bridge.port, `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`));
      assert.equal(raw.status, 502);
      assert.match(raw.reason, reason);
      assert.equal(raw.headers['x-dualsocks-error'], code);
      assert.match(raw.body, text);
    }
    // curl reports the CONNECT status
    const p = await curl(['-p', '-x', `http://127.0.0.1:${bridge.port}`, 'http://nowhere.test/']);
    assert.notEqual(p.code, 0);
    assert.match(p.stderr, /502/);
    const failed = bridge.ctx.state.snapshot().recent.filter((x) => x.host === 'nowhere.test');
    assert.ok(failed.length >= 2 && failed.every((x) => x.result === 'ERR_NAME_NOT_FOUND'));
  });

  test('the bridge\'s own pages through the proxy are served locally, not looped', async () => {
    for (const host of ['127.0.0.1', 'localhost']) {
      const r = await curl(['-i', '-x', `http://127.0.0.1:${bridge.port}`, `http://${host}:${bridge.port}/proxy.pac`]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout.toString(), /^HTTP\/1\.1 200 /);
      assert.match(r.stdout.toString(), /FindProxyForURL/);
    }
    const other = parseResponse((await curl(['-i', '-x', `http://127.0.0.1:${bridge.port}`, `http://127.0.0.1:${bridge.port}/nothing`])).stdout.toString());
    assert.equal(other.status, 400);
    const loop = parseResponse(await rawExchange(bridge.port, `CONNECT 127.0.0.1:${bridge.port} HTTP/1.1\r\n\r\n`));
    assert.equal(loop.status, 400);
    assert.match(loop.body, /bridge itself/);
  });

  test('clients that vanish mid-upload or mid-download are cleaned up and harm nobody', async () => {
    const open = (): number => bridge.ctx.state.snapshot().connections.open;
    const upAbort = connect({ host: '127.0.0.1', port: bridge.port });
    upAbort.write(`POST http://web.test:${upload.port}/sha HTTP/1.1\r\nHost: web.test\r\nContent-Length: 10000000\r\n\r\n${'u'.repeat(100_000)}`);
    const downAbort = connect({ host: '127.0.0.1', port: bridge.port });
    downAbort.write(`GET http://web.test:${origin.port}/blob.bin HTTP/1.1\r\nHost: web.test\r\n\r\n`);
    await readUntil(downAbort, /\r\n\r\n[^]{1000}/);
    downAbort.destroy();
    upAbort.destroy();
    await eventually(() => open() === 0, 'both exchanges counted as closed', { timeoutMs: 5000, describe: open });
    const page = await curl(['-x', `http://127.0.0.1:${bridge.port}`, `http://web.test:${origin.port}/`]);
    assert.equal(page.stdout.toString(), 'hello from origin');
  });

  test('bad input gets a 4xx in words; one client\'s garbage never disturbs another', async () => {
    // a tunnel that stays open while the garbage arrives
    const echo = await startTcp('127.0.0.1', (s) => s.pipe(s));
    const tunnel = connect({ host: '127.0.0.1', port: bridge.port });
    await new Promise((r) => tunnel.once('connect', r));
    tunnel.write(`CONNECT web.test:${echo.port} HTTP/1.1\r\n\r\n`);
    await readUntil(tunnel, /200 Connection Established\r\n\r\n/);
    try {
      const cases: [string | Buffer, number, RegExp][] = [
        ['\x01\x02garbage\r\n\r\n', 400, /HTTP proxy/],
        ['GET\r\n\r\n', 400, /HTTP proxy/],
        [Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]), 400, /not TLS/],
        [`GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, 431, /too large|larger/i],
        [`GET http://web.test:99999/ HTTP/1.1\r\nHost: web.test\r\n\r\n`, 400, /port/],
        [`GET http://bad_host!/ HTTP/1.1\r\nHost: x\r\n\r\n`, 400, /not a valid host/],
        [`GET ftp://web.test/file HTTP/1.1\r\nHost: web.test\r\n\r\n`, 501, /ftp:\/\//],
        [`GET https://web.test/ HTTP/1.1\r\nHost: web.test\r\n\r\n`, 501, /CONNECT/],
        ['GET /some/page HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n', 400, /a proxy/],
        ['CONNECT web.test HTTP/1.1\r\n\r\n', 400, /host:port/],
        ['CONNECT web.test:0 HTTP/1.1\r\n\r\n', 400, /host:port/],
        ['CONNECT [::1 HTTP/1.1\r\n\r\n', 400, /host:port/],
      ];
      for (const [input, status, words] of cases) {
        const raw = await rawExchange(bridge.port, input, /\r\n\r\n[^]*\n$/);
        const res = parseResponse(raw);
        assert.equal(res.status, status, JSON.stringify(input).slice(0, 60));
        assert.match(res.body, words, JSON.stringify(input).slice(0, 60));
      }
      tunnel.write('still alive');
      assert.match(await readUntil(tunnel, /still alive/), /still alive/);
      const page = await curl(['-x', `http://127.0.0.1:${bridge.port}`, `http://web.test:${origin.port}/`]);
      assert.equal(page.stdout.toString(), 'hello from origin');
    } finally {
      tunnel.destroy();
      await echo.close();
    }
  });
});

describe('HTTP proxy with no gateway reachable', () => {
  let bridge: TestBridge;
  before(async () => {
    bridge = await startBridge(await freePort());
  });
  after(() => bridge.close());

  test('plain requests and CONNECT get 502 "No Gateway Reachable"', async () => {
    const r = await curl(['-i', '-x', `http://127.0.0.1:${bridge.port}`, 'http://web.test/']);
    const res = parseResponse(r.stdout.toString());
    assert.equal(res.status, 502);
    assert.equal(res.reason, 'No Gateway Reachable');
    assert.equal(res.headers['x-dualsocks-error'], 'ERR_NO_GATEWAY');
    assert.match(res.body, /any of its gateways/);
    const c = parseResponse(await rawExchange(bridge.port, 'CONNECT web.test:443 HTTP/1.1\r\n\r\n'));
    assert.equal(c.status, 502);
    assert.equal(c.headers['x-dualsocks-error'], 'ERR_NO_GATEWAY');
    const snap = bridge.ctx.state.snapshot();
    assert.equal(snap.connections.failed, 2);
    assert.equal(snap.connections.open, 0);
  });

  test('the client connection stays usable after an error page', async () => {
    const before = bridge.accepted();
    const r = await curl(['-sv', '-x', `http://127.0.0.1:${bridge.port}`, 'http://web.test/', 'http://other.test/']);
    assert.match(r.stderr, /Re-using existing connection/);
    assert.equal((r.stdout.toString().match(/No Gateway Reachable/g) ?? []).length, 2);
    assert.equal(bridge.accepted() - before, 1);
  });
});

function collect(res: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    res.on('data', (d: Buffer) => parts.push(d));
    res.on('end', () => resolve(Buffer.concat(parts)));
    res.on('error', reject);
  });
}

function fetchVia(agent: HttpProxyAgent<string>, url: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    httpGet(url, { agent }, (res) => {
      if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}`));
      collect(res).then(resolve, reject);
    }).on('error', reject);
  });
}

function readUntil(s: Socket, re: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const onData = (d: Buffer): void => {
      got += d.toString('latin1');
      if (re.test(got)) {
        s.off('data', onData);
        resolve(got);
      }
    };
    s.on('data', onData);
    s.once('error', reject);
  });
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}
