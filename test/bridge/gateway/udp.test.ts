// UDP ASSOCIATE on loopback with real clients (the `socks` package's UDP frames, PySocks): names
// resolved by the gateway, v4 client to v6 echo, only the associated client relayed, only
// replies from where we sent, fragments and denied destinations dropped and counted.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import { associate, closeAssociations, PYSOCKS_UDP, startUdpEcho, udpBind, type UdpEcho } from '../../helpers/udp.js';
import { run, startCli, type Running } from '../../helpers/process.js';
import { corkedExchange, socks5Request } from '../../helpers/socks5.js';
import { decodeReply } from '../../../shared/socks5/codec.js';
import { CMD, REP } from '../../../shared/socks5/constants.js';

const dir = mkdtempSync(join(tmpdir(), 'dualsocks-udp-'));
const hostsFile = join(dir, 'hosts');
writeFileSync(hostsFile, ['127.0.0.1 echo4.test', '::1 echo6.test', '127.0.0.2 denied.test'].join('\n'));

describe('gateway UDP ASSOCIATE on loopback', () => {
  let gw: Running;
  let proxy: { host: string; port: number };
  let echo4: UdpEcho;
  let echo6: UdpEcho;
  let denied: UdpEcho;

  before(async () => {
    echo4 = await startUdpEcho('127.0.0.1');
    echo6 = await startUdpEcho('::1');
    denied = await startUdpEcho('127.0.0.2');
    gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--listen', '[::1]:0', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1', '--allow', '::1'], { expectListeners: 2 });
    proxy = gw.listening[0]!;
  });
  after(async () => {
    closeAssociations();
    await gw.stop();
    await Promise.all([echo4.close(), echo6.close(), denied.close()]);
  });

  /** The log line of the association whose relay is on `port` (written when it ends). */
  const recordOf = (relayPort: number) => gw.waitRecord((r) => r.cmd === 'udp' && typeof r.bound === 'string' && r.bound.endsWith(`:${relayPort}`));

  test('round trips by name (DOMAINNAME in the header) and by IP, v4 client to v4 and v6 echo', async () => {
    const a = await associate(proxy);
    assert.equal(a.relay.host, '127.0.0.1', 'relay in the client family, on the address the client reached');
    const cases: [string, number, string][] = [
      ['echo4.test', echo4.port, '127.0.0.1'],
      ['echo6.test', echo6.port, '::1'],
      ['127.0.0.1', echo4.port, '127.0.0.1'],
      ['::1', echo6.port, '::1'],
    ];
    for (const [host, port, from] of cases) {
      a.send(host, port, `hello ${host}`);
      const r = await a.receive();
      assert.equal(r.data.toString(), `hello ${host}`);
      assert.deepEqual([r.host, r.port], [from, port], 'reply header holds the sender address');
    }
    // a big datagram that still fits both families arrives whole
    const big = Buffer.alloc(60000, 7);
    a.send('echo6.test', echo6.port, big);
    assert.ok((await a.receive()).data.equals(big));
    a.close();
    const rec = await recordOf(a.relay.port);
    assert.equal(rec.result, 'ok');
    assert.equal(rec.datagramsUp, 5);
    assert.equal(rec.datagramsDown, 5);
    assert.equal(rec.bytesUp, rec.bytesDown);
  });

  test('an IPv6 client gets an IPv6 relay and reaches an IPv4 echo by name', async () => {
    const a = await associate(gw.listening[1]!);
    assert.equal(a.relay.host, '::1');
    a.send('echo4.test', echo4.port, 'v6 to v4');
    const r = await a.receive();
    assert.deepEqual([r.data.toString(), r.host, r.port], ['v6 to v4', '127.0.0.1', echo4.port]);
    a.close();
  });

  test('PySocks (Debian python3-socks) round trips by name to both families', async () => {
    for (const [name, echo] of [['echo4.test', echo4], ['echo6.test', echo6]] as const) {
      const r = await run('/usr/bin/python3', ['-c', PYSOCKS_UDP, proxy.host, String(proxy.port), name, String(echo.port), `py ${name} 1`, `py ${name} 2`], { timeoutMs: 20000 });
      assert.equal(r.code, 0, r.stderr);
      const lines = r.stdout.toString().trim().split('\n').map((l) => JSON.parse(l) as { data: string; from: [string, number] });
      assert.deepEqual(lines.map((l) => l.data), [`py ${name} 1`, `py ${name} 2`]);
      assert.deepEqual(lines[0]!.from, [echo.host, echo.port]);
    }
  });

  test('datagrams from a third address are not relayed: another port, another IP', async () => {
    for (const announce of [true, false]) {
      const a = await associate(proxy, { announce });
      // positive control: the associated socket is relayed (and, unannounced, fixes the port)
      a.send('127.0.0.1', echo4.port, `own ${announce}`);
      assert.equal((await a.receive()).data.toString(), `own ${announce}`);
      const otherPort = await udpBind('127.0.0.1');
      const otherIp = await udpBind('127.0.0.2');
      for (const [s, tag] of [[otherPort, 'port'], [otherIp, 'ip']] as const) {
        const frame = SocksClient.createUDPFrame({ remoteHost: { host: '127.0.0.1', port: echo4.port }, data: Buffer.from(`third ${tag} ${announce}`) });
        s.send(frame, a.relay.port, a.relay.host);
      }
      // the relay handles datagrams in order: once this one is echoed, the others were judged
      a.send('127.0.0.1', echo4.port, `marker ${announce}`);
      await echo4.waitFor(`marker ${announce}`);
      assert.equal((await a.receive()).data.toString(), `marker ${announce}`);
      assert.ok(!echo4.seen.some((s) => s.data.toString().startsWith('third ')), 'third-party datagram relayed');
      otherPort.close();
      otherIp.close();
      a.close();
      const rec = await recordOf(a.relay.port);
      assert.equal(rec.droppedSource, 2);
    }
  });

  test('replies from an address the association never sent to are not relayed', async () => {
    const a = await associate(proxy);
    a.send('127.0.0.1', echo4.port, 'learn the outbound port');
    await a.receive();
    const outbound = (await echo4.waitFor('learn the outbound port'));
    const stranger = await udpBind('127.0.0.1');
    stranger.send('unsolicited', outbound.port, outbound.address);
    a.send('127.0.0.1', echo4.port, 'after the stranger');
    assert.equal((await a.receive()).data.toString(), 'after the stranger');
    stranger.close();
    a.close();
    const rec = await recordOf(a.relay.port);
    assert.equal(rec.droppedSender, 1);
  });

  test('FRAG != 0, malformed headers and replies too big for the client are dropped and counted', async () => {
    const a = await associate(proxy);
    a.send('127.0.0.1', echo4.port, 'fragment', 1);
    a.udp.send(Buffer.from([0, 1, 0, 1, 127, 0, 0, 1, 0, 80, 9]), a.relay.port, a.relay.host); // RSV not zero
    a.udp.send(Buffer.from([0, 0, 0]), a.relay.port, a.relay.host);
    // the echo answers 65507 bytes: with a SOCKS header that exceeds an IPv4 datagram
    a.send('::1', echo6.port, 'BIG reply please');
    await echo6.waitFor('BIG reply please');
    a.send('127.0.0.1', echo4.port, 'still alive');
    assert.equal((await a.receive()).data.toString(), 'still alive');
    assert.ok(!echo4.seen.some((s) => s.data.toString() === 'fragment'));
    a.close();
    const rec = await recordOf(a.relay.port);
    assert.equal(rec.droppedFrag, 1);
    assert.equal(rec.droppedMalformed, 2);
    assert.equal(rec.droppedSize, 1);
  });

  test('denied destinations (by name and by IP) and unknown names are dropped and counted', async () => {
    const a = await associate(proxy);
    a.send('denied.test', denied.port, 'denied by name');
    a.send('127.0.0.2', denied.port, 'denied by ip');
    a.send('::ffff:127.0.0.2', denied.port, 'denied mapped');
    a.send('nowhere.test', denied.port, 'unknown name');
    a.send('echo4.test', echo4.port, 'allowed');
    assert.equal((await a.receive()).data.toString(), 'allowed');
    assert.equal(denied.seen.length, 0, 'a denied destination got a datagram');
    a.close();
    const rec = await recordOf(a.relay.port);
    assert.equal(rec.droppedPolicy, 3);
    assert.equal(rec.droppedName, 1);
  });

  test('the association ends with its TCP control connection: the relay port is released', async () => {
    const a = await associate(proxy);
    a.send('echo4.test', echo4.port, 'before close');
    await a.receive();
    // positive control: while associated, the relay port is taken
    await assert.rejects(udpBind(a.relay.host, a.relay.port), /EADDRINUSE/);
    a.control.destroy();
    const rec = await recordOf(a.relay.port);
    assert.equal(rec.end, 'closed');
    const again = await udpBind(a.relay.host, a.relay.port);
    again.close();
    // and nothing answers there any more
    const before = echo4.seen.length;
    a.send('echo4.test', echo4.port, 'after close');
    await assert.rejects(a.receive(500));
    assert.equal(echo4.seen.length, before);
    a.close();
  });

  test('a control connection whose FIN came with the request ends its association at once', async () => {
    // greeting, UDP ASSOCIATE and FIN in one segment (TCP_CORK), so the gateway reads the FIN
    // right behind the request, before the association is set up
    const request = socks5Request(CMD.UDP_ASSOCIATE, '0.0.0.0', 0);
    const r = await corkedExchange(proxy.port, request, 20_000);
    assert.equal(r.code, 0, r.stderr);
    const out = r.stdout;
    const reply = decodeReply(out.subarray(2));
    assert.ok(reply.status === 'ok' && reply.msg.rep === REP.SUCCEEDED, out.toString('hex'));
    // not at the idle timeout (an hour): the log line comes, and the relay port is free again
    const rec = await recordOf(reply.msg.port);
    assert.equal(rec.end, 'closed');
    (await udpBind(reply.msg.host, reply.msg.port)).close();
  });
});

