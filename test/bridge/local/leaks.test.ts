// The bridge's mixed port and clients that leave before their handshake is complete (issue 10,
// item 7; found by test/fuzz): a FIN before the first byte, or in the middle of a SOCKS5 or
// SOCKS4 handshake, left the connection in CLOSE-WAIT until the 30 s timeout (2,480 such
// descriptors after 70,000 fuzz inputs).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startCli, type Running } from '../../helpers/process.js';
import { openSockets } from '../../helpers/settle.js';
import { leaveAndSeeClosed } from '../../helpers/socks5.js';

/** Sends `bytes` and FIN; true when the bridge closes its side within `limitMs`. */
const sendAndLeave = (port: number, bytes: Uint8Array, limitMs: number): Promise<boolean> => leaveAndSeeClosed(port, (s) => s.end(bytes), limitMs);

describe('bridge: a client gone mid-handshake is closed at once', () => {
  let gw: Running;
  let bridge: Running;
  before(async () => {
    gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--quiet']);
    bridge = await startCli(['bridge', '--listen', '127.0.0.1:0', '--gateway', `socks5://127.0.0.1:${gw.listening[0]!.port}`, '--quiet']);
  });
  after(async () => {
    await bridge.stop();
    await gw.stop();
  });

  const cases: [string, number[]][] = [
    ['nothing sent', []],
    ['SOCKS5 greeting cut short', [5, 2, 0]],
    ['SOCKS5 request cut short', [5, 1, 0, 5, 1, 0, 3, 8, 0x77]],
    ['SOCKS4 request cut short', [4, 1, 0, 80, 127, 0]],
    ['SOCKS4a name without its NUL', [4, 1, 0, 80, 0, 0, 0, 1, 0, 0x77, 0x65]],
  ];
  for (const [name, bytes] of cases) {
    test(`${name}, then FIN: closed well before the 30 s timeout, no descriptor left`, async () => {
      const pid = bridge.proc.pid!;
      const baseline = openSockets(pid);
      const closed = await Promise.all(Array.from({ length: 20 }, () => sendAndLeave(bridge.listening[0]!.port, Uint8Array.from(bytes), 10000)));
      assert.deepEqual(closed, Array(20).fill(true), 'the bridge closes every such client (before: CLOSE-WAIT for 30 s)');
      assert.ok(openSockets(pid) <= baseline + 1, `sockets ${openSockets(pid)}, baseline ${baseline}`);
      assert.equal(bridge.proc.exitCode, null);
    });
  }
});
