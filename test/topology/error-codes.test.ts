// Errors that keep their meaning end to end (METHOD.ERROR_CODES, 0xD5). In a namespace of its own,
// where 192.0.2.77 has an "unreachable" route (connect: EHOSTUNREACH) and 198.51.100.77 no route
// (ENETUNREACH): a dualsocks gateway names its exact error to a client that offers the method, and
// the bridge's 502 page, X-Dualsocks-Error and /api/status say which; curl and PySocks (which do not
// offer it) read the gateway's failure replies as before; Dante and microsocks ignore the offer,
// choose 0x00, and a bridge in front of them behaves as it always did.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { METHOD } from '../../shared/socks5/constants.js';
import { which } from '../bench/peers.js';
import { haveCommand, requireCapability, rootNetns } from '../helpers/env.js';
import { startCli, type Running } from '../helpers/process.js';
import { eventually } from '../helpers/settle.js';
import { run, type ExecResult } from './netns.js';

const skip =
  rootNetns() ||
  requireCapability('Dante (danted)', which('danted') !== null, 'apt-get install dante-server') ||
  requireCapability('microsocks', which('microsocks') !== null, 'apt-get install microsocks') ||
  requireCapability('PySocks', haveCommand('/usr/bin/python3', ['-c', 'import socks']), 'apt-get install python3-socks');

const NS = `dserr-${process.pid}`;
const HOST_UNREACHABLE = '192.0.2.77';
const NET_UNREACHABLE = '198.51.100.77';
// a fresh namespace: every port is free
const PORT = { gateway: 1080, dante: 1081, microsocks: 1082, origin: 8000 } as const;
const CODEC = new URL('../../shared/socks5/codec.js', import.meta.url).href;

/** One SOCKS5 CONNECT step by step, the bytes built and read by the project's codec. Prints {method, reply}. */
const RAW_CLIENT = `
import { connect } from 'node:net';
const c = await import(process.argv[2]);
const [port, methods, host, dport] = process.argv.slice(3);
const s = connect({ host: '127.0.0.1', port: Number(port) });
let buf = new Uint8Array(0), method = null;
s.on('data', (d) => {
  buf = c.concatBytes(buf, d);
  if (method === null) {
    const m = c.decodeMethodSelection(buf);
    if (m.status !== 'ok') return;
    method = m.msg.method;
    buf = buf.subarray(m.size);
    s.write(c.encodeRequest({ cmd: 1, host, port: Number(dport) }));
  }
  const r = c.decodeReply(buf);
  if (r.status === 'need') return;
  console.log(JSON.stringify({ method, reply: r.status === 'ok' ? r.msg : r.error.code }));
  s.destroy();
});
s.on('error', (e) => { console.log(JSON.stringify({ error: e.message })); });
s.write(c.encodeGreeting({ methods: methods.split(',').map(Number) }));
`;

const PYSOCKS = `
import socks, sys
s = socks.socksocket()
s.set_proxy(socks.SOCKS5, "127.0.0.1", int(sys.argv[1]), rdns=True)
s.settimeout(20)
try:
    s.connect((sys.argv[2], int(sys.argv[3])))
    print("connected")
except Exception as e:
    print(type(e).__name__, e)
`;

interface Raw {
  method?: number;
  reply?: { rep: number; atyp: number; host: string; port: number } | string;
  error?: string;
}

