// The FTP translator without sockets: lines in, lines and data-channel actions out; then the
// gateway's FTP I/O on loopback (client on 127.0.0.1, a scripted server on [::1]). Real servers
// and clients across namespaces are in test/topology/ftp.test.ts.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect, createServer, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { SocksClient } from 'socks';
import { readAll, sha256, startTcp } from '../../helpers/origin.js';
import { startCli, type Running } from '../../helpers/process.js';
import { C4, C6, GW_C4, GW_C6, GW_S4, GW_S6, ip, S4, S6 } from '../../helpers/ftp.js';
import type { Ip } from '../../../shared/net/address.js';
import { concatBytes, encodeGreeting, encodeRequest } from '../../../shared/socks5/codec.js';
import { CMD, METHOD } from '../../../shared/socks5/constants.js';
import {
  FtpTranslator,
  LineReader,
  encodeLine,
  formatEprt,
  formatHostPortCommas,
  parse229,
  parseEprt,
  parseHostPortCommas,
  type FtpAction,
} from '../../../bridge/gateway/ftp-translate.js';

const toClient = (out: FtpAction[]): string[] => out.flatMap((a) => (a.type === 'toClient' ? [a.line] : []));
const toServer = (out: FtpAction[]): string[] => out.flatMap((a) => (a.type === 'toServer' ? [a.line] : []));
const only = <T extends FtpAction['type']>(out: FtpAction[], type: T): Extract<FtpAction, { type: T }>[] =>
  out.filter((a): a is Extract<FtpAction, { type: T }> => a.type === type);

/** A translator past the greeting and login. */
function session(clientIp: Ip, serverIp: Ip): FtpTranslator {
  const t = new FtpTranslator({ clientIp, serverIp });
  assert.deepEqual(toClient(t.fromServer('220 pyftpdlib ready.')), ['220 pyftpdlib ready.']);
  assert.deepEqual(toServer(t.fromClient('USER anonymous')), ['USER anonymous']);
  assert.deepEqual(toClient(t.fromServer('331 Username ok, send password.')), ['331 Username ok, send password.']);
  return t;
}

describe('address formats', () => {
  test('227/PORT h1,h2,h3,h4,p1,p2 round trip', () => {
    const a = parseHostPortCommas('Entering Passive Mode (198,51,100,10,195,80).')!;
    assert.deepEqual(a, { ip: S4, port: 195 * 256 + 80 });
    assert.equal(formatHostPortCommas(a), '198,51,100,10,195,80');
    assert.deepEqual(parseHostPortCommas('=198,51,100,10,0,21'), { ip: S4, port: 21 });
    for (const bad of ['', '1,2,3,4,5', '256,1,1,1,1,1', '1,2,3,4,0,0', '1,2,3,4,5,300']) assert.equal(parseHostPortCommas(bad), null, bad);
    assert.throws(() => formatHostPortCommas({ ip: S6, port: 1 }), RangeError);
  });

  test('229 (|||port|) with any delimiter', () => {
    assert.equal(parse229('229 Entering Extended Passive Mode (|||6446|)'), 6446);
    assert.equal(parse229('229 ok (!!!21!)'), 21);
    for (const bad of ['229 (||6446|)', '229 (|||0|)', '229 (|||70000|)', '229 (|||x|)', '229 Entering']) assert.equal(parse229(bad), null, bad);
  });

  test('EPRT |af|addr|port|', () => {
    assert.deepEqual(parseEprt('|2|2001:db8:56::1|5282|'), { ok: true, address: { ip: GW_S6, port: 5282 } });
    assert.deepEqual(parseEprt('|1|203.0.113.2|5282|'), { ok: true, address: { ip: C4, port: 5282 } });
    assert.deepEqual(parseEprt('!2!2001:db8:56::1!5282!'), { ok: true, address: { ip: GW_S6, port: 5282 } });
    assert.deepEqual(parseEprt('|3|x|1|'), { ok: false, code: 522 });
    for (const bad of ['', '|2|2001:db8::1|5282', '|1|2001:db8::1|5282|', '|2|203.0.113.2|5282|', '|2|::1|0|', '|2|::1|99999|', '|x|::1|1|', ' |2|::1|1|'])
      assert.deepEqual(parseEprt(bad), { ok: false, code: 501 }, bad);
    assert.equal(formatEprt({ ip: GW_S6, port: 5282 }), 'EPRT |2|2001:db8:56::1|5282|');
    assert.equal(formatEprt({ ip: GW_S4, port: 5282 }), 'EPRT |1|198.51.100.1|5282|');
  });
});

