// The bridge's UDP relay decisions, without sockets: events in, commands out (as
// test/bridge/gateway/udp-session.test.ts). The I/O class around it is tested with real datagrams
// in udp.test.ts, fake/wire.test.ts and the topology tests.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { UdpRelaySession, type UdpRelayOptions } from '../../../bridge/local/udp-session.js';
import type { UdpClientCommand } from '../../../bridge/udp-client-side.js';
import { MAX_UDP_PAYLOAD } from '../../../bridge/udp-socket.js';
import { decodeUdpHeader, encodeUdpHeader } from '../../../shared/socks5/codec.js';
import { socksDatagram as datagram } from '../../helpers/udp.js';
import * as g from '../../fuzz/grammar.js';

const PEER = '127.0.0.1';
const FAKE = '198.18.0.5';
const UNMAPPED = '198.18.200.200';

function relay(opts: Partial<UdpRelayOptions> = {}): UdpRelaySession {
  return new UdpRelaySession({
    peer: PEER,
    announcedPort: 0,
    family: 4,
    idleTimeoutMs: 0,
    upstreamRoom: MAX_UDP_PAYLOAD[4],
    fakeName: (host) => (host === FAKE ? 'echo4.test' : host.startsWith('198.18.') ? null : undefined),
    ...opts,
  });
}

/** The one 'upstream' command of `cmds`. */
function upstream(cmds: UdpClientCommand[]): { datagram: Buffer; bytes: number } {
  assert.equal(cmds.length, 1, JSON.stringify(cmds));
  const c = cmds[0]!;
  assert.ok(c.type === 'upstream');
  return c;
}

describe('UdpRelaySession: whose datagrams (RFC 1928 §7)', () => {
  test('only the control peer IP, from the announced port; others are counted as source drops', () => {
    const s = relay({ announcedPort: 5000 });
    assert.deepEqual(s.clientDatagram(datagram('echo4.test', 7), '127.0.0.2', 5000, 0), []);
    assert.deepEqual(s.clientDatagram(datagram('echo4.test', 7), PEER, 5001, 0), []);
    assert.equal(s.counters.droppedSource, 2);
    upstream(s.clientDatagram(datagram('echo4.test', 7), PEER, 5000, 0));
  });

  test('with no port announced the first datagram from the peer pins it, as at the gateway', () => {
    const s = relay({ peer: '::ffff:127.0.0.1' });
    assert.equal(s.clientPort, undefined);
    upstream(s.clientDatagram(datagram('echo4.test', 7), PEER, 4000, 0));
    assert.equal(s.clientPort, 4000);
    assert.deepEqual(s.clientDatagram(datagram('echo4.test', 7), PEER, 4001, 0), []);
    assert.equal(s.counters.droppedSource, 1);
  });

  test('replies go to the control peer: canonical, with its scope when v6 link-local', () => {
    assert.equal(relay({ peer: '::ffff:127.0.0.1' }).replyHost, '127.0.0.1');
    assert.equal(relay({ peer: 'fe80::1%eth0', family: 6 }).replyHost, 'fe80::1%eth0');
    assert.equal(relay({ peer: '2001:db8:0:0:0:0:0:1', family: 6 }).replyHost, '2001:db8::1');
  });
});

describe('UdpRelaySession: datagrams from the client', () => {
  test('the header goes up as the client wrote it, a name unresolved; bytes are the payload', () => {
    const s = relay();
    const msg = datagram('echo4.test', 7, 'abc');
    const c = upstream(s.clientDatagram(msg, PEER, 4000, 0));
    assert.equal(c.datagram, msg);
    assert.equal(c.bytes, 3);
    s.sentUp(c.bytes);
    assert.deepEqual([s.counters.datagramsUp, s.counters.bytesUp], [1, 3]);
  });

  test('malformed headers, port 0 and fragments are dropped by reason', () => {
    const s = relay();
    s.clientDatagram(Buffer.from([0, 0, 0, 9]), PEER, 4000, 0);
    s.clientDatagram(datagram('echo4.test', 0), PEER, 4000, 0);
    s.clientDatagram(datagram('echo4.test', 7, 'x', 1), PEER, 4000, 0);
    assert.deepEqual([s.counters.droppedMalformed, s.counters.droppedFrag, s.counters.datagramsUp], [2, 1, 0]);
    assert.equal(s.dropped, 3, 'all reasons together');
  });

  test('a fake address goes up as its name, port and payload kept; one mapped to nothing is a name drop', () => {
    const s = relay();
    const c = upstream(s.clientDatagram(datagram(FAKE, 7, 'to echo'), PEER, 4000, 0));
    const d = decodeUdpHeader(c.datagram);
    assert.ok(d.status === 'ok');
    assert.deepEqual([d.msg.host, d.msg.port, c.datagram.subarray(d.msg.dataOffset).toString(), c.bytes], ['echo4.test', 7, 'to echo', 7]);
    assert.deepEqual(s.clientDatagram(datagram(UNMAPPED, 7), PEER, 4000, 0), [{ type: 'error', code: 'ERR_FAKE_UNMAPPED' }]);
    assert.equal(s.counters.droppedName, 1);
    // without a fake table nothing is fake
    upstream(relay({ fakeName: () => undefined }).clientDatagram(datagram(UNMAPPED, 7), PEER, 4000, 0));
  });

  test('a datagram over the room the chain leaves (its headers in front) is a size drop, also once renamed', () => {
    const msg = datagram('echo4.test', 7, 'x'.repeat(100));
    const s = relay({ upstreamRoom: msg.length });
    upstream(s.clientDatagram(msg, PEER, 4000, 0));
    assert.deepEqual(s.clientDatagram(datagram('echo4.test', 7, 'x'.repeat(101)), PEER, 4000, 0), []);
    // the fake address (4 bytes) fits, the longer name it becomes does not
    const fake = datagram(FAKE, 7, 'x'.repeat(101));
    assert.ok(fake.length <= msg.length);
    assert.deepEqual(s.clientDatagram(fake, PEER, 4000, 0), []);
    assert.equal(s.counters.droppedSize, 2);
  });

  test('sending up the chain failed: counted, its code for the log line', () => {
    const s = relay();
    assert.deepEqual(s.upstreamFailed(Object.assign(new Error('gone'), { code: 'ECONNREFUSED' })), [{ type: 'error', code: 'ECONNREFUSED' }]);
    assert.equal(s.counters.droppedUpstream, 1);
  });
});

