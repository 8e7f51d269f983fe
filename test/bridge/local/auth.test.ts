// `--users` on the bridge: SOCKS5 clients log in with RFC 1929, HTTP proxy requests and CONNECT
// with Proxy-Authorization: Basic (else 407 with a challenge and words), SOCKS4 is refused, a
// source that keeps failing is refused without a check, and passwords are never logged. Real
// clients: curl (--proxy-user, also for SOCKS5), PySocks, raw bytes from the project's codec.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { Agent, request as httpRequest } from 'node:http';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { PasswordChecks } from '../../../bridge/gateway/users.js';
import { basicCredentials, ProxyAuth } from '../../../bridge/local/auth.js';
import { encodeAuthRequest, encodeGreeting, encodeRequest, encodeSocks4Request } from '../../../shared/socks5/codec.js';
import { CMD, METHOD } from '../../../shared/socks5/constants.js';
import { readAll, sha256, startOrigin, type Origin } from '../../helpers/origin.js';
import { CLI, run, startCli, type Running } from '../../helpers/process.js';
import { eventually, openFds } from '../../helpers/settle.js';

const dir = mkdtempSync(join(tmpdir(), 'dualsocks-bridge-auth-'));
writeFileSync(join(dir, 'hosts'), '127.0.0.1 web.test\n');
const PASSWORD = 'correct horse: battery';
const usersFile = join(dir, 'users');

async function hashLine(user: string, password: string): Promise<string> {
  const r = await run(process.execPath, [CLI, 'passwd', user], { input: `${password}\n` });
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.toString();
}

/** Reads until the peer closes; a reset after the answer is not the answer's loss. */
function answerOf(s: Socket): Promise<number[]> {
  return new Promise((resolve) => {
    const got: number[] = [];
    s.on('data', (d: Buffer) => got.push(...d));
    s.on('error', () => {});
    s.once('close', () => resolve(got));
  });
}

const PYSOCKS = `
import socks, sys
host, port, user, password, target, tport = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
s = socks.socksocket()
s.set_proxy(socks.SOCKS5, host, port, rdns=True, username=user, password=password)
s.settimeout(10)
try:
    s.connect((target, tport))
except socks.ProxyError as e:
    print("refused:", e)
    sys.exit(3)
s.sendall(b"GET / HTTP/1.0\\r\\nHost: " + target.encode() + b"\\r\\n\\r\\n")
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
sys.stdout.write(data.decode())
`;

test('basicCredentials: the bytes of "Basic base64(user:password)"; other schemes and shapes are none', () => {
  const b64 = (t: string): string => Buffer.from(t).toString('base64');
  const c = basicCredentials(`Basic ${b64('alice:pa:ss wörd')}`)!;
  assert.equal(Buffer.from(c.username).toString(), 'alice');
  assert.equal(Buffer.from(c.password).toString(), 'pa:ss wörd');
  assert.equal(Buffer.from(basicCredentials(`bAsIc   ${b64('a:')} `)!.password).length, 0);
  for (const h of [undefined, '', 'Basic', `Bearer ${b64('a:b')}`, `Basic ${b64('no colon')}`, 'Basic !!!', `Basic ${b64('a:b')} extra`]) {
    assert.equal(basicCredentials(h), null, String(h));
  }
});

test('basicCredentials: any header gives credentials or none, never a throw; any user without a colon and any password come back as sent', () => {
  fc.assert(fc.property(fc.string(), (h) => {
    const c = basicCredentials(h);
    assert.ok(c === null || (c.username instanceof Uint8Array && c.password instanceof Uint8Array));
    basicCredentials(`Basic ${h}`);
  }));
  fc.assert(fc.property(fc.uint8Array().filter((u) => !u.includes(0x3a)), fc.uint8Array(), (user, password) => {
    const c = basicCredentials(`Basic ${Buffer.concat([user, Buffer.from(':'), password]).toString('base64')}`)!;
    assert.deepEqual([Buffer.from(c.username), Buffer.from(c.password)], [Buffer.from(user), Buffer.from(password)]);
  }));
});

