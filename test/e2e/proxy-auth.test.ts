// A bridge facing a LAN with --users (issue 13, item 4): Debian's Chromium on another machine of
// the LAN answers the bridge's 407 with a username and password (puppeteer's page.authenticate,
// as a person would in the browser's dialog) and loads a page by a name only the gateway knows.
// Through the bridge's PAC too: Chromium cannot log in to SOCKS5, so it falls back to the PAC's
// PROXY entry. Around it, with real clients: curl from the LAN must log in (HTTP, CONNECT, SOCKS5), a program
// on the bridge's own host need not (--no-auth-local), the PAC is fetched without a login, and
// the status is not served to the LAN.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { requireCapability, rootNetns } from '../helpers/env.js';
import { CLI, run, startCli, type Running } from '../helpers/process.js';
import { createLan, LAN_ADDR, type Lan } from '../topology/netns.js';
import type { ProxyAuthDriverOptions, ProxyAuthDriverResult } from './proxy-auth-driver.js';

const DRIVER = fileURLToPath(new URL('./proxy-auth-driver.js', import.meta.url));
const skip = rootNetns() || requireCapability('chromium', existsSync('/usr/bin/chromium'), 'apt-get install chromium (tests drive /usr/bin/chromium; they never download a browser)');
const WEB_PORT = 8081;
const MARK = 'a page behind a bridge that asks who you are';
const USER = 'alice';
const PASSWORD = 'lan password 1';

async function drive(lan: Lan, o: ProxyAuthDriverOptions): Promise<ProxyAuthDriverResult> {
  const r = await run('ip', ['netns', 'exec', lan.ns.c, process.execPath, DRIVER, JSON.stringify(o)], { timeoutMs: 120_000 });
  assert.equal(r.code, 0, `driver failed:\n${r.stderr}`);
  return JSON.parse(r.stdout.toString().trim().split('\n').pop()!) as ProxyAuthDriverResult;
}

