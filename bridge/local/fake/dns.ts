// The fake-address DNS responder's decisions, without I/O (issue 11): one query message in, one of
//   answer  — the response bytes to send back,
//   forward — send the query to an upstream resolver and pass its answer back,
//   drop    — no response (no readable header, or not a query).
// The wire format is dns-packet's; nothing here writes DNS bytes by hand.
//
// A name the routing rules send to the proxy never leaves the host in a query: A and AAAA get a fake
// address (TTL 1), every other type an empty NOERROR. PTR for a fake address answers its name.
// DIRECT names, reverse names of real addresses and the root are forwarded.
import dnsPacket, { type Answer, type DecodedPacket, type Packet, type Question } from 'dns-packet';
import { formatIp, parseIp, type Ip } from '../../../shared/net/address.js';
import { decide, requestInfo, type Settings } from '../../../shared/rules/index.js';
import { FakeAddressError, normalizeName, type FakeTable } from './table.js';

export const FAKE_TTL = 1;

export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

export type DnsResult =
  | { readonly kind: 'answer'; readonly message: Buffer; readonly rcode: number; readonly name?: string; readonly qtype?: string; readonly fake?: string }
  | { readonly kind: 'forward'; readonly id: number; readonly name: string; readonly qtype: string }
  | { readonly kind: 'drop'; readonly reason: string };

export interface ResponderOptions {
  table: FakeTable;
  /** The routing settings, read per query so a change applies at once. */
  settings: () => Settings;
}

const HEADER = 12;
const QR = 0x8000;

// Hostnames the gateway can take as ATYP DOMAINNAME: LDH labels (plus "_", as seen in the wild).
const HOSTNAME = /^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$/;

/** The address a reverse name (in-addr.arpa / ip6.arpa, complete) stands for, else null. */
export function reverseNameToIp(name: string): Ip | null {
  const n = normalizeName(name);
  if (n.endsWith('.in-addr.arpa')) {
    const parts = n.slice(0, -'.in-addr.arpa'.length).split('.');
    return parts.length === 4 ? parseIp(parts.reverse().join('.')) : null;
  }
  if (n.endsWith('.ip6.arpa')) {
    const nibbles = n.slice(0, -'.ip6.arpa'.length).split('.');
    if (nibbles.length !== 32 || !nibbles.every((x) => /^[0-9a-f]$/.test(x))) return null;
    const hex = nibbles.reverse().join('');
    const groups: string[] = [];
    for (let i = 0; i < 32; i += 4) groups.push(hex.slice(i, i + 4));
    const ip = parseIp(groups.join(':'));
    return ip;
  }
  return null;
}

function flagsOf(query: { opcode: number; rd: boolean; cd: boolean }, rcode: number): number {
  // QR is set by encode() from type: 'response'
  return (query.opcode << 11) | (query.rd ? dnsPacket.RECURSION_DESIRED : 0) | dnsPacket.RECURSION_AVAILABLE | (query.cd ? dnsPacket.CHECKING_DISABLED : 0) | rcode;
}

export class FakeDnsResponder {
  constructor(private readonly opts: ResponderOptions) {}

  /** Never throws: anything unexpected answers SERVFAIL (or drops when even that cannot be built). */
  handle(query: Uint8Array): DnsResult {
    if (query.length < HEADER) return { kind: 'drop', reason: 'shorter than a DNS header' };
    const buf = Buffer.from(query.buffer, query.byteOffset, query.length);
    const id = buf.readUInt16BE(0);
    const rawFlags = buf.readUInt16BE(2);
    if (rawFlags & QR) return { kind: 'drop', reason: 'a response, not a query' };
    const head = { opcode: (rawFlags >> 11) & 0xf, rd: (rawFlags & dnsPacket.RECURSION_DESIRED) !== 0, cd: (rawFlags & dnsPacket.CHECKING_DISABLED) !== 0 };
    try {
      return this.decideFor(buf, id, head);
    } catch {
      // the client sees SERVFAIL; not printed, since hostile packets could reach this and flood stderr
      try {
        return { kind: 'answer', rcode: RCODE.SERVFAIL, message: this.empty(id, head, [], RCODE.SERVFAIL, false) };
      } catch {
        return { kind: 'drop', reason: 'internal error' };
      }
    }
  }

