// The fake-address DNS responder on loopback: real `dig` over UDP and TCP, an in-process upstream
// stub that counts what reaches it, raw sockets for framing, timeouts and clients that leave.
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import dnsPacket, { type DecodedPacket } from 'dns-packet';
import { FakeDnsResponder } from '../../../../bridge/local/fake/dns.js';
import { FakeDnsServer, parseDnsListen, parseResolvConf, parseUpstream, systemResolvers, type FakeDnsServerOptions } from '../../../../bridge/local/fake/server.js';
import { FakeTable } from '../../../../bridge/local/fake/table.js';
import { ConfigError } from '../../../../shared/errors.js';
import { DEFAULT_SETTINGS, parseSettings, type Settings } from '../../../../shared/rules/index.js';
import type { HostPort } from '../../../../shared/net/address.js';
import { splits } from '../../../helpers/bytes.js';
import { eventually } from '../../../helpers/settle.js';

const run = promisify(execFile);
const LISTED: Settings = parseSettings({ ...DEFAULT_SETTINGS, mode: 'listed', rules: [{ type: 'wildcard', pattern: '*.proxied.example' }] });

const fds = (): number => readdirSync('/proc/self/fd').length;
/** How long the upstream is watched for a query that must not come. */
const NOTHING_MORE_MS = 100;

/** An upstream resolver that records every query and answers A with 192.0.2.7 (or stays silent). */
class Upstream {
  readonly seen: { name: string; type: string }[] = [];
  readonly sent: Buffer[] = [];
  silent = false;
  private sock!: UdpSocket;
  port = 0;
  async start(): Promise<this> {
    this.sock = createSocket('udp4');
    this.sock.on('message', (msg, rinfo) => {
      let q: DecodedPacket;
      try {
        q = dnsPacket.decode(msg);
      } catch {
        return;
      }
      const question = q.questions![0]!;
      this.seen.push({ name: question.name, type: question.type });
      if (this.silent) return;
      const answer = dnsPacket.encode({
        type: 'response',
        id: q.id,
        flags: dnsPacket.AUTHORITATIVE_ANSWER | dnsPacket.RECURSION_DESIRED,
        questions: q.questions,
        answers: question.type === 'A' ? [{ type: 'A', name: question.name, ttl: 1234, data: '192.0.2.7' }] : [],
        authorities: [{ type: 'NS', name: 'example', ttl: 99, data: 'ns.upstream.test' }],
      });
      this.sent.push(answer);
      this.sock.send(answer, rinfo.port, rinfo.address);
    });
    await new Promise<void>((r) => this.sock.bind(0, '127.0.0.1', r));
    this.port = this.sock.address().port;
    return this;
  }
  get addr(): HostPort {
    return { host: '127.0.0.1', port: this.port };
  }
  names(): string[] {
    return this.seen.map((s) => `${s.name} ${s.type}`);
  }
  close(): Promise<void> {
    return new Promise((r) => this.sock.close(() => r()));
  }
}

async function startServer(opts: Partial<FakeDnsServerOptions> & { upstreams: HostPort[] }, settings = LISTED): Promise<{ server: FakeDnsServer; port: number; table: FakeTable }> {
  const table = new FakeTable();
  const server = new FakeDnsServer({ responder: new FakeDnsResponder({ table, settings: () => settings }), listen: [{ host: '127.0.0.1', port: 0 }], ...opts });
  const [bound] = await server.start();
  return { server, port: bound!.port, table };
}

async function dig(port: number, args: string[]): Promise<{ status: string; answers: string[] }> {
  const { stdout } = await run('dig', ['@127.0.0.1', '-p', String(port), '+tries=1', '+time=5', ...args]);
  const status = /status: (\w+)/.exec(stdout)?.[1] ?? `no status in ${stdout}`;
  const section = stdout.split(';; ANSWER SECTION:\n')[1]?.split('\n\n')[0] ?? '';
  const answers = section
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => l.split(/\s+/).filter((_, i) => i !== 2).join(' ')); // drop the class column
  return { status, answers };
}

