// The UDP association's decisions, without sockets: events in, commands out (as mitmproxy's
// layer tests, and test/shared/socks5/server.test.ts). The I/O class around it is tested with
// real datagrams in udp.test.ts and the topology tests.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_NAMES, MAX_PEERS, MAX_PENDING, UdpSession, type UdpCommand, type UdpSessionOptions } from '../../../bridge/gateway/udp-session.js';
import { RequestError } from '../../../shared/errors.js';
import { formatIp, parseIp, type Ip } from '../../../shared/net/address.js';
import { encodeUdpHeader } from '../../../shared/socks5/codec.js';
import { socksDatagram as datagram } from '../../helpers/udp.js';
import { MAX_UDP_PAYLOAD } from '../../../bridge/udp-socket.js';

const PEER = '192.0.2.10';
const ip = (text: string): Ip => parseIp(text)!;

function session(opts: Partial<UdpSessionOptions> = {}): UdpSession {
  return new UdpSession({
    peer: PEER,
    announcedPort: 0,
    family: 4,
    idleTimeoutMs: 0,
    prefer: 'ipv6',
    goesUpstream: () => false,
    denyDestination: (x) => (formatIp(x) === '198.51.100.66' ? 'denied' : null),
    ...opts,
  });
}

/** Commands with buffers as text, for readable expectations. */
function show(cmds: UdpCommand[]): unknown[] {
  return cmds.map((c) => {
    if (c.type === 'send') return { ...c, payload: c.payload.toString() };
    if (c.type === 'upstream') return { ...c, datagram: c.datagram.length };
    if (c.type === 'toClient') return { ...c, data: Buffer.concat(c.data).toString('hex') };
    return c;
  });
}

/** Resolves the only outstanding lookup of `cmds` to `ips`. */
function resolveWith(s: UdpSession, cmds: UdpCommand[], ips: string[]): UdpCommand[] {
  const r = cmds.find((c) => c.type === 'resolve');
  assert.ok(r && r.type === 'resolve', 'a resolve command');
  return s.resolved(r.id, { ips: ips.map(ip) });
}

describe('UdpSession: source filter', () => {
  test('only the control peer IP, from the announced port', () => {
    const s = session({ announcedPort: 5000 });
    assert.deepEqual(s.clientDatagram(datagram('198.51.100.1', 53), '192.0.2.11', 5000, 0), []);
    assert.deepEqual(s.clientDatagram(datagram('198.51.100.1', 53), PEER, 5001, 0), []);
    assert.equal(s.counters.droppedSource, 2);
    assert.equal(s.clientDatagram(datagram('198.51.100.1', 53), PEER, 5000, 0)[0]?.type, 'resolve');
  });

  test('with no port announced, the first datagram fixes it; a v4-mapped or scoped form is the same IP', () => {
    const s = session();
    assert.equal(s.clientPort, undefined);
    s.clientDatagram(datagram('198.51.100.1', 53), `::ffff:${PEER}`, 4000, 0);
    assert.equal(s.clientPort, 4000);
    s.clientDatagram(datagram('198.51.100.1', 53), PEER, 4001, 0);
    assert.equal(s.counters.droppedSource, 1);
    const v6 = session({ peer: 'fe80::1%eth0', family: 6 });
    v6.clientDatagram(datagram('198.51.100.1', 53), 'fe80::1%eth0', 4000, 0);
    assert.equal(v6.counters.droppedSource, 0);
  });

  test('the port is fixed even by a malformed datagram from the peer', () => {
    const s = session();
    assert.deepEqual(s.clientDatagram(Buffer.from([0, 0]), PEER, 4000, 0), []);
    assert.equal(s.counters.droppedMalformed, 1);
    assert.equal(s.clientPort, 4000);
  });
});