describe('LineReader', () => {
  test('CRLF or LF, split across chunks one byte at a time, latin1 bytes kept', () => {
    const r = new LineReader();
    const bytes = Buffer.concat([Buffer.from('USER a\r\nRETR caf'), Buffer.from([0xc3, 0xa9, 0xff]), Buffer.from('\nNOOP\r')]);
    const lines: string[] = [];
    for (const b of bytes) lines.push(...r.feed(Uint8Array.of(b))!);
    assert.deepEqual(lines.slice(0, 1), ['USER a']);
    assert.deepEqual(encodeLine(lines[1]!), Buffer.concat([Buffer.from('RETR caf'), Buffer.from([0xc3, 0xa9, 0xff]), Buffer.from('\r\n')]));
    assert.equal(r.rest(), 'NOOP\r');
  });

  test('a line over the bound is refused, with or without its newline', () => {
    assert.equal(new LineReader(16).feed(Buffer.from('x'.repeat(17))), null);
    assert.equal(new LineReader(16).feed(Buffer.from(`${'x'.repeat(17)}\n`)), null);
    assert.deepEqual(new LineReader(16).feed(Buffer.from(`${'x'.repeat(16)}\n`)), ['x'.repeat(16)]);
  });
});

describe('passive', () => {
  test('IPv4 client PASV → EPSV to an IPv6 server → 227 with the gateway listener', () => {
    const t = session(C4, S6);
    const open = t.fromClient('PASV');
    assert.deepEqual(open, [{ type: 'listen', id: 1, side: 'client' }]);
    assert.equal(t.busy, true);
    assert.deepEqual(toServer(t.listening(1, { ip: GW_C4, port: 40001 })), ['EPSV']);
    assert.equal(t.busy, false);
    const reply = t.fromServer('229 Entering extended passive mode (|||6446|).');
    assert.deepEqual(only(reply, 'dataTarget'), [{ type: 'dataTarget', id: 1, target: { ip: S6, port: 6446 } }]);
    assert.deepEqual(toClient(reply), [`227 Entering Passive Mode (203,0,113,1,${40001 >> 8},${40001 & 0xff}).`]);
  });

  test('IPv6 client EPSV → PASV to an IPv4 server → 229; the 227 address is ignored for the server control address', () => {
    const t = session(C6, S4);
    assert.deepEqual(t.fromClient('epsv'), [{ type: 'listen', id: 1, side: 'client' }]);
    assert.deepEqual(toServer(t.listening(1, { ip: GW_C6, port: 40002 })), ['PASV']);
    const reply = t.fromServer('227 Entering Passive Mode (10,9,9,9,19,137).');
    assert.deepEqual(only(reply, 'dataTarget'), [{ type: 'dataTarget', id: 1, target: { ip: S4, port: 19 * 256 + 137 } }]);
    assert.deepEqual(toClient(reply), ['229 Entering Extended Passive Mode (|||40002|)']);
  });

  test('IPv4 client EPSV to an IPv6 server is translated too (the server port is not the gateway port)', () => {
    const t = session(C4, S6);
    t.fromClient('EPSV 1');
    assert.deepEqual(toServer(t.listening(1, { ip: GW_C4, port: 40003 })), ['EPSV']);
    assert.deepEqual(toClient(t.fromServer('229 (|||6446|)')), ['229 Entering Extended Passive Mode (|||40003|)']);
  });

  test('a refused or garbled passive reply closes the listener', () => {
    const t = session(C4, S6);
    t.fromClient('PASV');
    t.listening(1, { ip: GW_C4, port: 40001 });
    const refused = t.fromServer('500 Command EPSV not understood.');
    assert.deepEqual(only(refused, 'closeData'), [{ type: 'closeData', id: 1 }]);
    assert.deepEqual(toClient(refused), ['500 Command EPSV not understood.']);
    t.fromClient('PASV');
    t.listening(2, { ip: GW_C4, port: 40002 });
    const garbled = t.fromServer('229 Entering extended passive mode (port 6446)');
    assert.deepEqual(only(garbled, 'closeData'), [{ type: 'closeData', id: 2 }]);
    assert.match(toClient(garbled)[0]!, /^425 /);
  });

  test('a listener that cannot be opened is a 425, and held commands then go on', () => {
    const t = session(C4, S6);
    t.fromClient('PASV');
    assert.deepEqual(t.fromClient('NOOP'), []);
    const out = t.listenFailed(1);
    assert.match(toClient(out)[0]!, /^425 /);
    assert.deepEqual(toServer(out), ['NOOP']);
  });

  test('PASV from an IPv6 client is refused (227 cannot carry IPv6); EPSV ALL is answered by the gateway; LPSV/LPRT are 502', () => {
    const t = session(C6, S4);
    assert.match(toClient(t.fromClient('PASV'))[0]!, /^502 /);
    const all = t.fromClient('EPSV ALL');
    assert.deepEqual(toServer(all), []);
    assert.match(toClient(all)[0]!, /^200 /);
    assert.match(toClient(t.fromClient('EPSV 1'))[0]!, /^522 .*\(2\)/);
    assert.match(toClient(t.fromClient('EPSV x'))[0]!, /^501 /);
    assert.match(toClient(t.fromClient('LPSV'))[0]!, /^502 /);
    assert.match(toClient(t.fromClient('LPRT 6,16,32,1,13,184,0,0,0,0,0,0,0,0,0,0,0,2,19,137'))[0]!, /^502 /);
  });
});

