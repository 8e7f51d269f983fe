// One address model: every IP is 16 bytes, IPv4 held as ::ffff:a.b.c.d (as hev-socks5 does),
// so policy and CIDR checks have one path and a v4-mapped address can never slip past a v4 rule.

export type Ip = Uint8Array; // always 16 bytes
export type Family = 4 | 6;

const V4_MAPPED_PREFIX = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

function parseV4Into(text: string, out: Uint8Array, at: number): boolean {
  const parts = text.split('.');
  if (parts.length !== 4) return false;
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!;
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return false;
    const n = Number(p);
    if (n > 255) return false;
    out[at + i] = n;
  }
  return true;
}

function parseV6(text: string): Ip | null {
  if (text.length > 45 || text.includes('%')) return null;
  const out = new Uint8Array(16);
  const halves = text.split('::');
  if (halves.length > 2) return null;
  const groups = (s: string): string[] => (s === '' ? [] : s.split(':'));
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  const all = halves.length === 2 ? [...head, ...tail] : head;
  // an embedded dotted quad takes the last two groups
  let v4Tail: string | undefined;
  const last = all[all.length - 1];
  if (last !== undefined && last.includes('.')) {
    // the quad must end the text: in "1.2.3.4::" it comes before the gap
    if (halves.length === 2 && tail.length === 0) return null;
    v4Tail = last;
  }
  const wordCount = all.length + (v4Tail ? 1 : 0);
  if (halves.length === 1 && wordCount !== 8) return null;
  if (halves.length === 2 && wordCount > 7) return null;
  const words: number[] = [];
  const pushGroups = (gs: string[]): boolean => {
    for (const g of gs) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return false;
      words.push(parseInt(g, 16));
    }
    return true;
  };
  const headGroups = v4Tail && tail.length === 0 ? head.slice(0, -1) : head;
  const tailGroups = v4Tail && tail.length > 0 ? tail.slice(0, -1) : tail;
  if (!pushGroups(headGroups)) return null;
  const headWords = words.length;
  if (!pushGroups(tailGroups)) return null;
  const tailWords = words.length - headWords;
  const v4Words = v4Tail ? 2 : 0;
  const gap = 8 - headWords - tailWords - v4Words;
  if (halves.length === 2 ? gap < 1 : gap !== 0) return null;
  let w = 0;
  for (let i = 0; i < headWords; i++, w++) {
    out[w * 2] = words[i]! >> 8;
    out[w * 2 + 1] = words[i]! & 0xff;
  }
  w += gap;
  for (let i = headWords; i < words.length; i++, w++) {
    out[w * 2] = words[i]! >> 8;
    out[w * 2 + 1] = words[i]! & 0xff;
  }
  if (v4Tail && !parseV4Into(v4Tail, out, 12)) return null;
  return out;
}

/** Parses IPv4 dotted-quad or IPv6 text (optionally in brackets); null when it is not an IP. */
export function parseIp(text: string): Ip | null {
  let t = text;
  if (t !== unbracket(t)) {
    // brackets hold IPv6 only (RFC 3986 IP-literal)
    t = unbracket(t);
    if (!t.includes(':')) return null;
  }
  if (t.includes(':')) return parseV6(t);
  const out = new Uint8Array(16);
  out.set(V4_MAPPED_PREFIX);
  return parseV4Into(t, out, 12) ? out : null;
}

export function isV4(ip: Ip): boolean {
  for (let i = 0; i < 12; i++) if (ip[i] !== V4_MAPPED_PREFIX[i]) return false;
  return true;
}

export function familyOf(ip: Ip): Family {
  return isV4(ip) ? 4 : 6;
}

/** Whether two addresses are the same (both are 16 bytes, IPv4 v4-mapped). */
export function sameIp(a: Ip, b: Ip): boolean {
  return a.every((x, i) => x === b[i]);
}

export function ipFromV4Bytes(b: Uint8Array): Ip {
  const out = new Uint8Array(16);
  out.set(V4_MAPPED_PREFIX);
  out.set(b.subarray(0, 4), 12);
  return out;
}

