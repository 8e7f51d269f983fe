// Destination policy. Checked on every resolved address (never on the name), so a name that
// resolves into loopback or a private range cannot reach it (DNS rebinding, SSRF).
//
// The deny table is the IANA IPv4 and IPv6 Special-Purpose Address Registries (as of 2025): every
// block whose "Globally Reachable" is False, plus multicast, site-local and the deprecated blocks.
// The most specific row decides, so a globally reachable block inside a denied one (AMT, AS112,
// ORCHIDv2 inside 2001::/23) is an "allow" row. Kept denied on purpose although the registry says
// True: the anycast addresses of services that answer on the local network — 192.0.0.9/32 and
// 2001:1::1/128 (PCP: a client could open ports on the gateway's NAT), 192.0.0.10/32 and
// 2001:1::2/128 (TURN), 2001:1::3/128 (DNS-SD SRP) — which stay inside 192.0.0.0/24 and 2001::/23.
// Globally reachable blocks outside any denied one (192.31.196.0/24, 192.52.193.0/24,
// 192.175.48.0/24, 2620:4f:8000::/48) need no row.
//
// An IPv4 address carried in an IPv6 one is checked as IPv4 as well, whatever the IPv6 row says:
// IPv4-mapped (the internal form: it is IPv4), IPv4-compatible, SIIT, both NAT64 prefixes, 6to4,
// and Teredo (server and de-obfuscated client).
import { CidrSet, cidrContains, formatIp, ipFromV4Bytes, isV4, parseCidr, type Cidr, type Ip } from './address.js';

/** One row of the table. */
export interface SpecialBlock {
  readonly cidr: string;
  /** The registry's name (or the RFC's, for blocks not in the registry). */
  readonly name: string;
  readonly rfc: string;
  /** The registry's "Globally Reachable": true, false, 'n/a', or null when not in the registry. */
  readonly reachable: boolean | 'n/a' | null;
  /** Short class used in refusal reasons ("loopback address"). */
  readonly class: string;
  /** Refused unless --allow covers it; false: an allowed exception inside a denied block. */
  readonly deny: boolean;
  /** Where an IPv4 address sits inside it (translation forms); each is checked as IPv4. */
  readonly embeds?: (ip: Ip) => Ip[];
}

const v4At = (ip: Ip, at: number): Ip => ipFromV4Bytes(ip.subarray(at, at + 4));
const isZeroV4 = (ip: Ip): boolean => ip[12] === 0 && ip[13] === 0 && ip[14] === 0 && ip[15] === 0;

/** RFC 6052 §2.2, prefix length 96: bits 96-127. */
const last32 = (ip: Ip): Ip[] => [v4At(ip, 12)];

/**
 * 64:ff9b:1::/48 (RFC 8215) is for local use with any RFC 6052 prefix length inside it, so the
 * IPv4 is read both ways: the /48 layout (bits 48-63 and 72-87, around the zero u octet) and the
 * /96 one. A reading that gives 0.0.0.0 is where that layout has its zero padding, and is skipped
 * unless both are.
 */
function localNat64(ip: Ip): Ip[] {
  const as48 = ipFromV4Bytes(Uint8Array.of(ip[6]!, ip[7]!, ip[9]!, ip[10]!));
  const as96 = v4At(ip, 12);
  const readings = [as48, as96].filter((r) => !isZeroV4(r));
  return readings.length > 0 ? readings : [as96];
}

/** RFC 4380 §4: 2001:0:SERVER:flags:port:CLIENT, the client's IPv4 inverted bit by bit. */
function teredo(ip: Ip): Ip[] {
  const client = Uint8Array.from(ip.subarray(12, 16), (b) => b ^ 0xff);
  return [v4At(ip, 4), ipFromV4Bytes(client)];
}

const row = (cidr: string, cls: string, name: string, rfc: string, reachable: SpecialBlock['reachable'], deny = true, embeds?: SpecialBlock['embeds']): SpecialBlock =>
  embeds ? { cidr, class: cls, name, rfc, reachable, deny, embeds } : { cidr, class: cls, name, rfc, reachable, deny };

