// UDP ASSOCIATE through the bridge: the client's header travels unchanged to the gateway, which
// alone knows the name; both associations live and die with the client's control connection.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { associate, closeAssociations, pysocksUdp, socksDatagram, startUdpEcho, udpBind, type Association, type UdpEcho } from '../../helpers/udp.js';
import { run, startCli, type Running } from '../../helpers/process.js';
import { connect, type Socket } from 'node:net';
import { dialSocks5 } from '../../../bridge/upstream/socks5.js';
import { CMD, REP } from '../../../shared/socks5/constants.js';
import { startOrigin } from '../../helpers/origin.js';
import { backToBaseline, bridgeStatus, eventually, openFds, startBridgeOverGateway } from '../../helpers/settle.js';
import { socks5Request } from '../../helpers/socks5.js';

const dir = mkdtempSync(join(tmpdir(), 'dualsocks-bridge-udp-'));
const hostsFile = join(dir, 'hosts');
writeFileSync(hostsFile, ['127.0.0.1 echo4.test', '::1 echo6.test'].join('\n'));

describe('bridge UDP ASSOCIATE', () => {
  let gw: Running;
  let bridge: Running;
  let proxy: { host: string; port: number };
  let echo4: UdpEcho;
  let echo6: UdpEcho;

  before(async () => {
    echo4 = await startUdpEcho('127.0.0.1');
    echo6 = await startUdpEcho('::1');
    gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1', '--allow', '::1']);
    bridge = await startCli(['bridge', '--listen', '127.0.0.1:0', '--gateway', `socks5://127.0.0.1:${gw.listening[0]!.port}`]);
    proxy = bridge.listening[0]!;
  });
  after(async () => {
    closeAssociations();
    await bridge.stop();
    await gw.stop();
    await Promise.all([echo4.close(), echo6.close()]);
  });

  test('PySocks → bridge → gateway → UDP echo by names only the gateway knows', async () => {
    for (const [name, echo] of [['echo4.test', echo4], ['echo6.test', echo6]] as const) {
      const { code, stderr, lines } = await pysocksUdp(proxy, name, echo.port, [`via bridge ${name} 1`, `via bridge ${name} 2`]);
      assert.equal(code, 0, stderr);
      assert.deepEqual(lines.map((l) => l.data), [`via bridge ${name} 1`, `via bridge ${name} 2`]);
      assert.deepEqual(lines[0]!.from, [echo.host, echo.port], 'the gateway wrote the sender address');
    }
    // the gateway got the name: the bridge passed the header on without resolving it
    const rec = await gw.waitRecord((x) => x.cmd === 'udp' && x.datagramsUp === 2 && x.datagramsDown === 2);
    assert.equal(rec.result, 'ok');
    // and the bridge logs its side of each association when it ends
    const mine = await bridge.waitRecord((x) => x.inbound === 'socks5' && x.cmd === 'udp' && x.datagramsUp === 2);
    assert.equal(mine.result, 'ok');
    assert.equal(mine.datagramsDown, 2);
    assert.ok(Number(mine.bytesDown) > 0);
    assert.match(String(mine.gateway), /^socks5:\/\/127\.0\.0\.1:/);
  });

  test('the socks package through the bridge; another local port is not relayed; closing the client ends the gateway association', async () => {
    const a = await associate(proxy);
    a.send('echo6.test', echo6.port, 'socks pkg via bridge');
    const r = await a.receive();
    assert.deepEqual([r.data.toString(), r.host, r.port], ['socks pkg via bridge', '::1', echo6.port]);
    const other = await udpBind('127.0.0.1');
    other.send(Buffer.concat([Buffer.from([0, 0, 0, 1, 127, 0, 0, 1, echo4.port >> 8, echo4.port & 0xff]), Buffer.from('third via bridge')]), a.relay.port, a.relay.host);
    a.send('echo4.test', echo4.port, 'marker via bridge');
    assert.equal((await a.receive()).data.toString(), 'marker via bridge');
    assert.ok(!echo4.seen.some((s) => s.data.toString() === 'third via bridge'));
    other.close();
    const udpRecords = () => gw.records().filter((x) => x.cmd === 'udp');
    const before = udpRecords().length;
    a.close();
    await gw.waitRecord(() => udpRecords().length > before);
    const last = udpRecords().at(-1)!;
    assert.equal(last.end, 'closed');
    assert.equal(last.datagramsUp, 2);
  });

  test("the bridge's log line counts what it dropped by reason (another port, a malformed header, a fragment) and says how it ended", async () => {
    const a = await associate(proxy);
    const other = await udpBind('127.0.0.1');
    other.send(socksDatagram('echo4.test', echo4.port, 'from another port'), a.relay.port, a.relay.host);
    a.udp.send(Buffer.from([0, 0, 0, 9]), a.relay.port, a.relay.host);
    a.send('echo4.test', echo4.port, 'a fragment', 1);
    a.send('echo4.test', echo4.port, 'counted marker');
    assert.equal((await a.receive()).data.toString(), 'counted marker');
    other.close();
    a.close();
    const rec = await bridge.waitRecord((x) => x.cmd === 'udp' && x.droppedFrag === 1);
    assert.deepEqual(
      [rec.end, rec.datagramsUp, rec.datagramsDown, rec.bytesUp, rec.droppedSource, rec.droppedMalformed, rec.droppedFrag, rec.dropped],
      ['closed', 1, 1, 'counted marker'.length, 1, 1, 1, 3],
    );
    assert.ok(!echo4.seen.some((s) => ['from another port', 'a fragment'].includes(s.data.toString())));
  });
});

