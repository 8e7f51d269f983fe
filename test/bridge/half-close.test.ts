// "Half-close is data" on every relay path (DESIGN.md, issue 10 items 13 and 14): a client that
// sends its request, data and FIN at once, before any reply (`printf … | ncat`, or a raw socket
// that end()s right after writing), must have its data and then its EOF reach the destination,
// and must see the tunnel close once the destination closes. The same for a destination that
// closes at once, and for the HTTP forward proxy's client that half-closes after its request.
// Real processes, real ncat, each path with the native splice relay and with the JavaScript one.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { nativeRelayStatus } from '../../bridge/native/loader.js';
import { concatBytes, decodeAuthReply, decodeMethodSelection, decodeReply, decodeSocks4Reply, encodeRequest, encodeSocks4Request } from '../../shared/socks5/codec.js';
import { CMD, METHOD, REP, SOCKS4_CD } from '../../shared/socks5/constants.js';
import { haveCommand, requireCapability } from '../helpers/env.js';
import { readAll, sha256, startOrigin, startTcp, type Origin } from '../helpers/origin.js';
import { CLI, run, startCli, type Running } from '../helpers/process.js';
import { corkedExchange, socks5Credentials, socks5Head, socks5Request } from '../helpers/socks5.js';

const dir = mkdtempSync(join(tmpdir(), 'dualsocks-halfclose-'));
const hostsFile = join(dir, 'hosts');
writeFileSync(hostsFile, '127.0.0.1 origin.test\n');
const GW = ['gateway', '--listen', '127.0.0.1:0', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1'];

/** Long enough for any loopback exchange; a lost FIN shows as this wait running out (the idle timeout is an hour). */
const HANG_MS = 15_000;

const skipNcat = requireCapability('ncat', haveCommand('ncat', ['--version']), 'apt-get install ncat');
const native = nativeRelayStatus();
const skipNative = requireCapability('native splice relay', native.available, native.reason);

/** What the recording origin answers once it has read to EOF: proof that the FIN came through, after the data. */
const receipt = (data: Uint8Array): string => `EOF after ${data.length} bytes sha256 ${sha256(data)}\n`;

/** One client connection as the test sees it: what it receives, and when it is over. */
interface Client {
  out: Readable;
  /** All it received, once the connection (or ncat) has ended. */
  all: Promise<Buffer>;
  /** The connection is closed (raw socket 'close', ncat exited). */
  closed: Promise<void>;
}

function withDeadline<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing after ${HANG_MS} ms (a FIN lost on the way?)`)), HANG_MS);
  });
  return Promise.race([p, limit]).finally(() => clearTimeout(timer));
}

/** A raw socket that writes everything and its FIN in one go. */
function rawClient(port: number, bytes: Uint8Array): Client {
  const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  s.end(bytes);
  const closed = new Promise<void>((r) => s.once('close', () => r()));
  return { out: s, all: readAll(s), closed };
}

/** `printf BYTES | ncat 127.0.0.1 PORT`: ncat half-closes when its input ends, and exits when the server closes. */
function ncatClient(port: number, bytes: Uint8Array): Client {
  const p = spawn('ncat', ['127.0.0.1', String(port)], { stdio: ['pipe', 'pipe', 'ignore'] });
  const killer = setTimeout(() => p.kill('SIGKILL'), HANG_MS + 5000);
  const closed = new Promise<void>((r) => p.once('close', () => r()));
  void closed.then(() => clearTimeout(killer));
  p.stdin.on('error', () => {});
  p.stdin.end(bytes);
  const parts: Buffer[] = [];
  p.stdout.on('data', (d: Buffer) => parts.push(d));
  const all = new Promise<Buffer>((r) => p.stdout.once('end', () => r(Buffer.concat(parts))));
  return { out: p.stdout, all, closed };
}

const CLIENTS = [
  { name: 'printf | ncat', open: ncatClient, skip: skipNcat },
  { name: 'raw socket, end() at once', open: rawClient, skip: false as const },
];

/** Resolves with what `out` received once `enough` says the head is complete (returns its length). */
function readHead(out: Readable, enough: (b: Buffer) => number | null): Promise<{ head: Buffer; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      const n = enough(buf);
      if (n === null) return;
      out.off('data', onData);
      out.off('end', onEnd);
      resolve({ head: buf.subarray(0, n), rest: buf.subarray(n) });
    };
    const onEnd = (): void => reject(new Error(`ended before the reply: ${JSON.stringify(buf.toString('latin1'))}`));
    out.on('data', onData);
    out.once('end', onEnd);
  });
}

/** How a client asks a given inbound for host:port, and how its success reply looks. */
interface Inbound {
  name: string;
  request(host: string, port: number): Uint8Array;
  /** Asserts the reply at the head of what the client got, returns its length. */
  reply(out: Buffer): number;
  /** SOCKS4 carries no name. */
  byAddress?: boolean;
}

const SOCKS5: Inbound = {
  name: 'SOCKS5',
  request: (host, port) => socks5Request(CMD.CONNECT, host, port),
  reply: (out) => {
    const n = socks5Head(out);
    const r = decodeReply(out.subarray(2));
    assert.ok(n !== null && r.status === 'ok' && r.msg.rep === REP.SUCCEEDED, `a SOCKS5 success reply: ${out.subarray(0, 32).toString('hex')}`);
    return n;
  },
};
/** Greeting, credentials, request (and data, FIN) in one go, before any answer: the FIN arrives while the password is checked. */
const SOCKS5_AUTH: Inbound = {
  name: 'SOCKS5 with user/password, pipelined',
  request: (host, port) =>
    concatBytes(socks5Credentials('alice', 'pw'), encodeRequest({ cmd: CMD.CONNECT, host, port })),
  reply: (out) => {
    const m = decodeMethodSelection(out);
    assert.ok(m.status === 'ok' && m.msg.method === METHOD.USERPASS, `method selection: ${out.subarray(0, 32).toString('hex')}`);
    const a = decodeAuthReply(out.subarray(m.size));
    assert.ok(a.status === 'ok' && a.msg.status === 0, 'login accepted');
    const r = decodeReply(out.subarray(m.size + a.size));
    assert.ok(r.status === 'ok' && r.msg.rep === REP.SUCCEEDED, 'request granted');
    return m.size + a.size + r.size;
  },
};
const socks4 = (name: string, byAddress: boolean): Inbound => ({
  name,
  byAddress,
  request: (host, port) => encodeSocks4Request({ cmd: CMD.CONNECT, host, port, userId: '' }),
  reply: (out) => {
    const d = decodeSocks4Reply(out);
    assert.ok(d.status === 'ok' && d.msg.cd === SOCKS4_CD.GRANTED, `a SOCKS4 grant: ${out.toString('hex')}`);
    return 8;
  },
});
const HTTP_CONNECT: Inbound = {
  name: 'HTTP CONNECT',
  request: (host, port) => Buffer.from(`CONNECT ${host}:${port} HTTP/1.1\r\nHost: ${host}:${port}\r\n\r\n`),
  reply: (out) => {
    const text = out.toString('latin1');
    assert.match(text, /^HTTP\/1\.1 200 /);
    return text.indexOf('\r\n\r\n') + 4;
  },
};

/** An origin that reads to EOF, then answers with a receipt and closes. */
async function recordingOrigin(): Promise<Awaited<ReturnType<typeof startTcp>>> {
  return startTcp('127.0.0.1', (s) => {
    const parts: Buffer[] = [];
    s.on('data', (d: Buffer) => parts.push(d));
    s.once('end', () => s.end(receipt(Buffer.concat(parts))));
  });
}

/** An origin that closes at once, with `words` or nothing said: its FIN may come with the reply. */
async function hangUpOrigin(words: string): Promise<Awaited<ReturnType<typeof startTcp>>> {
  return startTcp('127.0.0.1', (s) => {
    s.resume();
    s.end(words);
  });
}

/**
 * The client sends request + data + FIN at once: the origin must get the data, then EOF (its
 * receipt says so), and the client must get the reply, the receipt, and then the close.
 */
async function earlyFin(open: (port: number, b: Uint8Array) => Client, port: number, inbound: Inbound, target: { host: string; port: number }, data: Uint8Array): Promise<void> {
  const c = open(port, concatBytes(inbound.request(target.host, target.port), data));
  const out = await withDeadline(c.all, `${inbound.name}: the tunnel's end`);
  const n = inbound.reply(out);
  assert.equal(out.subarray(n).toString('latin1'), receipt(data), 'the origin read the data, then the EOF');
  await withDeadline(c.closed, `${inbound.name}: the client's close`);
}