describe('active', () => {
  test('IPv4 client PORT → EPRT to an IPv6 server with the gateway listener; data goes to the client', () => {
    const t = session(C4, S6);
    assert.deepEqual(t.fromClient('PORT 203,0,113,2,19,137'), [{ type: 'listen', id: 1, side: 'server' }]);
    const sent = t.listening(1, { ip: GW_S6, port: 40010 });
    assert.deepEqual(only(sent, 'dataTarget'), [{ type: 'dataTarget', id: 1, target: { ip: C4, port: 19 * 256 + 137 } }]);
    assert.deepEqual(toServer(sent), ['EPRT |2|2001:db8:56::1|40010|']);
    assert.deepEqual(toClient(t.fromServer('200 Active data connection established.')), ['200 Active data connection established.']);
  });

  test('IPv6 client EPRT → PORT to an IPv4 server', () => {
    const t = session(C6, S4);
    assert.deepEqual(t.fromClient('EPRT |2|2001:db8:c6::2|5282|'), [{ type: 'listen', id: 1, side: 'server' }]);
    const sent = t.listening(1, { ip: GW_S4, port: 40011 });
    assert.deepEqual(toServer(sent), [`PORT 198,51,100,1,${40011 >> 8},${40011 & 0xff}`]);
    const refused = t.fromServer('501 Rejected data connection to foreign address.');
    assert.deepEqual(only(refused, 'closeData'), [{ type: 'closeData', id: 1 }]);
    assert.deepEqual(toClient(refused), ['501 Rejected data connection to foreign address.']);
  });

  test('FTP bounce: another host or a privileged port is refused and never reaches the server', () => {
    const t = session(C4, S6);
    for (const cmd of ['PORT 198,51,100,10,0,25', 'PORT 203,0,113,3,19,137', 'PORT 203,0,113,2,0,80', 'EPRT |1|192.0.2.1|5282|']) {
      const out = t.fromClient(cmd);
      assert.deepEqual(toServer(out), [], cmd);
      assert.equal(only(out, 'listen').length, 0, cmd);
      assert.match(toClient(out)[0]!, /^504 /, cmd);
    }
    const t6 = session(C6, S4);
    assert.match(toClient(t6.fromClient('EPRT |2|2001:db8:c6::99|5282|'))[0]!, /^504 /);
    assert.match(toClient(t6.fromClient('PORT 203,0,113,2,19,137'))[0]!, /^504 /);
    assert.match(toClient(t6.fromClient('EPRT |3|x|1|'))[0]!, /^522 .*\(2\)/);
    assert.match(toClient(t.fromClient('PORT 1,2,3'))[0]!, /^501 /);
    assert.match(toClient(t.fromClient('EPRT junk'))[0]!, /^501 /);
  });
});

