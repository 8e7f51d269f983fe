// The gateway as a user meets it: the real CLI process, real clients (curl, the `socks` package,
// raw sockets for malformed requests), on loopback. Cross-family tests live in test/topology/.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import { decodeReply, encodeGreeting, encodeRequest } from '../../../shared/socks5/codec.js';
import { CMD, METHOD, REP } from '../../../shared/socks5/constants.js';
import { dialSocks5 } from '../../../bridge/upstream/socks5.js';
import { gatewayConfig } from '../../../bridge/gateway/config.js';
import { Gateway } from '../../../bridge/gateway/server.js';
import { hashPassword } from '../../../bridge/gateway/users.js';
import { nativeRelayStatus, releasedToNative } from '../../../bridge/native/loader.js';
import { requireCapability } from '../../helpers/env.js';
import { eventually } from '../../helpers/settle.js';
import { closedTcpPort, readAll, sha256, startOrigin, startTcp, type Origin } from '../../helpers/origin.js';
import { run, startCli, type Running } from '../../helpers/process.js';

const dir = mkdtempSync(join(tmpdir(), 'dualsocks-gw-'));
const hostsFile = join(dir, 'hosts');
writeFileSync(hostsFile, ['127.0.0.1 web.test', '127.0.0.2 rebind.test', '127.0.0.2 mixed.test', '127.0.0.1 mixed.test', '::1 web6.test'].join('\n'));

/** A sender that wrote nothing for this long is taken as stalled. */
const NO_PROGRESS_MS = 300;

async function curl(args: string[]): Promise<{ code: number | null; body: Buffer; stderr: string }> {
  const r = await run('curl', ['-sS', '--max-time', '20', ...args]);
  return { code: r.code, body: r.stdout, stderr: r.stderr };
}

/** Sends raw bytes as a SOCKS5 client would and returns the reply's REP. */
async function rawRep(port: number, bytes: Uint8Array[]): Promise<number> {
  const s = connect({ host: '127.0.0.1', port });
  await new Promise((r) => s.once('connect', r));
  for (const b of bytes) s.write(b);
  const all = await readAll(s);
  assert.equal(all[0], 5);
  assert.equal(all[1], METHOD.NO_AUTH);
  const d = decodeReply(all.subarray(2));
  assert.equal(d.status, 'ok');
  return d.status === 'ok' ? d.msg.rep : -1;
}

