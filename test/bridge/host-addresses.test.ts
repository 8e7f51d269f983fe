import { test } from 'node:test';
import assert from 'node:assert/strict';
import { networkInterfaces } from 'node:os';
import { parseIp } from '../../shared/net/address.js';
import { hostAddresses, isLocalPeer } from '../../bridge/host-addresses.js';

test('a peer is local when it is loopback or one of this host\'s interface addresses', () => {
  for (const a of ['127.0.0.1', '127.9.8.7', '::1', '::ffff:127.0.0.1']) assert.equal(isLocalPeer(a), true, a);
  const own = Object.values(networkInterfaces()).flatMap((l) => l ?? []).map((i) => i.address.replace(/%.*$/, ''));
  for (const a of own) {
    assert.equal(isLocalPeer(a), true, a);
    assert.ok(hostAddresses().has(parseIp(a)!), a);
  }
  // documentation addresses are on no interface of a test host
  for (const a of ['192.0.2.77', '2001:db8:ffff::77', '::127.0.0.1', '', 'not-an-address', undefined]) assert.equal(isLocalPeer(a), false, String(a));
});