test('ProxyAuth: a passed login is taken again without scrypt; a wrong one never is; back-off comes first', async () => {
  writeFileSync(usersFile, await hashLine('alice', PASSWORD));
  let now = 1_000_000;
  const checks = new PasswordChecks({ freeFailures: 1, backoffMs: 60_000, maxBackoffMs: 120_000 }, () => now);
  const auth = new ProxyAuth(usersFile, false, checks, () => now);
  const check = (password: string, from = '192.0.2.7'): Promise<string> =>
    new Promise((resolve) => auth.check(from, { username: Buffer.from('alice'), password: Buffer.from(password) }, (r) => resolve(r.result)));
  assert.equal(await check(PASSWORD), 'ok');
  assert.equal(checks.stats.started, 1);
  assert.equal(await check(PASSWORD), 'ok');
  assert.equal(checks.stats.started, 1, 'the second login cost no scrypt');
  assert.equal(await check('wrong'), 'fail');
  assert.equal(await check('wrong'), 'backoff');
  // a source in back-off is refused even with the password it used before
  assert.equal(await check(PASSWORD), 'backoff');
  assert.equal(await check(PASSWORD, '192.0.2.8'), 'ok', 'another source is not held back');
  // remembered for a while only
  now += 10 * 60_000;
  const before = checks.stats.started;
  assert.equal(await check(PASSWORD, '192.0.2.8'), 'ok');
  assert.equal(checks.stats.started, before + 1);
  assert.equal(auth.required('127.0.0.1'), true);
  assert.equal(new ProxyAuth(usersFile, true).required('127.0.0.1'), false);
  assert.equal(new ProxyAuth(usersFile, true).required('192.0.2.7'), true);
});

