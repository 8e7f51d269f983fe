// The bridge's SOCKS side with real clients (curl, PySocks, the socks package) in front of real
// gateway processes: names pass through unresolved, reply codes survive, gateways fail over.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import { CMD, METHOD, REP } from '../../../shared/socks5/constants.js';
import { concatBytes, decodeMethodSelection, decodeReply, decodeSocks4Reply, encodeAuthRequest, encodeGreeting, encodeRequest, encodeSocks4Request } from '../../../shared/socks5/codec.js';
import { backToBaseline, eventually, startBridgeOverGateway } from '../../helpers/settle.js';
import { dialSocks5 } from '../../../bridge/upstream/socks5.js';
import { readAll, sha256, startOrigin, type Origin } from '../../helpers/origin.js';
import { exchangeUntil, socks5Credentials, socks5Request } from '../../helpers/socks5.js';
import { run, startCli, type Running } from '../../helpers/process.js';

const dir = mkdtempSync(join(tmpdir(), 'dualsocks-bridge-'));
const hostsFile = join(dir, 'hosts');
writeFileSync(hostsFile, '127.0.0.1 web.test\n');
const GW_ARGS = ['gateway', '--listen', '127.0.0.1:0', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1'];

/** How long an idle tunnel's count is watched after the hand-over for a late close that must not count. */
const HANDOVER_SETTLE_MS = 100;
const curl = (args: string[]) => run('curl', ['-sS', '--max-time', '20', ...args]);

describe('bridge SOCKS side', () => {
  let origin: Origin;
  let gw: Running;
  let bridge: Running;
  let port: number;

  before(async () => {
    origin = await startOrigin('127.0.0.1');
    gw = await startCli(GW_ARGS);
    bridge = await startCli(['bridge', '--listen', '127.0.0.1:0', '--gateway', `socks5://127.0.0.1:${gw.listening[0]!.port}`]);
    port = bridge.listening[0]!.port;
  });
  after(async () => {
    await bridge.stop();
    await gw.stop();
    await origin.close();
  });

  test('curl --socks5-hostname, --socks4a and --socks4 reach a name only the gateway knows', async () => {
    for (const flag of ['--socks5-hostname', '--socks4a']) {
      const r = await curl([flag, `127.0.0.1:${port}`, `http://web.test:${origin.port}/blob.bin`]);
      assert.equal(r.code, 0, `${flag}: ${r.stderr}`);
      assert.equal(sha256(r.stdout), origin.blobSha256, flag);
    }
    const v4 = await curl(['--socks4', `127.0.0.1:${port}`, `http://127.0.0.1:${origin.port}/`]);
    assert.equal(v4.code, 0, v4.stderr);
    assert.equal(v4.stdout.toString(), 'hello from origin');
    // the gateway saw the name, so the bridge did not resolve it
    const rec = await gw.waitRecord((x) => x.host === 'web.test');
    assert.equal(rec.address, '127.0.0.1');
  });

  test('PySocks (Debian python3-socks) through the bridge by name', async () => {
    const script = `
import socks, hashlib, sys
s = socks.socksocket()
s.set_proxy(socks.SOCKS5, "127.0.0.1", ${port}, rdns=True)
s.connect(("web.test", ${origin.port}))
s.sendall(b"GET /blob.bin HTTP/1.0\\r\\nHost: web.test\\r\\n\\r\\n")
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk: break
    data += chunk
print(hashlib.sha256(data.split(b"\\r\\n\\r\\n", 1)[1]).hexdigest())
`;
    const r = await run('/usr/bin/python3', ['-c', script]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.toString().trim(), origin.blobSha256);
  });

  test("the gateway's reply code reaches a SOCKS5 client unchanged, and BND shows the family", async () => {
    await assert.rejects(dialSocks5({ host: '127.0.0.1', port }, { host: 'nowhere.test', port: 80 }, { timeoutMs: 5000 }), (e: { rep: number }) => e.rep === REP.HOST_UNREACHABLE);
    await assert.rejects(dialSocks5({ host: '127.0.0.1', port }, { host: '127.0.0.1', port: 1 }, { timeoutMs: 5000 }), (e: { rep: number }) => e.rep === REP.CONNECTION_REFUSED);
    const r = await curl(['--socks5-hostname', `127.0.0.1:${port}`, 'http://nowhere.test/']);
    assert.match(r.stderr, /\(4\)/);
    const ok = await dialSocks5({ host: '127.0.0.1', port }, { host: 'web.test', port: origin.port }, { timeoutMs: 5000 });
    assert.equal(ok.reply.host, '127.0.0.1', "the gateway's outbound address, IPv4 here");
    ok.socket.destroy();
  });

  test('SOCKS4 failure is answered with 0x5b (rejected)', async () => {
    const r = await curl(['--socks4a', `127.0.0.1:${port}`, 'http://nowhere.test/']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /SOCKS4|rejected|failed/i);
  });

  test('the status API lists recent destinations with the family the gateway used', async () => {
    const r = await curl([`http://127.0.0.1:${port}/api/status`]);
    assert.equal(r.code, 0, r.stderr);
    const status = JSON.parse(r.stdout.toString()) as { recent: { host: string; family: number | null; result: string }[]; gateways: { up: boolean }[] };
    const hit = status.recent.find((d) => d.host === 'web.test' && d.result === 'ok');
    assert.equal(hit?.family, 4);
    assert.ok(status.recent.some((d) => d.host === 'nowhere.test' && d.result === 'ERR_NAME_NOT_FOUND'));
    assert.equal(status.gateways[0]?.up, true);
  });

  test('an idle tunnel counts as open (bridge and gateway) until it ends, whoever relays it', async () => {
    type Status = { connections: { open: number; byInbound: Record<string, number> }; gateways: { active: number }[] };
    const status = async (): Promise<Status> => JSON.parse((await curl([`http://127.0.0.1:${port}/api/status`])).stdout.toString()) as Status;
    const before = await status();
    {
      const clients = await Promise.all([dialSocks5({ host: '127.0.0.1', port }, { host: 'web.test', port: origin.port }, { timeoutMs: 5000 }), dialSocks5({ host: '127.0.0.1', port }, { host: 'web.test', port: origin.port }, { timeoutMs: 5000 })]);
      for (const c of clients) c.socket.resume();
      // time let pass on purpose: a socket released at the hand-over closes a moment later, and must not count
      await new Promise((r) => setTimeout(r, HANDOVER_SETTLE_MS));
      const during = await status();
      assert.equal(during.connections.open - before.connections.open, 2, 'the bridge counts them open');
      assert.equal(during.gateways[0]!.active - before.gateways[0]!.active, 2, "and the gateway's active count has them");
      for (const c of clients) c.socket.destroy();
      let after: Status | undefined;
      await eventually(
        async () => {
          after = await status();
          return after.connections.open === before.connections.open && after.gateways[0]!.active === before.gateways[0]!.active;
        },
        'counts came back',
        { describe: () => after },
      );
    }
  });

  test('BIND through the bridge (socks package): the gateway listens, a peer connects, bytes both ways', async () => {
    const client = new SocksClient({ proxy: { host: '127.0.0.1', port, type: 5 }, command: 'bind', destination: { host: '127.0.0.1', port: 0 }, timeout: 5000 });
    type Info = { socket: Socket; remoteHost?: { host: string; port: number } };
    const bound = new Promise<Info>((resolve, reject) => {
      client.once('bound', resolve);
      client.once('error', reject);
    });
    const established = new Promise<Info>((resolve, reject) => {
      client.once('established', resolve);
      client.once('error', reject);
    });
    client.connect();
    const at = (await bound).remoteHost!;
    assert.equal(at.host, '127.0.0.1', "first reply: the gateway's listener");
    const peer = connect({ host: at.host, port: at.port, allowHalfOpen: true });
    await new Promise((r, j) => peer.once('connect', r).once('error', j));
    const peerPort = peer.localPort;
    const { socket, remoteHost } = await established;
    assert.deepEqual(remoteHost, { host: '127.0.0.1', port: peerPort }, 'second reply: the peer');
    const up = randomBytes(300_000);
    const down = randomBytes(200_000);
    const atPeer = readAll(peer);
    const atClient = readAll(socket);
    socket.end(up);
    peer.end(down);
    assert.equal(sha256(await atPeer), sha256(up), 'client → peer');
    assert.equal(sha256(await atClient), sha256(down), 'peer → client');
    const rec = await bridge.waitRecord((r) => r.cmd === 'bind' && r.inbound === 'socks5');
    assert.equal(rec.result, 'ok');
    assert.equal(rec.peer, `127.0.0.1:${peerPort}`);
    assert.equal(rec.bytesUp, up.length);
    assert.equal(rec.bytesDown, down.length);
    const atGateway = await gw.waitRecord((r) => r.cmd === 'bind' && r.result === 'ok');
    assert.equal(atGateway.peer, '127.0.0.1');
  });

  test('SOCKS4 BIND through the bridge (socks package): both replies, then bytes both ways', async () => {
    const client = new SocksClient({ proxy: { host: '127.0.0.1', port, type: 4 }, command: 'bind', destination: { host: '127.0.0.1', port: 0 }, timeout: 5000 });
    type Info = { socket: Socket; remoteHost?: { host: string; port: number } };
    const bound = new Promise<Info>((resolve, reject) => client.once('bound', resolve).once('error', reject));
    const established = new Promise<Info>((resolve, reject) => client.once('established', resolve).once('error', reject));
    client.connect();
    const at = (await bound).remoteHost!;
    assert.equal(at.host, '127.0.0.1');
    const peer = connect({ host: at.host, port: at.port, allowHalfOpen: true });
    await new Promise((r, j) => peer.once('connect', r).once('error', j));
    const { socket } = await established;
    const atPeer = readAll(peer);
    const atClient = readAll(socket);
    socket.end('from the client');
    peer.end('from the peer');
    assert.equal((await atPeer).toString(), 'from the client');
    assert.equal((await atClient).toString(), 'from the peer');
    const rec = await bridge.waitRecord((r) => r.cmd === 'bind' && r.inbound === 'socks4');
    assert.equal(rec.result, 'ok');
  });

  test('a BIND the gateway refuses reaches the client with the gateway\'s reply code', async () => {
    // a private peer is not allowed by this gateway's policy (only 127.0.0.1 is): REP 0x02
    const client = new SocksClient({ proxy: { host: '127.0.0.1', port, type: 5 }, command: 'bind', destination: { host: '10.1.2.3', port: 0 }, timeout: 5000 });
    const failed = new Promise<Error>((resolve) => client.once('error', resolve));
    client.connect();
    assert.match((await failed).message, /NotAllowed/);
    const rec = await bridge.waitRecord((r) => r.cmd === 'bind' && r.host === '10.1.2.3');
    assert.equal(rec.rep, REP.NOT_ALLOWED);
  });
});

describe('bridge with several gateways', () => {
  test('round-robin spreads, failover keeps new connections working when one gateway dies', async () => {
    const origin = await startOrigin('127.0.0.1', 1024);
    const g1 = await startCli(GW_ARGS);
    const g2 = await startCli(GW_ARGS);
    const bridge = await startCli(['bridge', '--listen', '127.0.0.1:0', '--gateway', `socks5://127.0.0.1:${g1.listening[0]!.port}`, '--gateway', `socks5://127.0.0.1:${g2.listening[0]!.port}`, '--health-interval', '1']);
    const port = bridge.listening[0]!.port;
    try {
      for (let i = 0; i < 4; i++) {
        const r = await curl(['--socks5-hostname', `127.0.0.1:${port}`, `http://web.test:${origin.port}/`]);
        assert.equal(r.code, 0, r.stderr);
      }
      await g1.waitRecords(2);
      await g2.waitRecords(2);
      await g1.stop();
      for (let i = 0; i < 4; i++) {
        const r = await curl(['--socks5-hostname', `127.0.0.1:${port}`, `http://web.test:${origin.port}/`]);
        assert.equal(r.code, 0, `after g1 died, request ${i}: ${r.stderr}`);
      }
      await g2.waitRecords(6);
      await g2.stop();
      await assert.rejects(dialSocks5({ host: '127.0.0.1', port }, { host: 'web.test', port: origin.port }, { timeoutMs: 5000 }), (e: { rep: number }) => e.rep === REP.GENERAL_FAILURE);
    } finally {
      await Promise.all([bridge.stop(), g1.stop(), g2.stop(), origin.close()]);
    }
  });

  test('sticky balance keeps one destination on one gateway; a chain of two gateways works', async () => {
    const origin = await startOrigin('127.0.0.1', 1024);
    const g1 = await startCli(GW_ARGS);
    const g2 = await startCli(GW_ARGS);
    const p1 = g1.listening[0]!.port;
    const p2 = g2.listening[0]!.port;
    // the chain's first hop must be allowed to reach the second one on loopback
    const hop = await startCli(['gateway', '--listen', '127.0.0.1:0', '--allow', '127.0.0.1']);
    const sticky = await startCli(['bridge', '--listen', '127.0.0.1:0', '--balance', 'sticky', '--gateway', `socks5://127.0.0.1:${p1}`, '--gateway', `socks5://127.0.0.1:${p2}`]);
    const chained = await startCli(['bridge', '--listen', '127.0.0.1:0', '--gateway', `socks5://127.0.0.1:${hop.listening[0]!.port},socks5://127.0.0.1:${p2}`]);
    try {
      for (let i = 0; i < 4; i++) {
        const r = await curl(['--socks5-hostname', `127.0.0.1:${sticky.listening[0]!.port}`, `http://web.test:${origin.port}/`]);
        assert.equal(r.code, 0, r.stderr);
      }
      // the gateway logs when a connection ends, which can be just after curl returns
      await eventually(() => g1.records().length + g2.records().length >= 4, 'the gateways logged the 4 requests');
      const counts = [g1.records().length, g2.records().length].sort();
      assert.deepEqual(counts, [0, 4]);
      const before = g2.records().length;
      const r = await curl(['--socks5-hostname', `127.0.0.1:${chained.listening[0]!.port}`, `http://web.test:${origin.port}/`]);
      assert.equal(r.code, 0, r.stderr);
      const last = await g2.waitRecords(before + 1);
      assert.equal(last.at(-1)!.host, 'web.test', 'the last gateway resolved the name');
      const first = await hop.waitRecords(1);
      assert.equal(first[0]!.host, '127.0.0.1', 'the first hop only saw the next gateway');
    } finally {
      await Promise.all([sticky.stop(), chained.stop(), hop.stop(), g1.stop(), g2.stop(), origin.close()]);
    }
  });

  test('the socks package through the bridge, and a config error names the key', async () => {
    const origin = await startOrigin('127.0.0.1', 2048);
    const g = await startCli(GW_ARGS);
    const b = await startCli(['bridge', '--listen', '127.0.0.1:0', '--gateway', `socks5://127.0.0.1:${g.listening[0]!.port}`]);
    try {
      const { socket } = await SocksClient.createConnection({ proxy: { host: '127.0.0.1', port: b.listening[0]!.port, type: 4 }, command: 'connect', destination: { host: 'web.test', port: origin.port } });
      socket.end('GET /blob.bin HTTP/1.0\r\n\r\n');
      const all = await readAll(socket);
      assert.equal(sha256(all.subarray(all.indexOf('\r\n\r\n') + 4)), origin.blobSha256);
      const bad = await run(process.execPath, [join(import.meta.dirname, '../../../bridge/cli.js'), 'bridge', '--gateway', 'http://x:1']);
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /gateway\[0\]: "http:\/\/x:1" is not socks5:/);
      const open = await run(process.execPath, [join(import.meta.dirname, '../../../bridge/cli.js'), 'bridge', '--listen', '0.0.0.0:0', '--gateway', 'socks5://127.0.0.1:1']);
      assert.match(open.stderr, /--clients CIDR/);
    } finally {
      await Promise.all([b.stop(), g.stop(), origin.close()]);
    }
  });
});

