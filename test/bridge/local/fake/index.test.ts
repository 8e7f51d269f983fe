// The pieces together, as the bridge will use them: a lookup through the listener, the fake
// address leased back to its name, and the table surviving a restart only with --fake-state.
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import dnsPacket from 'dns-packet';
import { FakeDns } from '../../../../bridge/local/fake/index.js';
import { FakeAddressError } from '../../../../bridge/local/fake/table.js';
import { ConfigError } from '../../../../shared/errors.js';
import { CidrSet } from '../../../../shared/net/address.js';
import { DEFAULT_SETTINGS } from '../../../../shared/rules/index.js';

function lookup(port: number, name: string, type: 'A' | 'AAAA', waitMs = 5000): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const s = createSocket('udp4');
    const t = setTimeout(() => {
      s.close();
      reject(new Error('no answer'));
    }, waitMs);
    s.on('message', (m) => {
      clearTimeout(t);
      s.close();
      resolve((dnsPacket.decode(m).answers?.[0] as { data?: string } | undefined)?.data);
    });
    s.send(dnsPacket.encode({ type: 'query', id: 1, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name }] }), port, '127.0.0.1');
  });
}

describe('FakeDns', () => {
  const upstream = [{ host: '127.0.0.1', port: 9 }];
  const listen = [{ host: '127.0.0.1', port: 0 }];

  test('a looked-up name leases back from its fake address; other addresses are not fake', async () => {
    const dns = await FakeDns.start({ dnsListen: listen, dnsUpstream: upstream }, () => DEFAULT_SETTINGS);
    try {
      const a = await lookup(dns.bound[0]!.port, 'App.Example.', 'A');
      const a6 = await lookup(dns.bound[0]!.port, 'app.example', 'AAAA');
      assert.equal(a, '198.18.0.1');
      assert.equal(a6, '2001:2::1');
      const lease = dns.lease('198.18.0.1')!;
      assert.equal(lease.name, 'app.example');
      assert.equal(dns.lease('[2001:2::1]')!.name, 'app.example');
      assert.equal(dns.lease('192.0.2.1'), undefined);
      assert.equal(dns.lease('app.example'), undefined, 'a name is not an address');
      assert.throws(() => dns.lease('198.18.7.7'), (e: unknown) => e instanceof FakeAddressError && e.code === 'ERR_FAKE_UNMAPPED');
      assert.deepEqual(dns.status().recent[0], { name: 'app.example', address: '198.18.0.1', refs: 1 });
      assert.equal(dns.status().answered, 2);
      lease.release();
      assert.match(dns.describe(), /^fake-address DNS on 127\.0\.0\.1:\d+ \(fake 198\.18\.0\.0\/15 and 2001:2::\/48; upstream 127\.0\.0\.1:9\)$/);
    } finally {
      await dns.close();
    }
  });

  test('restart: with --fake-state an address handed out before still leads to its name; without, ERR_FAKE_UNMAPPED', async () => {
    const d = mkdtempSync(join(tmpdir(), 'dualsocks-fakedns-'));
    try {
      const fakeState = join(d, 'fake.json');
      const first = await FakeDns.start({ dnsListen: listen, dnsUpstream: upstream, fakeState }, () => DEFAULT_SETTINGS);
      await lookup(first.bound[0]!.port, 'one.example', 'A');
      const two = await lookup(first.bound[0]!.port, 'two.example', 'A');
      await first.close(); // saves
      const second = await FakeDns.start({ dnsListen: listen, dnsUpstream: upstream, fakeState }, () => DEFAULT_SETTINGS);
      try {
        assert.equal(second.lease(two!)!.name, 'two.example');
        assert.equal(await lookup(second.bound[0]!.port, 'three.example', 'A'), '198.18.0.3', 'new names get new addresses');
        assert.equal(await lookup(second.bound[0]!.port, 'one.example', 'A'), '198.18.0.1');
      } finally {
        await second.close();
      }
      const forgetful = await FakeDns.start({ dnsListen: listen, dnsUpstream: upstream }, () => DEFAULT_SETTINGS);
      try {
        assert.throws(() => forgetful.lease(two!), /not \(or no longer\) mapped/);
      } finally {
        await forgetful.close();
      }
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  test('start errors name the option: a broken state file, a bad range, no upstream', async () => {
    const d = mkdtempSync(join(tmpdir(), 'dualsocks-fakedns-'));
    try {
      const fakeState = join(d, 'fake.json');
      writeFileSync(fakeState, 'garbage');
      await assert.rejects(FakeDns.start({ dnsListen: listen, dnsUpstream: upstream, fakeState }, () => DEFAULT_SETTINGS), (e: unknown) => e instanceof ConfigError && e.key === 'fakeState' && e.message.includes(fakeState));
      await assert.rejects(FakeDns.start({ dnsListen: listen, dnsUpstream: upstream, fakeRange: '2001:db8::/64' }, () => DEFAULT_SETTINGS), (e: unknown) => e instanceof ConfigError && e.key === 'fakeRange');
      const resolvConf = join(d, 'resolv.conf');
      writeFileSync(resolvConf, 'nameserver 127.0.0.1\n');
      await assert.rejects(
        FakeDns.start({ dnsListen: [{ host: '127.0.0.1', port: 53 }], resolvConf }, () => DEFAULT_SETTINGS),
        (e: unknown) => e instanceof ConfigError && e.key === 'dnsUpstream',
      );
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  test('--clients limits who may ask', async () => {
    const dns = await FakeDns.start({ dnsListen: listen, dnsUpstream: upstream, clients: new CidrSet(['127.0.0.1/32']) }, () => DEFAULT_SETTINGS);
    try {
      assert.equal(await lookup(dns.bound[0]!.port, 'c.example', 'A'), '198.18.0.1');
    } finally {
      await dns.close();
    }
    const closed = await FakeDns.start({ dnsListen: listen, dnsUpstream: upstream, clients: new CidrSet(['192.0.2.0/24']) }, () => DEFAULT_SETTINGS);
    try {
      await assert.rejects(lookup(closed.bound[0]!.port, 'c.example', 'A', 500), /no answer/);
      assert.equal(closed.status().queries, 0);
    } finally {
      await closed.close();
    }
  });
});
