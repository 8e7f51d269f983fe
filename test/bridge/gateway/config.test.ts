// Which gateways start without --no-auth: only "no users and no client restriction" on a
// non-loopback address is an open proxy. A gateway that admits its clients by --clients alone
// (browsers given a PAC, which cannot send a SOCKS5 password) starts and serves them.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { test } from 'node:test';
import { ConfigError } from '../../../shared/errors.js';
import { encodeGreeting } from '../../../shared/socks5/codec.js';
import { METHOD } from '../../../shared/socks5/constants.js';
import { gatewayConfig } from '../../../bridge/gateway/config.js';
import { readAll } from '../../helpers/origin.js';
import { CLI, run, startCli } from '../../helpers/process.js';

test('gatewayConfig: a non-loopback listen needs --users, --clients or --no-auth', () => {
  const refused = (argv: string[], re: RegExp): void => {
    assert.throws(() => gatewayConfig(argv), (e: unknown) => e instanceof ConfigError && re.test(e.message), argv.join(' '));
  };
  refused(['--listen', '0.0.0.0:1081'], /listen: 0\.0\.0\.0 is not loopback: give --users FILE, --clients CIDR, or --no-auth/);
  refused(['--listen', '[::]:1081'], /listen: :: is not loopback/);
  // a /0 admits every source of its family: no restriction at all
  refused(['--listen', '0.0.0.0:1081', '--clients', '0.0.0.0/0'], /clients: "0\.0\.0\.0\/0" admits every source/);
  refused(['--listen', '[::]:1081', '--clients', '2001:db8::/32', '--clients', '::/0'], /clients: "::\/0" admits every source/);
  const byClients = gatewayConfig(['--listen', '0.0.0.0:1081', '--clients', '192.0.2.0/24', '--clients', '2001:db8::/32']);
  assert.equal(byClients.requireAuth, false);
  assert.equal(byClients.clients?.size, 2);
  assert.equal(gatewayConfig(['--listen', '0.0.0.0:1081', '--no-auth']).requireAuth, false);
  assert.equal(gatewayConfig(['--listen', '0.0.0.0:1081', '--no-auth', '--clients', '0.0.0.0/0']).requireAuth, false, '--no-auth says open on purpose');
  // loopback stays as it was: no --users needed
  assert.equal(gatewayConfig(['--listen', '127.0.0.1:1081']).requireAuth, false);
});

test('dualsocks gateway on 0.0.0.0 with --clients and no --users starts and serves its clients without a password', async () => {
  const gw = await startCli(['gateway', '--listen', '0.0.0.0:0', '--clients', '127.0.0.0/8']);
  try {
    const s = connect({ host: '127.0.0.1', port: gw.listening[0]!.port });
    s.end(encodeGreeting({ methods: [METHOD.NO_AUTH] }));
    assert.deepEqual([...(await readAll(s))], [5, METHOD.NO_AUTH]);
  } finally {
    await gw.stop();
  }
});

test('dualsocks gateway on 0.0.0.0 without --users, --clients or --no-auth still refuses to start', async () => {
  for (const extra of [[], ['--clients', '0.0.0.0/0']]) {
    const r = await run(process.execPath, [CLI, 'gateway', '--listen', '0.0.0.0:0', ...extra], { timeoutMs: 20000 });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--no-auth to run an open proxy on purpose/);
  }
});