describe('gateway on loopback, no auth', () => {
  let gw: Running;
  let origin: Origin;
  let port: number;

  before(async () => {
    origin = await startOrigin('127.0.0.1');
    gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1/32', '--allow', '::1']);
    port = gw.listening[0]!.port;
  });
  after(async () => {
    await gw.stop();
    await origin.close();
  });

  test('curl --socks5-hostname fetches by a name only the gateway knows, byte-exact', async () => {
    const page = await curl(['--socks5-hostname', `127.0.0.1:${port}`, `http://web.test:${origin.port}/`]);
    assert.equal(page.code, 0, page.stderr);
    assert.equal(page.body.toString(), 'hello from origin');
    const blob = await curl(['--socks5-hostname', `127.0.0.1:${port}`, `http://web.test:${origin.port}/blob.bin`]);
    assert.equal(blob.code, 0, blob.stderr);
    assert.equal(sha256(blob.body), origin.blobSha256);
  });

  test('curl --socks5 sends an IPv4 address (ATYP 1)', async () => {
    const r = await curl(['--socks5', `127.0.0.1:${port}`, `http://127.0.0.1:${origin.port}/`]);
    assert.equal(r.code, 0, r.stderr);
    const rec = await gw.waitRecord((x) => x.host === '127.0.0.1' && x.result === 'ok');
    assert.equal(rec.result, 'ok');
    assert.equal(rec.family, 4);
  });

  test('a bracketed IPv6 literal and an IPv6 text inside DOMAINNAME reach an IPv6 origin', async () => {
    const origin6 = await startOrigin('::1', 1024, 'hello over IPv6');
    try {
      const r = await curl(['--socks5-hostname', `127.0.0.1:${port}`, `http://[::1]:${origin6.port}/`]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.body.toString(), 'hello over IPv6');
      // the draft's §3: a DOMAINNAME holding "::1" is an address, not a name to look up
      const dial = await dialSocks5({ host: '127.0.0.1', port }, { host: 'web6.test', port: origin6.port }, { timeoutMs: 5000 });
      assert.equal(dial.reply.host, '::1', 'BND.ADDR is the outbound socket address, IPv6 here');
      dial.socket.destroy();
      const raw = connect({ host: '127.0.0.1', port });
      await new Promise((res) => raw.once('connect', res));
      const name = Buffer.from('::1');
      raw.write(encodeGreeting({ methods: [METHOD.NO_AUTH] }));
      raw.write(Buffer.concat([Buffer.from([5, CMD.CONNECT, 0, 3, name.length]), name, Buffer.from([origin6.port >> 8, origin6.port & 0xff])]));
      raw.end(`GET / HTTP/1.0\r\nHost: x\r\n\r\n`);
      const all = await readAll(raw);
      const reply = decodeReply(all.subarray(2));
      assert.equal(reply.status, 'ok');
      if (reply.status === 'ok') {
        assert.equal(reply.msg.rep, REP.SUCCEEDED);
        assert.match(all.subarray(2 + reply.size).toString(), /hello over IPv6$/);
      }
    } finally {
      await origin6.close();
    }
  });

  test('the socks npm client connects by name', async () => {
    const { socket } = await SocksClient.createConnection({
      proxy: { host: '127.0.0.1', port, type: 5 },
      command: 'connect',
      destination: { host: 'web.test', port: origin.port },
    });
    socket.end(`GET /blob.bin HTTP/1.0\r\nHost: web.test\r\n\r\n`);
    const all = await readAll(socket);
    const body = all.subarray(all.indexOf('\r\n\r\n') + 4);
    assert.equal(sha256(body), origin.blobSha256);
  });

  test('distinct reply codes: not found 0x04, policy 0x02, refused 0x05', async () => {
    const closedPort = await closedTcpPort();
    const cases: [string, number, number][] = [
      ['nowhere.test', origin.port, REP.HOST_UNREACHABLE],
      ['rebind.test', origin.port, REP.NOT_ALLOWED],
      ['10.1.2.3', 80, REP.NOT_ALLOWED],
      ['::ffff:127.0.0.2', 80, REP.NOT_ALLOWED],
      ['169.254.169.254', 80, REP.NOT_ALLOWED],
      ['fd00::1', 80, REP.NOT_ALLOWED],
      ['127.0.0.1', closedPort, REP.CONNECTION_REFUSED],
    ];
    for (const [host, p, rep] of cases) {
      await assert.rejects(dialSocks5({ host: '127.0.0.1', port }, { host, port: p }, { timeoutMs: 5000 }), (e: { rep: number }) => e.rep === rep, `${host} → 0x0${rep}`);
      const r = await curl(['--socks5-hostname', `127.0.0.1:${port}`, `http://${host.includes(':') ? `[${host}]` : host}:${p}/`]);
      assert.equal(r.code, 97, r.stderr);
      assert.match(r.stderr, new RegExp(`\\(${rep}\\)`), `curl shows REP ${rep} for ${host}`);
    }
  });

  test('policy is checked per resolved address: the loopback one is skipped, the allowed one used', async () => {
    const dial = await dialSocks5({ host: '127.0.0.1', port }, { host: 'mixed.test', port: origin.port }, { timeoutMs: 5000 });
    dial.socket.destroy();
    const rec = await gw.waitRecord((x) => x.host === 'mixed.test');
    assert.equal(rec.address, '127.0.0.1');
  });

  test('unknown command gets 0x07 and unknown ATYP gets 0x08', async () => {
    const greet = encodeGreeting({ methods: [METHOD.NO_AUTH] });
    assert.equal(await rawRep(port, [greet, Uint8Array.from([5, 0x09, 0, 1, 127, 0, 0, 1, 0, 80])]), REP.COMMAND_NOT_SUPPORTED);
    assert.equal(await rawRep(port, [greet, Uint8Array.from([5, 1, 0, 0x05, 1, 2, 3, 4])]), REP.ADDRESS_TYPE_NOT_SUPPORTED);
  });

  test('half-close: the client FIN reaches the server while the reply still flows back', async () => {
    const echo = await startTcp('127.0.0.1', (s) => {
      const parts: Buffer[] = [];
      s.on('data', (d: Buffer) => parts.push(d));
      s.on('end', () => s.end(`got ${sha256(Buffer.concat(parts))}`));
    });
    try {
      const payload = Buffer.alloc(3 * 1024 * 1024, 7);
      const { socket } = await dialSocks5({ host: '127.0.0.1', port }, { host: 'web.test', port: echo.port }, { timeoutMs: 5000 });
      socket.resume();
      const answer = readAll(socket);
      socket.end(payload);
      assert.equal((await answer).toString(), `got ${sha256(payload)}`);
    } finally {
      await echo.close();
    }
  });

  test('backpressure: a paused reader stalls the sender instead of filling the gateway', async () => {
    const total = 512 * 1024 * 1024;
    let written = 0;
    const chunk = Buffer.alloc(64 * 1024, 1);
    let stalled!: () => void;
    const stalledP = new Promise<void>((r) => (stalled = r));
    const src = await startTcp('127.0.0.1', (s) => {
      const pump = (): void => {
        while (written < total) {
          written += chunk.length;
          if (!s.write(chunk)) {
            stalled();
            s.once('drain', pump);
            return;
          }
        }
        s.end();
      };
      pump();
    });
    try {
      const { socket } = await dialSocks5({ host: '127.0.0.1', port }, { host: 'web.test', port: src.port }, { timeoutMs: 5000 });
      socket.pause();
      await stalledP;
      // let every buffer on the path fill: wait until the sender makes no progress (time let pass on
      // purpose: "no progress" is the absence of an event, over an interval)
      let last = -1;
      while (last !== written) {
        last = written;
        await new Promise((r) => setTimeout(r, NO_PROGRESS_MS));
      }
      assert.ok(written < 64 * 1024 * 1024, `sender stalled after ${written} bytes, far below the ${total} it wanted to send`);
      let received = 0;
      socket.on('data', (d: Buffer) => (received += d.length));
      socket.resume();
      await new Promise((r) => socket.once('end', r));
      assert.equal(received, total);
    } finally {
      await src.close();
    }
  });

  test('one JSON log line per finished connection, with the fields an operator needs', async () => {
    const r = await curl(['--socks5-hostname', `127.0.0.1:${port}`, `http://web.test:${origin.port}/`]);
    assert.equal(r.code, 0);
    const rec = await gw.waitRecord((x) => x.host === 'web.test' && x.result === 'ok');
    for (const k of ['time', 'client', 'cmd', 'host', 'port', 'address', 'family', 'bound', 'bytesUp', 'bytesDown', 'durationMs', 'result']) {
      assert.ok(k in rec, `log has ${k}`);
    }
    assert.equal(rec.bytesDown, Number(rec.bytesDown));
    assert.ok((rec.bytesDown as number) > 'hello from origin'.length);
  });
});

