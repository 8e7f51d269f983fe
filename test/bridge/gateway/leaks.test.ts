// Descriptors left behind by clients that leave at an awkward moment (issue 10, item 7; found by
// test/fuzz): a UDP ASSOCIATE or BIND whose FIN arrives while the gateway checks the credentials
// was emitted before the handler listened for it, so the association or the BIND listener stayed
// until the idle (3600 s) or bind (60 s) timeout, the client in CLOSE-WAIT.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { hashPassword } from '../../../bridge/gateway/users.js';
import { encodeRequest } from '../../../shared/socks5/codec.js';
import { CMD } from '../../../shared/socks5/constants.js';
import { startCli, type Running } from '../../helpers/process.js';
import { eventually, openSockets } from '../../helpers/settle.js';
import { leaveAndSeeClosed, socks5Credentials } from '../../helpers/socks5.js';

/**
 * Greeting and credentials, then (while scrypt runs) the request and FIN. Resolves
 * true when the gateway closes the connection within `limitMs`, false when it still holds it.
 */
function requestThenLeave(port: number, cmd: number, limitMs: number): Promise<boolean> {
  return leaveAndSeeClosed(
    port,
    (s) => {
      // the method selection comes at once, the credentials' answer only after scrypt: the request
      // and FIN sent on the first answer arrive while the gateway checks the password
      s.once('data', () => s.end(encodeRequest({ cmd, host: '0.0.0.0', port: 0 })));
      s.write(socks5Credentials('u', 'pw'));
    },
    limitMs,
  );
}

describe('gateway: a client whose FIN comes with its request during the credential check', () => {
  let gw: Running;
  before(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dualsocks-leaks-'));
    writeFileSync(join(dir, 'users'), `u:${await hashPassword('pw')}\n`);
    // the defaults' long timeouts: a connection kept is a connection leaked for the test
    gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--users', join(dir, 'users'), '--bind-timeout', '60', '--idle-timeout', '3600', '--quiet']);
  });
  after(() => gw.stop());

  for (const [name, cmd] of [['UDP ASSOCIATE', CMD.UDP_ASSOCIATE], ['BIND', CMD.BIND]] as const) {
    test(`${name}: closed at once, descriptors back to the baseline`, async () => {
      const pid = gw.proc.pid!;
      const baseline = openSockets(pid);
      const closed = await Promise.all(Array.from({ length: 10 }, () => requestThenLeave(gw.listening[0]!.port, cmd, 15000)));
      assert.deepEqual(closed, Array(10).fill(true), 'the gateway closes every such client (before: held until the bind/idle timeout)');
      await eventually(() => openSockets(pid) <= baseline, 'sockets back to the baseline', { timeoutMs: 5000, describe: () => `sockets ${openSockets(pid)}, baseline ${baseline}` });
      assert.equal(gw.proc.exitCode, null);
    });
  }
});
