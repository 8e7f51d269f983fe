import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UdpSourceFilter, udpIpKey } from '../../../shared/socks5/udp-source.js';

test('udpIpKey: scope dropped, v4-mapped and long forms made canonical', () => {
  assert.equal(udpIpKey('fe80::1%eth0'), 'fe80::1');
  assert.equal(udpIpKey('::ffff:192.0.2.1'), '192.0.2.1');
  assert.equal(udpIpKey('2001:db8:0:0:0:0:0:1'), '2001:db8::1');
});

test('UdpSourceFilter: the announced port, or the first one fixed', () => {
  const announced = new UdpSourceFilter('192.0.2.1', 5000);
  assert.equal(announced.matches('192.0.2.1', 5000), true);
  assert.equal(announced.matches('192.0.2.1', 5001), false);
  assert.equal(announced.matches('192.0.2.2', 5000), false);
  const open = new UdpSourceFilter('::ffff:192.0.2.1', 0);
  assert.equal(open.port, undefined);
  assert.equal(open.matches('192.0.2.1', 7), true);
  open.fix(7);
  open.fix(8);
  assert.equal(open.port, 7);
  assert.equal(open.matches('192.0.2.1', 8), false);
});