describe('UdpRelaySession: replies from the chain', () => {
  test('passed on as they are to the client port; none before that port is known', () => {
    const reply = datagram('127.0.0.1', 7, 'back');
    const early = relay();
    assert.deepEqual(early.upstreamReply(reply, 0), []);
    assert.equal(early.counters.droppedSender, 1);
    const s = relay({ announcedPort: 4000 });
    const cmds = s.upstreamReply(reply, 0);
    assert.deepEqual(cmds, [{ type: 'toClient', data: [reply], port: 4000, bytes: 4 }]);
    s.sentDown(4);
    assert.deepEqual([s.counters.datagramsDown, s.counters.bytesDown], [1, 4]);
  });

  test('one the chain did not unwrap, or without a header, is a sender drop; too big for the client family a size drop', () => {
    const s = relay({ announcedPort: 4000 });
    assert.deepEqual(s.upstreamReply(null, 0), []);
    assert.deepEqual(s.upstreamReply(Buffer.from([1, 2]), 0), []);
    assert.equal(s.counters.droppedSender, 2);
    const header = encodeUdpHeader({ host: '127.0.0.1', port: 7 });
    assert.deepEqual(s.upstreamReply(datagram('127.0.0.1', 7, 'x'.repeat(MAX_UDP_PAYLOAD[4] - header.length + 1)), 0), []);
    assert.equal(s.counters.droppedSize, 1);
    assert.equal(s.upstreamReply(datagram('127.0.0.1', 7, 'x'.repeat(MAX_UDP_PAYLOAD[4] - header.length)), 0)[0]?.type, 'toClient');
  });
});

describe('UdpRelaySession: end', () => {
  test('said once; nothing goes to the client after it', () => {
    const s = relay({ announcedPort: 4000 });
    assert.deepEqual(s.start(0), [], 'no timer of its own: the gateway times the association out');
    assert.deepEqual(s.end('closed'), [{ type: 'end', why: 'closed' }]);
    assert.deepEqual(s.end('gateway'), []);
    assert.equal(s.ended, true);
    assert.deepEqual(s.upstreamReply(datagram('127.0.0.1', 7), 0), []);
    assert.equal(s.counters.droppedSender, 1);
  });

  test('with a timeout, the idle timer is re-armed for the time left, then ends the relay', () => {
    const s = relay({ announcedPort: 4000, idleTimeoutMs: 1000 });
    assert.deepEqual(s.start(0), [{ type: 'timer', ms: 1000 }]);
    s.clientDatagram(datagram('echo4.test', 7), PEER, 4000, 300);
    assert.deepEqual(s.idleTick(1000), [{ type: 'timer', ms: 300 }]);
    s.upstreamReply(datagram('127.0.0.1', 7), 900);
    assert.deepEqual(s.idleTick(1300), [{ type: 'timer', ms: 600 }]);
    assert.deepEqual(s.idleTick(1900), [{ type: 'end', why: 'idle' }]);
  });
});

describe('UdpRelaySession: any datagram from anyone', () => {
  test('never throws; each one goes up the chain once or is counted as dropped once', () => {
    const from = fc.tuple(fc.constantFrom(PEER, '::ffff:127.0.0.1', '127.0.0.2', '::1'), fc.constantFrom(4000, 4001));
    fc.assert(
      fc.property(fc.array(fc.tuple(g.hostile(g.udpDatagram()), from), { maxLength: 20 }), fc.constantFrom(0, 4000), (items, announcedPort) => {
        // a small room, so that some datagrams are too big for it
        const s = relay({ announcedPort, upstreamRoom: 48 });
        for (const [bytes, [address, port]] of items) {
          const before = s.dropped;
          const cmds = s.clientDatagram(Buffer.from(bytes), address, port, 0);
          const up = cmds.filter((c) => c.type === 'upstream').length;
          assert.equal(up + s.dropped - before, 1, JSON.stringify(cmds));
        }
      }),
      { numRuns: 2000, seed: 0x5eed },
    );
  });
});