describe('dualsocks start --users', () => {
  let origin: Origin;
  let bridge: Running;
  let port: number;
  let proxy: string;
  const url = (): string => `http://web.test:${origin.port}/blob.bin`;

  before(async () => {
    writeFileSync(usersFile, `# the bridge's users\n${await hashLine('alice', PASSWORD)}${await hashLine('bob', 'other')}`);
    origin = await startOrigin('127.0.0.1');
    bridge = await startCli(['start', '--listen', '127.0.0.1:0', '--users', usersFile, '--hosts', join(dir, 'hosts'), '--dns', 'none', '--allow', '127.0.0.1']);
    port = bridge.listening[0]!.port;
    proxy = `127.0.0.1:${port}`;
  });
  after(async () => {
    await bridge.stop();
    await origin.close();
    // whatever happened, no password reached the log or stderr
    const all = [...bridge.stdout, ...bridge.stderr].join('\n');
    assert.ok(!all.includes(PASSWORD) && !all.includes('wrong password'), 'a password in the output');
    assert.ok(!all.includes(Buffer.from(`alice:${PASSWORD}`).toString('base64')));
  });

  test('curl with --proxy-user: HTTP proxy, CONNECT and SOCKS5 reach the destination; the log names the user', async () => {
    for (const args of [['-x', `http://${proxy}`], ['-p', '-x', `http://${proxy}`], ['--socks5-hostname', proxy]]) {
      const r = await run('curl', ['-sS', '--max-time', '20', ...args, '--proxy-user', `alice:${PASSWORD}`, url()]);
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(sha256(r.stdout), origin.blobSha256, args.join(' '));
    }
    for (const inbound of ['http', 'connect', 'socks5']) {
      const rec = await bridge.waitRecord((x) => x.inbound === inbound && x.host === 'web.test' && x.result === 'ok');
      assert.equal(rec.user, 'alice', inbound);
    }
  });

  test('PySocks with username and password reaches the destination by name', async () => {
    const py = await run('/usr/bin/python3', ['-c', PYSOCKS, '127.0.0.1', String(port), 'alice', PASSWORD, 'web.test', String(origin.port)]);
    assert.equal(py.code, 0, py.stderr + py.stdout.toString());
    assert.match(py.stdout.toString(), /hello from origin/);
  });

  test('HTTP without credentials: 407 with Proxy-Authenticate and a body in words, and a line (auth none); wrong ones: 407 again', async () => {
    const none = await run('curl', ['-sS', '-D', '-', '--interface', '127.0.0.26', '-x', `http://${proxy}`, url()]);
    const text = none.stdout.toString();
    assert.match(text, /^HTTP\/1\.1 407 Proxy Authentication Required\r\n/);
    assert.match(text, /\r\nProxy-Authenticate: Basic realm="dualsocks"\r\n/i);
    assert.match(text, /serves only its users: send a username and password/);
    assert.match(text, /curl takes --proxy-user/);
    // logged as a refused login, as SOCKS4's are: no user, auth none
    const challenged = await bridge.waitRecord((x) => x.client === '127.0.0.26');
    assert.deepEqual(
      [challenged.inbound, challenged.user, challenged.auth, challenged.result, challenged.error],
      ['http', undefined, 'none', 'ERR_SOCKS_AUTH_FAILED', 'no Proxy-Authorization'],
    );
    // each refusal from a source of its own: five failures from one source start its back-off
    const wrong = await run('curl', ['-sS', '-D', '-', '--interface', '127.0.0.21', '-x', `http://${proxy}`, '--proxy-user', 'alice:wrong password', url()]);
    assert.match(wrong.stdout.toString(), /^HTTP\/1\.1 407 /);
    assert.match(wrong.stdout.toString(), /Proxy-Authenticate: Basic realm="dualsocks"/i);
    assert.match(wrong.stdout.toString(), /"alice" or its password was not accepted/);
    const rec = await bridge.waitRecord((x) => x.inbound === 'http' && x.auth === 'fail');
    assert.equal(rec.user, 'alice');
    assert.equal(rec.result, 'ERR_SOCKS_AUTH_FAILED');
    // another scheme is no login
    const bearer = await run('curl', ['-sS', '-D', '-', '-x', `http://${proxy}`, '-H', 'Proxy-Authorization: Bearer abc', url()]);
    assert.match(bearer.stdout.toString(), /^HTTP\/1\.1 407 [^]*Only the Basic scheme/);
    const other = await bridge.waitRecord((x) => x.error === 'Proxy-Authorization not Basic');
    assert.deepEqual([other.inbound, other.auth, other.result], ['http', 'none', 'ERR_SOCKS_AUTH_FAILED']);
  });

  test('the login stays at the bridge: no Proxy-Authorization reaches the origin; after a 407 the same connection logs in', async () => {
    const seen = await run('curl', ['-sS', '-x', `http://${proxy}`, '--proxy-user', `alice:${PASSWORD}`, `http://web.test:${origin.port}/echo-headers`]);
    const headers = JSON.parse(seen.stdout.toString()) as Record<string, string>;
    assert.equal(headers['proxy-authorization'], undefined);
    assert.equal(headers.host, `web.test:${origin.port}`);
    // a browser retries on the connection that got the 407 (a request without a body keeps it)
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const ask = (auth?: string): Promise<{ status: number; reused: boolean; body: string }> =>
      new Promise((resolve, reject) => {
        const req = httpRequest({ agent, host: '127.0.0.1', port, path: `http://web.test:${origin.port}/`, headers: { host: `web.test:${origin.port}`, ...(auth ? { 'proxy-authorization': auth } : {}) } }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (body += d));
          res.once('end', () => resolve({ status: res.statusCode ?? 0, reused: req.reusedSocket, body }));
        });
        req.once('error', reject);
        req.end();
      });
    try {
      assert.equal((await ask()).status, 407);
      const second = await ask(`Basic ${Buffer.from(`alice:${PASSWORD}`).toString('base64')}`);
      assert.deepEqual(second, { status: 200, reused: true, body: 'hello from origin' });
    } finally {
      agent.destroy();
    }
    // a body not read behind a 407 would be taken for the next request: that connection closes
    const post = await run('curl', ['-sS', '-D', '-', '--interface', '127.0.0.25', '-x', `http://${proxy}`, '--data-binary', 'GET /x HTTP/1.1', `http://web.test:${origin.port}/`]);
    assert.match(post.stdout.toString(), /^HTTP\/1\.1 407 [^]*\r\nConnection: close\r\n/i);
    const posted = await run('curl', ['-sS', '-x', `http://${proxy}`, '--proxy-user', `alice:${PASSWORD}`, '--data-binary', 'x'.repeat(100_000), `http://web.test:${origin.port}/`]);
    assert.equal(posted.stdout.toString(), 'hello from origin', posted.stderr);
  });

  test('CONNECT without or with wrong credentials: 407, a line each, and the tunnel is never opened', async () => {
    for (const extra of [[], ['--proxy-user', 'bob:wrong password']]) {
      const r = await run('curl', ['-sS', '--interface', '127.0.0.22', '-p', '-x', `http://${proxy}`, ...extra, url()]);
      assert.equal(r.code, 56, r.stderr);
      assert.match(r.stderr, /CONNECT tunnel failed, response 407/);
    }
    await bridge.waitRecord((x) => x.client === '127.0.0.22' && x.auth === 'fail');
    const lines = bridge.records().filter((x) => x.client === '127.0.0.22');
    assert.deepEqual(lines.map((x) => [x.inbound, x.auth, x.result]), [['connect', 'none', 'ERR_SOCKS_AUTH_FAILED'], ['connect', 'fail', 'ERR_SOCKS_AUTH_FAILED']]);
    assert.equal(bridge.records().filter((x) => x.inbound === 'connect' && x.result === 'ok' && x.user !== 'alice').length, 0);
  });

  test('SOCKS5: a greeting without 0x02 gets 05 FF; a wrong password gets 01 01; curl and PySocks see the refusal', async () => {
    const noMethod = connect({ host: '127.0.0.1', port });
    noMethod.write(encodeGreeting({ methods: [METHOD.NO_AUTH] }));
    assert.deepEqual(await answerOf(noMethod), [5, METHOD.NO_ACCEPTABLE]);
    const wrong = connect({ host: '127.0.0.1', port, localAddress: '127.0.0.23' });
    wrong.write(encodeGreeting({ methods: [METHOD.NO_AUTH, METHOD.USERPASS] }));
    wrong.write(encodeAuthRequest({ username: 'alice', password: 'wrong password' }));
    assert.deepEqual(await answerOf(wrong), [5, METHOD.USERPASS, 1, 1]);
    const rec = await bridge.waitRecord((x) => x.inbound === 'socks5' && x.auth === 'fail');
    assert.equal(rec.user, 'alice');
    const c = await run('curl', ['-sS', '--interface', '127.0.0.24', '--socks5-hostname', proxy, '--proxy-user', 'alice:wrong password', url()]);
    assert.notEqual(c.code, 0);
    assert.match(c.stderr, /rejected by the SOCKS5 server \(1 1\)/);
    const py = await run('/usr/bin/python3', ['-c', PYSOCKS, '127.0.0.1', String(port), 'alice', 'wrong password', 'web.test', String(origin.port)]);
    assert.equal(py.code, 3, py.stderr);
    assert.match(py.stdout.toString(), /refused:.*(authentication|rejected)/i);
  });

  test('SOCKS5 greeting, login, request, data and FIN in one write: the data and the FIN reach the destination after the check', async () => {
    const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    s.end(Buffer.concat([
      encodeGreeting({ methods: [METHOD.USERPASS] }),
      encodeAuthRequest({ username: 'alice', password: PASSWORD }),
      encodeRequest({ cmd: CMD.CONNECT, host: 'web.test', port: origin.port }),
      Buffer.from('GET / HTTP/1.0\r\nHost: web.test\r\n\r\n'),
    ]));
    const got = Buffer.from(await answerOf(s));
    assert.deepEqual([...got.subarray(0, 4)], [5, METHOD.USERPASS, 1, 0]);
    assert.equal(got[5], 0, 'REP succeeded');
    assert.match(got.toString('latin1'), /hello from origin$/);
  });

  test('SOCKS4 and SOCKS4a are refused (0x5b): their user id is no password', async () => {
    for (const args of [['--socks4a', proxy], ['--socks4', proxy]]) {
      const r = await run('curl', ['-sS', ...args, '--proxy-user', `alice:${PASSWORD}`, `http://127.0.0.1:${origin.port}/`]);
      assert.notEqual(r.code, 0, args.join(' '));
      assert.match(r.stderr, /\(91\)/);
    }
    const s = connect({ host: '127.0.0.1', port });
    s.write(encodeSocks4Request({ cmd: CMD.CONNECT, host: 'web.test', port: origin.port, userId: 'alice' }));
    assert.deepEqual((await answerOf(s)).slice(0, 2), [0, 0x5b]);
    const rec = await bridge.waitRecord((x) => x.inbound === 'socks4');
    assert.match(String(rec.error), /SOCKS4 cannot send a password/);
  });

  test('the PAC stays fetchable without a login; the status too, for a program on this machine', async () => {
    const pac = await run('curl', ['-sS', '--fail', `http://${proxy}/proxy.pac`]);
    assert.equal(pac.code, 0, pac.stderr);
    assert.match(pac.stdout.toString(), /function FindProxyForURL/);
    const status = await run('curl', ['-sS', '--fail', `http://${proxy}/api/status`]);
    assert.equal(status.code, 0, status.stderr);
  });

  test('a source that keeps failing is refused without a check; another source still logs in', async () => {
    const from = (ip: string, user: string) => run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '--interface', ip, '-x', `http://${proxy}`, '--proxy-user', user, url()]);
    for (let i = 0; i < 6; i++) assert.equal((await from('127.0.0.3', 'bob:wrong password')).stdout.toString(), '407');
    const held = await run('curl', ['-sS', '--interface', '127.0.0.3', '-x', `http://${proxy}`, '--proxy-user', 'bob:other', url()]);
    assert.match(held.stdout.toString(), /Too many failed logins from your address/);
    await bridge.waitRecord((x) => x.auth === 'backoff' && x.client === '127.0.0.3');
    // SOCKS5 from the same source: held back too
    const s5 = await run('curl', ['-sS', '--interface', '127.0.0.3', '--socks5-hostname', proxy, '--proxy-user', 'bob:other', url()]);
    assert.match(s5.stderr, /\(1 1\)/);
    assert.equal((await from('127.0.0.4', 'bob:other')).stdout.toString(), '200');
  });
});

