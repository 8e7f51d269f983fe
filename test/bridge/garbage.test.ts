// Hostile input on the public ports: random bytes, truncated handshakes and abrupt closes on the
// gateway and on the bridge, while a real transfer runs beside them. No process may crash and
// the good client's data must arrive intact.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { encodeGreeting, encodeRequest } from '../../shared/socks5/codec.js';
import { CMD, METHOD } from '../../shared/socks5/constants.js';
import { prng } from '../helpers/bytes.js';
import { sha256, startOrigin } from '../helpers/origin.js';
import { run, startCli } from '../helpers/process.js';

const dir = mkdtempSync(join(tmpdir(), 'dualsocks-garbage-'));
writeFileSync(join(dir, 'hosts'), '127.0.0.1 web.test\n');

/** Sends `payload` and closes, swallowing whatever the server does about it. */
function hit(port: number, payload: Uint8Array, abrupt: boolean): Promise<void> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.on('error', () => resolve());
    s.on('close', () => resolve());
    s.on('data', () => {});
    s.once('connect', () => {
      s.write(payload);
      if (abrupt) s.destroy();
      else s.end();
    });
    s.setTimeout(1000, () => s.destroy());
  });
}

function hostileInputs(seed: number, count: number): Uint8Array[] {
  const rnd = prng(seed);
  const valid = [
    encodeGreeting({ methods: [METHOD.NO_AUTH] }),
    Uint8Array.from([...encodeGreeting({ methods: [METHOD.NO_AUTH] }), ...encodeRequest({ cmd: CMD.CONNECT, host: 'web.test', port: 1 })]),
    new TextEncoder().encode('GET http://web.test/ HTTP/1.1\r\nHost: web.test\r\n\r\n'),
    new TextEncoder().encode('CONNECT web.test:443 HTTP/1.1\r\n\r\n'),
    Uint8Array.from([4, 1, 0, 80, 0, 0, 0, 1, 0, 119, 101, 98, 0]),
  ];
  const out: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const len = Math.floor(rnd() * 600);
    const b = new Uint8Array(len);
    for (let j = 0; j < len; j++) b[j] = Math.floor(rnd() * 256);
    const base = valid[i % valid.length]!;
    // a third pure noise, a third truncated valid messages, a third valid prefixes plus noise
    if (i % 3 === 0) out.push(b);
    else if (i % 3 === 1) out.push(base.subarray(0, Math.floor(rnd() * base.length)));
    else out.push(Uint8Array.from([...base.subarray(0, Math.floor(rnd() * base.length)), ...b]));
  }
  return out;
}

test('garbage on the gateway and the bridge ports: no crash, and a concurrent transfer stays byte-exact', async () => {
  const origin = await startOrigin('127.0.0.1', 8 * 1024 * 1024);
  const gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--hosts', join(dir, 'hosts'), '--dns', 'none', '--allow', '127.0.0.1', '--handshake-timeout', '2']);
  const bridge = await startCli(['bridge', '--listen', '127.0.0.1:0', '--gateway', `socks5://127.0.0.1:${gw.listening[0]!.port}`]);
  try {
    const good = run('curl', ['-sS', '--max-time', '60', '--limit-rate', '1M', '-x', `http://127.0.0.1:${bridge.listening[0]!.port}`, `http://web.test:${origin.port}/blob.bin`]);
    const inputs = hostileInputs(0xbad, 600);
    for (let i = 0; i < inputs.length; i += 50) {
      await Promise.all(inputs.slice(i, i + 50).flatMap((b, k) => [hit(gw.listening[0]!.port, b, k % 2 === 0), hit(bridge.listening[0]!.port, b, k % 2 === 1)]));
    }
    const r = await good;
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sha256(r.stdout), origin.blobSha256);
    assert.equal(gw.proc.exitCode, null, 'gateway still running');
    assert.equal(bridge.proc.exitCode, null, 'bridge still running');
    // and both still serve new clients
    const after = await run('curl', ['-sS', '--socks5-hostname', `127.0.0.1:${bridge.listening[0]!.port}`, `http://web.test:${origin.port}/`]);
    assert.equal(after.stdout.toString(), 'hello from origin');
    assert.doesNotMatch(gw.stderr.join('\n') + bridge.stderr.join('\n'), /TypeError|RangeError|at .*\.js:\d+/);
  } finally {
    await Promise.all([bridge.stop(), gw.stop(), origin.close()]);
  }
});