/** The origin closes at once: the client gets its words and the EOF while its own side is still open. */
async function originHangsUp(port: number, inbound: Inbound, target: { host: string; port: number }, words: string): Promise<void> {
  const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  s.write(inbound.request(target.host, target.port));
  const all = readAll(s);
  const out = await withDeadline(all, `${inbound.name}: the origin's EOF`);
  const n = inbound.reply(out);
  assert.equal(out.subarray(n).toString(), words);
  // half-open until we close our side too
  assert.ok(!s.destroyed);
  s.end();
  await withDeadline(new Promise((r) => s.once('close', r)), `${inbound.name}: the close`);
}

const MODES = [
  { name: 'native relay', env: {}, skip: skipNative },
  { name: 'JavaScript relay', env: { DUALSOCKS_NATIVE_RELAY: '0' }, skip: false as const },
];

for (const mode of MODES) {
  describe(`early FIN, ${mode.name}`, { skip: mode.skip }, () => {
    let origin: Awaited<ReturnType<typeof recordingOrigin>>;
    let hangUp: Awaited<ReturnType<typeof hangUpOrigin>>;
    let silent: Awaited<ReturnType<typeof hangUpOrigin>>;
    let web: Origin;
    let gw: Running;
    let far: Running;
    let chained: Running;
    let bridge: Running;
    let gwAuth: Running;
    let bridgeAuth: Running;
    const procs: Running[] = [];

    before(async () => {
      origin = await recordingOrigin();
      hangUp = await hangUpOrigin('bye\n');
      silent = await hangUpOrigin('');
      web = await startOrigin('127.0.0.1', 2 * 1024 * 1024);
      gw = await startCli(GW, { env: mode.env });
      far = await startCli(GW, { env: mode.env });
      chained = await startCli(['gateway', '--listen', '127.0.0.1:0', '--upstream', `socks5://127.0.0.1:${far.listening[0]!.port}`], { env: mode.env });
      bridge = await startCli(['bridge', '--listen', '127.0.0.1:0', '--gateway', `socks5://127.0.0.1:${gw.listening[0]!.port}`], { env: mode.env });
      const users = join(dir, 'users');
      writeFileSync(users, (await run(process.execPath, [CLI, 'passwd', 'alice'], { input: 'pw\n' })).stdout);
      gwAuth = await startCli([...GW, '--users', users], { env: mode.env });
      // the bridge sends greeting, credentials and request together to a gateway that asks a password
      bridgeAuth = await startCli(['bridge', '--listen', '127.0.0.1:0', '--gateway', `socks5://alice:pw@127.0.0.1:${gwAuth.listening[0]!.port}`], { env: mode.env });
      procs.push(gw, far, chained, bridge, gwAuth, bridgeAuth);
    });
    after(async () => {
      await Promise.all(procs.map((p) => p.stop()));
      await Promise.all([origin.close(), hangUp.close(), silent.close(), web.close()]);
    });

    const PATHS: { name: string; port: () => number; inbound: Inbound }[] = [
      { name: 'gateway', port: () => gw.listening[0]!.port, inbound: SOCKS5 },
      { name: 'chained gateway (--upstream)', port: () => chained.listening[0]!.port, inbound: SOCKS5 },
      { name: 'gateway with --users', port: () => gwAuth.listening[0]!.port, inbound: SOCKS5_AUTH },
      { name: 'bridge → gateway with --users (pipelined)', port: () => bridgeAuth.listening[0]!.port, inbound: SOCKS5 },
      ...[SOCKS5, socks4('SOCKS4a', false), socks4('SOCKS4', true), HTTP_CONNECT].map((inbound) => ({ name: 'bridge → gateway', port: () => bridge.listening[0]!.port, inbound })),
    ];

    for (const p of PATHS) {
      const name = `${p.name}, ${p.inbound.name}`;
      const target = (port: () => number) => ({ host: p.inbound.byAddress ? '127.0.0.1' : 'origin.test', port: port() });
      for (const client of CLIENTS) {
        test(`${name}, ${client.name}: request, data and FIN before the reply; the origin sees data then EOF, the client the close`, { skip: client.skip }, async () => {
          await earlyFin(client.open, p.port(), { ...p.inbound, name }, target(() => origin.port), Buffer.from('data\n'));
          // and the FIN right behind the request, nothing between
          await earlyFin(client.open, p.port(), { ...p.inbound, name }, target(() => origin.port), Buffer.alloc(0));
        });
      }
      test(`${name}: 1 MiB and the FIN written at once arrive checksummed`, async () => {
        await earlyFin(rawClient, p.port(), { ...p.inbound, name }, target(() => origin.port), randomBytes(1024 * 1024));
      });
      test(`${name}: an origin that closes at once, its FIN with the reply: its words (or none) and its EOF reach the client`, async () => {
        await originHangsUp(p.port(), { ...p.inbound, name }, target(() => hangUp.port), 'bye\n');
        await originHangsUp(p.port(), { ...p.inbound, name }, target(() => silent.port), '');
      });
    }

    for (const client of CLIENTS) {
      // BIND has no peer yet to pass a FIN to: a FIN before the peer came is the client leaving
      // (DESIGN "Leave nothing behind"), also when it came with the request; before, the listener
      // and the client then stayed until the bind timeout and a late peer got the data, no EOF
      test(`BIND (gateway, chained gateway), ${client.name}: a FIN with the request is the client leaving: closed, listener released`, { skip: client.skip }, async () => {
        for (const [entry, listener] of [[gw, gw], [chained, far]] as const) {
          const c = client.open(entry.listening[0]!.port, concatBytes(socks5Request(CMD.BIND, '127.0.0.1', 0), Buffer.from('for the peer\n')));
          const first = await withDeadline(readHead(c.out, socks5Head), 'BIND first reply');
          const bound = decodeReply(first.head.subarray(2));
          assert.ok(bound.status === 'ok' && bound.msg.rep === REP.SUCCEEDED);
          const all = await withDeadline(c.all, 'BIND: the client closed');
          assert.equal(all.length, first.head.length, 'nothing after the first reply');
          await withDeadline(c.closed, 'BIND: the client close');
          await listener.waitRecord((r) => r.cmd === 'bind' && r.result === 'ERR_CLIENT_CLOSED' && r.bound === `127.0.0.1:${bound.msg.port}`);
          const peer = connect({ host: '127.0.0.1', port: bound.msg.port });
          await assert.rejects(new Promise((resolve, reject) => peer.once('connect', resolve).once('error', reject)), /ECONNREFUSED/);
        }
      });
    }

    test('UDP ASSOCIATE through the bridge with the FIN right behind the request: closed at once, not kept', async () => {
      // greeting, request and FIN in one segment (TCP_CORK): the bridge has read the FIN before its
      // association is open. The control connection carries nothing but its end, so the FIN is the
      // client leaving: the association is given up (item 8), the client closed, nothing kept.
      const r = await corkedExchange(bridge.listening[0]!.port, socks5Request(CMD.UDP_ASSOCIATE, '0.0.0.0', 0), HANG_MS);
      assert.equal(r.code, 0, `the bridge did not close the control connection: ${r.stderr}`);
      assert.equal(r.stdout.subarray(0, 2).toString('hex'), '0500', 'the greeting was answered');
      const rec = await bridge.waitRecord((x) => x.inbound === 'socks5' && x.cmd === 'udp');
      assert.match(String(rec.result), /^(ok|ERR_CLIENT_CLOSED)$/);
    });

    for (const client of CLIENTS) {
      test(`HTTP forward proxy, ${client.name}: a client that half-closes after its request gets the whole response`, { skip: client.skip }, async () => {
        const port = bridge.listening[0]!.port;
        for (const version of ['1.0', '1.1']) {
          const head = `GET http://origin.test:${web.port}/blob.bin HTTP/${version}\r\nHost: origin.test:${web.port}\r\n${version === '1.1' ? 'Connection: close\r\n' : ''}\r\n`;
          const c = client.open(port, Buffer.from(head));
          const out = await withDeadline(c.all, `HTTP/${version} response`);
          const split = out.indexOf('\r\n\r\n');
          assert.match(out.subarray(0, split).toString(), /^HTTP\/1\.1 200 /, out.subarray(0, 200).toString());
          assert.equal(sha256(out.subarray(split + 4)), web.blobSha256, `HTTP/${version}: the whole body`);
          await withDeadline(c.closed, 'HTTP: the close');
        }
        const rec = await bridge.waitRecord((r) => r.inbound === 'http' && r.status === 200);
        assert.equal(rec.result, 'ok');
      });
    }
  });
}