function udpQuery(port: number, msg: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = createSocket('udp4');
    const t = setTimeout(() => {
      s.close();
      reject(new Error('no UDP answer'));
    }, 5000);
    s.on('message', (m) => {
      clearTimeout(t);
      s.close();
      resolve(m);
    });
    s.send(msg, port, '127.0.0.1');
  });
}

const frame = (m: Buffer): Buffer => Buffer.concat([Buffer.from([m.length >> 8, m.length & 0xff]), m]);

/** Reads framed answers from a TCP socket until `count` arrived or the socket ends. */
function tcpAnswers(s: Socket, count: number): Promise<{ answers: DecodedPacket[]; ended: boolean }> {
  return new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    const answers: DecodedPacket[] = [];
    const done = (ended: boolean): void => resolve({ answers, ended });
    s.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        answers.push(dnsPacket.decode(buf.subarray(2, 2 + buf.readUInt16BE(0))));
        buf = buf.subarray(2 + buf.readUInt16BE(0));
      }
      if (answers.length === count && count > 0) done(false);
    });
    s.on('close', () => done(true));
  });
}

const q = (id: number, name: string, type = 'A'): Buffer => dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: type as 'A', name }] });

const HAVE_DIG = spawnSync('dig', ['-v']).status === 0;

describe('FakeDnsServer with dig', { skip: !HAVE_DIG && 'dig not installed (Debian bind9-dnsutils)' }, () => {
  let up: Upstream;
  let srv: Awaited<ReturnType<typeof startServer>>;
  before(async () => {
    up = await new Upstream().start();
    srv = await startServer({ upstreams: [up.addr] });
  });
  after(async () => {
    await srv.server.close();
    await up.close();
  });

  for (const transport of ['+notcp', '+tcp']) {
    test(`${transport}: proxied names are answered here (0 upstream queries, type 65 included); DIRECT ones are forwarded exactly once`, async () => {
      const before = up.seen.length;
      const a = await dig(srv.port, [transport, 'www.proxied.example', 'A']);
      assert.deepEqual(a, { status: 'NOERROR', answers: ['www.proxied.example. 1 A 198.18.0.1'] });
      const aaaa = await dig(srv.port, [transport, 'WWW.Proxied.Example.', 'AAAA']);
      assert.deepEqual(aaaa, { status: 'NOERROR', answers: ['WWW.Proxied.Example. 1 AAAA 2001:2::1'] });
      for (const type of ['TYPE65', 'HTTPS', 'TYPE64', 'MX', 'TXT', 'ANY', 'CNAME']) {
        assert.deepEqual(await dig(srv.port, [transport, 'www.proxied.example', type]), { status: 'NOERROR', answers: [] }, type);
      }
      const ptr = await dig(srv.port, [transport, '-x', '198.18.0.1']);
      assert.deepEqual(ptr, { status: 'NOERROR', answers: ['1.0.18.198.in-addr.arpa. 1 PTR www.proxied.example.'] });
      assert.equal((await dig(srv.port, [transport, '-x', '198.18.9.9'])).status, 'NXDOMAIN');
      assert.equal(up.seen.length, before, `nothing reached the upstream: ${up.names().slice(before).join(', ')}`);

      const direct = await dig(srv.port, [transport, 'www.direct.example', 'A']);
      assert.deepEqual(direct, { status: 'NOERROR', answers: ['www.direct.example. 1234 A 192.0.2.7'] });
      assert.equal((await dig(srv.port, [transport, 'www.direct.example', 'TYPE65'])).status, 'NOERROR');
      assert.deepEqual(up.names().slice(before), ['www.direct.example A', 'www.direct.example UNKNOWN_65'], 'dns-packet names type 65 UNKNOWN_65');
    });
  }
});