describe('bridge UDP ASSOCIATE over a chained gateway', () => {
  test('PySocks round trips through an association at each hop; with the far hop gone the next one is refused (0x01, no gateway reachable)', async () => {
    const echo = await startUdpEcho('127.0.0.1');
    const g2 = await startCli(['gateway', '--listen', '127.0.0.1:0', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1']);
    const g1 = await startCli(['gateway', '--listen', '127.0.0.1:0', '--dns', 'none', '--allow', '127.0.0.1']);
    const bridge = await startCli(['bridge', '--listen', '127.0.0.1:0', '--gateway', `socks5://127.0.0.1:${g1.listening[0]!.port},socks5://127.0.0.1:${g2.listening[0]!.port}`]);
    try {
      const proxy = bridge.listening[0]!;
      const { code, stderr, lines } = await pysocksUdp(proxy, 'echo4.test', echo.port, ['chain 1', 'chain 2']);
      assert.equal(code, 0, stderr);
      assert.deepEqual(lines.map((l) => l.data), ['chain 1', 'chain 2']);
      assert.deepEqual(lines[0]!.from, ['127.0.0.1', echo.port], "the last gateway's header names the sender; the first one's is gone");
      // g1 relayed the datagrams to g2's relay and carried g2's control connection
      const first = await g1.waitRecord((x) => x.cmd === 'udp');
      assert.deepEqual([first.datagramsUp, first.datagramsDown], [2, 2]);
      await g1.waitRecord((x) => x.cmd === 'connect' && x.port === g2.listening[0]!.port);
      const last = await g2.waitRecord((x) => x.cmd === 'udp');
      assert.deepEqual([last.datagramsUp, last.datagramsDown], [2, 2]);
      const mine = await bridge.waitRecord((x) => x.inbound === 'socks5' && x.cmd === 'udp');
      assert.deepEqual([mine.result, mine.hops, mine.datagramsUp, mine.datagramsDown], ['ok', 2, 2, 2]);
      // with the far hop down no association can be made: the bridge says so in the reply
      await g2.stop();
      await assert.rejects(
        dialSocks5(proxy, { cmd: CMD.UDP_ASSOCIATE, host: '0.0.0.0', port: 0 }, { timeoutMs: 5000 }),
        (e: { rep: number }) => e.rep === REP.GENERAL_FAILURE,
      );
    } finally {
      await Promise.all([bridge.stop(), g1.stop(), g2.stop(), echo.close()]);
    }
  });
});

describe('bridge UDP ASSOCIATE abandoned before its reply', () => {
  test('clients that leave (FIN or close) while the gateway is being asked: bridge and gateway free everything at once, and a CONNECT still works', async () => {
    const origin = await startOrigin('127.0.0.1');
    const pair = await startBridgeOverGateway(['--allow', '127.0.0.1', '--max-connections', '100']);
    const { gw, bridge, port } = pair;
    const clients: Socket[] = [];
    try {
      // more than the gateway's connection cap: held slots would refuse the CONNECT below
      const N = 120;
      const ask = socks5Request(CMD.UDP_ASSOCIATE, '0.0.0.0', 0);
      await Promise.all(
        Array.from({ length: N }, (_, i) =>
          new Promise<void>((resolve) => {
            const s = connect({ host: '127.0.0.1', port }, () => s.write(ask));
            clients.push(s);
            s.on('error', () => {});
            // the method selection comes at once, the association's reply only after the gateway's:
            // leave in between, half by FIN only, half by closing
            s.once('data', () => {
              if (i % 2 === 0) s.end();
              else s.destroy();
              resolve();
            });
          }),
        ),
      );
      await backToBaseline(pair);
      const r = await run('curl', ['-sS', '--max-time', '20', '--socks5', `127.0.0.1:${port}`, `http://127.0.0.1:${origin.port}/`]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.toString(), 'hello from origin');
    } finally {
      for (const s of clients) s.destroy();
      await Promise.all([bridge.stop(), gw.stop(), origin.close()]);
    }
  });
});

describe('bridge UDP ASSOCIATE idle', () => {
  test("--idle-timeout without a datagram either way ends the bridge's association (end: idle): its UDP socket, the client's control connection and the gateway's association, whose own timeout is an hour", { timeout: 60_000 }, async () => {
    const echo = await startUdpEcho('127.0.0.1');
    // the gateway's --idle-timeout is the default hour: only the bridge's can end it here
    const gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1']);
    const bridge = await startCli(['bridge', '--listen', '127.0.0.1:0', '--gateway', `socks5://127.0.0.1:${gw.listening[0]!.port}`, '--health-interval', '3600', '--idle-timeout', '1']);
    let a: Association | undefined;
    try {
      const proxy = bridge.listening[0]!;
      await eventually(async () => (await bridgeStatus(proxy.port)).gateways[0]!.checkedAt !== null, 'the start-up health check done');
      const base = { bridge: openFds(bridge), gw: openFds(gw) };
      a = await associate(proxy);
      let controlClosed = false;
      a.control.once('close', () => (controlClosed = true));
      a.send('echo4.test', echo.port, 'before the silence');
      assert.equal((await a.receive()).data.toString(), 'before the silence');
      // then nothing either way: the bridge ends it, the client sees its control connection close
      await eventually(() => controlClosed, 'the control connection closed by the bridge');
      const mine = await bridge.waitRecord((x) => x.cmd === 'udp');
      assert.deepEqual([mine.result, mine.end, mine.datagramsUp, mine.datagramsDown], ['ok', 'idle', 1, 1]);
      // the bridge closed its side of the gateway's association: the gateway saw its control connection go
      const theirs = await gw.waitRecord((x) => x.cmd === 'udp');
      assert.deepEqual([theirs.end, theirs.datagramsUp], ['closed', 1]);
      a.close();
      await eventually(async () => {
        const st = await bridgeStatus(proxy.port);
        return st.connections.open === 0 && st.gateways[0]!.active === 0;
      }, "the bridge's open count and the gateway's active count back to 0", { describe: () => bridgeStatus(proxy.port) });
      await eventually(() => openFds(bridge) <= base.bridge, `bridge descriptors back to ${base.bridge}`, { describe: () => openFds(bridge) });
      await eventually(() => openFds(gw) <= base.gw, `gateway descriptors back to ${base.gw}`, { describe: () => openFds(gw) });
    } finally {
      a?.close();
      await Promise.all([bridge.stop(), gw.stop(), echo.close()]);
    }
  });
});
