// The command line as an operator meets it: `dualsocks start --clients` limits who uses the
// bridge (its in-process gateway serves the bridge and nobody else), and a SIGHUP sent the
// moment a server prints its first line reloads instead of killing it.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { splitHostPort } from '../../shared/net/address.js';
import { encodeGreeting } from '../../shared/socks5/codec.js';
import { METHOD } from '../../shared/socks5/constants.js';
import { readAll, startOrigin, type Origin } from '../helpers/origin.js';
import { CLI, run, startCli, type Running } from '../helpers/process.js';
import { ROOT } from '../helpers/sources.js';

const dir = mkdtempSync(join(tmpdir(), 'dualsocks-cli-'));
writeFileSync(join(dir, 'hosts'), '127.0.0.1 web.test\n');

/** An HTTP proxy request from `localAddress`; resolves with the whole answer. */
async function proxyGet(port: number, localAddress: string, url: string): Promise<string> {
  const s = connect({ host: '127.0.0.1', port, localAddress });
  s.write(`GET ${url} HTTP/1.1\r\nHost: ${new URL(url).host}\r\nConnection: close\r\n\r\n`);
  // a refused client may be reset: what arrived before is the answer
  const got: Buffer[] = [];
  s.on('data', (d: Buffer) => got.push(d));
  s.on('error', () => {});
  await new Promise((r) => s.once('close', r));
  return Buffer.concat(got).toString();
}

/** The first bytes a socket receives (or '' when it closes without any). */
function firstBytes(s: Socket): Promise<Buffer> {
  return new Promise((resolve) => {
    s.once('data', (d: Buffer) => resolve(d));
    s.once('close', () => resolve(Buffer.alloc(0)));
    s.on('error', () => {});
  });
}

describe('dualsocks start --clients', () => {
  let origin: Origin;
  let start: Running;
  let port: number;

  before(async () => {
    origin = await startOrigin('127.0.0.1');
    start = await startCli(['start', '--listen', '127.0.0.1:0', '--clients', '127.0.0.2/32', '--hosts', join(dir, 'hosts'), '--dns', 'none', '--allow', '127.0.0.1']);
    port = start.listening[0]!.port;
  });
  after(async () => {
    await start.stop();
    await origin.close();
  });

  test('a client from 127.0.0.2 is served through the in-process gateway; one from 127.0.0.1 is refused', async () => {
    const ok = await proxyGet(port, '127.0.0.2', `http://web.test:${origin.port}/`);
    assert.match(ok, /^HTTP\/1\.1 200 /, ok);
    assert.match(ok, /\r\nhello from origin\r\n/);
    // the gateway part resolved the name, so the request did go through it
    const rec = await start.waitRecord((r) => r.host === 'web.test' && r.inbound === undefined);
    assert.equal(rec.result, 'ok');

    const refused = await proxyGet(port, '127.0.0.1', `http://web.test:${origin.port}/`);
    assert.doesNotMatch(refused, /hello from origin/);
    assert.doesNotMatch(refused, /^HTTP\/1\.1 200 /);
  });

  test('the in-process gateway serves only the bridge: another local process gets no method', async () => {
    const line = await start.waitStderr(/in process on /);
    const hp = splitHostPort(/in process on (\S+)/.exec(line)![1]!)!;
    assert.equal(hp.host, '127.0.0.1');
    for (const methods of [[METHOD.NO_AUTH], [METHOD.NO_AUTH, METHOD.USERPASS]]) {
      const s = connect({ host: hp.host, port: hp.port });
      s.write(encodeGreeting({ methods }));
      const answer = await firstBytes(s);
      s.destroy();
      // 0x00 would be an open proxy on loopback around --clients; 0x02 asks for a password
      // only the bridge has
      assert.notDeepEqual([...answer], [0x05, 0x00], `methods ${methods.join(',')}`);
    }
  });
});

/**
 * Starts a server and sends SIGHUP the moment its first line appears (stderr carries the
 * start-up lines), then waits for it to listen. Returns the process and what it printed.
 */
async function hupAtFirstLine(args: string[], listeners: number): Promise<{ proc: ReturnType<typeof spawn>; stderr: () => string; listening: { host: string; port: number }[] }> {
  const proc = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let text = '';
  let hupped = false;
  const listening: { host: string; port: number }[] = [];
  await new Promise<void>((resolve, reject) => {
    proc.stderr!.setEncoding('utf8');
    proc.stderr!.on('data', (chunk: string) => {
      if (!hupped) {
        hupped = true;
        proc.kill('SIGHUP');
      }
      text += chunk;
      listening.splice(0, listening.length, ...[...text.matchAll(/ listening on (\S+)/g)].map((m) => splitHostPort(m[1]!)!));
      if (listening.length >= listeners) resolve();
    });
    proc.once('exit', (code, signal) => reject(new Error(`dualsocks ${args[0]} ended (${code ?? signal}) after SIGHUP; stderr:\n${text}`)));
  });
  return { proc, stderr: () => text, listening };
}

async function stopProc(proc: ReturnType<typeof spawn>): Promise<{ code: number | null; signal: string | null }> {
  if (proc.exitCode !== null || proc.signalCode !== null) return { code: proc.exitCode, signal: proc.signalCode };
  const exited = new Promise<{ code: number | null; signal: string | null }>((r) => proc.once('exit', (code, signal) => r({ code, signal })));
  proc.kill('SIGTERM');
  return exited;
}

