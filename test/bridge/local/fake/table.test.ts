import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { autosave, FakeAddressError, FakeTable, normalizeName, type FakeLease } from '../../../../bridge/local/fake/table.js';
import { ConfigError } from '../../../../shared/errors.js';
import { cidrContains, formatIp, parseCidr, parseIp, type Ip } from '../../../../shared/net/address.js';
import { eventually } from '../../../helpers/settle.js';

const ip = (t: string): Ip => parseIp(t)!;

describe('FakeTable', () => {
  test('one address per name and family, from the default benchmarking ranges', () => {
    const t = new FakeTable();
    const a = t.assign('example.com', 4);
    const b = t.assign('example.org', 4);
    const a6 = t.assign('example.com', 6);
    assert.equal(formatIp(a), '198.18.0.1');
    assert.equal(formatIp(b), '198.18.0.2');
    assert.equal(formatIp(a6), '2001:2::1');
    assert.deepEqual(t.assign('example.com', 4), a, 'stable');
    assert.equal(t.nameOf(a), 'example.com');
    assert.equal(t.nameOf(a6), 'example.com');
    assert.equal(t.nameOf(ip('198.18.0.99')), undefined);
    assert.equal(t.nameOf(ip('192.0.2.1')), undefined);
    assert.deepEqual(t.size, { 4: 2, 6: 1 });
  });

  test('names compare case-insensitively without the trailing dot', () => {
    const t = new FakeTable();
    const a = t.assign('WWW.Example.COM.', 4);
    assert.deepEqual(t.assign('www.example.com', 4), a);
    assert.deepEqual(t.lookupName('www.EXAMPLE.com.', 4), a);
    assert.equal(t.nameOf(a), 'www.example.com');
    assert.equal(normalizeName('A.B.'), 'a.b');
  });

  test('isFake covers the whole ranges, mapped or not', () => {
    const t = new FakeTable();
    assert.ok(t.isFake(ip('198.19.255.255')));
    assert.ok(t.isFake(ip('2001:2:0:ffff::1')));
    assert.ok(!t.isFake(ip('198.20.0.1')));
    assert.ok(!t.isFake(ip('2001:3::1')));
    assert.ok(!t.isFake(ip('::ffff:10.0.0.1')));
  });

  test('acquire: a fake address that maps to nothing is a typed error; other addresses are not fake', () => {
    const t = new FakeTable();
    assert.equal(t.acquire(ip('192.0.2.1')), undefined);
    assert.throws(
      () => t.acquire(ip('198.18.3.4')),
      (e: unknown) => e instanceof FakeAddressError && e.code === 'ERR_FAKE_UNMAPPED' && e.rep === 0x04 && /198\.18\.3\.4.*not \(or no longer\) mapped.*--fake-state/.test(e.message),
    );
  });

  test('the range and limit options are validated', () => {
    assert.throws(() => new FakeTable({ range4: '2001:db8::/64' }), (e: unknown) => e instanceof ConfigError && e.key === 'fakeRange');
    assert.throws(() => new FakeTable({ range6: '10.0.0.0/8' }), (e: unknown) => e instanceof ConfigError && e.key === 'fakeRange6');
    assert.throws(() => new FakeTable({ range4: '10.0.0.1' }), ConfigError);
    assert.throws(() => new FakeTable({ range4: '10.0.0.0/31' }), ConfigError);
    assert.throws(() => new FakeTable({ range4: 'nonsense' }), ConfigError);
    const t = new FakeTable({ range4: '10.1.2.3/24' }); // host bits are ignored
    assert.equal(formatIp(t.assign('a', 4)), '10.1.2.1');
  });

  test('a /30 hands out .1 and .2 (never the network or broadcast address), then evicts the least recently used', () => {
    const t = new FakeTable({ range4: '192.0.2.0/30' });
    const a = t.assign('a', 4);
    const b = t.assign('b', 4);
    assert.deepEqual([formatIp(a), formatIp(b)], ['192.0.2.1', '192.0.2.2']);
    t.assign('a', 4); // a is now more recent than b
    const c = t.assign('c', 4);
    assert.deepEqual(c, b, 'b was the least recently used');
    assert.equal(t.lookupName('b', 4), undefined);
    assert.equal(t.nameOf(b), 'c');
    assert.equal(t.nameOf(a), 'a');
  });

  test('a pinned entry is never evicted; all pinned → ERR_FAKE_RANGE_FULL; release makes it evictable', () => {
    const t = new FakeTable({ range4: '192.0.2.0/30' });
    const la = t.acquire(t.assign('a', 4))!;
    const lb = t.acquire(t.assign('b', 4))!;
    assert.equal(la.name, 'a');
    assert.throws(
      () => t.assign('c', 4),
      (e: unknown) => e instanceof FakeAddressError && e.code === 'ERR_FAKE_RANGE_FULL' && /all 2 addresses of 192\.0\.2\.0\/30 are in use/.test(e.message),
    );
    // a second connection to b, then the first one ends: b stays pinned
    const lb2 = t.acquire(ip('192.0.2.2'))!;
    lb.release();
    lb.release(); // idempotent
    assert.throws(() => t.assign('c', 4), FakeAddressError);
    la.release();
    assert.equal(formatIp(t.assign('c', 4)), '192.0.2.1', 'a, released, was evicted');
    assert.equal(t.nameOf(ip('192.0.2.2')), 'b');
    lb2.release();
    assert.equal(formatIp(t.assign('d', 4)), '192.0.2.1', 'c is older than b, whose release made it the most recent');
  });

  test('releasing a lease after its entry was evicted and the address reused does not touch the new entry', () => {
    const t = new FakeTable({ range4: '192.0.2.0/30' });
    const lease = t.acquire(t.assign('a', 4))!;
    t.assign('b', 4);
    lease.release();
    t.assign('c', 4); // evicts b (a was released later, so a is more recent)
    t.assign('d', 4); // evicts a
    assert.equal(t.nameOf(lease.ip), 'd');
    lease.release();
    const ld = t.acquire(lease.ip)!;
    t.assign('e', 4); // evicts c, never the pinned d
    assert.equal(t.nameOf(lease.ip), 'd');
    ld.release();
  });

  test('churn: 100,000 names through a /24 keep every pinned mapping and evict only idle ones', () => {
    const t = new FakeTable({ range4: '198.51.100.0/24' });
    const range = parseCidr('198.51.100.0/24')!;
    const pinned = new Map<string, { ip: Ip; lease: FakeLease }>();
    let evictedPinned = 0;
    for (let i = 0; i < 100_000; i++) {
      const name = `host-${i}.example`;
      const a = t.assign(name, 4);
      assert.ok(cidrContains(range, a));
      // keep up to 200 connections open, closing the oldest now and then
      if (i % 97 === 0) {
        pinned.set(name, { ip: a, lease: t.acquire(a)! });
        if (pinned.size > 200) {
          const [oldest, v] = pinned.entries().next().value!;
          v.lease.release();
          pinned.delete(oldest);
        }
      }
      if (i % 1000 === 0) {
        for (const [n, v] of pinned) if (t.nameOf(v.ip) !== n || formatIp(t.lookupName(n, 4)!) !== formatIp(v.ip)) evictedPinned++;
      }
    }
    assert.equal(evictedPinned, 0);
    for (const [n, v] of pinned) assert.equal(t.nameOf(v.ip), n);
    assert.equal(t.size[4], 254, 'the range is full, nothing lost or duplicated');
    // the maps are in step: every address maps back to the name that maps to it
    let seen = 0;
    for (let last = 1; last <= 254; last++) {
      const name = t.nameOf(ip(`198.51.100.${last}`));
      assert.ok(name, `198.51.100.${last} mapped`);
      assert.equal(formatIp(t.lookupName(name, 4)!), `198.51.100.${last}`);
      seen++;
    }
    assert.equal(seen, 254);
    assert.equal(t.nameOf(ip('198.51.100.0')), undefined);
    assert.equal(t.nameOf(ip('198.51.100.255')), undefined);
    // the most recent idle names survived, the older ones went
    assert.ok(t.lookupName('host-99999.example', 4));
    assert.equal(t.lookupName('host-1.example', 4), undefined);
  });

  test('every address pinned but one: churn goes through the one idle address', () => {
    const t = new FakeTable({ range4: '198.51.100.0/24' });
    for (let i = 0; i < 253; i++) t.acquire(t.assign(`pinned-${i}`, 4));
    const spare = t.assign('spare', 4);
    for (let i = 0; i < 10_000; i++) assert.deepEqual(t.assign(`churn-${i}`, 4), spare);
    for (let i = 0; i < 253; i++) assert.ok(t.lookupName(`pinned-${i}`, 4));
  });

  test('recent() lists pinned entries, then idle ones newest first', () => {
    const t = new FakeTable();
    t.assign('a', 4);
    t.assign('b', 4);
    t.acquire(t.assign('c', 6));
    t.assign('a', 4);
    assert.deepEqual(
      t.recent(10).map((e) => `${e.name} ${e.address} ${e.refs}`),
      ['a 198.18.0.1 0', 'b 198.18.0.2 0', 'c 2001:2::1 1'],
    );
    assert.equal(t.recent(1).length, 1);
  });
});