  /**
   * An error answer (SERVFAIL when an upstream failed) for a query handle() forwarded: its ID,
   * flags and question echoed. Null when the query cannot be read (handle() would have dropped it).
   */
  failure(query: Uint8Array, rcode: number = RCODE.SERVFAIL): Buffer | null {
    try {
      if (query.length < HEADER) return null;
      const buf = Buffer.from(query.buffer, query.byteOffset, query.length);
      const rawFlags = buf.readUInt16BE(2);
      const head = { opcode: (rawFlags >> 11) & 0xf, rd: (rawFlags & dnsPacket.RECURSION_DESIRED) !== 0, cd: (rawFlags & dnsPacket.CHECKING_DISABLED) !== 0 };
      let questions: Question[] = [];
      let edns = false;
      try {
        const p = dnsPacket.decode(buf);
        questions = p.questions ?? [];
        edns = (p.additionals ?? []).some((a) => a.type === 'OPT');
      } catch {
        /* header only */
      }
      return this.empty(buf.readUInt16BE(0), head, questions, rcode, edns);
    } catch {
      return null;
    }
  }

  private decideFor(buf: Buffer, id: number, head: { opcode: number; rd: boolean; cd: boolean }): DnsResult {
    const fail = (rcode: number): DnsResult => ({ kind: 'answer', rcode, message: this.empty(id, head, [], rcode, false) });
    if (head.opcode !== 0) return fail(RCODE.NOTIMP);
    let packet: DecodedPacket;
    try {
      packet = dnsPacket.decode(buf);
    } catch {
      return fail(RCODE.FORMERR);
    }
    const questions = packet.questions ?? [];
    if (questions.length !== 1) return fail(RCODE.FORMERR);
    const q = questions[0]!;
    const edns = (packet.additionals ?? []).some((a) => a.type === 'OPT');
    const name = normalizeName(q.name);
    const qtype = String(q.type);
    const forward: DnsResult = { kind: 'forward', id, name, qtype };
    const reply = (rcode: number, answers: Answer[], fake?: string): DnsResult => ({
      kind: 'answer',
      rcode,
      name,
      qtype,
      ...(fake === undefined ? {} : { fake }),
      message: this.empty(id, head, [q], rcode, edns, answers),
    });

    if (name === '' || name === '.') return forward;
    // Discovery of designated (encrypted) resolvers, RFC 9462: answering from upstream would let
    // clients bypass this responder, so say there are none.
    if (name === 'resolver.arpa' || name.endsWith('.resolver.arpa')) return reply(RCODE.NOERROR, []);
    // Firefox's canary: NXDOMAIN keeps it on the system resolver instead of DNS over HTTPS.
    if (name === 'use-application-dns.net') return reply(RCODE.NXDOMAIN, []);

    const reverse = reverseNameToIp(name);
    if (reverse && this.opts.table.isFake(reverse)) {
      if (qtype !== 'PTR') return reply(RCODE.NOERROR, []);
      const mapped = this.opts.table.nameOf(reverse);
      if (mapped === undefined) return reply(RCODE.NXDOMAIN, []);
      return reply(RCODE.NOERROR, [{ type: 'PTR', class: 'IN', name: q.name, ttl: FAKE_TTL, data: mapped }], mapped);
    }
    if (name.endsWith('.arpa') || name === 'arpa') return forward;
    let proxied: boolean;
    try {
      // an IP literal asked as a name ("192.0.2.1", or "0x7f.1" as URL parsers read it) is not a
      // name to map: the gateway would take it for the address
      if (parseIp(name) || requestInfo({ host: name }).ip) return forward;
      proxied = decide(this.opts.settings(), { host: name }).type === 'PROXY';
    } catch {
      proxied = true; // a host the rules cannot even read is kept on this host
    }
    if (!proxied) return forward;

    const family = qtype === 'A' ? 4 : qtype === 'AAAA' ? 6 : 0;
    if (family === 0 || (q.class ?? 'IN') !== 'IN' || !HOSTNAME.test(name)) return reply(RCODE.NOERROR, []);
    let ip: Ip;
    try {
      ip = this.opts.table.assign(name, family);
    } catch (e) {
      if (e instanceof FakeAddressError) return reply(RCODE.SERVFAIL, []);
      throw e;
    }
    const data = formatIp(ip);
    return reply(RCODE.NOERROR, [{ type: family === 4 ? 'A' : 'AAAA', class: 'IN', name: q.name, ttl: FAKE_TTL, data }], data);
  }

  private empty(id: number, head: { opcode: number; rd: boolean; cd: boolean }, questions: Question[], rcode: number, edns: boolean, answers: Answer[] = []): Buffer {
    const p: Packet = { type: 'response', id, flags: flagsOf(head, rcode), questions, answers };
    if (edns) p.additionals = [{ type: 'OPT', name: '.', udpPayloadSize: 1232, extendedRcode: 0, ednsVersion: 0, flags: 0, options: [] } as unknown as Answer];
    return dnsPacket.encode(p);
  }
}