describe('FakeDnsServer', () => {
  test('an upstream answer is passed back byte for byte, with the client ID', async () => {
    const up = await new Upstream().start();
    const { server, port } = await startServer({ upstreams: [up.addr] });
    try {
      const got = await udpQuery(port, q(0x4242, 'Mixed.Direct.Example'));
      assert.equal(up.sent.length, 1);
      const expected = Buffer.from(up.sent[0]!);
      expected.writeUInt16BE(0x4242, 0);
      assert.deepEqual(got, expected);
      assert.equal(server.stats.forwarded, 1);
    } finally {
      await server.close();
      await up.close();
    }
  });

  test('SERVFAIL when the upstream refuses (closed port) or stays silent; the next upstream is tried', async () => {
    const closed = createSocket('udp4');
    await new Promise<void>((r) => closed.bind(0, '127.0.0.1', r));
    const closedPort = closed.address().port;
    await new Promise<void>((r) => closed.close(() => r()));
    const silent = await new Upstream().start();
    silent.silent = true;
    const good = await new Upstream().start();
    const refused = await startServer({ upstreams: [{ host: '127.0.0.1', port: closedPort }], upstreamTimeoutMs: 60_000 });
    const quiet = await startServer({ upstreams: [silent.addr], upstreamTimeoutMs: 200 });
    const fallback = await startServer({ upstreams: [{ host: '127.0.0.1', port: closedPort }, silent.addr, good.addr], upstreamTimeoutMs: 200 });
    const none = await startServer({ upstreams: [] });
    try {
      for (const [srv, what] of [[refused, 'refused'], [quiet, 'silent'], [none, 'no upstream']] as const) {
        const a = dnsPacket.decode(await udpQuery(srv.port, q(7, 'www.direct.example'))) as DecodedPacket & { rcode: string };
        assert.equal(a.rcode, 'SERVFAIL', what);
        assert.equal(a.id, 7);
        assert.equal(a.questions![0]!.name, 'www.direct.example');
        assert.equal(srv.server.stats.upstreamFailures, 1);
      }
      const ok = dnsPacket.decode(await udpQuery(fallback.port, q(8, 'www.direct.example'))) as DecodedPacket & { rcode: string };
      assert.equal(ok.rcode, 'NOERROR');
      assert.equal(good.seen.length, 1);
    } finally {
      for (const s of [refused, quiet, fallback, none]) await s.server.close();
      await silent.close();
      await good.close();
    }
  });

  test('TCP: pipelined queries in one write, then a half-close: every answer, then the end', async () => {
    const up = await new Upstream().start();
    const { server, port } = await startServer({ upstreams: [up.addr] });
    try {
      const s = connect(port, '127.0.0.1');
      const answers = tcpAnswers(s, 0);
      const msgs = [q(1, 'a.proxied.example'), q(2, 'b.direct.example'), q(3, 'c.proxied.example', 'AAAA'), q(4, 'd.proxied.example', 'UNKNOWN_65')];
      s.end(Buffer.concat(msgs.map(frame)));
      const { answers: got, ended } = await answers;
      assert.ok(ended);
      assert.deepEqual(got.map((a) => a.id).sort(), [1, 2, 3, 4]);
      assert.deepEqual(up.names(), ['b.direct.example A']);
    } finally {
      await server.close();
      await up.close();
    }
  });

  test('a truncated upstream answer is asked again over TCP for a TCP client, passed on as is to a UDP client', async () => {
    const udp = createSocket('udp4');
    const seen: string[] = [];
    udp.on('message', (msg, rinfo) => {
      const p = dnsPacket.decode(msg);
      seen.push('udp');
      udp.send(dnsPacket.encode({ type: 'response', id: p.id, flags: dnsPacket.TRUNCATED_RESPONSE, questions: p.questions }), rinfo.port, rinfo.address);
    });
    const tcp = createServer((c) => {
      c.on('data', (d: Buffer) => {
        const p = dnsPacket.decode(d.subarray(2));
        seen.push('tcp');
        const big = Array.from({ length: 40 }, (_, i) => ({ type: 'TXT' as const, name: p.questions![0]!.name, ttl: 60, data: `record ${i} ${'x'.repeat(60)}` }));
        c.end(frame(dnsPacket.encode({ type: 'response', id: p.id, questions: p.questions, answers: big })));
      });
    });
    // one port number for both: TCP first (port 0), then UDP on it; another process may hold that
    // UDP port, so pick again then
    let port0 = 0;
    for (let attempt = 0; attempt < 20 && port0 === 0; attempt++) {
      await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
      const p = (tcp.address() as AddressInfo).port;
      const bound = await new Promise<boolean>((r) => {
        udp.once('error', () => r(false));
        udp.bind(p, '127.0.0.1', () => r(true));
      });
      if (bound) port0 = p;
      else await new Promise<void>((r) => tcp.close(() => r()));
    }
    assert.ok(port0 > 0, 'no port free for both UDP and TCP');
    const { server, port } = await startServer({ upstreams: [{ host: '127.0.0.1', port: port0 }] });
    try {
      const s = connect(port, '127.0.0.1');
      const got = tcpAnswers(s, 1);
      s.write(frame(q(11, 'big.direct.example', 'TXT')));
      const { answers } = await got;
      s.destroy();
      assert.equal(answers[0]!.id, 11);
      assert.equal(answers[0]!.answers!.length, 40);
      assert.ok(!answers[0]!.flag_tc);
      assert.deepEqual(seen, ['udp', 'tcp']);
      const viaUdp = dnsPacket.decode(await udpQuery(port, q(12, 'big.direct.example', 'TXT')));
      assert.ok(viaUdp.flag_tc, 'the UDP client gets TC and retries over TCP itself');
      assert.deepEqual(seen, ['udp', 'tcp', 'udp']);
    } finally {
      await server.close();
      udp.close();
      tcp.close();
    }
  });

  test('TCP: a message split across writes, one byte at a time', async () => {
    const { server, port } = await startServer({ upstreams: [] });
    try {
      const s = connect(port, '127.0.0.1');
      s.setNoDelay(true);
      const answers = tcpAnswers(s, 1);
      for (const b of frame(q(5, 'x.proxied.example'))) {
        s.write(Buffer.of(b));
        await new Promise((r) => setImmediate(r));
      }
      const { answers: got } = await answers;
      assert.equal(got[0]!.id, 5);
      s.destroy();
    } finally {
      await server.close();
    }
  });

  test('TCP: every split of three framed queries gives the same three answers', async () => {
    const { server, port } = await startServer({ upstreams: [] });
    try {
      const input = Buffer.concat([frame(q(1, 'a.proxied.example')), frame(q(2, 'b.proxied.example', 'AAAA')), frame(q(3, 'c.proxied.example', 'MX'))]);
      let runs = 0;
      for (const parts of splits(input)) {
        const s = connect(port, '127.0.0.1');
        s.setNoDelay(true);
        await new Promise((r) => s.once('connect', r));
        const got = tcpAnswers(s, 0);
        for (const part of parts) {
          s.write(part);
          await new Promise((r) => setImmediate(r));
        }
        s.end();
        const { answers } = await got;
        assert.deepEqual(
          answers.map((a) => `${a.id} ${a.answers!.map((r) => (r as { data: string }).data).join()}`).sort(),
          ['1 198.18.0.1', '2 2001:2::1', '3 '],
          `split into ${parts.map((p) => p.length).join('+')}`,
        );
        runs++;
      }
      assert.ok(runs > input.length);
    } finally {
      await server.close();
    }
  });

  test('TCP: an idle or half-sent connection is closed after the read timeout', async () => {
    const { server, port } = await startServer({ upstreams: [], tcpIdleMs: 200 });
    try {
      const idle = connect(port, '127.0.0.1');
      const half = connect(port, '127.0.0.1');
      half.write(frame(q(6, 'y.proxied.example')).subarray(0, 10));
      const closed = (s: Socket): Promise<void> => new Promise((r) => s.on('close', () => r()));
      await Promise.all([closed(idle), closed(half)]);
    } finally {
      await server.close();
    }
  });

  test('TCP: at most tcpMaxInflight queries of one connection are in flight', async () => {
    const up = await new Upstream().start();
    up.silent = true;
    const { server, port } = await startServer({ upstreams: [up.addr], upstreamTimeoutMs: 60_000, tcpMaxInflight: 3 });
    try {
      const s = connect(port, '127.0.0.1');
      s.write(Buffer.concat(Array.from({ length: 10 }, (_, i) => frame(q(i, `n${i}.direct.example`)))));
      await eventually(() => up.seen.length === 3, '3 forwarded queries');
      // time let pass on purpose: a fourth query forwarded would have reached the upstream by now
      await new Promise((r) => setTimeout(r, NOTHING_MORE_MS));
      assert.equal(up.seen.length, 3, 'the rest wait');
      s.destroy();
    } finally {
      await server.close();
      await up.close();
    }
  });

  test('a TCP client that leaves mid-forward frees its upstream socket and timer at once', async () => {
    const up = await new Upstream().start();
    up.silent = true;
    // a timeout far longer than the test: only the client leaving can free the upstream socket
    const { server, port } = await startServer({ upstreams: [up.addr], upstreamTimeoutMs: 600_000 });
    try {
      const baseline = fds();
      for (let i = 0; i < 20; i++) {
        const s = connect(port, '127.0.0.1');
        await new Promise((r) => s.once('connect', r));
        s.write(frame(q(i, `leave${i}.direct.example`)));
        await eventually(() => up.seen.length === i + 1, 'the forwarded query');
        s.destroy();
      }
      await eventually(() => fds() <= baseline, `descriptors back to ${baseline}`, { describe: fds });
    } finally {
      await server.close();
      await up.close();
    }
  });

  test('UDP garbage never stops the listener; close() frees every socket', async () => {
    const baseline = fds();
    const up = await new Upstream().start();
    up.silent = true;
    const { server, port } = await startServer({ upstreams: [up.addr], upstreamTimeoutMs: 600_000 });
    const s = createSocket('udp4');
    for (const junk of [Buffer.alloc(0), Buffer.from('x'), Buffer.alloc(12, 0xff), Buffer.alloc(600, 0x41), Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c])]) {
      s.send(junk, port, '127.0.0.1');
    }
    s.send(q(99, 'pending.direct.example'), port, '127.0.0.1'); // left waiting at the silent upstream
    const ok = dnsPacket.decode(await udpQuery(port, q(100, 'z.proxied.example')));
    assert.equal(ok.id, 100);
    await eventually(() => up.seen.length === 1, 'the pending forward');
    s.close();
    await server.close();
    await up.close();
    await eventually(() => fds() <= baseline, `descriptors back to ${baseline}`, { describe: fds });
  });

  test('allowClient: others are ignored over UDP and disconnected over TCP', async () => {
    const { server, port } = await startServer({ upstreams: [], allowClient: (a) => a === '127.0.0.2' });
    try {
      const s = createSocket('udp4');
      const heard: Buffer[] = [];
      s.on('message', (m) => heard.push(m));
      s.send(q(1, 'a.proxied.example'), port, '127.0.0.1');
      const t = connect(port, '127.0.0.1');
      t.on('error', () => {});
      t.write(frame(q(2, 'a.proxied.example')));
      const { answers, ended } = await tcpAnswers(t, 1);
      assert.ok(ended);
      assert.deepEqual(answers, []);
      // the allowed source is answered (and the UDP drop above had long arrived by then)
      const allowed = createSocket('udp4');
      await new Promise<void>((r) => allowed.bind(0, '127.0.0.2', r));
      const got = await new Promise<Buffer>((r) => {
        allowed.on('message', (m) => r(m));
        allowed.send(q(3, 'a.proxied.example'), port, '127.0.0.1');
      });
      assert.equal(dnsPacket.decode(got).id, 3);
      assert.deepEqual(heard, []);
      assert.equal(server.stats.dropped, 1);
      s.close();
      allowed.close();
    } finally {
      await server.close();
    }
  });

  test('listening on IPv6 loopback as well', async () => {
    const table = new FakeTable();
    const server = new FakeDnsServer({ responder: new FakeDnsResponder({ table, settings: () => DEFAULT_SETTINGS }), listen: [{ host: '::1', port: 0 }], upstreams: [] });
    let bound: HostPort[];
    try {
      bound = await server.start();
    } catch {
      return; // no IPv6 on this host
    }
    try {
      const got = await new Promise<Buffer>((resolve) => {
        const s = createSocket('udp6');
        s.on('message', (m) => {
          s.close();
          resolve(m);
        });
        s.send(q(1, 'v6.example', 'AAAA'), bound[0]!.port, '::1');
      });
      assert.equal((dnsPacket.decode(got).answers![0] as { data: string }).data, '2001:2::1');
    } finally {
      await server.close();
    }
  });
});

