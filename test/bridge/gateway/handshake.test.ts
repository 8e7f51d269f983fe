// The gateway's handshake against hostile and odd clients (issue 10): what one connection sends
// never ends the process, and a defect while serving one connection ends only that connection.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { dialSocks5 } from '../../../bridge/upstream/socks5.js';
import { gatewayConfig } from '../../../bridge/gateway/config.js';
import { Gateway } from '../../../bridge/gateway/server.js';
import type { Users } from '../../../bridge/gateway/users.js';
import { concatBytes, decodeReply, encodeGreeting, failureCode } from '../../../shared/socks5/codec.js';
import { CMD, METHOD, REP } from '../../../shared/socks5/constants.js';
import { readAll, startOrigin } from '../../helpers/origin.js';
import { run, startCli } from '../../helpers/process.js';
import { eventually } from '../../helpers/settle.js';
import { socks5Connect, socks5Credentials } from '../../helpers/socks5.js';

const dir = mkdtempSync(join(tmpdir(), 'dualsocks-handshake-'));
const hostsFile = join(dir, 'hosts');
writeFileSync(hostsFile, '127.0.0.1 web.test\n');

/** The reproducer: a greeting offering only USERPASS, then credentials. */
const ONLY_USERPASS = Buffer.from('\x05\x01\x02\x01\x01a\x01b', 'latin1');

async function ncat(port: number, input: Buffer): Promise<Buffer> {
  const r = await run('ncat', ['127.0.0.1', String(port)], { input, timeoutMs: 20000 });
  return r.stdout;
}

async function curlVia(proxy: string, url: string): Promise<{ code: number | null; body: string; stderr: string }> {
  const r = await run('curl', ['-sS', '--max-time', '20', '--proxy', proxy, url]);
  return { code: r.code, body: r.stdout.toString(), stderr: r.stderr };
}

/** Opens a raw client, sends `bytes`, resolves with the first `n` bytes it gets (or all before a close), then leaves. */
async function rawFirst(port: number, bytes: Uint8Array, n: number): Promise<Buffer> {
  const s: Socket = connect({ host: '127.0.0.1', port });
  s.write(bytes);
  let got = Buffer.alloc(0);
  await new Promise<void>((resolve) => {
    s.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.length >= n) resolve();
    });
    s.once('close', () => resolve());
    s.once('error', () => resolve());
  });
  s.destroy();
  return got;
}

/** Opens a raw client, sends `bytes`, resolves with everything it got before the gateway closed. */
async function rawExchange(port: number, bytes: Uint8Array): Promise<Buffer> {
  const s: Socket = connect({ host: '127.0.0.1', port });
  await new Promise((r) => s.once('connect', r));
  s.write(bytes);
  return readAll(s);
}