describe('gateway with username/password', () => {
  let gw: Running;
  let origin: Origin;
  let port: number;

  before(async () => {
    origin = await startOrigin('127.0.0.1', 1024);
    const line = await run(process.execPath, [join(import.meta.dirname, '../../../bridge/cli.js'), 'passwd', 'alice'], { input: 's3cret pass\n' });
    assert.equal(line.code, 0, line.stderr);
    assert.match(line.stdout.toString(), /^alice:scrypt\$/);
    assert.doesNotMatch(line.stdout.toString(), /s3cret/);
    writeFileSync(join(dir, 'users'), line.stdout);
    gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--users', join(dir, 'users'), '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1']);
    port = gw.listening[0]!.port;
  });
  after(async () => {
    await gw.stop();
    await origin.close();
  });

  test('right password passes, wrong password and no credentials are refused', async () => {
    const good = await curl(['--proxy', `socks5h://alice:s3cret%20pass@127.0.0.1:${port}`, `http://web.test:${origin.port}/`]);
    assert.equal(good.code, 0, good.stderr);
    const bad = await curl(['--proxy', `socks5h://alice:wrong@127.0.0.1:${port}`, `http://web.test:${origin.port}/`]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /authentication failed|User was rejected/i);
    const none = await curl(['--socks5-hostname', `127.0.0.1:${port}`, `http://web.test:${origin.port}/`]);
    assert.notEqual(none.code, 0);
    await assert.rejects(
      SocksClient.createConnection({ proxy: { host: '127.0.0.1', port, type: 5, userId: 'mallory', password: 's3cret pass' }, command: 'connect', destination: { host: 'web.test', port: origin.port } }),
    );
    const recs = await gw.waitRecords(4);
    assert.ok(recs.some((r) => r.user === 'alice' && r.result === 'ok'));
    assert.ok(recs.some((r) => r.user === 'alice' && r.result === 'ERR_SOCKS_AUTH_FAILED'));
    assert.ok(recs.some((r) => r.user === 'mallory' && r.result === 'ERR_SOCKS_AUTH_FAILED'));
  });
});