describe('FakeTable persistence', () => {
  const dir = (): string => mkdtempSync(join(tmpdir(), 'dualsocks-fake-'));

  test('save then load keeps every mapping, the LRU order and the next address', () => {
    const d = dir();
    try {
      const file = join(d, 'fake.json');
      const t = new FakeTable({ range4: '192.0.2.0/29' });
      t.assign('a', 4);
      t.assign('b', 4);
      t.assign('c', 4);
      t.assign('a', 4); // b is now the least recently used
      const lease = t.acquire(t.assign('v6.example', 6))!;
      t.save(file);
      lease.release();
      assert.deepEqual(readdirSync(d), ['fake.json'], 'no temporary file left');
      assert.equal(JSON.parse(readFileSync(file, 'utf8')).format, 'dualsocks-fake-table');

      const u = new FakeTable({ range4: '192.0.2.0/29' });
      assert.equal(u.load(file), 4);
      for (const [n, f] of [['a', 4], ['b', 4], ['c', 4], ['v6.example', 6]] as const) {
        assert.equal(formatIp(u.lookupName(n, f)!), formatIp(t.lookupName(n, f)!), n);
      }
      assert.equal(u.nameOf(ip('2001:2::1')), 'v6.example');
      assert.equal(formatIp(u.assign('d', 4)), '192.0.2.4', 'a fresh address, not a loaded one');
      u.assign('e', 4);
      u.assign('f', 4);
      assert.equal(formatIp(u.assign('g', 4)), '192.0.2.2', 'full (/29 = 6): b, the least recently used, goes first');
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  test('a missing file is a first start; gaps in a loaded table are handed out again', () => {
    const d = dir();
    try {
      const file = join(d, 'fake.json');
      const t = new FakeTable({ range4: '192.0.2.0/29' });
      assert.equal(t.load(file), 0);
      writeFileSync(file, JSON.stringify({ format: 'dualsocks-fake-table', version: 1, range4: '192.0.2.0/29', range6: '2001:2::/48', entries: [[4, '192.0.2.5', 'x']] }));
      assert.equal(t.load(file), 1);
      const got = new Set<string>();
      for (const n of ['a', 'b', 'c', 'd', 'e']) got.add(formatIp(t.assign(n, 4)));
      assert.deepEqual([...got].sort(), ['192.0.2.1', '192.0.2.2', '192.0.2.3', '192.0.2.4', '192.0.2.6']);
      assert.equal(t.nameOf(ip('192.0.2.5')), 'x');
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  test('a broken, foreign or out-of-range file is an error naming the file', () => {
    const d = dir();
    try {
      const file = join(d, 'state.json');
      const entry = (e: unknown[]): string => JSON.stringify({ format: 'dualsocks-fake-table', version: 1, entries: [e] });
      const cases: [string, RegExp][] = [
        ['{"format":', /not JSON/],
        ['{"hello": 1}', /not a fake-address table/],
        ['[]', /not a fake-address table/],
        ['null', /not a fake-address table/],
        [JSON.stringify({ format: 'dualsocks-fake-table', version: 2, entries: [] }), /unknown version 2/],
        [JSON.stringify({ format: 'dualsocks-fake-table', version: 1 }), /no entries list/],
        [entry([4, '10.0.0.1', 'a']), /10\.0\.0\.1 is outside --fake-range 198\.18\.0\.0\/15/],
        [entry([6, '198.18.0.1', 'a']), /outside --fake-range6/],
        [entry([4, '198.18.0.0', 'a']), /not a usable address/],
        [entry([5, '198.18.0.1', 'a']), /family 5/],
        [entry([4, '198.18.0.1', 'A.']), /bad name/],
        [entry([4, '198.18.0.1']), /not \[family, address, name\]/],
        [JSON.stringify({ format: 'dualsocks-fake-table', version: 1, entries: [[4, '198.18.0.1', 'a'], [4, '198.18.0.2', 'a']] }), /appears twice/],
      ];
      for (const [content, re] of cases) {
        writeFileSync(file, content);
        const t = new FakeTable();
        assert.throws(
          () => t.load(file),
          (e: unknown) => e instanceof ConfigError && e.key === 'fakeState' && e.message.includes(file) && re.test(e.message),
          content,
        );
        assert.deepEqual(t.size, { 4: 0, 6: 0 }, 'nothing half-loaded');
      }
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  test('autosave writes when a name was added, reports a failed save, and flushes on stop', async () => {
    const d = dir();
    try {
      const file = join(d, 'fake.json');
      const t = new FakeTable();
      const errors: unknown[] = [];
      const saver = autosave(t, file, { intervalMs: 20, onError: (e: unknown) => void errors.push(e) });
      t.assign('first.example', 4);
      await eventually(() => readdirSync(d).includes('fake.json'), 'the first save written', { timeoutMs: 5000 });
      assert.equal(new FakeTable().load(file), 1);
      t.assign('second.example', 6);
      saver.stop();
      assert.equal(new FakeTable().load(file), 2);
      assert.equal(errors.length, 0);
      const broken = autosave(t, join(d, 'no-such-dir', 'fake.json'), { intervalMs: 60_000, onError: (e: unknown) => void errors.push(e) });
      t.assign('third.example', 4);
      broken.stop();
      assert.equal(errors.length, 1);
      assert.match(String(errors[0]), /ENOENT/);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  test('save over an existing file replaces it whole', () => {
    const d = dir();
    try {
      const file = join(d, 'fake.json');
      writeFileSync(file, 'old contents that are longer than the new table would be '.repeat(100));
      const t = new FakeTable();
      t.assign('a', 4);
      t.save(file);
      const u = new FakeTable();
      assert.equal(u.load(file), 1);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});
