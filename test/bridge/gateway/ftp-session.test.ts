// The FTP control session without sockets: control bytes, ends and data-listener events in,
// commands out. The translator's line rewriting is tested in ftp.test.ts; here the session's own
// decisions: framing and its bound, which listener opens facing which side and family, who may
// use it and what a data connection joins, and the control connection's end.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Ip } from '../../../shared/net/address.js';
import { C4, C6, GW_C4, GW_S6, ip, S4, S6 } from '../../helpers/ftp.js';
import { FtpSession, type FtpCommand } from '../../../bridge/gateway/ftp-session.js';
import { MAX_FTP_LINE } from '../../../bridge/gateway/ftp-translate.js';

const STRANGER4 = ip('203.0.113.99');

const bytes = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, 'latin1'));
const lines = (out: FtpCommand[], type: 'toClient' | 'toServer'): string[] => out.flatMap((c) => (c.type === type ? [c.line] : []));
const types = (out: FtpCommand[]): string[] => out.map((c) => c.type);

/** A session past the greeting and login. */
function session(clientIp: Ip, serverIp: Ip): FtpSession {
  const s = new FtpSession({ clientIp, serverIp });
  assert.deepEqual(s.fromServer(bytes('220 ready.\r\n')), [{ type: 'toClient', line: '220 ready.' }]);
  assert.deepEqual(s.fromClient(bytes('USER anonymous\r\n')), [{ type: 'toServer', line: 'USER anonymous' }]);
  assert.deepEqual(s.fromServer(bytes('230 ok.\r\n')), [{ type: 'toClient', line: '230 ok.' }]);
  return s;
}

test('passive: the listener faces the client in its family, is offered as a slot, and joins only the client once its target is known', () => {
  const s = session(C4, S6);
  // a command split across chunks is one line
  assert.deepEqual(s.fromClient(bytes('PA')), []);
  assert.deepEqual(s.fromClient(bytes('SV\r\n')), [{ type: 'listen', id: 1, side: 'client', family: 4, peer: C4 }]);
  assert.equal(s.busy, true);
  // the client's next command waits for the listener
  assert.deepEqual(s.fromClient(bytes('RETR f\r\n')), []);
  const up = s.listening(1, { ip: GW_C4, port: 40001 });
  assert.deepEqual(up, [
    { type: 'offerSlot', id: 1, listen: { ip: GW_C4, port: 40001 }, peer: C4 },
    { type: 'toServer', line: 'EPSV' },
    { type: 'toServer', line: 'RETR f' },
  ]);
  assert.equal(s.busy, false);
  // the server has not named its port yet: nothing to join
  assert.equal(s.dataReady(1), false);
  assert.deepEqual(s.dataConnected(1, C4), [{ type: 'refuseData' }]);
  assert.deepEqual(lines(s.fromServer(bytes('229 ok (|||6446|)\r\n')), 'toClient'), [`227 Entering Passive Mode (203,0,113,1,${40001 >> 8},${40001 & 0xff}).`]);
  assert.equal(s.dataReady(1), true);
  assert.deepEqual(s.dataConnected(1, STRANGER4), [{ type: 'refuseData' }]);
  assert.deepEqual(s.dataConnected(1, null), [{ type: 'refuseData' }]);
  assert.deepEqual(s.dataConnected(1, C4), [
    { type: 'closeData', id: 1 },
    { type: 'joinData', side: 'client', target: { ip: S6, port: 6446 } },
  ]);
  // one data connection per PASV
  assert.equal(s.dataReady(1), false);
  assert.deepEqual(s.dataConnected(1, C4), [{ type: 'refuseData' }]);
});

test('passive by SOCKS CONNECT: a claim joins the server data port once, and only once the target is known', () => {
  const s = session(C6, S4);
  assert.deepEqual(s.fromClient(bytes('EPSV\r\n')), [{ type: 'listen', id: 1, side: 'client', family: 6, peer: C6 }]);
  assert.deepEqual(types(s.listening(1, { ip: ip('2001:db8:c6::1'), port: 40002 })), ['offerSlot', 'toServer']);
  assert.deepEqual(s.dataClaimed(1), [{ type: 'refuseData' }]);
  assert.deepEqual(lines(s.fromServer(bytes('227 Entering Passive Mode (10,9,9,9,19,137).\r\n')), 'toClient'), ['229 Entering Extended Passive Mode (|||40002|)']);
  // the 227's address is ignored: data goes to the control connection's server
  assert.deepEqual(s.dataClaimed(1), [
    { type: 'closeData', id: 1 },
    { type: 'joinData', side: 'client', target: { ip: S4, port: 19 * 256 + 137 } },
  ]);
  assert.deepEqual(s.dataClaimed(1), [{ type: 'refuseData' }]);
});

