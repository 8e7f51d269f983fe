// `dualsocks pac` writes the PAC a bridge serves for the same rules: the same text, so the same
// answers in a real PAC engine, with --proxy in its SOCKS5 and PROXY lines. Bad flags stop it
// with exit code 2 naming the flag; --out replaces the file in one rename or leaves it alone.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createPacResolver } from 'pac-resolver';
import { QuickJS } from 'quickjs-wasi';
import { CLI, run, startCli, type Running } from '../helpers/process.js';

const dir = mkdtempSync(join(tmpdir(), 'dualsocks-pac-'));
const rulesFile = join(dir, 'rules.json');
writeFileSync(rulesFile, JSON.stringify({ mode: 'listed', rules: ['*.example.com', '2001:db8::/32', '198.51.100.0/24'], bypass: ['<local>', 'direct.example.com'] }));
const PROXY = 'proxy.lan.example:3128';
const URLS = [
  'http://example.com/',
  'https://www.example.com/x',
  'http://direct.example.com/',
  'http://example.org/',
  'http://[2001:db8::1]/',
  'https://[2001:db9::1]:8443/',
  'http://198.51.100.7/',
  'http://203.0.113.9/',
  'http://192.168.1.1/',
  'http://intranet/',
];

const pac = (args: string[]) => run(process.execPath, [CLI, 'pac', ...args]);

async function get(port: number, path: string): Promise<string> {
  const r = await run('curl', ['-sS', '--fail', `http://127.0.0.1:${port}${path}`]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.toString();
}

describe('dualsocks pac', () => {
  let bridge: Running;
  let port: number;
  let qjs: QuickJS;

  before(async () => {
    qjs = await QuickJS.create();
    // the gateway is never asked: only the PAC is fetched
    bridge = await startCli(['bridge', '--listen', '127.0.0.1:0', '--gateway', 'socks5://127.0.0.1:9', '--health-interval', '3600', '--rules', rulesFile, '--pac-proxy', PROXY]);
    port = bridge.listening[0]!.port;
  });
  after(() => bridge.stop());

  test('--out holds the PAC the bridge serves for the same rules; pac-resolver gives the same answers', async () => {
    const out = join(dir, 'proxy.pac');
    const r = await pac(['--rules', rulesFile, '--proxy', PROXY, '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.length, 0, 'with --out nothing on stdout');
    const written = readFileSync(out, 'utf8');
    for (const path of ['/proxy.pac', '/wpad.dat']) assert.equal(written, await get(port, path), path);
    const served = createPacResolver(qjs, await get(port, '/proxy.pac'));
    const file = createPacResolver(qjs, written);
    const answers = new Set<string>();
    for (const url of URLS) {
      const host = new URL(url).hostname.replace(/^\[(.*)\]$/, '$1');
      const want = await served(url, host);
      answers.add(want);
      assert.equal(await file(url, host), want, url);
    }
    // --proxy is what the proxied answers name, as SOCKS5 (names resolved by the proxy) and PROXY
    assert.deepEqual([...answers].sort(), ['DIRECT', `SOCKS5 ${PROXY}; PROXY ${PROXY}`]);
    assert.doesNotMatch(written, /"SOCKS |SOCKS4|dnsResolve\(|isInNet\(/);
  });

  test('without --out the PAC goes to stdout; an IPv6 --proxy is written in brackets', async () => {
    const r = await pac(['--rules', rulesFile, '--proxy', '[2001:db8::53]:1080']);
    assert.equal(r.code, 0, r.stderr);
    const find = createPacResolver(qjs, r.stdout.toString());
    assert.equal(await find('http://www.example.com/', 'www.example.com'), 'SOCKS5 [2001:db8::53]:1080; PROXY [2001:db8::53]:1080');
    assert.equal(await find('http://example.org/', 'example.org'), 'DIRECT');
    // --config takes the same keys
    const cfg = join(dir, 'pac.json');
    writeFileSync(cfg, JSON.stringify({ rules: rulesFile, proxy: PROXY }));
    const c = await pac(['--config', cfg]);
    assert.equal(c.code, 0, c.stderr);
    assert.equal(c.stdout.toString(), await get(port, '/proxy.pac'));
  });

  test('--out replaces the file by a rename and leaves no temporary file; a failed run leaves it as it was', async () => {
    const out = join(dir, 'replace', 'wpad.dat');
    await run('mkdir', ['-p', join(dir, 'replace')]);
    writeFileSync(out, 'old contents\n');
    const before = statSync(out).ino;
    const r = await pac(['--rules', rulesFile, '--proxy', PROXY, '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    assert.notEqual(statSync(out).ino, before, 'a new file renamed over the old one, not rewritten in place');
    const good = readFileSync(out, 'utf8');
    assert.match(good, /function FindProxyForURL/);
    assert.deepEqual(readdirSync(join(dir, 'replace')), ['wpad.dat']);
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify({ mode: 'sometimes' }));
    const f = await pac(['--rules', bad, '--proxy', PROXY, '--out', out]);
    assert.equal(f.code, 2);
    assert.equal(readFileSync(out, 'utf8'), good);
    assert.deepEqual(readdirSync(join(dir, 'replace')), ['wpad.dat']);
  });

  test('bad arguments exit 2 and name the flag', async () => {
    const missing = join(dir, 'no-such-rules.json');
    const cases: [string[], RegExp][] = [
      [['--rules', rulesFile], /--proxy: required/],
      [['--proxy', 'proxy.example'], /--proxy: "proxy\.example" is not HOST:PORT/],
      [['--proxy', 'proxy.example:0'], /--proxy: /],
      [['--proxy', 'bad host!:80'], /--proxy: /],
      [['--proxy', PROXY, '--rules', missing], /--rules: .*no-such-rules\.json.*ENOENT/],
      [['--proxy', PROXY, '--rules', join(dir, 'bad.json')], /--rules: .*bad\.json: mode: /],
      [['--proxy', PROXY, '--out', join(dir, 'no-such-dir', 'x.pac')], /--out: cannot write .*no-such-dir\/x\.pac/],
      [['--proxy', PROXY, '--bogus'], /--bogus: unknown option/],
      [['--proxy'], /--proxy: needs a value/],
    ];
    for (const [args, want] of cases) {
      const r = await pac(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, want, args.join(' '));
      assert.equal(r.stdout.length, 0, args.join(' '));
    }
    assert.equal(existsSync(join(dir, 'no-such-dir')), false);
  });

  test('--help names the options; `dualsocks --help` lists the command', async () => {
    const h = await pac(['--help']);
    assert.equal(h.code, 0);
    for (const flag of ['--proxy HOST:PORT', '--rules FILE', '--out FILE']) assert.ok(h.stdout.toString().includes(flag), flag);
    assert.match((await run(process.execPath, [CLI, '--help'])).stdout.toString(), /dualsocks pac /);
  });
});