describe('UdpSession: datagrams from the client', () => {
  test('malformed, port 0 and fragments are dropped and counted', () => {
    const s = session();
    s.clientDatagram(Buffer.from([0, 0, 0, 9]), PEER, 4000, 0);
    s.clientDatagram(datagram('198.51.100.1', 0), PEER, 4000, 0);
    s.clientDatagram(datagram('198.51.100.1', 53, 'x', 1), PEER, 4000, 0);
    assert.equal(s.counters.droppedMalformed, 2);
    assert.equal(s.counters.droppedFrag, 1);
  });

  test('a name is resolved once, datagrams for it wait, then go from the socket of the best family', () => {
    const s = session();
    const first = s.clientDatagram(datagram('Example.TEST', 53, 'one'), PEER, 4000, 0);
    assert.deepEqual(first, [{ type: 'resolve', id: 1, host: 'Example.TEST' }]);
    assert.deepEqual(s.clientDatagram(datagram('example.test', 53, 'two'), PEER, 4000, 0), []);
    const sent = resolveWith(s, first, ['198.51.100.1', '2001:db8::1']);
    assert.deepEqual(show(sent), [
      { type: 'send', family: 6, host: '2001:db8::1', port: 53, payload: 'one' },
      { type: 'send', family: 6, host: '2001:db8::1', port: 53, payload: 'two' },
    ]);
    // cached: no second lookup
    assert.deepEqual(show(s.clientDatagram(datagram('example.test', 53, 'three'), PEER, 4000, 0)), [
      { type: 'send', family: 6, host: '2001:db8::1', port: 53, payload: 'three' },
    ]);
  });

  test('literals are looked up each time (policy may change), never cached', () => {
    const s = session();
    const a = s.clientDatagram(datagram('198.51.100.1', 53), PEER, 4000, 0);
    const b = s.clientDatagram(datagram('198.51.100.1', 53), PEER, 4000, 0);
    assert.equal(a[0]?.type, 'resolve');
    assert.equal(b[0]?.type, 'resolve');
    assert.notDeepEqual(a, b);
  });

  test('policy removes refused addresses; none left is a policy drop, a failed name a name drop', () => {
    const s = session();
    const partly = s.clientDatagram(datagram('mixed.test', 53), PEER, 4000, 0);
    assert.deepEqual(show(resolveWith(s, partly, ['198.51.100.66', '198.51.100.2'])), [
      { type: 'send', family: 4, host: '198.51.100.2', port: 53, payload: 'hi' },
    ]);
    const refused = s.clientDatagram(datagram('bad.test', 53), PEER, 4000, 0);
    assert.deepEqual(resolveWith(s, refused, ['198.51.100.66']), [{ type: 'error', code: 'ERR_POLICY_DESTINATION' }]);
    assert.equal(s.counters.droppedPolicy, 1);
    // the refusal is cached with the name
    assert.deepEqual(s.clientDatagram(datagram('bad.test', 53), PEER, 4000, 0), [{ type: 'error', code: 'ERR_POLICY_DESTINATION' }]);
    assert.equal(s.counters.droppedPolicy, 2);
    const missing = s.clientDatagram(datagram('nx.test', 53), PEER, 4000, 0);
    const r = missing[0]!;
    assert.ok(r.type === 'resolve');
    assert.deepEqual(s.resolved(r.id, { error: new RequestError('ERR_DNS_FAILED', 'nx.test') }), [{ type: 'error', code: 'ERR_DNS_FAILED' }]);
    assert.equal(s.counters.droppedName, 1);
  });

  test('an unreachable address makes the next one of the name be tried', () => {
    const s = session();
    const first = s.clientDatagram(datagram('two.test', 53), PEER, 4000, 0);
    const [sent] = resolveWith(s, first, ['2001:db8::1', '198.51.100.1']);
    assert.ok(sent?.type === 'send' && sent.host === '2001:db8::1');
    const err = Object.assign(new Error('unreachable'), { code: 'ENETUNREACH' });
    assert.deepEqual(s.destinationFailed('2001:db8::1', err), [{ type: 'error', code: 'ENETUNREACH' }]);
    assert.equal(s.counters.droppedError, 1);
    const [next] = s.clientDatagram(datagram('two.test', 53), PEER, 4000, 0);
    assert.ok(next?.type === 'send' && next.host === '198.51.100.1' && next.family === 4);
    // other errors do not move on
    s.destinationFailed('198.51.100.1', Object.assign(new Error('x'), { code: 'EPERM' }));
    const [same] = s.clientDatagram(datagram('two.test', 53), PEER, 4000, 0);
    assert.ok(same?.type === 'send' && same.host === '198.51.100.1');
  });

  test("size limit per destination family: a payload over the family's UDP maximum is dropped", () => {
    const s = session();
    const big = 'x'.repeat(MAX_UDP_PAYLOAD[4] + 1);
    const v4 = s.clientDatagram(datagram('198.51.100.1', 53, big), PEER, 4000, 0);
    assert.deepEqual(resolveWith(s, v4, ['198.51.100.1']), []);
    assert.equal(s.counters.droppedSize, 1);
    const v6 = s.clientDatagram(datagram('2001:db8::1', 53, big), PEER, 4000, 0);
    assert.equal(resolveWith(s, v6, ['2001:db8::1'])[0]?.type, 'send');
  });

  test('what --upstream carries goes up the chain untouched, without a lookup', () => {
    const s = session({ goesUpstream: (host) => host === 'far.test' });
    const msg = datagram('far.test', 53, 'abc');
    const cmds = s.clientDatagram(msg, PEER, 4000, 0);
    assert.equal(cmds.length, 1);
    const c = cmds[0]!;
    assert.ok(c.type === 'upstream');
    assert.equal(c.datagram, msg);
    assert.equal(c.bytes, 3);
    s.sentUp(c.bytes);
    assert.deepEqual([s.counters.datagramsUp, s.counters.bytesUp], [1, 3]);
    s.upstreamFailed(Object.assign(new Error('gone'), { code: 'ECONNRESET' }));
    assert.equal(s.counters.droppedUpstream, 1);
  });

  test(`at most ${MAX_PENDING} datagrams wait for names; more are dropped`, () => {
    const s = session();
    const first = s.clientDatagram(datagram('slow.test', 53), PEER, 4000, 0);
    for (let i = 1; i < MAX_PENDING; i++) s.clientDatagram(datagram('slow.test', 53), PEER, 4000, 0);
    assert.deepEqual(s.clientDatagram(datagram('slow.test', 53), PEER, 4000, 0), []);
    assert.equal(s.counters.droppedError, 1);
    assert.equal(resolveWith(s, first, ['198.51.100.1']).length, MAX_PENDING);
    // room again
    assert.equal(s.clientDatagram(datagram('other.test', 53), PEER, 4000, 0)[0]?.type, 'resolve');
  });

  test(`the name cache holds at most ${MAX_NAMES} names`, () => {
    const s = session();
    for (let i = 0; i <= MAX_NAMES; i++) resolveWith(s, s.clientDatagram(datagram(`n${i}.test`, 53), PEER, 4000, 0), ['198.51.100.1']);
    // n0 was forgotten when the cache was full: looked up again
    assert.equal(s.clientDatagram(datagram('n0.test', 53), PEER, 4000, 0)[0]?.type, 'resolve');
    assert.equal(s.clientDatagram(datagram(`n${MAX_NAMES}.test`, 53), PEER, 4000, 0)[0]?.type, 'send');
  });

  test('datagrams still waiting for a name when the association ends are dropped', () => {
    const s = session();
    const first = s.clientDatagram(datagram('late.test', 53), PEER, 4000, 0);
    assert.deepEqual(s.end('closed'), [{ type: 'end', why: 'closed' }]);
    assert.deepEqual(resolveWith(s, first, ['198.51.100.1']), []);
    assert.equal(s.counters.droppedError, 1);
  });
});