describe('gateway UDP ASSOCIATE with --upstream', () => {
  test('datagrams routed upstream go through an association at the upstream gateway, which resolves the name', async () => {
    const echo = await startUdpEcho('127.0.0.1');
    const farHosts = join(dir, 'far-hosts');
    writeFileSync(farHosts, '127.0.0.1 far.test\n');
    // only the upstream knows far.test; the first gateway sends it on by name
    const g2 = await startCli(['gateway', '--listen', '127.0.0.1:0', '--hosts', farHosts, '--dns', 'none', '--allow', '127.0.0.1']);
    const g1 = await startCli(['gateway', '--listen', '127.0.0.1:0', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1', '--upstream', `socks5://127.0.0.1:${g2.listening[0]!.port}`]);
    try {
      const proxy = g1.listening[0]!;
      const r = await run('/usr/bin/python3', ['-c', PYSOCKS_UDP, proxy.host, String(proxy.port), 'far.test', String(echo.port), 'chained 1', 'chained 2'], { timeoutMs: 20000 });
      assert.equal(r.code, 0, r.stderr);
      const lines = r.stdout.toString().trim().split('\n').map((l) => JSON.parse(l) as { data: string; from: [string, number] });
      assert.deepEqual(lines.map((l) => l.data), ['chained 1', 'chained 2']);
      assert.deepEqual(lines[0]!.from, ['127.0.0.1', echo.port], "the upstream gateway's header names the sender");
      const near = await g1.waitRecord((x) => x.cmd === 'udp');
      assert.equal(near.datagramsUp, 2);
      assert.equal(near.datagramsDown, 2);
      assert.equal(near.bytesUp, 'chained 1'.length * 2);
      assert.equal(near.droppedUpstream, 0);
      assert.match(String(near.upstream), /^socks5:\/\/127\.0\.0\.1:/);
      const far = await g2.waitRecord((x) => x.cmd === 'udp');
      assert.equal(far.datagramsUp, 2, 'the upstream relayed them');
      assert.equal(far.client, '127.0.0.1');
    } finally {
      await g1.stop();
      await g2.stop();
      await echo.close();
    }
  });

  test('over two upstream hops they go through an association at each hop, the far one asked for through the near one', async () => {
    const echo = await startUdpEcho('127.0.0.1');
    const farHosts = join(dir, 'far-hosts-2');
    writeFileSync(farHosts, '127.0.0.1 far.test\n');
    const g3 = await startCli(['gateway', '--listen', '127.0.0.1:0', '--hosts', farHosts, '--dns', 'none', '--allow', '127.0.0.1']);
    const g2 = await startCli(['gateway', '--listen', '127.0.0.1:0', '--dns', 'none', '--allow', '127.0.0.1']);
    const hop = (g: Running): string => `socks5://127.0.0.1:${g.listening[0]!.port}`;
    const g1 = await startCli(['gateway', '--listen', '127.0.0.1:0', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1', '--upstream', hop(g2), '--upstream', hop(g3)]);
    try {
      const proxy = g1.listening[0]!;
      const r = await run('/usr/bin/python3', ['-c', PYSOCKS_UDP, proxy.host, String(proxy.port), 'far.test', String(echo.port), 'two hops 1', 'two hops 2'], { timeoutMs: 20000 });
      assert.equal(r.code, 0, r.stderr);
      const lines = r.stdout.toString().trim().split('\n').map((l) => JSON.parse(l) as { data: string; from: [string, number] });
      assert.deepEqual(lines.map((l) => l.data), ['two hops 1', 'two hops 2']);
      assert.deepEqual(lines[0]!.from, ['127.0.0.1', echo.port], "the far gateway's header names the sender, the near one's is gone");
      const near = await g1.waitRecord((x) => x.cmd === 'udp');
      assert.deepEqual([near.datagramsUp, near.datagramsDown, near.droppedUpstream], [2, 2, 0]);
      assert.equal(near.bytesUp, 'two hops 1'.length * 2, 'counts leave the headers out');
      // g2 carried g3's control connection (CONNECT) and relayed the datagrams to g3's relay
      const g3Port = g3.listening[0]!.port;
      await g2.waitRecord((x) => x.cmd === 'connect' && x.port === g3Port);
      const middle = await g2.waitRecord((x) => x.cmd === 'udp');
      assert.deepEqual([middle.datagramsUp, middle.datagramsDown], [2, 2], 'the middle hop relayed both ways');
      const far = await g3.waitRecord((x) => x.cmd === 'udp');
      assert.deepEqual([far.datagramsUp, far.datagramsDown], [2, 2]);
      assert.equal(echo.seen.length, 2, 'the echo heard each datagram once');
    } finally {
      await g1.stop();
      await g2.stop();
      await g3.stop();
      await echo.close();
    }
  });

  test('with no upstream association possible they are dropped, never sent directly', async () => {
    const echo = await startUdpEcho('127.0.0.1');
    const rules = join(dir, 'upstream-rules.json');
    writeFileSync(rules, JSON.stringify({ mode: 'listed', rules: [{ type: 'exact', pattern: 'far.test' }] }));
    const gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1', '--upstream', 'socks5://127.0.0.1:9', '--upstream-rules', rules]);
    try {
      const a = await associate(gw.listening[0]!);
      a.send('far.test', echo.port, 'routed upstream');
      a.send('echo4.test', echo.port, 'direct by rule');
      assert.equal((await a.receive()).data.toString(), 'direct by rule');
      assert.ok(!echo.seen.some((x) => x.data.toString() === 'routed upstream'));
      a.close();
      const rec = await gw.waitRecord((r) => r.cmd === 'udp');
      assert.equal(rec.droppedUpstream, 1);
    } finally {
      await gw.stop();
      await echo.close();
    }
  });
});

describe('gateway UDP ASSOCIATE with --workers 2', () => {
  test('PySocks round trips work whichever worker takes the control connection', async () => {
    const echo = await startUdpEcho('127.0.0.1');
    const gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--workers', '2', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1']);
    try {
      const proxy = gw.listening[0]!;
      // the primary hands connections round-robin: four associations reach both workers
      for (let i = 0; i < 4; i++) {
        const r = await run('/usr/bin/python3', ['-c', PYSOCKS_UDP, proxy.host, String(proxy.port), 'echo4.test', String(echo.port), `w${i} a`, `w${i} b`], { timeoutMs: 20000 });
        assert.equal(r.code, 0, r.stderr);
        const lines = r.stdout.toString().trim().split('\n').map((l) => JSON.parse(l) as { data: string });
        assert.deepEqual(lines.map((l) => l.data), [`w${i} a`, `w${i} b`]);
      }
      const recs = await gw.waitRecords(4);
      assert.ok(recs.filter((r) => r.cmd === 'udp' && r.result === 'ok').length >= 4);
    } finally {
      await gw.stop();
      await echo.close();
    }
  });
});