test('active: PORT opens a listener facing the server in its family (no slot); only the server may connect, and it joins the client', () => {
  const s = session(C4, S6);
  assert.deepEqual(s.fromClient(bytes('PORT 203,0,113,2,19,137\r\n')), [{ type: 'listen', id: 1, side: 'server', family: 6, peer: S6 }]);
  assert.deepEqual(s.listening(1, { ip: GW_S6, port: 40010 }), [{ type: 'toServer', line: 'EPRT |2|2001:db8:56::1|40010|' }]);
  assert.deepEqual(lines(s.fromServer(bytes('200 PORT ok.\r\n')), 'toClient'), ['200 PORT ok.']);
  assert.deepEqual(s.dataConnected(1, C4), [{ type: 'refuseData' }]);
  assert.deepEqual(s.dataConnected(1, S6), [
    { type: 'closeData', id: 1 },
    { type: 'joinData', side: 'server', target: { ip: C4, port: 19 * 256 + 137 } },
  ]);
});

test('a refused PORT closes its listener: a later connection is not joined', () => {
  const s = session(C6, S4);
  s.fromClient(bytes('EPRT |2|2001:db8:c6::2|5282|\r\n'));
  assert.deepEqual(lines(s.listening(1, { ip: ip('198.51.100.1'), port: 40011 }), 'toServer'), [`PORT 198,51,100,1,${40011 >> 8},${40011 & 0xff}`]);
  const refused = s.fromServer(bytes('501 no.\r\n'));
  assert.deepEqual(refused, [{ type: 'closeData', id: 1 }, { type: 'toClient', line: '501 no.' }]);
  assert.deepEqual(s.dataConnected(1, S4), [{ type: 'refuseData' }]);
});

test('a new PASV/PORT replaces the pending listener', () => {
  const s = session(C4, S6);
  s.fromClient(bytes('PASV\r\n'));
  s.listening(1, { ip: GW_C4, port: 40001 });
  s.fromServer(bytes('229 (|||6446|)\r\n'));
  assert.deepEqual(s.fromClient(bytes('PORT 203,0,113,2,19,137\r\n')), [
    { type: 'closeData', id: 1 },
    { type: 'listen', id: 2, side: 'server', family: 6, peer: S6 },
  ]);
  assert.deepEqual(s.dataConnected(1, C4), [{ type: 'refuseData' }]);
  assert.deepEqual(s.dataClaimed(1), [{ type: 'refuseData' }]);
});

test('FTP bounce: PORT/EPRT naming another address or a privileged port is a 504 and opens nothing', () => {
  const s4 = session(C4, S6);
  for (const cmd of ['PORT 203,0,113,99,19,137', 'PORT 203,0,113,2,3,255', 'PORT 198,51,100,10,0,21', 'EPRT |1|192.0.2.1|5282|']) {
    const out = s4.fromClient(bytes(`${cmd}\r\n`));
    assert.equal(out.length, 1, cmd);
    assert.equal(out[0]!.type, 'toClient', cmd);
    assert.match(lines(out, 'toClient')[0]!, /^504 /, cmd);
  }
  // 1024 is the first port allowed
  assert.equal(s4.fromClient(bytes('PORT 203,0,113,2,4,0\r\n'))[0]!.type, 'listen');
  const s6 = session(C6, S4);
  const out = s6.fromClient(bytes('EPRT |2|2001:db8:c6::99|5282|\r\n'));
  assert.deepEqual(types(out), ['toClient']);
  assert.match(lines(out, 'toClient')[0]!, /^504 /);
});

test('EPSV ALL is answered by the gateway; LPRT/LPSV and PASV from an IPv6 client are 502; none reaches the server', () => {
  const s4 = session(C4, S6);
  assert.deepEqual(s4.fromClient(bytes('EPSV ALL\r\n')), [{ type: 'toClient', line: '200 EPSV ALL command successful.' }]);
  for (const cmd of ['LPRT 6,16,32,1,13,184,0,0,0,0,0,0,0,0,0,0,0,2,19,137', 'LPSV']) {
    const out = s4.fromClient(bytes(`${cmd}\r\n`));
    assert.deepEqual(types(out), ['toClient'], cmd);
    assert.match(lines(out, 'toClient')[0]!, /^502 /, cmd);
  }
  const s6 = session(C6, S4);
  const out = s6.fromClient(bytes('PASV\r\n'));
  assert.deepEqual(types(out), ['toClient']);
  assert.match(lines(out, 'toClient')[0]!, /^502 /);
});