describe('a gateway without --users and a client offering only username/password', () => {
  test('`dualsocks gateway`: 05 FF, the process lives on and serves the next request', async () => {
    const origin = await startOrigin('127.0.0.1', 16);
    const gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1']);
    const port = gw.listening[0]!.port;
    try {
      for (let i = 0; i < 3; i++) assert.equal((await ncat(port, ONLY_USERPASS)).toString('hex'), '05ff');
      const rec = await gw.waitRecord((r) => r.result === 'ERR_SOCKS_NO_METHOD');
      assert.match(String(rec.error), /offered 2/);
      const page = await curlVia(`socks5h://127.0.0.1:${port}`, `http://web.test:${origin.port}/`);
      assert.equal(page.code, 0, page.stderr);
      assert.equal(page.body, 'hello from origin');
      assert.equal(gw.proc.exitCode, null, 'still running');
      assert.doesNotMatch(gw.stderr.join('\n'), /TypeError|ERR_INTERNAL/);
    } finally {
      await gw.stop();
      await origin.close();
    }
  });

  test('`dualsocks start`: neither its gateway nor its bridge dies', async () => {
    const origin = await startOrigin('127.0.0.1', 16);
    const start = await startCli(['start', '--listen', '127.0.0.1:0', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1']);
    try {
      const inner = /in process on 127\.0\.0\.1:(\d+)/.exec(await start.waitStderr(/in process on/));
      const innerPort = Number(inner![1]);
      const bridgePort = start.listening[0]!.port;
      // the gateway inside has one user, the bridge (a password made at start-up): wrong
      // credentials are refused (or, as the FIN came with them, dropped unchecked), the process lives on
      assert.match((await ncat(innerPort, ONLY_USERPASS)).toString('hex'), /^0502(0101)?$/);
      // the bridge's own SOCKS5 asks no credentials: whatever a client that offers only 0x02 sends is accepted
      assert.equal((await ncat(bridgePort, ONLY_USERPASS)).toString('hex'), '05020100');
      const page = await curlVia(`http://127.0.0.1:${bridgePort}`, `http://web.test:${origin.port}/`);
      assert.equal(page.code, 0, page.stderr);
      assert.equal(page.body, 'hello from origin');
      // and nobody but the bridge gets through the gateway inside
      const direct = await curlVia(`socks5h://127.0.0.1:${innerPort}`, `http://web.test:${origin.port}/`);
      assert.notEqual(direct.code, 0, 'the in-process gateway served a client other than its bridge');
      assert.equal(start.proc.exitCode, null, 'still running');
    } finally {
      await start.stop();
      await origin.close();
    }
  });
});

describe('one guard per connection', () => {
  /** An in-process gateway whose stderr lines are collected. */
  async function inProcess(): Promise<{ gw: Gateway; port: number; records: Record<string, unknown>[]; stderr: string[]; done(): Promise<void> }> {
    const records: Record<string, unknown>[] = [];
    const stderr: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      const text = String(chunk);
      if (text.startsWith('dualsocks gateway: internal error')) {
        stderr.push(text);
        return true;
      }
      return (write as (c: string | Uint8Array, ...r: unknown[]) => boolean)(chunk, ...rest);
    }) as typeof process.stderr.write;
    const gw = new Gateway(gatewayConfig(['--listen', '127.0.0.1:0', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1']), (r) => void records.push(r));
    const [bound] = await gw.listen();
    return {
      gw,
      port: bound!.port,
      records,
      stderr,
      async done() {
        process.stderr.write = write;
        await gw.close();
      },
    };
  }

  test('an exception inside a socket event handler ends that connection only (ERR_INTERNAL, one stack)', async () => {
    const origin = await startOrigin('127.0.0.1', 16);
    const t = await inProcess();
    try {
      // a defect planted in the password check, which runs inside the socket's 'data' handler
      t.gw.users = { verify: () => { throw new TypeError('planted defect'); } } as unknown as Users;
      const got = await rawExchange(t.port, socks5Credentials('u', 'p'));
      assert.equal(got.subarray(0, 2).toString('hex'), '0502', 'method selected, then closed');
      assert.equal(t.records.length, 1);
      assert.equal(t.records[0]!.result, 'ERR_INTERNAL');
      assert.equal(t.stderr.length, 1, 'one stack');
      assert.match(t.stderr[0]!, /planted defect\n\s+at /);
      // the next connection is served
      t.gw.users = undefined;
      const { socket } = await dialSocks5({ host: '127.0.0.1', port: t.port }, { host: 'web.test', port: origin.port }, { timeoutMs: 5000 });
      socket.destroy();
    } finally {
      await t.done();
      await origin.close();
    }
  });

  test('a rejected promise from a command handler: the client gets REP 0x01, the log ERR_INTERNAL', async () => {
    const t = await inProcess();
    try {
      t.gw.addressesFor = () => Promise.reject(new TypeError('planted async defect'));
      const got = await rawExchange(t.port, socks5Connect('web.test', 80));
      assert.equal(got.subarray(0, 2).toString('hex'), '0500');
      const reply = decodeReply(got.subarray(2));
      assert.equal(reply.status, 'ok');
      assert.equal(reply.status === 'ok' && reply.msg.rep, REP.GENERAL_FAILURE);
      await new Promise((r) => setImmediate(r));
      assert.equal(t.records.length, 1);
      assert.equal(t.records[0]!.result, 'ERR_INTERNAL');
      assert.equal(t.records[0]!.host, 'web.test');
      assert.equal(t.stderr.length, 1);
      assert.match(t.stderr[0]!, /planted async defect/);
      assert.equal(t.gw.stats.active, 0, 'its place is given back');
      // a client that offered METHOD.ERROR_CODES is told which failure it was
      const request = socks5Connect('web.test', 80).subarray(3);
      const coded = await rawExchange(t.port, concatBytes(encodeGreeting({ methods: [METHOD.NO_AUTH, METHOD.ERROR_CODES] }), request));
      assert.equal(coded.subarray(0, 2).toString('hex'), '0500');
      const codedReply = decodeReply(coded.subarray(2));
      assert.ok(codedReply.status === 'ok' && codedReply.msg.rep === REP.GENERAL_FAILURE);
      assert.equal(codedReply.status === 'ok' && failureCode(codedReply.msg), 'ERR_INTERNAL');
    } finally {
      await t.done();
    }
  });
});

describe('RFC 1929 credentials are bytes (live gateway)', () => {
  test('a password of Latin-1 bytes logs in; other bytes that decode to the same text do not', async () => {
    const { hashPassword } = await import('../../../bridge/gateway/users.js');
    const right = Buffer.from([0x70, 0xe4, 0x73, 0x73, 0x77, 0xf6, 0x72]);
    const wrong = Buffer.from([0x70, 0xfc, 0x73, 0x73, 0x77, 0xff, 0x72]);
    const users = join(dir, 'latin1-users');
    writeFileSync(users, `bob:${await hashPassword(right)}\n`);
    const gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--users', users, '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1']);
    const login = async (password: Uint8Array): Promise<string> => {
      const got = await rawFirst(gw.listening[0]!.port, socks5Credentials('bob', password), 4);
      return got.toString('hex');
    };
    try {
      assert.equal(await login(wrong), '05020101', 'refused');
      assert.equal(await gw.waitRecord((r) => r.result === 'ERR_SOCKS_AUTH_FAILED').then((r) => r.user), 'bob');
      assert.equal(await login(right), '05020100', 'accepted');
    } finally {
      await gw.stop();
    }
  });
});

describe('login flood (password checks are capped, dropped when the client left, backed off per source)', () => {
  test('wrong passwords from 127.0.0.1 as fast as it can: a login from 127.0.0.2 succeeds while the flood runs', { timeout: 60_000 }, async (t) => {
    const { hashPassword } = await import('../../../bridge/gateway/users.js');
    const origin = await startOrigin('127.0.0.1', 16);
    const users = join(dir, 'flood-users');
    writeFileSync(users, `alice:${await hashPassword('s3cret')}\n`);
    const gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--users', users, '--handshake-timeout', '5', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1']);
    const port = gw.listening[0]!.port;
    const creds = socks5Credentials('mallory', 'guess');
    const LIMIT = 100_000;
    let attempts = 0;
    let stop = false;
    // three ways to flood: hang up at once (FIN), reset, or wait for the refusal
    const attempt = (kind: number): Promise<void> =>
      new Promise((resolve) => {
        const s = connect({ host: '127.0.0.1', port });
        s.on('error', () => {});
        s.once('close', () => resolve());
        s.once('connect', () => {
          attempts++;
          if (kind === 0) s.end(creds);
          else if (kind === 1) {
            s.write(creds);
            s.resetAndDestroy();
          } else s.write(creds);
          s.resume();
        });
      });
    const flooder = async (kind: number): Promise<void> => {
      while (!stop && attempts < LIMIT) await attempt(kind);
    };
    const flood = Promise.all(Array.from({ length: 24 }, (_, i) => flooder(i % 3)));
    try {
      while (attempts < 500) await new Promise((r) => setImmediate(r));
      const legit = await run('curl', ['-sS', '--max-time', '20', '--interface', '127.0.0.2', '--proxy', `socks5h://alice:s3cret@127.0.0.1:${port}`, `http://web.test:${origin.port}/`]);
      const attemptsByThen = attempts;
      stop = true;
      await flood;
      assert.equal(legit.code, 0, legit.stderr);
      assert.equal(legit.stdout.toString(), 'hello from origin');
      assert.ok(attemptsByThen < LIMIT, 'the flood was still running');
      const rec = await gw.waitRecord((r) => r.user === 'alice');
      assert.equal(rec.result, 'ok');
      assert.equal(rec.client, '127.0.0.2');
      // the flood's lines: how many of its attempts were hashed at all
      // resets before the accept leave no line (ERR_CLIENT_CLOSED), so fewer lines than attempts
      await gw.waitRecords(50, 30_000);
      const by: Record<string, number> = {};
      for (const r of gw.records()) if (r.user === 'mallory') by[String(r.auth)] = (by[String(r.auth)] ?? 0) + 1;
      const total = Object.values(by).reduce((a, b) => a + b, 0);
      const hashed = (by.fail ?? 0) + (by.abandoned ?? 0);
      t.diagnostic(`flood attempts when the login succeeded: ${attemptsByThen}, in all: ${attempts}; flood lines by auth: ${JSON.stringify(by)}`);
      assert.ok(total >= 50, JSON.stringify(by));
      assert.ok(hashed < total / 4, `most attempts cost no scrypt: ${JSON.stringify(by)}`);
      assert.ok((by.dropped ?? 0) > 0, `checks of clients that left were dropped: ${JSON.stringify(by)}`);
      assert.ok((by.backoff ?? 0) > 0, `the failing address is refused without a check: ${JSON.stringify(by)}`);
      assert.equal(gw.proc.exitCode, null);
    } finally {
      stop = true;
      await flood;
      await gw.stop();
      await origin.close();
    }
  });

  /** An in-process gateway whose password checks never end (the test holds them). */
  async function stuckChecks(handshakeTimeout: string): Promise<{ gw: Gateway; port: number; records: Record<string, unknown>[]; started: () => number }> {
    const records: Record<string, unknown>[] = [];
    const gw = new Gateway(gatewayConfig(['--listen', '127.0.0.1:0', '--handshake-timeout', handshakeTimeout]), (r) => void records.push(r));
    let started = 0;
    gw.users = { verify: () => (started++, new Promise<boolean>(() => {})) } as unknown as Users;
    const [bound] = await gw.listen();
    return { gw, port: bound!.port, records, started: () => started };
  }

  const CREDS = socks5Credentials('u', 'p');

  test('clients that leave while their check waits leave nothing queued', async () => {
    const t = await stuckChecks('30');
    try {
      const limit = t.gw.passwordChecks.limits.concurrency;
      // the first ones take every slot and stay
      const stayers = await Promise.all(Array.from({ length: limit }, async () => {
        const s = connect({ host: '127.0.0.1', port: t.port });
        s.write(CREDS);
        s.resume();
        return s;
      }));
      while (t.gw.passwordChecks.stats.running < limit) await new Promise((r) => setImmediate(r));
      // then 50 that queue their credentials and hang up
      await Promise.all(Array.from({ length: 50 }, (_, i) => new Promise<void>((resolve) => {
        const s = connect({ host: '127.0.0.1', port: t.port });
        s.on('error', () => {});
        s.resume();
        s.once('close', () => resolve());
        s.once('data', () => (i % 2 ? s.resetAndDestroy() : s.end()));
        s.write(CREDS);
      })));
      await eventually(() => t.records.length >= 50, 'the 50 logged', { describe: () => t.records.length });
      assert.equal(t.records.filter((r) => r.auth === 'dropped' && r.result === 'ERR_CLIENT_CLOSED').length, 50);
      assert.equal(t.gw.passwordChecks.stats.waiting, 0, 'nothing left queued');
      assert.equal(t.gw.passwordChecks.stats.dropped, 50);
      assert.equal(t.started(), limit, 'no check began for those that left');
      for (const s of stayers) s.destroy();
    } finally {
      await t.gw.close();
    }
  });

  test('the handshake timeout applies to a client waiting for its check', async () => {
    const t = await stuckChecks('0.3');
    try {
      const limit = t.gw.passwordChecks.limits.concurrency;
      const clients = Array.from({ length: limit + 1 }, () => {
        const s = connect({ host: '127.0.0.1', port: t.port });
        s.on('error', () => {});
        s.write(CREDS);
        s.resume();
        return new Promise((r) => s.once('close', r));
      });
      await Promise.all(clients);
      await eventually(() => t.records.length >= limit + 1, 'every client logged', { describe: () => t.records.length });
      assert.ok(t.records.every((r) => r.result === 'ERR_HANDSHAKE_TIMEOUT' && r.phase === 'auth-wait'), JSON.stringify(t.records));
      assert.equal(t.records.filter((r) => r.auth === 'dropped').length, 1, 'the one waiting was dropped');
      assert.equal(t.gw.passwordChecks.stats.waiting, 0);
    } finally {
      await t.gw.close();
    }
  });
});

describe('connection budget: handshakes apart from --max-connections', () => {
  test('cap 50, 60 silent sockets: a real CONNECT still succeeds, and the oldest silent ones made room', async () => {
    const origin = await startOrigin('127.0.0.1', 16);
    const gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--max-connections', '50', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1']);
    const port = gw.listening[0]!.port;
    const idle: Socket[] = [];
    try {
      const closed: Promise<unknown>[] = [];
      for (let i = 0; i < 60; i++) {
        const s = connect({ host: '127.0.0.1', port });
        s.on('error', () => {});
        closed.push(new Promise((r) => s.once('close', r)));
        await new Promise((r) => s.once('connect', r));
        idle.push(s);
      }
      // accepted after the 60, so it finds them all in their handshake
      const { socket, reply } = await dialSocks5({ host: '127.0.0.1', port }, { host: 'web.test', port: origin.port }, { timeoutMs: 5000 });
      assert.equal(reply.rep, REP.SUCCEEDED);
      const body = readAll(socket);
      socket.resume();
      socket.write(`GET / HTTP/1.0\r\nHost: web.test\r\n\r\n`);
      assert.match((await body).toString(), /hello from origin$/);
      // the budget is a quarter of the cap, at least 16: the oldest silent sockets were closed
      const evicted = await gw.waitRecords(60 - 16);
      const caps = evicted.filter((r) => r.result === 'ERR_CONNECTION_CAP');
      assert.ok(caps.length >= 60 - 16, `${caps.length} evicted`);
      assert.ok(caps.every((r) => r.phase === 'greeting'));
      await Promise.all(closed.slice(0, caps.length));
      assert.equal(gw.proc.exitCode, null);
    } finally {
      for (const s of idle) s.destroy();
      await gw.stop();
      await origin.close();
    }
  });

  test('only connections past their request count toward --max-connections', async () => {
    const origin = await startOrigin('127.0.0.1', 16);
    const t = new Gateway(gatewayConfig(['--listen', '127.0.0.1:0', '--max-connections', '1', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1']), () => {});
    const [bound] = await t.listen();
    const target = { host: '127.0.0.1', port: bound!.port };
    const idle: Socket[] = [];
    try {
      for (let i = 0; i < 5; i++) idle.push(connect(target).on('error', () => {}));
      const first = await dialSocks5(target, { host: 'web.test', port: origin.port }, { timeoutMs: 5000 });
      assert.equal(t.stats.active, 1);
      assert.equal(t.stats.handshaking, 5);
      await assert.rejects(dialSocks5(target, { host: 'web.test', port: origin.port }, { timeoutMs: 5000 }), (e: { rep: number }) => e.rep === REP.GENERAL_FAILURE);
      first.socket.destroy();
      await eventually(() => t.stats.active === 0, 'the first tunnel no longer active', { describe: () => t.stats });
      const second = await dialSocks5(target, { host: 'web.test', port: origin.port }, { timeoutMs: 5000 });
      second.socket.destroy();
      assert.equal(t.stats.handshaking, 5, 'the silent ones are still there, counted apart');
    } finally {
      for (const s of idle) s.destroy();
      await t.close();
      await origin.close();
    }
  });
});

describe('destination names that are no host name', () => {
  test('an empty name or "." gets REP 0x01 (ERR_SOCKS_NAME) and never reaches dns.lookup (no DEP0118)', async () => {
    // the system resolver, as a default gateway has it: dns.lookup("") warns and answers nothing
    const gw = await startCli(['gateway', '--listen', '127.0.0.1:0']);
    const port = gw.listening[0]!.port;
    try {
      // (only names that cannot leave this host even where the check is missing; the others are the codec's tests)
      for (const name of ['', '.']) {
        const n = Buffer.from(name);
        const got = await rawExchange(port, concatBytes(encodeGreeting({ methods: [METHOD.NO_AUTH] }), Uint8Array.of(5, CMD.CONNECT, 0, 3, n.length), n, Uint8Array.of(0, 80)));
        assert.equal(got.subarray(0, 2).toString('hex'), '0500', name);
        const reply = decodeReply(got.subarray(2));
        assert.equal(reply.status === 'ok' && reply.msg.rep, REP.GENERAL_FAILURE, JSON.stringify(name));
      }
      const recs = await gw.waitRecords(2);
      assert.deepEqual(recs.map((r) => r.result), ['ERR_SOCKS_NAME', 'ERR_SOCKS_NAME']);
      // SIGHUP's answer comes after any warning those requests caused
      gw.proc.kill('SIGHUP');
      await gw.waitStderr(/SIGHUP/);
      assert.doesNotMatch(gw.stderr.join('\n'), /DEP0118|Warning/);
    } finally {
      await gw.stop();
    }
  });
});
