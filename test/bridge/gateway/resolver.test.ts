// The gateway's resolver and its cache, against a small DNS server in this process (answers from a
// table, every query counted): TTLs kept (capped by --dns-cache), TTL 0 and failures never kept,
// concurrent lookups of one name sharing one query, the hosts file before DNS. The real
// resolvers (dnsmasq in namespaces) are in test/topology/gateway.test.ts.
import assert from 'node:assert/strict';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { after, before, describe, test } from 'node:test';
import { NameResolver } from '../../../bridge/gateway/resolver.js';
import { formatIp } from '../../../shared/net/address.js';

interface Zone {
  [name: string]: { a?: string[]; aaaa?: string[]; ttl: number };
}

const TYPE_A = 1;
const TYPE_AAAA = 28;

/** Answers A and AAAA from `zone`, NXDOMAIN for other names; counts queries by "name type". */
async function dnsServer(zone: Zone): Promise<{ port: number; queries: Map<string, number>; close(): void }> {
  const queries = new Map<string, number>();
  const sock: UdpSocket = createSocket('udp4');
  sock.on('message', (q, from) => {
    const labels: string[] = [];
    let i = 12;
    while (q[i] !== 0) {
      labels.push(q.subarray(i + 1, i + 1 + q[i]!).toString('ascii'));
      i += q[i]! + 1;
    }
    const qtype = q.readUInt16BE(i + 1);
    const questionEnd = i + 5;
    const name = labels.join('.').toLowerCase();
    const key = `${name} ${qtype === TYPE_A ? 'A' : qtype === TYPE_AAAA ? 'AAAA' : qtype}`;
    queries.set(key, (queries.get(key) ?? 0) + 1);
    const entry = zone[name];
    const ips = entry ? (qtype === TYPE_A ? entry.a : qtype === TYPE_AAAA ? entry.aaaa : undefined) ?? [] : [];
    const head = Buffer.alloc(12);
    head.writeUInt16BE(q.readUInt16BE(0), 0);
    head.writeUInt16BE(0x8180 | (entry ? 0 : 3), 2); // response, RD, RA; NXDOMAIN for unknown names
    head.writeUInt16BE(1, 4);
    head.writeUInt16BE(ips.length, 6);
    const answers = ips.map((ip) => {
      const rdata = qtype === TYPE_A ? Buffer.from(ip.split('.').map(Number)) : ipv6Bytes(ip);
      const rr = Buffer.alloc(12);
      rr.writeUInt16BE(0xc00c, 0); // the question's name
      rr.writeUInt16BE(qtype, 2);
      rr.writeUInt16BE(1, 4);
      rr.writeUInt32BE(entry!.ttl, 6);
      rr.writeUInt16BE(rdata.length, 10);
      return Buffer.concat([rr, rdata]);
    });
    sock.send(Buffer.concat([head, q.subarray(12, questionEnd), ...answers]), from.port, from.address);
  });
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  return { port: sock.address().port, queries, close: () => sock.close() };
}

function ipv6Bytes(text: string): Buffer {
  const [head, tail] = text.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), i * 2));
  return b;
}

describe('gateway resolver cache', () => {
  let dns: Awaited<ReturnType<typeof dnsServer>>;
  const zone: Zone = {
    'kept.test': { a: ['198.51.100.7'], aaaa: ['2001:db8::7'], ttl: 300 },
    'zero.test': { aaaa: ['2001:db8::8'], ttl: 0 },
    'again.test': { a: ['198.51.100.9'], ttl: 300 },
    'burst.test': { a: ['198.51.100.10'], ttl: 300 },
  };
  const asked = (name: string): number => (dns.queries.get(`${name} A`) ?? 0) + (dns.queries.get(`${name} AAAA`) ?? 0);
  const resolver = (cacheSeconds: number): NameResolver => new NameResolver({ dns: [{ host: '127.0.0.1', port: dns.port }], cacheSeconds });

  before(async () => {
    dns = await dnsServer(zone);
  });
  after(() => dns.close());

  test('an answer is kept for its TTL: the second lookup asks nothing', async () => {
    const r = resolver(60);
    const first = await r.resolve('kept.test');
    assert.deepEqual(first.map(formatIp).sort(), ['198.51.100.7', '2001:db8::7']);
    assert.equal(asked('kept.test'), 2, 'one A and one AAAA query');
    const second = await r.resolve('KEPT.test.');
    assert.deepEqual(second, first, 'the same name, however written');
    assert.equal(asked('kept.test'), 2);
    assert.deepEqual(r.stats, { cached: 1, asked: 1 });
    // callers get their own copy of the cached list
    second.length = 0;
    assert.equal((await r.resolve('kept.test')).length, 2);
  });

  test('TTL 0, --dns-cache 0 and failures are never kept', async () => {
    const r = resolver(60);
    await r.resolve('zero.test');
    await r.resolve('zero.test');
    assert.equal(asked('zero.test'), 4);
    const off = resolver(0);
    await off.resolve('again.test');
    await off.resolve('again.test');
    assert.equal(asked('again.test'), 4);
    for (let i = 0; i < 2; i++) await assert.rejects(r.resolve('missing.test'), (e: { code: string }) => e.code === 'ERR_NAME_NOT_FOUND');
    assert.equal(asked('missing.test'), 4);
  });

  test('lookups of one name at once share one query', async () => {
    const r = resolver(60);
    const all = await Promise.all(Array.from({ length: 20 }, () => r.resolve('burst.test')));
    assert.equal(asked('burst.test'), 2);
    for (const ips of all) assert.deepEqual(ips.map(formatIp), ['198.51.100.10']);
    assert.deepEqual(r.stats, { cached: 19, asked: 1 });
  });
});
