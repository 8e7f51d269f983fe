// The transparent port's guards, without nftables: where the original destination cannot be
// read (no addon) `--transparent` is refused at start naming the flag; beyond loopback it needs
// --clients; and a connection made straight to it (not redirected, so its destination is the
// port itself) is reset and logged, never looped into the bridge. The redirected path itself is
// test/topology/transparent.test.ts.
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, symlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { CLI, run, startCli } from '../../helpers/process.js';

const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));

test('--transparent without the native addon: refused at start, exit 2, naming the flag', async () => {
  // the same build without bridge/native/build next to it: the addon is "not built"
  const dir = mkdtempSync(join(tmpdir(), 'dualsocks-noaddon-'));
  cpSync(join(ROOT, 'dist', 'bridge'), join(dir, 'dist', 'bridge'), { recursive: true });
  cpSync(join(ROOT, 'dist', 'shared'), join(dir, 'dist', 'shared'), { recursive: true });
  cpSync(join(ROOT, 'package.json'), join(dir, 'package.json'));
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  const r = await run(process.execPath, [join(dir, 'dist', 'bridge', 'cli.js'), 'bridge', '--gateway', 'socks5://127.0.0.1:1', '--listen', '127.0.0.1:0', '--transparent', '127.0.0.1:0']);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /--transparent: cannot read the original destination .*addon not built/);
});

test('--help of bridge and start lists --transparent; the command list names transparent nft', async () => {
  for (const cmd of ['bridge', 'start']) {
    const r = await run(process.execPath, [CLI, cmd, '--help']);
    assert.match(r.stdout.toString(), /--transparent HOST:PORT/, cmd);
  }
  assert.match((await run(process.execPath, [CLI, '--help'])).stdout.toString(), /dualsocks transparent nft/);
});

test('--transparent beyond loopback without --clients: refused, exit 2', async () => {
  const r = await run(process.execPath, [CLI, 'bridge', '--gateway', 'socks5://127.0.0.1:1', '--transparent', '0.0.0.0:1082']);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /--transparent: 0\.0\.0\.0 is not loopback: give --clients/);
});

test('a connection straight to the transparent port (not redirected) is reset and logged, not looped', async () => {
  const b = await startCli(['bridge', '--gateway', 'socks5://127.0.0.1:1', '--listen', '127.0.0.1:0', '--transparent', '127.0.0.1:0']);
  try {
    const line = await b.waitStderr(/transparent: 127\.0\.0\.1:\d+/);
    const port = Number(/transparent: 127\.0\.0\.1:(\d+)/.exec(line)![1]);
    const s = connect({ host: '127.0.0.1', port });
    s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    const err = await new Promise<NodeJS.ErrnoException | null>((resolve) => {
      s.once('error', resolve);
      s.once('close', () => resolve(null));
    });
    assert.equal(err?.code, 'ECONNRESET');
    const rec = await b.waitRecord((x) => x.inbound === 'transparent');
    // with conntrack the destination is the port itself; without, there is none to read
    assert.ok(rec.result === 'ERR_POLICY_DESTINATION' || rec.result === 'ERR_CONNECT_FAILED', JSON.stringify(rec));
    assert.equal(rec.gateway, undefined);
  } finally {
    await b.stop();
  }
});
