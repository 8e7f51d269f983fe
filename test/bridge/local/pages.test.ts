// The bridge's own pages on the mixed port: the PAC (evaluated by a real PAC engine) with the
// proxy address the client used, and the status API/page that no web page may read.
import assert from 'node:assert/strict';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { createPacResolver } from 'pac-resolver';
import { QuickJS } from 'quickjs-wasi';
import type { BridgeContext } from '../../../bridge/local/context.js';
import { createHttpFrontend } from '../../../bridge/local/http.js';
import { checkAccess, isLoopbackHost, statusHtml } from '../../../bridge/local/pages.js';
import { BridgeState, type StatusSnapshot } from '../../../bridge/local/state.js';
import { relay } from '../../../bridge/relay.js';
import { GatewayPool } from '../../../bridge/upstream/pool.js';
import { DEFAULT_SETTINGS, decide, pacResult, parseSettings, type Settings } from '../../../shared/rules/index.js';
import { run } from '../../helpers/process.js';

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** Every response the tests saw, for the "never ACAO *" check. */
const seen: Reply[] = [];

/** A request with exactly the headers given (Host included, or none at all). */
function get(port: number, path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method, setHost: false, headers: { host: `127.0.0.1:${port}`, ...headers } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => {
        const r = { status: res.statusCode ?? 0, headers: res.headers, body };
        seen.push(r);
        resolve(r);
      });
    });
    req.on('error', reject);
    req.end();
  });
}

/** HTTP/1.0 without a Host header, on a raw socket. */
function rawGet(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s: Socket = connect({ host: '127.0.0.1', port });
    let got = '';
    s.on('data', (d: Buffer) => (got += d.toString()));
    s.on('close', () => resolve(got));
    s.on('error', reject);
    s.write(text);
  });
}