test('a LAN bridge with --users: Chromium answers the 407 and loads the page; curl logs in; local programs and the PAC need no login', { skip, timeout: 300_000 }, async (t) => {
  const lan = await createLan();
  const running: Running[] = [];
  try {
    const www = join(lan.dir, 'www');
    mkdirSync(www);
    writeFileSync(join(www, 'index.html'), `<!doctype html><title>t</title><p>${MARK}</p>\n`);
    lan.spawnIn('b', 'web.out', '/usr/bin/python3', ['-m', 'http.server', String(WEB_PORT), '--bind', LAN_ADDR.b, '--directory', www]);
    await lan.waitListening('b', WEB_PORT);
    // only the gateway knows the name
    const hosts = join(lan.dir, 'gw-hosts');
    writeFileSync(hosts, `${LAN_ADDR.b} web.test\n`);
    const users = join(lan.dir, 'users');
    const line = await run(process.execPath, [CLI, 'passwd', USER], { input: `${PASSWORD}\n` });
    writeFileSync(users, line.stdout);
    const gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--hosts', hosts, '--dns', 'none', '--allow', LAN_ADDR.b], { netns: lan.ns.b });
    running.push(gw);
    const bridge = await startCli(
      ['bridge', '--listen', `${LAN_ADDR.b}:1080`, '--listen', '127.0.0.1:1080', '--clients', '192.0.2.0/24', '--clients', '127.0.0.0/8',
        '--users', users, '--no-auth-local', '--gateway', `socks5://127.0.0.1:${gw.listening[0]!.port}`],
      { netns: lan.ns.b, expectListeners: 2 },
    );
    running.push(bridge);
    const proxy = `${LAN_ADDR.b}:1080`;
    const url = `http://web.test:${WEB_PORT}/`;
    const curl = (role: 'b' | 'c', args: string[]) => lan.exec(role, 'curl', ['-sS', '--max-time', '20', ...args]);

    await t.test('Chromium in the LAN: without an answer to the 407 no page; with page.authenticate the page loads', async () => {
      const refused = await drive(lan, { proxy, url });
      assert.notEqual(refused.status, 200, JSON.stringify(refused));
      assert.ok(!refused.text.includes(MARK));
      // its requests without credentials are logged as refused logins
      await bridge.waitRecord((r) => r.inbound === 'http' && r.client === LAN_ADDR.c && r.auth === 'none' && r.result === 'ERR_SOCKS_AUTH_FAILED');
      const ok = await drive(lan, { proxy, url, credentials: { username: USER, password: PASSWORD } });
      assert.equal(ok.status, 200, JSON.stringify(ok));
      assert.ok(ok.text.includes(MARK), ok.text);
      const rec = await bridge.waitRecord((r) => r.inbound === 'http' && r.host === 'web.test' && r.result === 'ok');
      assert.equal(rec.user, USER);
      assert.equal(rec.client, LAN_ADDR.c);
    });

    await t.test("Chromium following the bridge's PAC: SOCKS5 gets no method it can do (05 FF), it falls back to PROXY and answers the 407", async () => {
      const before = bridge.records().filter((r) => r.inbound === 'http' && r.result === 'ok').length;
      const socks5Tries = async (): Promise<number> => {
        const st = await curl('b', ['--fail', 'http://127.0.0.1:1080/api/status']);
        return (JSON.parse(st.stdout.toString()) as { connections: { byInbound: { socks5: number } } }).connections.byInbound.socks5;
      };
      const tried = await socks5Tries();
      const ok = await drive(lan, { proxy, pac: true, url, credentials: { username: USER, password: PASSWORD } });
      assert.ok((await socks5Tries()) > tried, 'the PAC\'s SOCKS5 entry was tried first');
      assert.equal(ok.status, 200, JSON.stringify(ok));
      assert.ok(ok.text.includes(MARK), ok.text);
      await bridge.waitRecord(() => bridge.records().filter((r) => r.inbound === 'http' && r.result === 'ok' && r.user === USER).length > before);
    });

    await t.test('curl in the LAN logs in for HTTP, CONNECT and SOCKS5; without a login: 407 and 05 FF', async () => {
      for (const args of [['-x', `http://${proxy}`], ['-p', '-x', `http://${proxy}`], ['--socks5-hostname', proxy]]) {
        const r = await curl('c', [...args, '--proxy-user', `${USER}:${PASSWORD}`, url]);
        assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
        assert.ok(r.stdout.toString().includes(MARK), args.join(' '));
      }
      const none = await curl('c', ['-o', '/dev/null', '-w', '%{http_code}', '-x', `http://${proxy}`, url]);
      assert.equal(none.stdout.toString(), '407');
      const s5 = await curl('c', ['--socks5-hostname', proxy, url]);
      assert.match(s5.stderr, /No authentication method was acceptable/);
    });

    await t.test('a program on the bridge host needs no login (--no-auth-local), on loopback or the LAN address', async () => {
      for (const args of [['-x', 'http://127.0.0.1:1080'], ['-x', `http://${proxy}`], ['--socks5-hostname', '127.0.0.1:1080'], ['--socks4a', '127.0.0.1:1080']]) {
        const r = await curl('b', [...args, url]);
        assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
        assert.ok(r.stdout.toString().includes(MARK), args.join(' '));
      }
    });

    await t.test('the PAC is fetched without a login; the status is not served to the LAN, even with a loopback Host', async () => {
      const pac = await curl('c', ['--fail', `http://${proxy}/proxy.pac`]);
      assert.equal(pac.code, 0, pac.stderr);
      assert.match(pac.stdout.toString(), new RegExp(`PROXY ${LAN_ADDR.b.replace(/\./g, '\\.')}:1080`));
      const status = await curl('c', ['-H', 'Host: 127.0.0.1:1080', '-D', '-', `http://${proxy}/api/status`]);
      assert.match(status.stdout.toString(), /^HTTP\/1\.1 403 /);
      assert.match(status.stdout.toString(), /only to programs on the bridge's own machine/);
      assert.ok(!status.stdout.toString().includes('web.test'));
      const local = await curl('b', ['--fail', 'http://127.0.0.1:1080/api/status']);
      assert.equal(local.code, 0, local.stderr);
    });
  } finally {
    await Promise.all(running.map((r) => r.stop()));
    await lan.destroy();
  }
});