/** Canonical text: dotted quad for IPv4 (and v4-mapped), RFC 5952 for IPv6. */
export function formatIp(ip: Ip): string {
  if (isV4(ip)) return `${ip[12]}.${ip[13]}.${ip[14]}.${ip[15]}`;
  const words: number[] = [];
  for (let i = 0; i < 16; i += 2) words.push((ip[i]! << 8) | ip[i + 1]!);
  // longest run of zero words (length >= 2) becomes "::"
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (ws: number[]): string => ws.map((w) => w.toString(16)).join(':');
  if (bestStart < 0) return hex(words);
  return `${hex(words.slice(0, bestStart))}::${hex(words.slice(bestStart + bestLen))}`;
}

/** Normalises IP text (e.g. "::ffff:10.0.0.1" → "10.0.0.1"); returns non-IP text unchanged. */
export function canonicalHost(host: string): string {
  const ip = parseIp(host);
  return ip ? formatIp(ip) : host;
}

/** A host (name or IP text, IPv6 without brackets) and a port: the one shape for an endpoint. */
export interface HostPort {
  host: string;
  port: number;
}

/** Host text without the brackets of a URL's IPv6 literal ("[::1]" → "::1"); any other text unchanged. */
export function unbracket(host: string): string {
  return host.length >= 2 && host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

/** host:port with IPv6 in brackets, as in URLs and logs. */
export function joinHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Parses "HOST:PORT", "[V6]:PORT" (and "HOST" with a default port). */
export function splitHostPort(text: string, defaultPort?: number): HostPort | null {
  let host: string;
  let portText: string | undefined;
  if (text.startsWith('[')) {
    const end = text.indexOf(']');
    if (end < 0) return null;
    host = text.slice(1, end);
    const rest = text.slice(end + 1);
    if (rest === '') portText = undefined;
    else if (rest.startsWith(':')) portText = rest.slice(1);
    else return null;
    if (!parseIp(host)) return null;
  } else {
    const colons = text.split(':').length - 1;
    if (colons === 0) host = text;
    else if (colons === 1) [host, portText] = text.split(':') as [string, string];
    else return null; // bare IPv6 must be bracketed when a port may follow
  }
  if (host === '') return null;
  let port: number;
  if (portText === undefined) {
    if (defaultPort === undefined) return null;
    port = defaultPort;
  } else {
    if (!/^[0-9]{1,5}$/.test(portText)) return null;
    port = Number(portText);
    if (port > 65535) return null;
  }
  return { host, port };
}

export interface Cidr {
  readonly ip: Ip;
  readonly bits: number; // prefix length over the 16-byte form
  readonly text: string;
}

/** "10.0.0.0/8", "2001:db8::/32", or a bare address (host route). IPv4 prefixes are shifted by 96. */
export function parseCidr(text: string): Cidr | null {
  const [addr, len, extra] = text.split('/');
  if (addr === undefined || extra !== undefined) return null;
  const ip = parseIp(addr);
  if (!ip) return null;
  const v4 = isV4(ip) && !addr.includes(':');
  const max = v4 ? 32 : 128;
  let bits = max;
  if (len !== undefined) {
    if (!/^[0-9]{1,3}$/.test(len)) return null;
    bits = Number(len);
    if (bits > max) return null;
  }
  return { ip, bits: v4 ? bits + 96 : bits, text };
}

export function cidrContains(c: Cidr, ip: Ip): boolean {
  let bits = c.bits;
  for (let i = 0; i < 16 && bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((c.ip[i]! & mask) !== (ip[i]! & mask)) return false;
  }
  return true;
}

export class CidrSet {
  readonly entries: Cidr[];
  constructor(cidrs: Iterable<string | Cidr>) {
    this.entries = [];
    for (const c of cidrs) {
      const parsed = typeof c === 'string' ? parseCidr(c) : c;
      if (!parsed) throw new TypeError(`not a CIDR: ${String(c)}`);
      this.entries.push(parsed);
    }
  }
  match(ip: Ip): Cidr | undefined {
    return this.entries.find((c) => cidrContains(c, ip));
  }
  has(ip: Ip): boolean {
    return this.match(ip) !== undefined;
  }
  get size(): number {
    return this.entries.length;
  }
}