/** The table, one row per block; order does not matter (the most specific match decides). */
export const SPECIAL_BLOCKS: readonly SpecialBlock[] = Object.freeze([
  // IANA IPv4 Special-Purpose Address Registry
  row('0.0.0.0/8', 'unspecified', '"This network"', 'RFC 791', false),
  row('10.0.0.0/8', 'private', 'Private-Use', 'RFC 1918', false),
  row('100.64.0.0/10', 'private', 'Shared Address Space (CGNAT)', 'RFC 6598', false),
  row('127.0.0.0/8', 'loopback', 'Loopback', 'RFC 1122', false),
  row('169.254.0.0/16', 'link-local', 'Link Local', 'RFC 3927', false),
  row('172.16.0.0/12', 'private', 'Private-Use', 'RFC 1918', false),
  row('192.0.0.0/24', 'protocol-assignment', 'IETF Protocol Assignments (DS-Lite, NAT64 discovery, PCP and TURN anycast)', 'RFC 6890', false),
  row('192.0.2.0/24', 'documentation', 'Documentation (TEST-NET-1)', 'RFC 5737', false),
  row('192.88.99.0/24', 'deprecated', 'Deprecated (6to4 Relay Anycast)', 'RFC 7526', 'n/a'),
  row('192.168.0.0/16', 'private', 'Private-Use', 'RFC 1918', false),
  row('198.18.0.0/15', 'benchmarking', 'Benchmarking', 'RFC 2544', false),
  row('198.51.100.0/24', 'documentation', 'Documentation (TEST-NET-2)', 'RFC 5737', false),
  row('203.0.113.0/24', 'documentation', 'Documentation (TEST-NET-3)', 'RFC 5737', false),
  row('224.0.0.0/4', 'multicast', 'Multicast', 'RFC 5771', null),
  row('240.0.0.0/4', 'reserved', 'Reserved', 'RFC 1112', false),
  row('255.255.255.255/32', 'broadcast', 'Limited Broadcast', 'RFC 919', false),
  // IANA IPv6 Special-Purpose Address Registry
  row('::1/128', 'loopback', 'Loopback Address', 'RFC 4291', false),
  row('::/128', 'unspecified', 'Unspecified Address', 'RFC 4291', false),
  row('::/96', 'ipv4-compatible', 'IPv4-Compatible (deprecated)', 'RFC 4291', null, false, last32),
  row('::ffff:0:0:0/96', 'ipv4-translated', 'IPv4-translated (SIIT)', 'RFC 2765', null, false, last32),
  row('64:ff9b::/96', 'nat64', 'IPv4-IPv6 Translation (well-known prefix)', 'RFC 6052', true, false, last32),
  row('64:ff9b:1::/48', 'nat64-local', 'IPv4-IPv6 Translation (local use)', 'RFC 8215', false, true, localNat64),
  row('100::/64', 'discard', 'Discard-Only Address Block', 'RFC 6666', false),
  row('100:0:0:1::/64', 'dummy', 'Dummy IPv6 Prefix', 'RFC 9780', false),
  row('2001::/23', 'protocol-assignment', 'IETF Protocol Assignments (PCP, TURN and DNS-SD anycast)', 'RFC 2928', false),
  row('2001::/32', 'teredo', 'TEREDO', 'RFC 4380', 'n/a', false, teredo),
  row('2001:2::/48', 'benchmarking', 'Benchmarking', 'RFC 5180', false),
  row('2001:3::/32', 'amt', 'AMT', 'RFC 7450', true, false),
  row('2001:4:112::/48', 'as112', 'AS112-v6', 'RFC 7535', true, false),
  row('2001:10::/28', 'deprecated', 'Deprecated (previously ORCHID)', 'RFC 4843', 'n/a'),
  row('2001:20::/28', 'orchid', 'ORCHIDv2', 'RFC 7343', true, false),
  row('2001:30::/28', 'det', 'Drone Remote ID Protocol Entity Tags (DETs)', 'RFC 9374', true, false),
  row('2001:db8::/32', 'documentation', 'Documentation', 'RFC 3849', false),
  row('2002::/16', '6to4', '6to4', 'RFC 3056', 'n/a', false, (ip) => [v4At(ip, 2)]),
  row('3fff::/20', 'documentation', 'Documentation', 'RFC 9637', false),
  row('5f00::/16', 'srv6', 'Segment Routing (SRv6) SIDs', 'RFC 9602', false),
  row('fc00::/7', 'unique-local', 'Unique-Local', 'RFC 4193', false),
  row('fe80::/10', 'link-local', 'Link-Local Unicast', 'RFC 4291', false),
  row('fec0::/10', 'site-local', 'Site-Local (deprecated)', 'RFC 3879', null),
  row('ff00::/8', 'multicast', 'Multicast', 'RFC 4291', null),
]);

