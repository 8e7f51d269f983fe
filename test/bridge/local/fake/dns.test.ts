import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import dnsPacket, { type DecodedPacket, type Packet, type RecordType } from 'dns-packet';
import fc from 'fast-check';
import { FakeDnsResponder, reverseNameToIp, type DnsResult } from '../../../../bridge/local/fake/dns.js';
import { FakeTable } from '../../../../bridge/local/fake/table.js';
import { formatIp } from '../../../../shared/net/address.js';
import { DEFAULT_SETTINGS, parseSettings, requestInfo, type Settings } from '../../../../shared/rules/index.js';

const LISTED: Settings = parseSettings({ ...DEFAULT_SETTINGS, mode: 'listed', rules: [{ type: 'wildcard', pattern: '*.proxied.example' }] });

function setup(settings: Settings = DEFAULT_SETTINGS, table = new FakeTable()): { r: FakeDnsResponder; table: FakeTable } {
  return { r: new FakeDnsResponder({ table, settings: () => settings }), table };
}

const query = (name: string, type: RecordType | string, more: Partial<Packet> = {}): Buffer =>
  dnsPacket.encode({ type: 'query', id: 0x1234, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: type as RecordType, name, class: 'IN' }], ...more });

type Rec = { type: string; ttl: number; data: string };
const rec = (a: unknown): Rec => a as Rec;

function answer(res: DnsResult): DecodedPacket & { rcode: string; opcode: string } {
  assert.equal(res.kind, 'answer', JSON.stringify(res));
  if (res.kind !== 'answer') throw new Error('unreachable');
  return dnsPacket.decode(res.message) as DecodedPacket & { rcode: string; opcode: string };
}