describe('bridge pages', () => {
  let settings: Settings = DEFAULT_SETTINGS;
  let server: Server;
  let port: number;
  let ctx: BridgeContext;
  let qjs: QuickJS;

  before(async () => {
    qjs = await QuickJS.create();
    // the pages never open tunnels: a pool pointing nowhere is enough
    const pool = new GatewayPool([[{ host: '127.0.0.1', port: 9 }]], { balance: 'round-robin', connectTimeoutMs: 1000, healthIntervalMs: 60_000 });
    const state = new BridgeState('9.9.9-test', pool, settings);
    ctx = {
      state,
      open: (host, p) => pool.open(host, p),
      relay: (c, t) => relay(c, t.socket, { idleTimeoutMs: 0 }).finally(() => t.release()),
      rules: () => settings,
      idleTimeoutMs: 0,
      port: 0,
    };
    const http = createHttpFrontend(ctx);
    server = createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => s.destroy());
      http.emit('connection', s);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
    ctx.port = port;
    state.listen = [`127.0.0.1:${port}`];
    state.record('connect', 'visited.example', 443, { error: { code: 'ERR_SOCKS_REPLY' } });
  });
  after(async () => {
    server.close();
    for (const r of seen) {
      assert.notEqual(r.headers['access-control-allow-origin'], '*');
    }
  });

  describe('PAC and WPAD', () => {
    const URLS = [
      'http://example.com/',
      'https://www.example.com/x',
      'http://example.org/',
      'http://[2001:db8::1]/',
      'https://[2001:db9::1]:8443/',
      'http://93.184.216.34/',
      'http://192.168.1.1/',
      'http://localhost:3000/',
      'http://intranet/',
      'http://10.1.2.3/',
    ];
    const listed = parseSettings({ mode: 'listed', rules: ['*.example.com', '2001:db8::/32'], bypass: ['<local>'] });

    for (const path of ['/proxy.pac', '/wpad.dat']) {
      for (const [name, s] of [['defaults', DEFAULT_SETTINGS], ['listed', listed]] as const) {
        test(`${path} with ${name} settings answers as decide() does, in pac-resolver`, async () => {
          settings = s;
          const r = await get(port, path);
          assert.equal(r.status, 200);
          assert.equal(r.headers['content-type'], 'application/x-ns-proxy-autoconfig');
          const find = createPacResolver(qjs, r.body);
          const here = { ...s, proxy: { host: '127.0.0.1', port } };
          const kinds = new Set<string>();
          for (const url of URLS) {
            const host = new URL(url).hostname.replace(/^\[(.*)\]$/, '$1');
            const want = pacResult(decide(here, url));
            kinds.add(want);
            assert.equal(await find(url, host), want, url);
          }
          assert.ok(kinds.has('DIRECT') && kinds.has(`SOCKS5 127.0.0.1:${port}; PROXY 127.0.0.1:${port}`), [...kinds].join(' | '));
        });
      }
    }

    test('the proxy address in the PAC is the Host the client used', async () => {
      settings = DEFAULT_SETTINGS;
      const cases: [Record<string, string>, string][] = [
        [{ host: 'bridge.lan:3128' }, 'bridge.lan:3128'],
        [{ host: `[::1]:${port}` }, `[::1]:${port}`],
        [{ host: 'Localhost' }, 'Localhost:80'],
        [{ host: 'bad host!' }, `127.0.0.1:${port}`],
        [{ host: 'x:0' }, `127.0.0.1:${port}`],
      ];
      for (const [headers, proxy] of cases) {
        const r = await get(port, '/proxy.pac', headers);
        assert.equal(r.status, 200, headers.host);
        assert.ok(r.body.includes(`"SOCKS5 ${proxy}; PROXY ${proxy}"`), `${headers.host} → ${proxy}`);
        const find = createPacResolver(qjs, r.body);
        assert.equal(await find('http://example.com/'), `SOCKS5 ${proxy}; PROXY ${proxy}`);
      }
      const noHost = await rawGet(port, 'GET /wpad.dat HTTP/1.0\r\n\r\n');
      assert.match(noHost, /^HTTP\/1\.1 200 /);
      assert.ok(noHost.includes(`"SOCKS5 127.0.0.1:${port}; PROXY 127.0.0.1:${port}"`));
    });

    test('a web page cannot load the PAC as a script to learn the routing rules', async () => {
      for (const site of ['cross-site', 'same-site']) {
        const r = await get(port, '/proxy.pac', { 'sec-fetch-site': site, 'sec-fetch-mode': 'no-cors', 'sec-fetch-dest': 'script' });
        assert.equal(r.status, 403, site);
        assert.match(r.body, /routing rules/);
        assert.doesNotMatch(r.body, /FindProxyForURL/);
      }
      const ok = await get(port, '/proxy.pac', {});
      assert.equal(ok.status, 200);
      assert.equal(ok.headers['cross-origin-resource-policy'], 'same-origin');
    });

    test('curl fetches the PAC; a non-GET method is refused in words', async () => {
      const r = await run('curl', ['-sS', '-i', `http://127.0.0.1:${port}/proxy.pac?x=1`]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout.toString(), /content-type: application\/x-ns-proxy-autoconfig/i);
      const post = await get(port, '/proxy.pac', {}, 'POST');
      assert.equal(post.status, 405);
      assert.match(post.body, /GET/);
    });
  });

  describe('status API', () => {
    test('same-host tools without an Origin may read it', async () => {
      for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`, '127.0.0.1']) {
        const r = await get(port, '/api/status', { host });
        assert.equal(r.status, 200, host);
        assert.match(String(r.headers['content-type']), /^application\/json/);
        assert.equal(r.headers['access-control-allow-origin'], undefined);
        const s = JSON.parse(r.body) as StatusSnapshot;
        assert.equal(s.name, 'dualsocks-bridge');
        assert.equal(s.version, '9.9.9-test');
        assert.deepEqual(s.listen, [`127.0.0.1:${port}`]);
        assert.equal(s.gateways.length, 1);
        assert.equal(s.recent[0]?.host, 'visited.example');
      }
      const c = await run('curl', ['-sS', `http://127.0.0.1:${port}/api/status`]);
      assert.equal((JSON.parse(c.stdout.toString()) as StatusSnapshot).name, 'dualsocks-bridge');
    });

    test('the extension may read it: its origin, and only its origin, is echoed', async () => {
      for (const origin of ['chrome-extension://abcdefghijklmnopabcdefghijklmnop', 'moz-extension://0b5c6f7a-1d2e-4f3a-9b8c-7d6e5f4a3b2c']) {
        const r = await get(port, '/api/status', { origin, 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'cors' });
        assert.equal(r.status, 200, origin);
        assert.equal(r.headers['access-control-allow-origin'], origin);
        assert.match(String(r.headers.vary), /Origin/);
        const pre = await get(port, '/api/status', { origin, 'access-control-request-method': 'GET' }, 'OPTIONS');
        assert.equal(pre.status, 204);
        assert.equal(pre.headers['access-control-allow-origin'], origin);
      }
    });

    test('web pages may not read it: web Origin, cross-site or same-site fetch, null origin', async () => {
      const cases: [Record<string, string>, RegExp][] = [
        [{ origin: 'https://evil.example' }, /web origin "https:\/\/evil.example"/],
        [{ origin: 'null' }, /web origin "null"/],
        [{ origin: `http://localhost:${port + 1}` }, /web origin/],
        [{ origin: 'https://evil.example', 'sec-fetch-site': 'cross-site' }, /web pages may not read/],
        [{ 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'no-cors' }, /cross-site request is refused/],
        [{ 'sec-fetch-site': 'same-site', 'sec-fetch-mode': 'cors' }, /same-site request is refused/],
        [{ 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'navigate', 'sec-fetch-dest': 'document' }, /cross-site/],
        [{ origin: 'chrome-extension://x/evil' }, /web origin/],
      ];
      for (const [headers, words] of cases) {
        const r = await get(port, '/api/status', headers);
        assert.equal(r.status, 403, JSON.stringify(headers));
        assert.match(r.body, words, JSON.stringify(headers));
        assert.equal(r.headers['access-control-allow-origin'], undefined);
        assert.ok(!r.body.includes('visited.example'));
      }
      const pre = await get(port, '/api/status', { origin: 'https://evil.example', 'access-control-request-method': 'GET' }, 'OPTIONS');
      assert.equal(pre.status, 403);
      assert.equal(pre.headers['access-control-allow-origin'], undefined);
      const preNoOrigin = await get(port, '/api/status', {}, 'OPTIONS');
      assert.equal(preNoOrigin.status, 403);
    });

    test('a Host that is not loopback is refused (DNS rebinding)', async () => {
      for (const host of ['evil.example', `evil.example:${port}`, `127.0.0.1.nip.io:${port}`, `192.168.1.10:${port}`, 'localhost.evil.example']) {
        for (const path of ['/api/status', '/']) {
          const r = await get(port, path, { host });
          assert.equal(r.status, 403, `${host}${path}`);
          assert.match(r.body, /DNS rebinding/);
          assert.ok(!r.body.includes('visited.example'));
        }
      }
      const noHost = await rawGet(port, 'GET /api/status HTTP/1.0\r\n\r\n');
      assert.match(noHost, /^HTTP\/1\.1 403 /);
    });

    test('the status is served privately: no caching, no embedding elsewhere', async () => {
      const r = await get(port, '/api/status');
      assert.equal(r.headers['cache-control'], 'no-store');
      assert.equal(r.headers['cross-origin-resource-policy'], 'same-origin');
      assert.equal(r.headers['x-content-type-options'], 'nosniff');
    });
  });

  describe('status page', () => {
    test('a small HTML page with the PAC links, no external resources', async () => {
      const r = await get(port, '/');
      assert.equal(r.status, 200);
      assert.match(String(r.headers['content-type']), /^text\/html/);
      assert.match(String(r.headers['content-security-policy']), /default-src 'none'/);
      assert.match(String(r.headers['content-security-policy']), /frame-ancestors 'none'/);
      assert.ok(r.body.includes(`href="http://127.0.0.1:${port}/proxy.pac"`));
      assert.ok(r.body.includes('visited.example:443'));
      assert.ok(!/(src|href)="https?:\/\/(?!127\.0\.0\.1)/.test(r.body), 'no external resources');
      assert.ok(r.body.length < 20_000);
    });

    test('a top-level navigation from elsewhere may open it; a cross-site fetch or frame may not', async () => {
      const nav = await get(port, '/', { 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'navigate', 'sec-fetch-dest': 'document' });
      assert.equal(nav.status, 200);
      const frame = await get(port, '/', { 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'navigate', 'sec-fetch-dest': 'iframe' });
      assert.equal(frame.status, 403);
      const fetched = await get(port, '/', { 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'cors', origin: 'https://evil.example' });
      assert.equal(fetched.status, 403);
    });

    test('text from the status is escaped', () => {
      const snap: StatusSnapshot = {
        name: 'dualsocks-bridge',
        version: '<b>1</b>',
        startedAt: 'now',
        listen: ['127.0.0.1:1080'],
        gateways: [{ url: 'socks5://"><script>x</script>', up: false, latencyMs: null, checkedAt: null, lastError: '<img src=x onerror=alert(1)>', active: 0, opened: 0, failed: 1, pipelining: null }],
        connections: { open: 0, total: 0, failed: 0, byInbound: { http: 0, connect: 0, socks5: 0, socks4: 0, transparent: 0 } },
        recent: [{ time: 't', host: '<svg onload=alert(1)>', port: 1, via: 'http', family: null, bound: null, gateway: null, result: '<i>' }],
      };
      const html = statusHtml(snap, 'http://127.0.0.1:1080');
      assert.ok(!/<(script|img|svg|b|i)[ >]/.test(html.replace(/<\/?(html|head|body|meta|title|style|h1|h2|p|a|table|tr|th|td)\b[^>]*>/g, '')), html);
    });
  });

  test('an origin-form request for anything else says this is a proxy', async () => {
    const r = await get(port, '/index.html');
    assert.equal(r.status, 400);
    assert.match(r.body, /dualsocks, a proxy/);
    assert.ok(r.body.includes(`http://127.0.0.1:${port}/proxy.pac`));
  });

  test('helpers: loopback hosts and access decisions', () => {
    for (const h of ['127.0.0.1', '127.0.0.1:1080', '127.1.2.3:1', '[::1]:1080', '[::1]', 'localhost', 'LOCALHOST:1080', 'localhost.:1080', '[::ffff:127.0.0.1]:1080']) assert.ok(isLoopbackHost(h), h);
    for (const h of [undefined, '', 'evil.example', '::1', '[::2]:1080', '0.0.0.0:1080', 'localhost.evil', '128.0.0.1', 'localhost:x']) assert.ok(!isLoopbackHost(h), String(h));
    const req = (headers: Record<string, string>) => ({ headers }) as unknown as Parameters<typeof checkAccess>[0];
    assert.deepEqual(checkAccess(req({ host: 'localhost:1080', origin: 'http://localhost:1080' })), { ok: true, extensionOrigin: null }, 'its own origin');
    assert.equal(checkAccess(req({ host: '127.0.0.1:1080', 'sec-fetch-site': 'same-origin' })).ok, true);
    assert.equal(checkAccess(req({ host: '127.0.0.1:1080', 'sec-fetch-site': 'none' })).ok, true);
  });
});