/** Resolves with the port the gateway's BIND listens on (from the first reply), null if the socket ends first. */
function firstBindReply(s: Socket, version: 4 | 5): Promise<number | null> {
  return new Promise((resolve) => {
    let buf: Uint8Array = new Uint8Array(0);
    s.on('data', (chunk: Buffer) => {
      buf = concatBytes(buf, chunk);
      if (version === 4) {
        const r = decodeSocks4Reply(buf);
        if (r.status === 'ok') resolve(r.msg.port);
        return;
      }
      const m = decodeMethodSelection(buf);
      if (m.status !== 'ok') return;
      const r = decodeReply(buf.subarray(m.size));
      if (r.status === 'ok') resolve(r.msg.port);
    });
    s.once('close', () => resolve(null));
  });
}

const refused = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'));
  });

describe('bridge BIND clients that leave while waiting', () => {
  test('SOCKS5 and SOCKS4 clients that FIN before or after the first reply: closed at once, the gateway\'s listener gone, counts and descriptors back', async () => {
    // the gateway's bind timeout is far beyond the bounds below: only the bridge can free these
    const pair = await startBridgeOverGateway(['--allow', '127.0.0.1', '--bind-timeout', '600']);
    const { gw, bridge, port } = pair;
    const clients: Socket[] = [];
    try {
      const ask = {
        5: socks5Request(CMD.BIND, '127.0.0.1', 0),
        4: encodeSocks4Request({ cmd: CMD.BIND, host: '127.0.0.1', port: 0, userId: '' }),
      };
      const listeners: number[] = [];
      const closed: Promise<void>[] = [];
      const one = async (version: 4 | 5, when: 'with-request' | 'after-first-reply'): Promise<void> => {
        const s = connect({ host: '127.0.0.1', port });
        clients.push(s);
        s.on('error', () => {});
        closed.push(new Promise((r) => s.once('close', () => r())));
        const first = firstBindReply(s, version);
        await new Promise((r) => s.once('connect', r));
        if (when === 'with-request') {
          s.end(ask[version]);
          return;
        }
        s.write(ask[version]);
        const bound = await first;
        assert.ok(bound, `SOCKS${version}: a first reply`);
        listeners.push(bound);
        s.end();
      };
      const N = 8;
      await Promise.all(
        ([4, 5] as const).flatMap((v) => (['with-request', 'after-first-reply'] as const).flatMap((w) => Array.from({ length: N }, () => one(v, w)))),
      );
      assert.equal(listeners.length, 2 * N);
      // the bridge closes every one of them (the client sees its end)
      await Promise.race([Promise.all(closed), new Promise((_, reject) => setTimeout(() => reject(new Error('clients not closed by the bridge')), 20_000))]);
      await backToBaseline(pair);
      for (const p of listeners) assert.ok(await refused(p), `the gateway no longer listens on ${p}`);
    } finally {
      for (const s of clients) s.destroy();
      await Promise.all([bridge.stop(), gw.stop()]);
    }
  });
});