// most specific first, so the first match is the longest prefix
const COMPILED: { block: SpecialBlock; cidr: Cidr }[] = SPECIAL_BLOCKS.map((block) => ({ block, cidr: parseCidr(block.cidr)! })).sort(
  (a, b) => b.cidr.bits - a.cidr.bits,
);

/** The table's row for an address (the most specific block holding it), if any. */
export function specialBlock(ip: Ip): SpecialBlock | undefined {
  return COMPILED.find((c) => cidrContains(c.cidr, ip))?.block;
}

/** Denied classes with their ranges (derived from the table). */
export const SPECIAL_RANGES: Record<string, string[]> = {};
for (const b of SPECIAL_BLOCKS) if (b.deny) (SPECIAL_RANGES[b.class] ??= []).push(b.cidr);

/** The IPv4 addresses carried in an IPv6 address (none for IPv4 and other IPv6). */
export function embeddedV4s(ip: Ip): Ip[] {
  if (isV4(ip)) return [];
  return specialBlock(ip)?.embeds?.(ip) ?? [];
}

/** The first IPv4 address carried in an IPv6 one, if any. */
export function embeddedV4(ip: Ip): Ip | null {
  return embeddedV4s(ip)[0] ?? null;
}

/** Class of the denying row of the address or of an IPv4 inside it ("loopback (embedded IPv4)"), else null. */
export function specialClass(ip: Ip): string | null {
  const own = specialBlock(ip);
  if (own?.deny) return own.class;
  for (const inner of embeddedV4s(ip)) {
    const b = specialBlock(inner);
    if (b?.deny) return `${b.class} (embedded IPv4)`;
  }
  return null;
}

export interface DestinationPolicy {
  /** Explicitly allowed ranges; they win over the table (an IPv4 inside an IPv6 is still checked). */
  allow: CidrSet;
  /** Allow every special class and the host's own addresses (an operator's escape hatch for labs). */
  allowPrivate: boolean;
  /** The host's own addresses: reaching them would let clients into its local services. */
  self?: CidrSet | undefined;
  /** Whose own addresses they are, for the refusal reason (default "the gateway"). */
  selfName?: string | undefined;
}

/** null when allowed, otherwise the reason it is denied. */
export function checkDestination(policy: DestinationPolicy, ip: Ip): string | null {
  if (policy.allowPrivate) return null;
  const inner = embeddedV4s(ip);
  for (const addr of [ip, ...inner]) {
    if (policy.allow.has(addr)) continue;
    const via = addr === ip ? '' : ` (embedded IPv4 ${formatIp(addr)})`;
    const b = specialBlock(addr);
    if (b?.deny) return `${b.class} address${via}: ${b.cidr} ${b.name}, ${b.rfc}`;
    if (policy.self?.has(addr)) return `${policy.selfName ?? 'the gateway'}'s own address${via}`;
  }
  return null;
}