describe('bridge --users: refused logins leave no descriptor behind', () => {
  test('407s, failed and abandoned SOCKS5 logins, refused SOCKS4: descriptors back to the baseline', { timeout: 120_000 }, async () => {
    const origin = await startOrigin('127.0.0.1');
    const b = await startCli(['start', '--listen', '127.0.0.1:0', '--users', usersFile, '--hosts', join(dir, 'hosts'), '--dns', 'none', '--allow', '127.0.0.1', '--quiet']);
    const port = b.listening[0]!.port;
    try {
      // one login that passes first: what stays open afterwards (the pool's kept tunnel) is the baseline
      const ok = await run('curl', ['-sS', '-x', `http://127.0.0.1:${port}`, '--proxy-user', `alice:${PASSWORD}`, `http://web.test:${origin.port}/`]);
      assert.equal(ok.code, 0, ok.stderr);
      await new Promise((r) => setTimeout(r, 200));
      const base = openFds(b);
      const ROUNDS = 20;
      const tasks: Promise<unknown>[] = [];
      for (let i = 0; i < ROUNDS; i++) {
        // a different source each round keeps the back-off out of the way
        const localAddress = `127.0.${1 + (i % 200)}.${10 + i}`;
        const open = (): Socket => connect({ host: '127.0.0.1', port, localAddress });
        const http = open();
        http.end(`GET http://web.test:${origin.port}/ HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n`);
        tasks.push(readAll(http));
        const conn = open();
        conn.write(`CONNECT web.test:${origin.port} HTTP/1.1\r\nHost: web.test\r\nProxy-Authorization: Basic ${Buffer.from('alice:nope').toString('base64')}\r\n\r\n`);
        tasks.push(readAll(conn));
        const s5 = open();
        s5.write(Buffer.concat([encodeGreeting({ methods: [METHOD.USERPASS] }), encodeAuthRequest({ username: 'alice', password: 'nope' })]));
        tasks.push(answerOf(s5));
        // gone while its check waits or runs
        const gone = open();
        gone.on('error', () => {});
        gone.write(Buffer.concat([encodeGreeting({ methods: [METHOD.USERPASS] }), encodeAuthRequest({ username: 'bob', password: 'other' })]), () => gone.destroy());
        const s4 = open();
        s4.write(encodeSocks4Request({ cmd: CMD.CONNECT, host: 'web.test', port: origin.port, userId: 'alice' }));
        tasks.push(answerOf(s4));
      }
      await Promise.all(tasks);
      await eventually(() => openFds(b) <= base, `bridge descriptors back to ${base}`, { timeoutMs: 30_000, describe: () => openFds(b) });
    } finally {
      await b.stop();
      await origin.close();
    }
  });
});