describe('FakeDnsResponder', () => {
  test('A and AAAA for a proxied name get fake addresses with TTL 1, the ID and the question echoed', () => {
    const { r, table } = setup();
    const a = answer(r.handle(query('WWW.Example.com', 'A')));
    assert.equal(a.id, 0x1234);
    assert.equal(a.type, 'response');
    assert.equal(a.rcode, 'NOERROR');
    assert.ok(a.flag_rd && a.flag_ra);
    assert.deepEqual(a.questions, [{ name: 'WWW.Example.com', type: 'A', class: 'IN' }]);
    assert.equal(a.answers!.length, 1);
    assert.deepEqual({ ...a.answers![0]!, flush: undefined }, { name: 'WWW.Example.com', type: 'A', class: 'IN', ttl: 1, data: '198.18.0.1', flush: undefined });
    const a6 = answer(r.handle(query('www.example.com.', 'AAAA')));
    assert.equal((a6.answers![0] as { data: string }).data, '2001:2::1');
    assert.equal(rec(a6.answers![0]).ttl, 1);
    assert.equal(table.nameOf(table.lookupName('www.example.com', 4)!), 'www.example.com');
    // the same name again: the same address
    assert.equal((answer(r.handle(query('www.example.com', 'A'))).answers![0] as { data: string }).data, '198.18.0.1');
  });

  test('every other type for a proxied name: NOERROR with no records (type 65 included)', () => {
    const { r, table } = setup();
    for (const type of ['UNKNOWN_65', 'UNKNOWN_64', 'MX', 'TXT', 'CNAME', 'NS', 'SOA', 'SRV', 'CAA', 'ANY', 'UNKNOWN_4242']) {
      const res = r.handle(query('example.com', type));
      const p = answer(res);
      assert.equal(p.rcode, 'NOERROR', type);
      assert.deepEqual(p.answers, [], type);
      assert.equal(p.questions![0]!.name, 'example.com');
    }
    assert.deepEqual(table.size, { 4: 0, 6: 0 }, 'no address taken for other types');
  });

  test('DIRECT names are forwarded; proxied ones never are', () => {
    const { r } = setup(LISTED);
    assert.deepEqual(r.handle(query('www.direct.example', 'A')), { kind: 'forward', id: 0x1234, name: 'www.direct.example', qtype: 'A' });
    assert.equal(r.handle(query('www.direct.example', 'UNKNOWN_65')).kind, 'forward');
    assert.equal(r.handle(query('a.proxied.example', 'A')).kind, 'answer');
    assert.equal(r.handle(query('a.proxied.example', 'UNKNOWN_65')).kind, 'answer');
    // the default bypass list: plain names and *.localhost stay with the system resolvers
    const all = setup().r;
    assert.equal(all.handle(query('printer', 'A')).kind, 'forward');
    assert.equal(all.handle(query('app.localhost', 'A')).kind, 'forward');
  });

  test('the settings are read per query', () => {
    let settings: Settings = DEFAULT_SETTINGS;
    const r = new FakeDnsResponder({ table: new FakeTable(), settings: () => settings });
    assert.equal(r.handle(query('www.direct.example', 'A')).kind, 'answer');
    settings = LISTED;
    assert.equal(r.handle(query('www.direct.example', 'A')).kind, 'forward');
  });

  test('PTR for a fake address answers its name; an unmapped fake address is NXDOMAIN; others are forwarded', () => {
    const { r, table } = setup();
    const ip = formatIp(table.assign('host.example', 4));
    const ip6 = formatIp(table.assign('host6.example', 6));
    assert.equal(ip, '198.18.0.1');
    const p = answer(r.handle(query('1.0.18.198.in-addr.arpa', 'PTR')));
    assert.deepEqual(p.answers!.map((a) => [rec(a).type, rec(a).ttl, rec(a).data]), [['PTR', 1, 'host.example']]);
    const name6 = `1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.1.0.0.2.ip6.arpa`;
    assert.equal(ip6, '2001:2::1');
    assert.equal((answer(r.handle(query(name6, 'PTR'))).answers![0] as { data: string }).data, 'host6.example');
    assert.equal(answer(r.handle(query('9.9.18.198.in-addr.arpa', 'PTR'))).rcode, 'NXDOMAIN');
    assert.equal(r.handle(query('8.8.8.8.in-addr.arpa', 'PTR')).kind, 'forward');
    assert.equal(r.handle(query('18.198.in-addr.arpa', 'SOA')).kind, 'forward');
  });

  test('reverseNameToIp', () => {
    assert.equal(formatIp(reverseNameToIp('4.3.2.1.IN-ADDR.ARPA.')!), '1.2.3.4');
    assert.equal(reverseNameToIp('3.2.1.in-addr.arpa'), null);
    assert.equal(reverseNameToIp('300.2.1.1.in-addr.arpa'), null);
    assert.equal(reverseNameToIp('1.0.ip6.arpa'), null);
    assert.equal(formatIp(reverseNameToIp(`${'0.'.repeat(31)}1.ip6.arpa`)!), '1000::');
  });

  test('resolver discovery (RFC 9462) is answered empty and the Firefox canary NXDOMAIN, never forwarded', () => {
    const { r } = setup(LISTED);
    assert.deepEqual(answer(r.handle(query('_dns.resolver.arpa', 'UNKNOWN_64'))).answers, []);
    assert.equal(answer(r.handle(query('use-application-dns.net', 'A'))).rcode, 'NXDOMAIN');
  });

  test('the root, IP literals and real reverse names are forwarded', () => {
    const { r } = setup();
    assert.equal(r.handle(query('.', 'NS')).kind, 'forward');
    assert.equal(r.handle(query('192.0.2.1', 'A')).kind, 'forward');
    assert.equal(r.handle(query('1.2.3', 'A')).kind, 'forward', 'URL parsers read it as 1.2.0.3');
    assert.equal(r.handle(query('0x7f.1', 'A')).kind, 'forward');
  });

  test('a proxied name the gateway could not take gets no fake address', () => {
    const { r, table } = setup();
    const p = answer(r.handle(query('bad name!.example', 'A')));
    assert.equal(p.rcode, 'NOERROR');
    assert.deepEqual(p.answers, []);
    assert.deepEqual(table.size, { 4: 0, 6: 0 });
  });

  test('a full range (every address pinned) answers SERVFAIL', () => {
    const table = new FakeTable({ range4: '192.0.2.0/30' });
    table.acquire(table.assign('a', 4));
    table.acquire(table.assign('b', 4));
    const { r } = setup(DEFAULT_SETTINGS, table);
    assert.equal(answer(r.handle(query('c.example', 'A'))).rcode, 'SERVFAIL');
  });

  test('EDNS in the query gets an OPT record in the answer', () => {
    const { r } = setup();
    const q = query('example.com', 'A', { additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 4096 } as never] });
    const p = answer(r.handle(q));
    assert.ok(p.additionals!.some((a) => a.type === 'OPT'));
    assert.ok(!answer(r.handle(query('example.com', 'A'))).additionals!.some((a) => a.type === 'OPT'));
  });

  test('malformed: no header or a response → drop; a readable header → FORMERR/NOTIMP with its ID', () => {
    const { r } = setup();
    assert.equal(r.handle(new Uint8Array(0)).kind, 'drop');
    assert.equal(r.handle(new Uint8Array(11)).kind, 'drop');
    const resp = query('example.com', 'A');
    resp[2]! |= 0x80;
    assert.equal(r.handle(resp).kind, 'drop');
    // header says one question, none follows
    const truncated = Buffer.from([0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    const f = answer(r.handle(truncated));
    assert.equal(f.id, 0xabcd);
    assert.equal(f.rcode, 'FORMERR');
    assert.ok(f.flag_rd);
    // no question at all, and two questions
    assert.equal(answer(r.handle(Buffer.from([0, 7, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]))).rcode, 'FORMERR');
    const two = dnsPacket.encode({ type: 'query', id: 9, questions: [{ type: 'A', name: 'a.example' }, { type: 'A', name: 'b.example' }] });
    assert.equal(answer(r.handle(two)).rcode, 'FORMERR');
    // a compression pointer pointing forward
    const loop = Buffer.from([0, 8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1]);
    assert.equal(answer(r.handle(loop)).rcode, 'FORMERR');
    // opcode STATUS
    const status = query('example.com', 'A');
    status[2] = (status[2]! & 0x87) | (2 << 3);
    const s = answer(r.handle(status));
    assert.equal(s.rcode, 'NOTIMP');
    assert.equal(s.opcode, 'STATUS');
  });

  test('property: any bytes give answer, forward or drop, never a throw; an answer is a response with the same ID', () => {
    const { r } = setup(LISTED, new FakeTable({ range4: '192.0.2.0/29', range6: '2001:db8::/120' }));
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 600 }), (bytes) => {
        const res = r.handle(bytes);
        assert.ok(['answer', 'forward', 'drop'].includes(res.kind));
        if (res.kind === 'answer') {
          const p = dnsPacket.decode(res.message);
          assert.equal(p.type, 'response');
          assert.equal(p.id, (bytes[0]! << 8) | bytes[1]!);
        }
        if (res.kind !== 'drop') assert.ok(bytes.length >= 12 && (bytes[2]! & 0x80) === 0);
      }),
      { numRuns: 5000 },
    );
  });

  test('property: valid queries with mutated bytes never throw', () => {
    const { r } = setup();
    fc.assert(
      fc.property(fc.domain(), fc.constantFrom('A', 'AAAA', 'PTR', 'UNKNOWN_65', 'TXT', 'MX'), fc.nat(), fc.nat(255), (name, type, at, value) => {
        const q = query(name, type);
        q[at % q.length] = value;
        const res = r.handle(q);
        assert.ok(['answer', 'forward', 'drop'].includes(res.kind));
      }),
      { numRuns: 3000 },
    );
  });

  test('property: with every name proxied, no query for a name ever leaves (only root, .arpa and IP literals are forwarded)', () => {
    const settings = parseSettings({ ...DEFAULT_SETTINGS, bypass: [] });
    const { r } = setup(settings, new FakeTable({ range4: '192.0.2.0/28' }));
    fc.assert(
      fc.property(fc.oneof(fc.domain(), fc.string()), fc.constantFrom('A', 'AAAA', 'UNKNOWN_65', 'UNKNOWN_64', 'MX', 'TXT', 'SRV', 'ANY', 'CNAME'), (name, type) => {
        let q: Buffer;
        try {
          q = query(name, type);
        } catch {
          return; // dns-packet cannot encode it (label too long)
        }
        const res = r.handle(q);
        if (res.kind === 'forward') assert.ok(res.name === '.' || res.name === '' || res.name.endsWith('arpa') || requestInfo({ host: res.name }).ip !== null, res.name);
      }),
      { numRuns: 3000 },
    );
  });
});