describe('error codes end to end (METHOD.ERROR_CODES)', { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'dualsocks-errcodes-'));
  const children: ChildProcess[] = [];
  const running: Running[] = [];
  let bridges: Record<'dualsocks' | 'dante' | 'microsocks', number>;

  const exec = (cmd: string, args: string[], timeoutMs = 40000): Promise<ExecResult> => run(cmd, args, { netns: NS, timeoutMs });
  const raw = async (port: number, methods: number[], host: string, dport = PORT.origin): Promise<Raw> => {
    const r = await exec(process.execPath, [join(dir, 'raw.mjs'), CODEC, String(port), methods.join(','), host, String(dport)]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout.toString()) as Raw;
  };
  const daemon = (cmd: string, args: string[]): void => {
    const p = spawn('ip', ['netns', 'exec', NS, cmd, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    p.stderr!.resume();
    children.push(p);
  };
  const listens = (port: number, what: string): Promise<void> =>
    eventually(async () => (await exec('/usr/bin/python3', ['-c', `import socket; socket.create_connection(("127.0.0.1", ${port}), 2)`])).code === 0, `${what} listening on ${port}`);
  /** curl through the bridge as an HTTP proxy: status line, headers and body. */
  const viaBridge = async (bridge: number, url: string, extra: string[] = []): Promise<{ status: number; reason: string; headers: Record<string, string>; body: string }> => {
    const r = await exec('curl', ['-sS', '-i', '--max-time', '30', '-x', `http://127.0.0.1:${bridge}`, ...extra, url]);
    assert.equal(r.code, 0, r.stderr);
    const text = r.stdout.toString();
    const [head, ...body] = text.split('\r\n\r\n');
    const [statusLine, ...lines] = head!.split('\r\n');
    const m = /^HTTP\/1\.1 (\d+) (.*)$/.exec(statusLine!);
    assert.ok(m, text);
    const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
    return { status: Number(m[1]), reason: m[2]!, headers, body: body.join('\r\n\r\n') };
  };

  before(async () => {
    await run('ip', ['netns', 'add', NS]);
    await run('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);
    await run('ip', ['-n', NS, 'route', 'add', 'unreachable', `${HOST_UNREACHABLE}/32`]);
    writeFileSync(join(dir, 'raw.mjs'), RAW_CLIENT);
    writeFileSync(join(dir, 'hosts'), `127.0.0.1 web.test\n${HOST_UNREACHABLE} gone.test\n${NET_UNREACHABLE} far.test\n`);
    writeFileSync(join(dir, 'rules.json'), JSON.stringify({ mode: 'all', bypass: [] }));
    mkdirSync(join(dir, 'www'));
    writeFileSync(join(dir, 'www', 'index.html'), 'hello through the namespace\n');
    writeFileSync(
      join(dir, 'danted.conf'),
      ['logoutput: stderr', `internal: 127.0.0.1 port = ${PORT.dante}`, 'external: lo', 'socksmethod: none', 'clientmethod: none', 'user.privileged: root', 'user.unprivileged: nobody', 'client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }', 'socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }', ''].join('\n'),
    );
    daemon('/usr/bin/python3', ['-m', 'http.server', String(PORT.origin), '--bind', '127.0.0.1', '--directory', join(dir, 'www')]);
    daemon(which('danted')!, ['-f', join(dir, 'danted.conf'), '-p', join(dir, 'danted.pid'), '-N', '1']);
    daemon(which('microsocks')!, ['-i', '127.0.0.1', '-p', String(PORT.microsocks)]);
    const allow = [HOST_UNREACHABLE, NET_UNREACHABLE, '127.0.0.1'].flatMap((a) => ['--allow', a]);
    running.push(await startCli(['gateway', '--listen', `127.0.0.1:${PORT.gateway}`, '--hosts', join(dir, 'hosts'), '--dns', 'none', ...allow], { netns: NS }));
    await Promise.all([listens(PORT.origin, 'origin'), listens(PORT.dante, 'Dante'), listens(PORT.microsocks, 'microsocks')]);
    const bridge = async (gw: number): Promise<number> => {
      const b = await startCli(['bridge', '--listen', '127.0.0.1:0', '--gateway', `socks5://127.0.0.1:${gw}`, '--rules', join(dir, 'rules.json')], { netns: NS });
      running.push(b);
      return b.listening[0]!.port;
    };
    bridges = { dualsocks: await bridge(PORT.gateway), dante: await bridge(PORT.dante), microsocks: await bridge(PORT.microsocks) };
  });

  after(async () => {
    await Promise.all(running.map((r) => r.stop()));
    for (const c of children) c.kill('SIGKILL');
    await Promise.all(children.map((c) => (c.exitCode === null && c.signalCode === null ? new Promise((r) => c.once('exit', r)) : null)));
    await run('ip', ['netns', 'del', NS]);
    rmSync(dir, { recursive: true, force: true });
  });

  test('a raw client that offers 0xD5 gets the exact code in BND; one that does not gets 0.0.0.0:0; the method chosen is 0x00', async () => {
    const cases: [string, number, string][] = [
      ['nowhere.test', 4, 'ERR_NAME_NOT_FOUND'],
      ['gone.test', 4, 'ERR_HOST_UNREACHABLE'],
      ['far.test', 3, 'ERR_NETWORK_UNREACHABLE'],
    ];
    for (const [host, rep, code] of cases) {
      assert.deepEqual(await raw(PORT.gateway, [METHOD.NO_AUTH, METHOD.ERROR_CODES], host), { method: 0, reply: { rep, atyp: 3, host: code, port: 0 } }, host);
      assert.deepEqual(await raw(PORT.gateway, [METHOD.NO_AUTH], host), { method: 0, reply: { rep, atyp: 1, host: '0.0.0.0', port: 0 } }, host);
    }
  });

  test('curl and PySocks, which do not offer it, read the failure replies as before', async () => {
    for (const host of ['nowhere.test', 'gone.test']) {
      const c = await exec('curl', ['-sS', '--max-time', '30', '--socks5-hostname', `127.0.0.1:${PORT.gateway}`, `http://${host}:${PORT.origin}/`]);
      assert.equal(c.code, 97, c.stderr);
      assert.match(c.stderr, /\(4\)/, c.stderr);
      const p = await exec('/usr/bin/python3', ['-c', PYSOCKS, String(PORT.gateway), host, String(PORT.origin)]);
      assert.match(p.stdout.toString(), /0x04: Host unreachable/, p.stdout.toString() + p.stderr);
    }
    const ok = await exec('curl', ['-sS', '--max-time', '30', '--socks5-hostname', `127.0.0.1:${PORT.gateway}`, `http://web.test:${PORT.origin}/`]);
    assert.equal(ok.stdout.toString(), 'hello through the namespace\n', ok.stderr);
    const py = await exec('/usr/bin/python3', ['-c', PYSOCKS, String(PORT.gateway), 'web.test', String(PORT.origin)]);
    assert.equal(py.stdout.toString().trim(), 'connected', py.stderr);
  });

  test("the bridge in front of a dualsocks gateway says which: page, X-Dualsocks-Error, /api/status", async () => {
    const b = bridges.dualsocks;
    const cases: [string, string, string, string][] = [
      ['nowhere.test', 'Name Not Found', 'ERR_NAME_NOT_FOUND', '0x04'],
      ['gone.test', 'Host Unreachable', 'ERR_HOST_UNREACHABLE', '0x04'],
      ['far.test', 'Network Unreachable', 'ERR_NETWORK_UNREACHABLE', '0x03'],
    ];
    for (const [host, reason, code, rep] of cases) {
      for (const extra of [[], ['-p']]) {
        // a plain request, then the same through a CONNECT tunnel
        const r = await exec('curl', ['-sS', '-i', '--max-time', '30', '-x', `http://127.0.0.1:${b}`, ...extra, `http://${host}:${PORT.origin}/`]);
        const text = r.stdout.toString();
        assert.match(text, new RegExp(`^HTTP/1\\.1 502 ${reason}\\r\\n`), text);
        assert.match(text, new RegExp(`\\r\\nX-Dualsocks-Error: ${code}\\r\\n`, 'i'), text);
        assert.match(text, new RegExp(`\\r\\nX-Dualsocks-Rep: ${rep}\\r\\n`, 'i'), text);
        // curl shows a failed CONNECT's head only
        if (extra.length === 0) assert.match(text, new RegExp(`\\nError code: ${code}\\n`), text);
      }
    }
    const page = await viaBridge(b, `http://web.test:${PORT.origin}/`);
    assert.deepEqual([page.status, page.body], [200, 'hello through the namespace\n']);
    const st = await exec('curl', ['-sS', `http://127.0.0.1:${b}/api/status`]);
    const recent = (JSON.parse(st.stdout.toString()) as { recent: { host: string; result: string }[] }).recent;
    for (const [host, , code] of cases) assert.ok(recent.some((x) => x.host === host && x.result === code), `${host}: ${JSON.stringify(recent)}`);
    // a SOCKS5 client of the bridge still gets REP 0x04 (curl does not offer the method)
    const s5 = await exec('curl', ['-sS', '--max-time', '30', '--socks5-hostname', `127.0.0.1:${b}`, `http://gone.test:${PORT.origin}/`]);
    assert.equal(s5.code, 97, s5.stderr);
    assert.match(s5.stderr, /\(4\)/);
  });

  for (const peer of ['dante', 'microsocks'] as const) {
    test(`${peer} ignores the offer: it chooses 0x00, and a bridge in front of it behaves as before`, async () => {
      const port = PORT[peer];
      const offered = await raw(port, [METHOD.NO_AUTH, METHOD.ERROR_CODES], HOST_UNREACHABLE);
      const plain = await raw(port, [METHOD.NO_AUTH], HOST_UNREACHABLE);
      const reply = offered.reply as { rep: number; host: string };
      // the offer changes nothing (BND may name where the peer tried from)
      assert.deepEqual([offered.method, reply.rep], [plain.method, (plain.reply as { rep: number }).rep], JSON.stringify([offered, plain]));
      assert.equal(offered.method, 0, JSON.stringify(offered));
      assert.doesNotMatch(reply.host, /^ERR_/);
      assert.notEqual(reply.rep, 0);
      const ok = await viaBridge(bridges[peer], `http://127.0.0.1:${PORT.origin}/`);
      assert.deepEqual([ok.status, ok.body], [200, 'hello through the namespace\n']);
      const failed = await viaBridge(bridges[peer], `http://${HOST_UNREACHABLE}:${PORT.origin}/`);
      assert.equal(failed.status, 502);
      assert.equal(failed.headers['x-dualsocks-error'], 'ERR_SOCKS_REPLY');
      assert.equal(failed.headers['x-dualsocks-rep'], `0x${reply.rep.toString(16).padStart(2, '0')}`);
    });
  }
});