describe('bridge --users: SIGHUP', () => {
  test('re-reads the users file: a changed password counts at once, also for a login remembered before', { timeout: 60_000 }, async () => {
    const origin = await startOrigin('127.0.0.1');
    const file = join(dir, 'reload-users');
    writeFileSync(file, await hashLine('carol', 'first'));
    // `dualsocks start` ends on SIGHUP (its terminal closed): reloading is `dualsocks bridge`'s
    const gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--hosts', join(dir, 'hosts'), '--dns', 'none', '--allow', '127.0.0.1', '--quiet']);
    const br = await startCli(['bridge', '--listen', '127.0.0.1:0', '--users', file, '--gateway', `socks5://127.0.0.1:${gw.listening[0]!.port}`, '--quiet']);
    const via = async (user: string): Promise<string> =>
      (await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-x', `http://127.0.0.1:${br.listening[0]!.port}`, '--proxy-user', user, `http://web.test:${origin.port}/`])).stdout.toString();
    try {
      assert.equal(await via('carol:first'), '200');
      writeFileSync(file, await hashLine('carol', 'second'));
      br.proc.kill('SIGHUP');
      await br.waitStderr(/SIGHUP: .*users reloaded from .*reload-users \(1\)/);
      assert.equal(await via('carol:first'), '407', 'the remembered login is forgotten');
      assert.equal(await via('carol:second'), '200');
      writeFileSync(file, 'carol:not a hash\n');
      br.proc.kill('SIGHUP');
      await br.waitStderr(/SIGHUP: .*--users not reloaded, the previous users stay/);
      assert.equal(await via('carol:second'), '200');
    } finally {
      await br.stop();
      await gw.stop();
      await origin.close();
    }
  });
});

describe('bridge --users: configuration', () => {
  test('--no-auth-local needs --users; a users file that does not parse names the key; --users stands in for --clients beyond loopback', async () => {
    const cli = (args: string[]) => run(process.execPath, [CLI, 'bridge', '--gateway', 'socks5://127.0.0.1:9', ...args], { timeoutMs: 20_000 });
    const lone = await cli(['--listen', '127.0.0.1:0', '--no-auth-local']);
    assert.equal(lone.code, 2);
    assert.match(lone.stderr, /noAuthLocal: needs --users FILE/);
    writeFileSync(join(dir, 'bad-users'), 'alice:plaintext\n');
    const bad = await cli(['--listen', '127.0.0.1:0', '--users', join(dir, 'bad-users')]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /users: .*bad-users line 1/);
    const open = await cli(['--listen', '0.0.0.0:0']);
    assert.equal(open.code, 2);
    assert.match(open.stderr, /--clients CIDR or --users FILE/);
    const b = await startCli(['bridge', '--listen', '0.0.0.0:0', '--users', usersFile, '--gateway', 'socks5://127.0.0.1:9', '--health-interval', '3600']);
    await b.stop();
  });
});