describe('reply ordering', () => {
  test("a gateway reply waits behind the server's replies still due; multi-line replies pass whole", () => {
    const t = session(C4, S6);
    assert.deepEqual(toServer(t.fromClient('PASS x')), ['PASS x']);
    assert.deepEqual(toServer(t.fromClient('FEAT')), ['FEAT']);
    assert.deepEqual(toClient(t.fromClient('LPSV')), []);
    assert.deepEqual(toClient(t.fromServer('230 Login successful.')), ['230 Login successful.']);
    assert.deepEqual(toClient(t.fromServer('211-Features:')), ['211-Features:']);
    assert.deepEqual(toClient(t.fromServer(' EPSV')), [' EPSV']);
    assert.deepEqual(toClient(t.fromServer('211-still going')), ['211-still going']);
    const end = toClient(t.fromServer('211 End'));
    assert.equal(end[0], '211 End');
    assert.match(end[1]!, /^502 LPSV/);
  });

  test('preliminary 1xx replies do not consume the pending command', () => {
    const t = session(C4, S6);
    t.fromClient('PASV');
    t.listening(1, { ip: GW_C4, port: 40001 });
    t.fromServer('229 (|||6446|)');
    assert.deepEqual(toServer(t.fromClient('RETR blob.bin')), ['RETR blob.bin']);
    assert.deepEqual(toServer(t.fromClient('PASV')), []);
    assert.deepEqual(toClient(t.fromServer('150 File status okay.')), ['150 File status okay.']);
    assert.deepEqual(toClient(t.fromServer('226 Transfer complete.')), ['226 Transfer complete.']);
    assert.deepEqual(toServer(t.listening(2, { ip: GW_C4, port: 40002 })), ['EPSV']);
    assert.match(toClient(t.fromServer('229 (|||6447|)'))[0]!, /^227 .*\(203,0,113,1,156,66\)/);
  });

  test('a stale listener id is closed, not used', () => {
    const t = session(C4, S6);
    assert.deepEqual(t.listening(7, { ip: GW_C4, port: 1 }), [{ type: 'closeData', id: 7 }]);
    assert.deepEqual(t.listenFailed(7), []);
  });

  test('garbage never throws: random lines both ways', () => {
    for (const [c, s] of [[C4, S6], [C6, S4]] as const) {
      const t = new FtpTranslator({ clientIp: c, serverIp: s });
      let id = 0;
      for (let i = 0; i < 2000; i++) {
        const junk = randomBytes(1 + (i % 40)).toString('latin1');
        const verbs = ['PASV', 'EPSV', 'PORT', 'EPRT', 'LPRT', '227', '229', '229-', '150', 'EPSV ALL'];
        const line = i % 3 === 0 ? `${verbs[i % verbs.length]} ${junk}` : junk;
        const out = i % 2 === 0 ? t.fromClient(line) : t.fromServer(line);
        for (const a of out) if (a.type === 'listen') id = a.id;
        if (t.busy) (i % 4 === 0 ? t.listenFailed(id) : t.listening(id, { ip: c === C4 ? GW_C4 : GW_C6, port: 40000 }));
      }
    }
  });
});

/** Whether this host can listen on [::1] (some CI hosts have IPv6 off). */
async function haveLoopback6(): Promise<boolean> {
  const server = createServer();
  return new Promise((resolve) => {
    server.once('error', () => resolve(false));
    server.listen(0, '::1', () => server.close(() => resolve(true)));
  });
}

/** Reads reply lines (final lines only: "ddd text") from a control socket. */
function replyReader(sock: Socket): () => Promise<string> {
  let buf = '';
  const lines: string[] = [];
  let wake: (() => void) | undefined;
  sock.on('data', (d: Buffer) => {
    buf += d.toString('latin1');
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i).replace(/\r$/, ''));
      buf = buf.slice(i + 1);
    }
    wake?.();
  });
  sock.on('close', () => {
    lines.push('EOF');
    wake?.();
  });
  return async () => {
    for (;;) {
      const l = lines.shift();
      if (l !== undefined && (l === 'EOF' || /^\d{3} /.test(l))) return l;
      if (l === undefined) await new Promise<void>((r) => (wake = r));
    }
  };
}