describe('UdpSession: replies', () => {
  test('only from a peer this association sent to, wrapped with its address, to the client port', () => {
    const s = session();
    const first = s.clientDatagram(datagram('dns.test', 53), PEER, 4000, 0);
    resolveWith(s, first, ['198.51.100.1']);
    assert.deepEqual(s.remoteDatagram(Buffer.from('no'), '198.51.100.9', 53, 0), []);
    assert.deepEqual(s.remoteDatagram(Buffer.from('no'), '198.51.100.1', 54, 0), []);
    assert.equal(s.counters.droppedSender, 2);
    const header = Buffer.from(encodeUdpHeader({ host: '198.51.100.1', port: 53 })).toString('hex');
    assert.deepEqual(show(s.remoteDatagram(Buffer.from('ok'), '::ffff:198.51.100.1', 53, 0)), [
      { type: 'toClient', data: header + Buffer.from('ok').toString('hex'), port: 4000, bytes: 2 },
    ]);
    s.sentDown(2);
    assert.deepEqual([s.counters.datagramsDown, s.counters.bytesDown], [1, 2]);
  });

  test(`at most ${MAX_PEERS} peers are remembered`, () => {
    const s = session();
    const first = s.clientDatagram(datagram('many.test', 1), PEER, 4000, 0);
    resolveWith(s, first, ['198.51.100.1']);
    for (let port = 2; port <= MAX_PEERS + 1; port++) s.clientDatagram(datagram('many.test', port), PEER, 4000, 0);
    assert.deepEqual(s.remoteDatagram(Buffer.from('old'), '198.51.100.1', 1, 0), []);
    assert.equal(s.remoteDatagram(Buffer.from('new'), '198.51.100.1', MAX_PEERS + 1, 0)[0]?.type, 'toClient');
  });

  test("a reply that would not fit a datagram of the client's family is dropped", () => {
    const s = session();
    resolveWith(s, s.clientDatagram(datagram('198.51.100.1', 53), PEER, 4000, 0), ['198.51.100.1']);
    assert.deepEqual(s.remoteDatagram(Buffer.alloc(MAX_UDP_PAYLOAD[4] - 9), '198.51.100.1', 53, 0), []);
    assert.equal(s.counters.droppedSize, 1);
    assert.equal(s.remoteDatagram(Buffer.alloc(MAX_UDP_PAYLOAD[4] - 10), '198.51.100.1', 53, 0)[0]?.type, 'toClient');
  });

  test('a reply through the chain is passed on as it is; without a header or a client port it is dropped', () => {
    const before = session();
    assert.deepEqual(before.upstreamReply(datagram('198.51.100.1', 53), 0), []);
    const s = session({ announcedPort: 4000 });
    assert.deepEqual(s.upstreamReply(null, 0), []);
    assert.deepEqual(s.upstreamReply(Buffer.from([1]), 0), []);
    assert.equal(s.counters.droppedSender, 2);
    const msg = datagram('198.51.100.1', 53, 'back');
    assert.deepEqual(show(s.upstreamReply(msg, 0)), [{ type: 'toClient', data: msg.toString('hex'), port: 4000, bytes: 4 }]);
  });
});