describe('gateway --users: a login that passed is remembered', () => {
  test('many connections with the same credentials cost one scrypt; a wrong password is hashed every time; a reload forgets', async () => {
    const origin = await startOrigin('127.0.0.1', 16);
    const file = join(dir, 'users-remembered');
    writeFileSync(file, `alice:${await hashPassword('s3cret pass')}\n`);
    const gw = new Gateway(gatewayConfig(['--listen', '127.0.0.1:0', '--users', file, '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1']), () => {});
    try {
      const [bound] = await gw.listen();
      const get = (password: string): Promise<{ code: number | null }> => curl(['--proxy', `socks5h://alice:${encodeURIComponent(password)}@127.0.0.1:${bound!.port}`, `http://web.test:${origin.port}/`]);
      for (let i = 0; i < 5; i++) assert.equal((await get('s3cret pass')).code, 0);
      assert.equal(gw.passwordChecks.stats.started, 1, 'one scrypt for five logins');
      for (let i = 0; i < 2; i++) assert.notEqual((await get('wrong')).code, 0);
      assert.equal(gw.passwordChecks.stats.started, 3, 'a wrong password is never taken from memory');
      gw.reload();
      assert.equal((await get('s3cret pass')).code, 0);
      assert.equal(gw.passwordChecks.stats.started, 4, 'after a reload the file is asked again');
    } finally {
      await gw.close();
      await origin.close();
    }
  });
});

describe('gateway reload on SIGHUP', () => {
  test('re-reads --users and --hosts; a file that does not parse keeps the previous table and says why', async () => {
    const origin = await startOrigin('127.0.0.1', 1024);
    const users = join(dir, 'reload-users');
    const hosts = join(dir, 'reload-hosts');
    const passwd = async (user: string): Promise<Buffer> => (await run(process.execPath, [join(import.meta.dirname, '../../../bridge/cli.js'), 'passwd', user], { input: 'pw\n' })).stdout;
    writeFileSync(users, await passwd('alice'));
    writeFileSync(hosts, '127.0.0.1 old.test\n');
    const gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--users', users, '--hosts', hosts, '--dns', 'none', '--allow', '127.0.0.1']);
    const fetch = (user: string, name: string): Promise<{ code: number | null; body: Buffer; stderr: string }> =>
      curl(['--proxy', `socks5h://${user}:pw@127.0.0.1:${gw.listening[0]!.port}`, `http://${name}:${origin.port}/`]);
    try {
      assert.equal((await fetch('alice', 'old.test')).code, 0);
      assert.notEqual((await fetch('bob', 'old.test')).code, 0);
      writeFileSync(users, await passwd('bob'));
      writeFileSync(hosts, '127.0.0.1 new.test\n');
      gw.proc.kill('SIGHUP');
      await gw.waitStderr(/SIGHUP: users reloaded .*\(1\)/);
      await gw.waitStderr(/SIGHUP: hosts reloaded/);
      const bob = await fetch('bob', 'new.test');
      assert.equal(bob.code, 0, bob.stderr);
      assert.equal(bob.body.toString(), 'hello from origin');
      assert.notEqual((await fetch('alice', 'new.test')).code, 0, 'a user taken out is refused');
      const gone = await fetch('bob', 'old.test');
      assert.notEqual(gone.code, 0, 'a name taken out of the hosts file is gone');
      assert.match(gone.stderr, /\(4\)/, 'REP 0x04');
      await gw.waitRecord((r) => r.host === 'old.test' && r.result === 'ERR_NAME_NOT_FOUND');
      // a broken file: the previous users stay, and the operator is told which key failed
      writeFileSync(users, 'bob:not-a-hash\n');
      gw.proc.kill('SIGHUP');
      const said = await gw.waitStderr(/SIGHUP: --users not reloaded/);
      assert.match(said, /users: /);
      assert.equal((await fetch('bob', 'new.test')).code, 0, 'still served with the previous users');
      assert.equal(gw.proc.exitCode, null, 'still running');
    } finally {
      await gw.stop();
      await origin.close();
    }
  });
});

