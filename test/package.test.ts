// The package as a newcomer and an operator meet it: `npm ci` runs no dependency install script
// the project has not reviewed (npm's allowScripts, so npm prints no install-scripts warning);
// `npm pack` holds only what a running dualsocks needs, and its tarball installed into an empty
// prefix, offline, gives a `dualsocks` that serves; the systemd units pass `systemd-analyze verify`.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { splitHostPort } from '../shared/net/address.js';
import { haveCommand, requireCapability } from './helpers/env.js';
import { startOrigin, type Origin } from './helpers/origin.js';
import { run } from './helpers/process.js';
import { ROOT } from './helpers/sources.js';

type Result = { code: number | null; stdout: Buffer; stderr: string };

/** npm in the repository (npm's own script path: `npm` resolves as the user's shell would). */
function npm(args: string[], env: Record<string, string> = {}, timeoutMs = 300_000): Promise<Result> {
  const vars = Object.entries(env).map(([k, v]) => `${k}='${v}'`);
  return run('sh', ['-c', `cd "$1" && shift && exec env ${vars.join(' ')} npm "$@"`, 'npm', ROOT, ...args], { timeoutMs });
}

describe('npm install scripts', () => {
  test('every dependency install script is covered by allowScripts (npm ci warns about none)', async () => {
    const r = await npm(['install-scripts', 'ls', '--offline']);
    assert.equal(r.code, 0, r.stderr);
    const out = r.stdout.toString() + r.stderr;
    assert.match(out, /No packages with unreviewed install scripts/, out);
    assert.doesNotMatch(out, /not yet covered/, out);
  });
});

/** What the tarball may hold: the built program, the addon's sources and installer, the units. */
const SHIPPED = [/^package\.json$/, /^README\.md$/, /^dist\/(bridge|shared)\/.+\.js$/, /^bridge\/native\/(binding\.gyp|splice_relay\.c|install\.mjs)$/, /^bridge\/systemd\/dualsocks-(gateway|bridge)\.service$/];