describe('bridge SOCKS5 clients that offer username/password', () => {
  test('only 0x02 offered: any credentials are accepted at once (01 00) and the request served; with 0x00 also offered 0x00 is chosen; curl with socks5h://u:p@', async () => {
    const origin = await startOrigin('127.0.0.1', 1024);
    const b = await startCli(['start', '--listen', '127.0.0.1:0', '--allow', '127.0.0.1', '--dns', 'none', '--quiet']);
    const port = b.listening[0]!.port;
    try {
      const get = Buffer.from('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      const request = encodeRequest({ cmd: CMD.CONNECT, host: '127.0.0.1', port: origin.port });
      const hello = (got: Buffer): boolean => got.includes('hello from origin');
      // as Firefox does with a proxy username: one method, 0x02; here all in one write
      const onlyUserpass = await exchangeUntil(port, concatBytes(socks5Credentials('anyone', 'whatever'), request, get), hello);
      assert.equal(onlyUserpass.subarray(0, 4).toString('hex'), '05020100', 'USERPASS chosen, credentials accepted');
      assert.equal(onlyUserpass.subarray(4, 6).toString('hex'), '0500', 'request granted');
      assert.ok(hello(onlyUserpass));
      // one message at a time, as most clients send them
      const s = connect({ host: '127.0.0.1', port });
      const read = (n: number): Promise<Buffer> =>
        new Promise((resolve) => {
          const take = (): void => {
            const d = s.read(n) as Buffer | null;
            if (d) resolve(d);
            else s.once('readable', take);
          };
          take();
        });
      s.write(encodeGreeting({ methods: [METHOD.USERPASS] }));
      assert.equal((await read(2)).toString('hex'), '0502');
      s.write(encodeAuthRequest({ username: 'u', password: '' }));
      assert.equal((await read(2)).toString('hex'), '0100', 'answered at once');
      s.destroy();
      const both = await exchangeUntil(port, concatBytes(encodeGreeting({ methods: [METHOD.NO_AUTH, METHOD.USERPASS] }), request, get), hello);
      assert.equal(both.subarray(0, 4).toString('hex'), '05000500', 'NO_AUTH chosen, no credentials asked');
      const r = await curl(['--proxy', `socks5h://u:p@127.0.0.1:${port}`, `http://127.0.0.1:${origin.port}/`]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.toString(), 'hello from origin');
    } finally {
      await Promise.all([b.stop(), origin.close()]);
    }
  });
});