describe('gateway limits', () => {
  test('handshake timeout closes a silent client', async () => {
    const gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--handshake-timeout', '0.3']);
    try {
      const silent = connect({ host: '127.0.0.1', port: gw.listening[0]!.port });
      await new Promise((r) => silent.once('close', r));
      const rec = await gw.waitRecord((r) => r.result === 'ERR_HANDSHAKE_TIMEOUT');
      assert.equal(rec.phase, 'greeting');
    } finally {
      await gw.stop();
    }
  });

  test('connection cap refuses cleanly with 0x01, and a tunnel that ended frees its place', async () => {
    const origin = await startOrigin('127.0.0.1', 16);
    const gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--max-connections', '1', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1']);
    const port = gw.listening[0]!.port;
    try {
      const first = await dialSocks5({ host: '127.0.0.1', port }, { host: 'web.test', port: origin.port }, { timeoutMs: 5000 });
      await assert.rejects(
        dialSocks5({ host: '127.0.0.1', port }, { host: 'web.test', port: origin.port }, { timeoutMs: 5000 }),
        (e: { rep: number }) => e.rep === REP.GENERAL_FAILURE,
      );
      await gw.waitRecord((r) => r.result === 'ERR_CONNECTION_CAP');
      // the relay (the native one where built) gives its place back when the tunnel ends
      first.socket.destroy();
      await gw.waitRecord((r) => r.result === 'ok');
      const third = await dialSocks5({ host: '127.0.0.1', port }, { host: 'web.test', port: origin.port }, { timeoutMs: 5000 });
      third.socket.destroy();
    } finally {
      await gw.stop();
      await origin.close();
    }
  });

  test('an idle tunnel is closed after --idle-timeout and logged as idle', async () => {
    const held = await startTcp('127.0.0.1', () => {});
    const gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--idle-timeout', '0.3', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1']);
    try {
      const { socket } = await dialSocks5({ host: '127.0.0.1', port: gw.listening[0]!.port }, { host: 'web.test', port: held.port }, { timeoutMs: 5000 });
      socket.resume();
      // the gateway's close arrives as our end (the socket is half-open capable)
      await new Promise((r) => socket.once('end', r));
      socket.destroy();
      const rec = await gw.waitRecord((r) => r.host === 'web.test');
      assert.equal(rec.result, 'ok');
      assert.equal(rec.end, 'idle');
    } finally {
      await gw.stop();
      await held.close();
    }
  });

  test('--clients refuses other sources with "no acceptable method"', async () => {
    const gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--clients', '198.51.100.0/24']);
    try {
      const s: Socket = connect({ host: '127.0.0.1', port: gw.listening[0]!.port });
      s.write(encodeGreeting({ methods: [METHOD.NO_AUTH] }));
      assert.deepEqual([...(await readAll(s))], [5, METHOD.NO_ACCEPTABLE]);
      assert.equal((await gw.waitRecords(1))[0]!.result, 'ERR_POLICY_CLIENT');
    } finally {
      await gw.stop();
    }
  });

  test('refuses to start open on a non-loopback address, and config errors name the key', async () => {
    const cli = join(import.meta.dirname, '../../../bridge/cli.js');
    const open = await run(process.execPath, [cli, 'gateway', '--listen', '0.0.0.0:0']);
    assert.equal(open.code, 2);
    assert.match(open.stderr, /listen: 0\.0\.0\.0 is not loopback.*--users FILE.*--no-auth/);
    writeFileSync(join(dir, 'bad.json'), JSON.stringify({ listen: ['127.0.0.1:0'], prefer: 'ipv5' }));
    const bad = await run(process.execPath, [cli, 'gateway', '--config', join(dir, 'bad.json')]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /prefer: must be one of ipv6, ipv4/);
    writeFileSync(join(dir, 'typo.json'), JSON.stringify({ allowprivate: true }));
    const typo = await run(process.execPath, [cli, 'gateway', '--config', join(dir, 'typo.json')]);
    assert.match(typo.stderr, /allowprivate: unknown key .*did you mean "allowPrivate"/);
    const enc = encodeRequest({ cmd: CMD.CONNECT, host: 'example.org', port: 1 });
    assert.equal(enc[3], 3, 'names travel as DOMAINNAME');
  });
});