describe('npm pack, npm install -g of the tarball, systemd units', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dualsocks-pack-'));
  const home = join(dir, 'home');
  const prefix = join(home, '.local');
  const bin = join(prefix, 'bin', 'dualsocks');
  const pkg = join(prefix, 'lib', 'node_modules', 'dualsocks');
  let files: string[] = [];
  let installOutput = '';
  let origin: Origin;

  before(async () => {
    mkdirSync(home);
    origin = await startOrigin('127.0.0.1', 1024);
    const packed = await npm(['pack', '--json', '--pack-destination', dir]);
    assert.equal(packed.code, 0, packed.stderr);
    // the prepare script's banner comes first on stdout
    const out = packed.stdout.toString();
    files = (JSON.parse(out.slice(out.indexOf('[\n'))) as { files: { path: string }[] }[])[0]!.files.map((f) => f.path);
    const tgz = readdirSync(dir).find((f) => /^dualsocks-.*\.tgz$/.test(f));
    assert.ok(tgz, readdirSync(dir).join(' '));
    // the dependencies' tarballs come from npm's cache (npm ci filled it; their metadata may need
    // the registry, which an install step may reach), the addon's headers from
    // this machine. A tarball's install script is allowed by its file: spec (npm matches it exactly).
    const file = join(dir, tgz);
    const inst = await npm(['install', '-g', '--prefer-offline', '--foreground-scripts', `--allow-scripts=file:${file}`, '--prefix', prefix, file]);
    installOutput = inst.stdout.toString() + inst.stderr;
    assert.equal(inst.code, 0, installOutput);
  });

  after(async () => {
    await origin.close();
    rmSync(dir, { recursive: true, force: true });
    // npm pack built dist/ for shipping (no source maps, no tests): back to the development build
    const b = await run(process.execPath, [join(ROOT, 'bridge/build.mjs')]);
    assert.equal(b.code, 0, b.stderr);
  });

  test('the tarball holds only what a running dualsocks needs: no tests, no TypeScript, no source maps', () => {
    for (const f of files) assert.ok(SHIPPED.some((re) => re.test(f)), `${f} should not be in the package`);
    for (const f of ['dist/bridge/cli.js', 'dist/bridge/native/loader.js', 'dist/shared/socks5/codec.js', 'bridge/native/splice_relay.c', 'bridge/systemd/dualsocks-gateway.service']) assert.ok(files.includes(f), `${f} missing`);
    for (const f of files.filter((p) => p.endsWith('.js'))) assert.doesNotMatch(readFileSync(join(pkg, f), 'utf8'), /sourceMappingURL/, f);
  });

  test('installed offline into an empty prefix: no install-scripts warning, the addon built here or quietly left out', async () => {
    assert.doesNotMatch(installOutput, /install-scripts|node-gyp.*(http|download)/i, installOutput);
    assert.match(installOutput, /dualsocks: (native splice relay built|.*using the JavaScript relay)/, installOutput);
    // with no headers at all: node-gyp is not even started (it would download them), the install goes on
    const none = join(dir, 'no-headers');
    mkdirSync(none);
    const quiet = await run('env', [`npm_config_nodedir=${none}`, process.execPath, join(pkg, 'bridge/native/install.mjs')]);
    assert.equal(quiet.code, 0, quiet.stderr);
    assert.equal(quiet.stdout.toString(), 'dualsocks: no Node headers on this machine (Debian: libnode-dev); using the JavaScript relay\n');
    assert.equal(quiet.stderr, '');
  });

  test('the installed dualsocks: --help lists its commands, a gateway serves a CONNECT and reloads its users on SIGHUP', async () => {
    const help = await run(bin, ['--help']);
    assert.equal(help.code, 0, help.stderr);
    for (const c of ['gateway', 'bridge', 'start', 'passwd', 'policy']) assert.match(help.stdout.toString(), new RegExp(`dualsocks ${c} `));
    const passwd = async (user: string): Promise<string> => (await run(bin, ['passwd', user], { input: 'pw\n' })).stdout.toString();
    const users = join(dir, 'users');
    writeFileSync(users, await passwd('alice'));
    const gw = spawn(bin, ['gateway', '--listen', '127.0.0.1:0', '--users', users, '--allow', '127.0.0.1', '--quiet'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    gw.stderr!.setEncoding('utf8');
    const seen = (re: RegExp): Promise<RegExpExecArray> =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          const m = re.exec(stderr);
          if (m) return resolve(m);
          if (gw.exitCode !== null) return reject(new Error(`gateway exited: ${stderr}`));
          setTimeout(check, 20);
        };
        gw.stderr!.on('data', (c: string) => (stderr += c));
        check();
      });
    try {
      const port = splitHostPort((await seen(/ listening on (\S+)/))[1]!)!.port;
      const get = (user: string): Promise<Result> => run('curl', ['-sS', '--max-time', '20', '--proxy', `socks5h://${user}:pw@127.0.0.1:${port}`, `http://127.0.0.1:${origin.port}/`]);
      const alice = await get('alice');
      assert.equal(alice.stdout.toString(), 'hello from origin', alice.stderr);
      assert.notEqual((await get('bob')).code, 0);
      // what the unit's ExecReload does: the new file, then SIGHUP
      writeFileSync(users, await passwd('bob'));
      gw.kill('SIGHUP');
      await seen(/SIGHUP: users reloaded/);
      const bob = await get('bob');
      assert.equal(bob.stdout.toString(), 'hello from origin', bob.stderr);
    } finally {
      gw.kill('SIGTERM');
      if (gw.exitCode === null) await new Promise((r) => gw.once('exit', r));
    }
  });

  const skipSystemd = requireCapability('systemd-analyze', haveCommand('systemd-analyze', ['--version']), 'apt-get install systemd');

  test('systemd units: verify without a warning, the gateway unit confined (DynamicUser, no capability but CAP_NET_BIND_SERVICE)', { skip: skipSystemd }, async () => {
    const units = join(dir, 'units');
    mkdirSync(units);
    // verify wants ExecStart's program to exist: the one just installed
    const gwUnit = readFileSync(join(ROOT, 'bridge/systemd/dualsocks-gateway.service'), 'utf8');
    for (const line of ['DynamicUser=yes', 'NoNewPrivileges=yes', 'ProtectSystem=strict', 'CapabilityBoundingSet=CAP_NET_BIND_SERVICE', 'AmbientCapabilities=CAP_NET_BIND_SERVICE', 'ExecReload=/bin/kill -HUP $MAINPID']) {
      assert.ok(gwUnit.split('\n').includes(line), line);
    }
    assert.ok(gwUnit.includes('ExecStart=/usr/local/bin/dualsocks gateway '), 'npm install -g puts the command in /usr/local/bin');
    writeFileSync(join(units, 'dualsocks-gateway.service'), gwUnit.replaceAll('/usr/local/bin/dualsocks', bin));
    const v = await run('systemd-analyze', ['verify', join(units, 'dualsocks-gateway.service')]);
    assert.deepEqual([v.code, v.stderr, v.stdout.toString()], [0, '', '']);
    const sec = await run('systemd-analyze', ['security', '--offline=true', join(units, 'dualsocks-gateway.service')]);
    const level = /Overall exposure level for \S+: ([\d.]+)/.exec(sec.stdout.toString());
    assert.ok(level && Number(level[1]) <= 3, sec.stdout.toString().split('\n').slice(-3).join('\n'));
    // the user unit runs ~/.local/bin/dualsocks (npm install -g --prefix ~/.local), as installed above
    copyFileSync(join(ROOT, 'bridge/systemd/dualsocks-bridge.service'), join(units, 'dualsocks-bridge.service'));
    const runtime = join(dir, 'run');
    mkdirSync(runtime);
    chmodSync(runtime, 0o700);
    assert.ok(existsSync(bin));
    const u = await run('env', [`HOME=${home}`, `XDG_RUNTIME_DIR=${runtime}`, 'systemd-analyze', '--user', 'verify', join(units, 'dualsocks-bridge.service')]);
    assert.deepEqual([u.code, u.stderr, u.stdout.toString()], [0, '', '']);
  });
});
