// FTP translation (RFC 3089 §5.10) across families: a real FTP server (Debian's pyftpdlib) in the
// IPv6-only and the IPv4-only server namespace, reached by name through `dualsocks gateway
// --ftp` from the client namespace of the other family. Passive mode with curl (PASV and EPSV),
// active mode (PORT ↔ EPRT) and the other ways to reach a passive listener with a scripted client.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, openSync, closeSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { haveCommand, requireCapability, rootNetns } from '../helpers/env.js';
import { type Running } from '../helpers/process.js';
import { eventually } from '../helpers/settle.js';
import { createTopology, ADDR, ALLOW_DESTINATIONS, NAMES, GW_DNS, type Topology } from './netns.js';
import { anyAddress, makeUsersFile, startGateway } from './fixtures.js';

const skip =
  rootNetns() ||
  requireCapability('python3-pyftpdlib', haveCommand('/usr/bin/python3', ['-c', 'import pyftpdlib']), 'apt-get install python3-pyftpdlib');
const USER = 'alice';
const PASS = 'correct-horse_7';
const PORT = 1081;
const PLAIN_PORT = 1082;
const FTP_PORT = 21;
const FILE_SIZE = 4 * 1024 * 1024;

type Client = 'c4' | 'c6';
type Server = 's4' | 's6';

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const gwHost = (c: Client): string => (c === 'c4' ? ADDR.gw.c4 : ADDR.gw.c6);
const proxyUrl = (c: Client, port: number): string => `socks5h://${USER}:${PASS}@${c === 'c4' ? ADDR.gw.c4 : `[${ADDR.gw.c6}]`}:${port}`;

// Runs inside a client namespace: an FTP client whose control connection goes through the
// gateway (the `socks` package). Modes: "active" (PORT, or EPRT for an IPv6 address, to a
// listener on LOCAL_IP), "pasv-socks" (PASV, data by a SOCKS CONNECT to the 227 address),
// "pasv-direct" (PASV, data straight to the 227 address), "bounce" (PORT/EPRT naming others).
// Prints one JSON object with every reply and the data's size and sha256.
const FTP_CLIENT = `
const { SocksClient } = require(${JSON.stringify(createRequire(import.meta.url).resolve('socks'))});
const net = require('node:net');
const crypto = require('node:crypto');
const [proxyHost, proxyPort, userId, password, host, mode, localIp, file, ...others] = process.argv.slice(2);
const proxy = { host: proxyHost, port: +proxyPort, type: 5, userId, password };
const out = {};
function replies(sock) {
  let buf = '';
  const lines = [];
  let wake = null;
  sock.on('data', (d) => {
    buf += d.toString('latin1');
    let i;
    while ((i = buf.indexOf('\\n')) >= 0) { lines.push(buf.slice(0, i).replace(/\\r$/, '')); buf = buf.slice(i + 1); }
    if (wake) wake();
  });
  sock.on('close', () => { lines.push('EOF'); if (wake) wake(); });
  return async () => {
    for (;;) {
      while (lines.length) {
        const l = lines.shift();
        if (l === 'EOF' || /^\\d{3} /.test(l)) return l;
      }
      await new Promise((r) => (wake = r));
      wake = null;
    }
  };
}
const readAll = (s) => new Promise((resolve, reject) => {
  const chunks = [];
  s.on('data', (c) => chunks.push(c));
  s.on('end', () => resolve(Buffer.concat(chunks)));
  s.on('error', reject);
});
const digest = (b) => ({ size: b.length, sha256: crypto.createHash('sha256').update(b).digest('hex') });
(async () => {
  const { socket: ctl } = await SocksClient.createConnection({ proxy, command: 'connect', destination: { host, port: 21 }, timeout: 30000 });
  const next = replies(ctl);
  const cmd = (line) => { ctl.write(line + '\\r\\n'); return next(); };
  out.greeting = await next();
  out.user = await cmd('USER anonymous');
  out.pass = await cmd('PASS ftp@example.com');
  out.type = await cmd('TYPE I');
  if (mode === 'active') {
    const srv = net.createServer();
    await new Promise((r) => srv.listen(0, localIp, r));
    const port = srv.address().port;
    const got = new Promise((resolve) => srv.once('connection', (s) => { out.dataFrom = s.remoteAddress; resolve(readAll(s)); }));
    out.port = await cmd(localIp.includes(':') ? 'EPRT |2|' + localIp + '|' + port + '|' : 'PORT ' + localIp.replace(/\\./g, ',') + ',' + (port >> 8) + ',' + (port & 255));
    out.retr = await cmd('RETR ' + file);
    Object.assign(out, digest(await got));
    out.done = await next();
    srv.close();
  } else if (mode === 'pasv-socks' || mode === 'pasv-direct') {
    out.pasv = await cmd('PASV');
    const m = /(\\d+),(\\d+),(\\d+),(\\d+),(\\d+),(\\d+)/.exec(out.pasv);
    const ip = m.slice(1, 5).join('.');
    const port = +m[5] * 256 + +m[6];
    const data = mode === 'pasv-direct'
      ? await new Promise((resolve, reject) => { const s = net.connect(port, ip, () => resolve(s)); s.on('error', reject); })
      : (await SocksClient.createConnection({ proxy, command: 'connect', destination: { host: ip, port }, timeout: 30000 })).socket;
    const got = readAll(data);
    out.retr = await cmd('RETR ' + file);
    Object.assign(out, digest(await got));
    out.done = await next();
  } else if (mode === 'bounce') {
    out.refused = [];
    for (const line of others) out.refused.push(await cmd(line));
  }
  out.quit = await cmd('QUIT');
  ctl.end();
  console.log(JSON.stringify(out));
})().catch((e) => { out.error = String(e && e.message || e); console.log(JSON.stringify(out)); });
`;