describe('gateway in process (what `dualsocks start` runs)', () => {
  test('close() ends tunnels the relay holds, also those whose sockets it released', { timeout: 20_000 }, async () => {
    const held = await startTcp('127.0.0.1', (s) => s.resume());
    const records: Record<string, unknown>[] = [];
    let logged!: () => void;
    const firstLine = new Promise<void>((r) => (logged = r));
    const gw = new Gateway(gatewayConfig(['--listen', '127.0.0.1:0', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1']), (r) => {
      records.push(r);
      logged();
    });
    try {
      const [bound] = await gw.listen();
      const { socket } = await dialSocks5({ host: '127.0.0.1', port: bound!.port }, { host: 'web.test', port: held.port }, { timeoutMs: 5000 });
      socket.write('x');
      socket.resume();
      // half-open capable: the gateway's close arrives as our end
      const ended = new Promise((r) => socket.once('end', r).once('close', r));
      // the tunnel is open and counted, whoever relays it
      assert.equal(gw.stats.active, 1);
      await gw.close();
      await ended;
      socket.destroy();
      await firstLine;
      assert.equal(gw.stats.active, 0);
      assert.equal(records.length, 1);
      assert.equal(records[0]!.result, 'ok');
      assert.equal(records[0]!.bytesUp, 1);
    } finally {
      await gw.close();
      await held.close();
    }
  });
});

describe('gateway: what a tunnel the native relay took over keeps alive', () => {
  const status = nativeRelayStatus();
  const skip = requireCapability('native splice relay', status.available, status.reason);
  test('not the client socket nor the handshake: only the log line waits for the end', { skip, timeout: 30_000 }, async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    // idle until the client leaves, then it closes too
    const held = await startTcp('127.0.0.1', (s) => s.resume().once('end', () => s.end()));
    const records: Record<string, unknown>[] = [];
    const gw = new Gateway(gatewayConfig(['--listen', '127.0.0.1:0', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1']), (r) => records.push(r));
    // the gateway's side of the client connection, watched without being held
    const proto = Gateway.prototype as unknown as { accept(s: Socket): void };
    const accept = proto.accept;
    // the path where Node accepts (no addon front, or one that adopted the connection): the
    // front itself makes no Node socket to keep
    process.env.DUALSOCKS_NATIVE_FRONT = '0';
    let accepted: WeakRef<Socket> | undefined;
    proto.accept = function (this: Gateway, s: Socket) {
      accepted = new WeakRef(s);
      accept.call(this, s);
    };
    try {
      const [bound] = await gw.listen();
      const { socket } = await dialSocks5({ host: '127.0.0.1', port: bound!.port }, { host: 'web.test', port: held.port }, { timeoutMs: 5000 });
      socket.write('x');
      socket.resume();
      await eventually(() => accepted?.deref()?.destroyed === true && releasedToNative(accepted.deref()!), 'the client socket handed to the native relay and released');
      // the tunnel is still open (idle), so its end has not come: nothing may hold the socket now
      await eventually(async () => {
        gc();
        await new Promise((r) => setImmediate(r));
        return accepted!.deref() === undefined;
      }, 'the released client socket collected while its tunnel is open');
      assert.equal(gw.stats.active, 1);
      assert.equal(records.length, 0);
      // and the end is still logged, with its counts
      socket.end();
      await eventually(() => records.length === 1, 'the log line at the end');
      assert.deepEqual([records[0]!.result, records[0]!.bytesUp], ['ok', 1]);
      assert.equal(gw.stats.active, 0);
    } finally {
      delete process.env.DUALSOCKS_NATIVE_FRONT;
      proto.accept = accept;
      await gw.close();
      await held.close();
    }
  });
});