describe('DNS options', () => {
  test('--dns-listen and --dns-upstream take IP[:PORT], port 53 by default', () => {
    assert.deepEqual(parseDnsListen('127.0.0.1:5353'), { host: '127.0.0.1', port: 5353 });
    assert.deepEqual(parseDnsListen('[::1]'), { host: '::1', port: 53 });
    assert.deepEqual(parseUpstream('192.0.2.53'), { host: '192.0.2.53', port: 53 });
    assert.deepEqual(parseUpstream('[2001:db8::53]:5300'), { host: '2001:db8::53', port: 5300 });
    for (const bad of ['localhost:53', 'dns.example', '::1', '1.2.3.4:99999', '']) {
      assert.throws(() => parseUpstream(bad), (e: unknown) => e instanceof ConfigError && e.key === 'dnsUpstream', bad);
    }
    assert.throws(() => parseDnsListen('any:53'), (e: unknown) => e instanceof ConfigError && e.key === 'dnsListen');
    assert.throws(() => parseUpstream('192.0.2.1:0'), ConfigError);
  });

  test('resolv.conf: nameservers in order; systemd-resolved stub replaced by its servers; never the responder itself', () => {
    assert.deepEqual(parseResolvConf('# c\nsearch x\nnameserver 192.0.2.1\n nameserver   fe80::1%eth0\nnameserver bogus\noptions edns0\n'), ['192.0.2.1', 'fe80::1%eth0']);
    const d = mkdtempSync(join(tmpdir(), 'dualsocks-resolv-'));
    try {
      const conf = join(d, 'resolv.conf');
      const resolved = join(d, 'resolved.conf');
      writeFileSync(conf, 'nameserver 127.0.0.53\nnameserver 127.0.0.1\nnameserver 192.0.2.1\n');
      writeFileSync(resolved, 'nameserver 198.51.100.1\nnameserver 192.0.2.1\n');
      const files = { resolvConf: conf, resolvedConf: resolved, ownAddresses: ['127.0.0.1', '203.0.113.5'] };
      const hp = (h: string): HostPort => ({ host: h, port: 53 });
      assert.deepEqual(systemResolvers([{ host: '127.0.0.1', port: 53 }], files), [hp('198.51.100.1'), hp('192.0.2.1')]);
      assert.deepEqual(systemResolvers([{ host: '127.0.0.1', port: 5353 }], files), [hp('198.51.100.1'), hp('192.0.2.1'), hp('127.0.0.1')]);
      writeFileSync(conf, 'nameserver 203.0.113.5\nnameserver 127.0.0.2\nnameserver 192.0.2.9\n');
      assert.deepEqual(systemResolvers([{ host: '0.0.0.0', port: 53 }], files), [hp('192.0.2.9')]);
      assert.deepEqual(systemResolvers([], { ...files, resolvConf: join(d, 'missing') }), []);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});