describe('FTP translation on loopback (IPv4 client, IPv6 server)', async () => {
  const skip = (await haveLoopback6()) ? false : 'no IPv6 loopback on this host';
  const payload = randomBytes(3 * 1024 * 1024);
  const heard: string[] = [];
  let ftp: Awaited<ReturnType<typeof startTcp>>;
  let data: Awaited<ReturnType<typeof startTcp>>;
  let gw: Running;
  let port = 0;

  before(async () => {
    if (skip) return;
    data = await startTcp('::1', (s) => s.end(payload));
    // just enough of a server: EPSV names the data server; RETR waits for it to be fetched
    ftp = await startTcp('::1', (s) => {
      s.write('220 scripted\r\n');
      let buf = '';
      s.on('data', (d: Buffer) => {
        buf += d.toString('latin1');
        let i: number;
        while ((i = buf.indexOf('\r\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 2);
          heard.push(line);
          if (line === 'EPSV') s.write(`229 Entering Extended Passive Mode (|||${data.port}|)\r\n`);
          else if (line.startsWith('RETR')) s.write('150 Here it comes.\r\n226 Transfer complete.\r\n');
          else if (line === 'LONG') s.write(`200 ${'y'.repeat(10000)}\r\n`);
          else if (line === 'QUIT') s.end('221 Bye.\r\n');
          else s.write('200 OK.\r\n');
        }
      });
      // the client's EOF (passed on by the gateway) ends the session
      s.once('end', () => s.end());
    });
    gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--dns', 'none', '--allow', '::1', '--ftp-port', String(ftp.port)]);
    port = gw.listening[0]!.port;
  });
  after(async () => {
    if (skip) return;
    await gw.stop();
    await ftp.close();
    await data.close();
  });

  const control = async (): Promise<{ sock: Socket; next: () => Promise<string>; cmd: (l: string) => Promise<string> }> => {
    const { socket: sock } = await SocksClient.createConnection({ proxy: { host: '127.0.0.1', port, type: 5 }, command: 'connect', destination: { host: '::1', port: ftp.port } });
    const next = replyReader(sock);
    assert.equal(await next(), '220 scripted');
    return { sock, next, cmd: (l) => (sock.write(`${l}\r\n`), next()) };
  };

  test("PASV → EPSV; only the client's own address may use the 227 listener", { skip }, async () => {
    const before = gw.records().length;
    const c = await control();
    const pasv = await c.cmd('PASV');
    const m = /\(127,0,0,1,(\d+),(\d+)\)/.exec(pasv);
    assert.ok(m, pasv);
    const dataPort = Number(m[1]) * 256 + Number(m[2]);
    assert.equal(heard.at(-1), 'EPSV');
    // another source address (127.0.0.2 is loopback too) is turned away; the listener stays
    const stranger = connect({ host: '127.0.0.1', port: dataPort, localAddress: '127.0.0.2' });
    stranger.on('error', () => {});
    assert.equal((await readAll(stranger).catch(() => Buffer.alloc(0))).length, 0);
    const got = readAll(connect({ host: '127.0.0.1', port: dataPort }));
    assert.match(await c.cmd('RETR blob'), /^150 /);
    assert.equal(sha256(await got), sha256(payload));
    assert.match(await c.next(), /^226 /);
    assert.match(await c.cmd('QUIT'), /^221 /);
    c.sock.end();
    const rec = (await gw.waitRecords(before + 1))[before]!;
    assert.equal(rec.ftp, 'translated');
    assert.equal(rec.ftpData, 1);
    assert.equal(rec.ftpDataDown, payload.length);
  });

  test('request, a command and FIN in one go (as printf | ncat sends them): the command is answered, the FIN reaches the server', { skip }, async () => {
    const before = gw.records().length;
    const s = connect({ host: '127.0.0.1', port });
    s.end(concatBytes(encodeGreeting({ methods: [METHOD.NO_AUTH] }), encodeRequest({ cmd: CMD.CONNECT, host: '::1', port: ftp.port }), Buffer.from('NOOP\r\n')));
    let timer: NodeJS.Timeout | undefined;
    const out = await Promise.race([
      readAll(s),
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('no EOF through the translated control connection')), 15_000))),
    ]).finally(() => clearTimeout(timer));
    assert.ok(out.toString('latin1').endsWith('220 scripted\r\n200 OK.\r\n'), JSON.stringify(out.toString('latin1')));
    const rec = (await gw.waitRecords(before + 1))[before]!;
    assert.equal(rec.ftp, 'translated');
    assert.equal(rec.end, 'closed');
  });

  test('a control line over the bound ends the session, with a log line saying why', { skip }, async () => {
    for (const [send, why] of [[`NOOP ${'x'.repeat(9000)}`, 'ftp-line-too-long-from-client'], ['LONG', 'ftp-line-too-long-from-server']] as const) {
      const before = gw.records().length;
      const c = await control();
      c.sock.write(`${send}\r\n`);
      assert.equal(await c.next(), 'EOF');
      const rec = (await gw.waitRecords(before + 1))[before]!;
      assert.equal(rec.end, why);
    }
  });
});