test('a control line over the bound from either side ends the session, saying which side', () => {
  const ok = session(C4, S6);
  // the bound counts the line without its LF (a CR before it counts)
  const longest = `NOOP ${'x'.repeat(MAX_FTP_LINE - 5)}`;
  assert.deepEqual(ok.fromClient(bytes(`${longest}\n`)), [{ type: 'toServer', line: longest }]);
  const c = session(C4, S6);
  assert.deepEqual(c.fromClient(bytes(`NOOP ${'x'.repeat(MAX_FTP_LINE)}`)), [{ type: 'shutdown', why: 'ftp-line-too-long-from-client' }]);
  const s = session(C4, S6);
  assert.deepEqual(s.fromServer(bytes(`200 ${'x'.repeat(MAX_FTP_LINE)}\r\n`)), [{ type: 'shutdown', why: 'ftp-line-too-long-from-server' }]);
});

test('a listener that cannot be opened is closed and a 425; held commands then go on', () => {
  const s = session(C4, S6);
  s.fromClient(bytes('PASV\r\nNOOP\r\n'));
  const out = s.listenFailed(1);
  assert.deepEqual(types(out), ['closeData', 'toClient', 'toServer']);
  assert.match(lines(out, 'toClient')[0]!, /^425 /);
  assert.deepEqual(lines(out, 'toServer'), ['NOOP']);
  assert.deepEqual(s.listening(1, { ip: GW_C4, port: 1 }), []);
});

test('a listener whose wait ran out (or that failed later) is closed and never joined', () => {
  const s = session(C4, S6);
  s.fromClient(bytes('PASV\r\n'));
  s.listening(1, { ip: GW_C4, port: 40001 });
  assert.deepEqual(s.listenerGone(1), [{ type: 'closeData', id: 1 }]);
  assert.deepEqual(s.listenerGone(1), []);
  s.fromServer(bytes('229 (|||6446|)\r\n'));
  assert.deepEqual(s.dataConnected(1, C4), [{ type: 'refuseData' }]);
});

test("a FIN passes on with the side's unterminated last line; idle ends the session only without a transfer", () => {
  const s = session(C4, S6);
  assert.deepEqual(s.fromClient(bytes('QUIT')), []);
  assert.deepEqual(s.ended('client'), [{ type: 'end', to: 'server', rest: 'QUIT' }]);
  assert.deepEqual(s.ended('server'), [{ type: 'end', to: 'client', rest: '' }]);
  assert.deepEqual(s.idle(true), [{ type: 'rearmIdle' }]);
  assert.deepEqual(s.idle(false), [{ type: 'shutdown', why: 'idle' }]);
});

test('control closed: pending listeners close and nothing more happens', () => {
  const s = session(C4, S6);
  s.fromClient(bytes('PASV\r\n'));
  s.listening(1, { ip: GW_C4, port: 40001 });
  s.fromServer(bytes('229 (|||6446|)\r\n'));
  assert.deepEqual(s.closed(), [{ type: 'closeData', id: 1 }]);
  assert.deepEqual(s.fromClient(bytes('NOOP\r\n')), []);
  assert.deepEqual(s.fromServer(bytes('200 ok\r\n')), []);
  assert.deepEqual(s.dataConnected(1, C4), [{ type: 'refuseData' }]);
  assert.deepEqual(s.dataClaimed(1), [{ type: 'refuseData' }]);
  assert.deepEqual(s.listenFailed(2), []);
});

test('the commands do not depend on how the bytes are split', () => {
  const script = 'USER a\r\nPASV\r\nRETR f\nPORT 203,0,113,2,19,137\r\nQUIT\r\n';
  const run = (chunks: Uint8Array[]): FtpCommand[] => {
    const s = new FtpSession({ clientIp: C4, serverIp: S6 });
    const out = chunks.flatMap((c) => s.fromClient(c));
    // listeners open as asked, so the held lines come out
    for (let id = 1; id <= 2; id++) out.push(...s.listening(id, { ip: id === 1 ? GW_C4 : GW_S6, port: 40000 + id }));
    return out;
  };
  const whole = run([bytes(script)]);
  assert.deepEqual(run([...bytes(script)].map((b) => Uint8Array.of(b))), whole);
  assert.deepEqual(lines(whole, 'toServer'), ['USER a', 'EPSV', 'RETR f', 'EPRT |2|2001:db8:56::1|40002|', 'QUIT']);
});