interface FtpRun {
  greeting?: string;
  port?: string;
  pasv?: string;
  retr?: string;
  done?: string;
  quit?: string;
  refused?: string[];
  size?: number;
  sha256?: string;
  dataFrom?: string;
  error?: string;
}

test('FTP translation across address families in network namespaces', { skip }, async (t) => {
  const topo: Topology = await createTopology();
  const running: Running[] = [];
  const servers: ChildProcess[] = [];
  try {
    const usersFile = await makeUsersFile(topo.dir, USER, PASS);

    // pyftpdlib with -D logs every command it receives: the proof of what the gateway sent
    const fileSha = {} as Record<Server, string>;
    const ftpLog = (s: Server): string => readFileSync(join(topo.dir, `ftp-${s}.log`), 'utf8');
    for (const s of ['s4', 's6'] as const) {
      const root = join(topo.dir, `ftp-${s}`);
      mkdirSync(root);
      const blob = randomBytes(FILE_SIZE);
      writeFileSync(join(root, 'file.bin'), blob);
      fileSha[s] = sha256(blob);
      const fd = openSync(join(topo.dir, `ftp-${s}.log`), 'a');
      const p = spawn('ip', ['netns', 'exec', topo.ns[s], '/usr/bin/python3', '-m', 'pyftpdlib', '-D', '-i', ADDR[s], '-p', String(FTP_PORT), '-d', root], { stdio: ['ignore', fd, fd] });
      closeSync(fd);
      p.on('error', () => {});
      servers.push(p);
    }
    for (const s of ['s4', 's6'] as const) {
      await eventually(async () => (await topo.exec(s, 'ss', ['-Hltn', 'sport', '=', `:${FTP_PORT}`])).stdout.length > 0, `pyftpdlib in ${s} listening`, { timeoutMs: 15_000, describe: () => ftpLog(s) });
    }

    const common = ['--users', usersFile, '--hosts', topo.hostsFile, '--dns', `${GW_DNS.host}:${GW_DNS.port}`, ...ALLOW_DESTINATIONS];
    const gw = await startGateway(topo.ns.gw, anyAddress(PORT), ['--ftp', ...common], running);
    const plain = await startGateway(topo.ns.gw, anyAddress(PLAIN_PORT), common, running);

    /** The first log record after the first `before` that satisfies `pred` (records come as connections end). */
    const recordAfter = async (g: Running, before: number, pred: (r: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> => {
      for (let n = before + 1; ; n++) {
        const found = (await g.waitRecords(n)).slice(before).find(pred);
        if (found) return found;
      }
    };
    const controlRecord = (g: Running, before: number) => recordAfter(g, before, (r) => r.port === FTP_PORT && r.cmd === 'connect');
    const curl = (client: Client, url: string, extra: string[], port = PORT) =>
      topo.exec(client, 'curl', ['-sS', '--max-time', '60', '--proxy', proxyUrl(client, port), ...extra, url]);
    const script = join(topo.dir, 'ftp-client.cjs');
    writeFileSync(script, FTP_CLIENT);
    const scripted = async (client: Client, name: string, mode: string, localIp: string, others: string[] = []): Promise<FtpRun> => {
      const r = await topo.exec(client, process.execPath, [script, gwHost(client), String(PORT), USER, PASS, name, mode, localIp, 'file.bin', ...others]);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout.toString()) as FtpRun;
    };

    await t.test('passive, PASV: curl --disable-epsv in c4 → IPv6-only server (gateway sends EPSV)', async () => {
      const before = gw.records().length;
      const r = await curl('c4', `ftp://${NAMES.v6only}/file.bin`, ['--disable-epsv']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.length, FILE_SIZE);
      assert.equal(sha256(r.stdout), fileSha.s6);
      const ctl = await controlRecord(gw, before);
      assert.equal(ctl.ftp, 'translated');
      assert.equal(ctl.family, 6);
      assert.equal(ctl.ftpData, 1);
      assert.equal(ctl.ftpDataDown, FILE_SIZE);
      // curl's data connection is a SOCKS CONNECT to the name and the gateway's listener port
      const data = await recordAfter(gw, before, (rec) => rec.ftp === 'data');
      assert.equal(data.host, NAMES.v6only);
      assert.equal(data.family, 6);
      assert.equal(data.bytesDown, FILE_SIZE);
      assert.match(ftpLog('s6'), /<- EPSV/);
      assert.doesNotMatch(ftpLog('s6'), /<- PASV/);
    });

    await t.test('control: without --ftp the same PASV download fails', async () => {
      const r = await curl('c4', `ftp://${NAMES.v6only}/file.bin`, ['--disable-epsv'], PLAIN_PORT);
      assert.notEqual(r.code, 0);
      assert.equal(r.stdout.length, 0);
      assert.match(r.stderr, /Couldn't interpret the 227-response/, r.stderr);
    });

    await t.test('passive, EPSV: curl in c4 → IPv6-only server', async () => {
      const before = gw.records().length;
      const r = await curl('c4', `ftp://${NAMES.v6only}/file.bin`, []);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(sha256(r.stdout), fileSha.s6);
      assert.equal((await controlRecord(gw, before)).ftpData, 1);
    });

    await t.test('passive, reverse: curl in c6 (EPSV) → IPv4-only server (gateway sends PASV)', async () => {
      const before = gw.records().length;
      const r = await curl('c6', `ftp://${NAMES.v4only}/file.bin`, []);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.length, FILE_SIZE);
      assert.equal(sha256(r.stdout), fileSha.s4);
      const ctl = await controlRecord(gw, before);
      assert.equal(ctl.ftp, 'translated');
      assert.equal(ctl.family, 4);
      assert.equal(ctl.ftpDataDown, FILE_SIZE);
      assert.match(ftpLog('s4'), /<- PASV/);
      assert.doesNotMatch(ftpLog('s4'), /<- EPSV/);
    });

    await t.test('passive, scripted: data by SOCKS CONNECT to the 227 address, and straight to it', async () => {
      for (const mode of ['pasv-socks', 'pasv-direct']) {
        const before = gw.records().length;
        const out = await scripted('c4', NAMES.v6only, mode, ADDR.c4);
        assert.equal(out.error, undefined, JSON.stringify(out));
        assert.match(out.pasv ?? '', new RegExp(`^227 .*\\(${ADDR.gw.c4.replace(/\./g, ',')},\\d+,\\d+\\)`));
        assert.match(out.retr ?? '', /^1(25|50) /);
        assert.match(out.done ?? '', /^226 /);
        assert.equal(out.size, FILE_SIZE);
        assert.equal(out.sha256, fileSha.s6);
        assert.equal((await controlRecord(gw, before)).ftpDataDown, FILE_SIZE);
      }
    });

    await t.test('active, PORT → EPRT: scripted client in c4, IPv6-only server connects to the gateway, the gateway to c4', async () => {
      const before = gw.records().length;
      const out = await scripted('c4', NAMES.v6only, 'active', ADDR.c4);
      assert.equal(out.error, undefined, JSON.stringify(out));
      assert.match(out.port ?? '', /^200 /);
      assert.match(out.retr ?? '', /^1(25|50) /);
      assert.match(out.done ?? '', /^226 /);
      assert.equal(out.size, FILE_SIZE);
      assert.equal(out.sha256, fileSha.s6);
      assert.equal(out.dataFrom, ADDR.gw.c4);
      const ctl = await controlRecord(gw, before);
      assert.equal(ctl.ftpData, 1);
      assert.equal(ctl.ftpDataDown, FILE_SIZE);
      assert.match(ftpLog('s6'), new RegExp(`<- EPRT \\|2\\|${ADDR.gw.s6}\\|\\d+\\|`));
    });

    await t.test('active, EPRT → PORT: scripted client in c6 → IPv4-only server', async () => {
      const out = await scripted('c6', NAMES.v4only, 'active', ADDR.c6);
      assert.equal(out.error, undefined, JSON.stringify(out));
      assert.match(out.port ?? '', /^200 /);
      assert.match(out.done ?? '', /^226 /);
      assert.equal(out.sha256, fileSha.s4);
      assert.equal(out.dataFrom, ADDR.gw.c6);
      assert.match(ftpLog('s4'), new RegExp(`<- PORT ${ADDR.gw.s4.replace(/\./g, ',')},\\d+,\\d+`));
    });

    await t.test('FTP bounce: PORT/EPRT naming another host or a privileged port is refused by the gateway', async () => {
      const logBefore = ftpLog('s6').length;
      const out = await scripted('c4', NAMES.v6only, 'bounce', ADDR.c4, [
        'PORT 198,51,100,10,0,80',
        `EPRT |2|${ADDR.s6}|8080|`,
        `PORT ${ADDR.c4.replace(/\./g, ',')},0,25`,
        'LPRT 4,4,203,0,113,2,2,19,137',
      ]);
      assert.equal(out.error, undefined, JSON.stringify(out));
      assert.deepEqual(out.refused?.map((l) => l.slice(0, 3)), ['504', '504', '504', '502']);
      assert.match(out.quit ?? '', /^221 /);
      assert.doesNotMatch(ftpLog('s6').slice(logBefore), /<- (PORT|EPRT|LPRT)/);
    });
  } finally {
    await Promise.all(running.map((r) => r.stop()));
    for (const p of servers) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    await topo.destroy();
  }
});