/** A SOCKS5 greeting answered with "no authentication": a gateway that serves. */
async function gatewayServes(port: number): Promise<void> {
  const s = connect({ host: '127.0.0.1', port });
  s.write(encodeGreeting({ methods: [METHOD.NO_AUTH] }));
  const answer = await firstBytes(s);
  s.destroy();
  assert.deepEqual([...answer], [0x05, 0x00]);
}

async function bridgeServes(port: number): Promise<void> {
  const s = connect({ host: '127.0.0.1', port });
  s.write(`GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`);
  assert.match((await readAll(s)).toString(), /^HTTP\/1\.1 200 /);
}

describe('SIGHUP at start-up', () => {
  const ROUNDS = 10;
  const cases: { name: string; args: string[]; listeners: number; saysHup: boolean; serves: (port: number) => Promise<void> }[] = [
    { name: 'gateway', args: ['gateway', '--listen', '127.0.0.1:0', '--quiet'], listeners: 1, saysHup: true, serves: gatewayServes },
    { name: 'bridge', args: ['bridge', '--listen', '127.0.0.1:0', '--gateway', 'socks5://127.0.0.1:1', '--quiet'], listeners: 1, saysHup: true, serves: bridgeServes },
    // the workers share one port, each prints its own line with it; a worker not listening yet
    // when the SIGHUP comes is not sent it (it reads the files as it starts)
    { name: 'gateway --workers 2', args: ['gateway', '--listen', '127.0.0.1:0', '--workers', '2', '--quiet'], listeners: 2, saysHup: false, serves: gatewayServes },
  ];
  for (const c of cases) {
    test(`dualsocks ${c.name}: reloads and keeps serving, ${ROUNDS} times out of ${ROUNDS}`, async (t) => {
      for (let i = 0; i < ROUNDS; i++) {
        const { proc, stderr, listening } = await hupAtFirstLine(c.args, c.listeners);
        // a failed assertion must not leave the server running (the runner would wait for it)
        const reap = (): void => void (proc.exitCode === null && proc.signalCode === null && proc.kill('SIGKILL'));
        t.after(reap);
        await c.serves(listening[0]!.port);
        if (c.saysHup) {
          // the handler ran (its line may come a little after the listening ones)
          await new Promise<void>((resolve, reject) => {
            const deadline = setTimeout(() => reject(new Error(`no SIGHUP line; stderr:\n${stderr()}`)), 10000);
            const check = (): void => {
              if (/SIGHUP: /.test(stderr())) {
                clearTimeout(deadline);
                resolve();
              } else setTimeout(check, 20);
            };
            check();
          });
        }
        assert.equal(proc.signalCode, null, `round ${i}: ${stderr()}`);
        const exit = await stopProc(proc);
        // ended by SIGTERM as asked, and no worker died of the SIGHUP on the way
        assert.deepEqual(exit, { code: 0, signal: null }, `round ${i}: ${stderr()}`);
        assert.doesNotMatch(stderr(), /exited \(/, `round ${i}`);
      }
    });
  }

  test('dualsocks start keeps the documented meaning: SIGHUP ends it (its terminal closed)', async () => {
    const proc = spawn(process.execPath, [CLI, 'start', '--listen', '127.0.0.1:0', '--quiet'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let text = '';
    proc.stderr!.setEncoding('utf8');
    const listening = new Promise<void>((resolve) => proc.stderr!.on('data', (c: string) => ((text += c), / listening on /.test(text) && resolve())));
    const exited = new Promise<string | null>((resolve) => proc.once('exit', (_code, signal) => resolve(signal)));
    await listening;
    proc.kill('SIGHUP');
    assert.equal(await exited, 'SIGHUP');
  });
});

describe('dualsocks --help', () => {
  test('lists every command main() dispatches, from the command table or a case of its own', async () => {
    const src = readFileSync(join(ROOT, 'bridge/cli.ts'), 'utf8');
    const table = src.slice(src.indexOf('const COMMANDS'), src.indexOf('\n};\n', src.indexOf('const COMMANDS')));
    const names = new Set([...table.matchAll(/^ {2}([a-z][\w-]*): \{/gm)].map((m) => m[1]!));
    const main = src.slice(src.indexOf('async function main('), src.indexOf('\nmain(process.argv'));
    for (const m of main.matchAll(/case '([a-z][\w-]*)':/g)) if (m[1] !== 'help') names.add(m[1]!);
    // the ones the issue names, so a broken extraction cannot pass with an empty set
    for (const n of ['gateway', 'bridge', 'start', 'passwd', 'policy']) assert.ok(names.has(n), `${n} not found in bridge/cli.ts`);
    const help = await run(process.execPath, [CLI, '--help']);
    assert.equal(help.code, 0);
    const text = help.stdout.toString();
    for (const n of names) assert.match(text, new RegExp(`^ {2}dualsocks ${n}\\b`, 'm'), `${n} missing from --help:\n${text}`);
    // and each one's own --help answers (the listing is not stale)
    for (const n of names) {
      if (n === 'passwd') continue; // reads a password unless given exactly one argument
      const own = await run(process.execPath, [CLI, n, '--help']);
      assert.equal(own.code, 0, `${n} --help: ${own.stderr}`);
      assert.match(own.stdout.toString(), new RegExp(`dualsocks ${n}`), n);
    }
  });
});