describe('UdpSession: idle time and end', () => {
  test('the idle timer is re-armed for the time left since the last datagram, then ends the association', () => {
    const s = session({ idleTimeoutMs: 1000, announcedPort: 4000 });
    assert.deepEqual(s.start(0), [{ type: 'timer', ms: 1000 }]);
    s.clientDatagram(datagram('198.51.100.1', 53), PEER, 4000, 600);
    assert.deepEqual(s.idleTick(1000), [{ type: 'timer', ms: 600 }]);
    // a dropped datagram is no activity
    s.clientDatagram(datagram('198.51.100.1', 53), PEER, 4999, 1500);
    assert.deepEqual(s.idleTick(1600), [{ type: 'end', why: 'idle' }]);
    assert.equal(s.ended, true);
    assert.deepEqual(s.idleTick(5000), []);
  });

  test('no idle timer when the timeout is 0; end is said once', () => {
    const s = session();
    assert.deepEqual(s.start(0), []);
    assert.deepEqual(s.end('ECONNRESET'), [{ type: 'end', why: 'ECONNRESET' }]);
    assert.deepEqual(s.end('closed'), []);
    assert.deepEqual(s.start(0), []);
  });

  test('the counters keep the order of the log line', () => {
    assert.deepEqual(Object.keys(session().counters), [
      'datagramsUp', 'bytesUp', 'datagramsDown', 'bytesDown',
      'droppedSource', 'droppedMalformed', 'droppedFrag', 'droppedName', 'droppedPolicy',
      'droppedSize', 'droppedSender', 'droppedError', 'droppedUpstream',
    ]);
  });
});
