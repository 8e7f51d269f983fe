// Rule conditions. Each one has match() for live decisions and compile() for the PAC, written side
// by side (as omega-pac does) so one rule cannot mean two things. Host wildcards go one step
// further: match() and the PAC run the very same regular expression source.
// No node: imports: the extension bundles this file.
import { cidrContains, parseCidr, parseIp, unbracket, type Cidr, type Ip } from '../net/address.js';
import { ConfigError } from '../errors.js';

/** What a condition looks at. decide() and the PAC prelude normalise a request the same way. */
export interface RequestInfo {
  /** Lower case, without ':'; '' when unknown. */
  readonly scheme: string;
  /** Lower case, IPv6 without brackets, one trailing dot removed. */
  readonly host: string;
  /** The explicit port, else the scheme's default, else 0. */
  readonly port: number;
  /** The host when it is an IP literal. Names are never resolved. */
  readonly ip: Ip | null;
}

export interface Condition {
  /** The entry as the user wrote it. */
  readonly text: string;
  match(req: RequestInfo): boolean;
  /** An ES5 boolean expression over the PAC prelude's `h`, `ip`, `port`, `scheme`; same meaning as match(). */
  compile(): string;
}

export type RuleType = 'wildcard' | 'exact' | 'cidr';

export interface Rule {
  /** Inferred when absent: 'cidr' if the pattern is an address or CIDR, else 'wildcard'. */
  type?: RuleType;
  pattern: string;
  port?: number;
  scheme?: string;
}

export const DEFAULT_PORTS: ReadonlyMap<string, number> = new Map([
  ['http', 80],
  ['https', 443],
  ['ws', 80],
  ['wss', 443],
  ['ftp', 21],
]);

/** Lower case, brackets and one trailing dot off: "EXAMPLE.com." and "example.com" are one name. */
export function normalizeHost(raw: string): string {
  let h = raw.toLowerCase();
  if (h.charAt(0) === '[' && h.charAt(h.length - 1) === ']') h = h.substring(1, h.length - 1);
  if (h.length > 1 && h.charAt(h.length - 1) === '.') h = h.substring(0, h.length - 1);
  return h;
}

// Browsers hand the PAC hosts already canonicalised by their URL parser (0x7f.1 → 127.0.0.1,
// IDN → punycode, IPv6 compressed); do the same for hosts that did not come from a URL.
function canonicalHostname(host: string): string {
  const wrapped = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  try {
    return new URL(`http://${wrapped}/`).hostname;
  } catch {
    return host; // not a host a URL can hold: left as written
  }
}

export interface Target {
  scheme?: string;
  host: string;
  port?: number;
}

/** Normalises a URL (as Firefox's proxy.onRequest sees it) or a bare target (as the bridge sees it). */
export function requestInfo(target: string | Target): RequestInfo {
  let scheme: string;
  let host: string;
  let port: number | undefined;
  if (typeof target === 'string') {
    const u = new URL(target); // throws TypeError on a malformed URL
    scheme = u.protocol.slice(0, -1).toLowerCase();
    host = u.hostname;
    port = u.port === '' ? undefined : Number(u.port);
  } else {
    scheme = (target.scheme ?? '').toLowerCase();
    host = target.host;
    port = target.port;
  }
  host = normalizeHost(canonicalHostname(host));
  return { scheme, host, port: port ?? DEFAULT_PORTS.get(scheme) ?? 0, ip: parseIp(host) };
}

// ---- conditions ----

class WildcardCondition implements Condition {
  private readonly re: RegExp;
  constructor(
    readonly text: string,
    private readonly source: string,
  ) {
    this.re = new RegExp(source);
  }
  match(req: RequestInfo): boolean {
    return this.re.test(req.host);
  }
  compile(): string {
    return `/${this.source}/.test(h)`;
  }
}

class ExactCondition implements Condition {
  constructor(
    readonly text: string,
    private readonly host: string,
  ) {}
  match(req: RequestInfo): boolean {
    return req.host === this.host;
  }
  compile(): string {
    return `h === ${JSON.stringify(this.host)}`;
  }
}

class CidrCondition implements Condition {
  constructor(
    readonly text: string,
    private readonly cidr: Cidr,
  ) {}
  match(req: RequestInfo): boolean {
    return req.ip !== null && cidrContains(this.cidr, req.ip);
  }
  compile(): string {
    return `(ip !== null && __dsIn(ip, [${Array.from(this.cidr.ip).join(',')}], ${this.cidr.bits}))`;
  }
}

// Chrome's <local>: a plain name, i.e. no dot and not an IP literal ("intranet", "localhost").
class LocalCondition implements Condition {
  readonly text = '<local>';
  match(req: RequestInfo): boolean {
    return req.ip === null && req.host.indexOf('.') < 0;
  }
  compile(): string {
    return '(ip === null && h.indexOf(".") < 0)';
  }
}

class QualifiedCondition implements Condition {
  constructor(
    readonly text: string,
    private readonly inner: Condition,
    private readonly scheme: string | undefined,
    private readonly port: number | undefined,
  ) {}
  match(req: RequestInfo): boolean {
    if (this.scheme !== undefined && req.scheme !== this.scheme) return false;
    if (this.port !== undefined && req.port !== this.port) return false;
    return this.inner.match(req);
  }
  compile(): string {
    const parts: string[] = [];
    if (this.scheme !== undefined) parts.push(`scheme === ${JSON.stringify(this.scheme)}`);
    if (this.port !== undefined) parts.push(`port === ${this.port}`);
    parts.push(this.inner.compile());
    return `(${parts.join(' && ')})`;
  }
}

function qualify(text: string, inner: Condition, scheme?: string, port?: number): Condition {
  return scheme === undefined && port === undefined ? inner : new QualifiedCondition(text, inner, scheme, port);
}

// ---- pattern parsing (shared by rules and bypass entries) ----

// More '*' than this risks polynomial backtracking on long names.
const MAX_STARS = 3;

/**
 * Regex source for a host wildcard, with omega-pac's conventions: `*` is any run of characters
 * (dots included), `?` one character; a leading `*.` or `.` also matches the domain itself
 * (`*.example.com` matches `example.com`, `a.b.example.com`); `**.` matches subdomains only.
 */
export function wildcardSource(key: string, pattern: string): string {
  const p = normalizeHost(pattern.trim());
  if (p === '' || p === '.') throw new ConfigError(key, 'empty host pattern');
  if (/[^\x21-\x7e]/.test(p)) throw new ConfigError(key, `${JSON.stringify(pattern)}: write non-ASCII names in punycode (xn--)`);
  if (!/^[a-z0-9_.*?-]+$/.test(p)) throw new ConfigError(key, `${JSON.stringify(pattern)}: not a host pattern`);
  if (p.length > 253) throw new ConfigError(key, 'host pattern longer than 253 characters');
  let body = p.replace(/\*+/g, '*');
  if ((body.match(/\*/g) ?? []).length > MAX_STARS) throw new ConfigError(key, `more than ${MAX_STARS} '*' in a host pattern`);
  let prefix = '^';
  if (body.startsWith('.')) body = `*${body}`;
  if (/^\*{2,}\./.test(p)) {
    prefix = '^.*\\.';
    body = body.slice(2);
  } else if (body.startsWith('*.')) {
    prefix = '^(?:.*\\.)?';
    body = body.slice(2);
  }
  const glob = body.replace(/[.*?]/g, (c) => (c === '.' ? '\\.' : c === '*' ? '.*' : '.'));
  return `${prefix}${glob}$`;
}

/** A CIDR or a single address, IPv6 optionally bracketed: "10.0.0.0/8", "[2001:db8::]/32", "::1". */
function parseCidrText(text: string): Cidr | null {
  let t = text;
  if (t.startsWith('[')) {
    const end = t.indexOf(']');
    if (end < 0) return null;
    const rest = t.slice(end + 1);
    if (rest !== '' && !rest.startsWith('/')) return null;
    t = t.slice(1, end) + rest;
    if (!t.includes(':')) return null;
  }
  return parseCidr(t);
}

function parsePort(key: string, value: unknown): number {
  const n = typeof value === 'string' && /^[0-9]{1,5}$/.test(value) ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 65535) {
    throw new ConfigError(key, `${JSON.stringify(value)}: port must be an integer from 1 to 65535`);
  }
  return n;
}

function parseScheme(key: string, value: unknown): string {
  if (typeof value !== 'string' || !/^[a-z][a-z0-9+.-]*$/i.test(value)) {
    throw new ConfigError(key, `${JSON.stringify(value)}: not a URL scheme`);
  }
  return value.toLowerCase();
}

function hostCondition(key: string, text: string, host: string): Condition {
  const ip = parseIp(host);
  if (ip) return new CidrCondition(text, parseCidr(unbracket(host))!);
  return new WildcardCondition(text, wildcardSource(key, host));
}

/** The type a rule without one gets. */
export function inferRuleType(pattern: string): RuleType {
  return parseCidrText(pattern.trim()) ? 'cidr' : 'wildcard';
}

/** Builds a rule's condition; errors name `${key}.pattern`, `${key}.port`, `${key}.scheme`. */
export function ruleCondition(rule: Rule, key: string): Condition {
  const pkey = `${key}.pattern`;
  if (typeof rule.pattern !== 'string') throw new ConfigError(pkey, 'must be a string');
  const pattern = rule.pattern.trim();
  const type = rule.type ?? inferRuleType(pattern);
  let inner: Condition;
  switch (type) {
    case 'cidr': {
      const cidr = parseCidrText(pattern);
      if (!cidr) throw new ConfigError(pkey, `${JSON.stringify(rule.pattern)}: not an IP address or CIDR`);
      inner = new CidrCondition(rule.pattern, cidr);
      break;
    }
    case 'exact': {
      const ip = parseCidrText(pattern);
      if (ip && !pattern.includes('/')) {
        inner = new CidrCondition(rule.pattern, ip); // text forms of one address differ; compare bytes
      } else {
        const host = normalizeHost(pattern);
        if (!/^[a-z0-9_.-]+$/.test(host) || host.length > 253) {
          throw new ConfigError(pkey, `${JSON.stringify(rule.pattern)}: not a host name`);
        }
        inner = new ExactCondition(rule.pattern, host);
      }
      break;
    }
    case 'wildcard':
      inner = new WildcardCondition(rule.pattern, wildcardSource(pkey, pattern));
      break;
    default:
      throw new ConfigError(`${key}.type`, `${JSON.stringify(type)}: must be wildcard, exact or cidr`);
  }
  const scheme = rule.scheme === undefined ? undefined : parseScheme(`${key}.scheme`, rule.scheme);
  if (rule.port !== undefined && typeof rule.port !== 'number') throw new ConfigError(`${key}.port`, 'must be a number');
  const port = rule.port === undefined ? undefined : parsePort(`${key}.port`, rule.port);
  return qualify(rule.pattern, inner, scheme, port);
}

/**
 * Builds a bypass entry's condition, in the syntax of Chrome's bypass list:
 * `<local>`, `[SCHEME://]HOST_PATTERN[:PORT]`, `[SCHEME://]IP[:PORT]` (IPv6 in brackets when a
 * port follows), `IP/PREFIX`. Host patterns follow wildcardSource().
 */
export function bypassCondition(entry: string, key: string): Condition {
  if (typeof entry !== 'string') throw new ConfigError(key, 'must be a string');
  let t = entry.trim().toLowerCase();
  if (t === '') throw new ConfigError(key, 'empty entry');
  if (t === '<local>') return new LocalCondition();
  let scheme: string | undefined;
  const sep = t.indexOf('://');
  if (sep >= 0) {
    scheme = parseScheme(key, t.slice(0, sep));
    t = t.slice(sep + 3);
  }
  if (t.includes('/')) {
    const cidr = parseCidrText(t);
    if (!cidr) throw new ConfigError(key, `${JSON.stringify(entry)}: not a CIDR`);
    return qualify(entry, new CidrCondition(entry, cidr), scheme);
  }
  let host = t;
  let port: number | undefined;
  if (t.startsWith('[')) {
    const end = t.indexOf(']');
    if (end < 0) throw new ConfigError(key, `${JSON.stringify(entry)}: missing ']'`);
    host = t.slice(1, end);
    const rest = t.slice(end + 1);
    if (rest !== '') {
      if (!rest.startsWith(':')) throw new ConfigError(key, `${JSON.stringify(entry)}: junk after ']'`);
      port = parsePort(key, rest.slice(1));
    }
    if (!parseIp(host) || !host.includes(':')) throw new ConfigError(key, `${JSON.stringify(entry)}: not an IPv6 address`);
  } else if (!parseIp(t)) {
    const colons = t.split(':').length - 1;
    if (colons > 1) throw new ConfigError(key, `${JSON.stringify(entry)}: put an IPv6 address in brackets`);
    if (colons === 1) {
      const i = t.indexOf(':');
      host = t.slice(0, i);
      port = parsePort(key, t.slice(i + 1));
    }
  }
  return qualify(entry, hostCondition(key, entry, host), scheme, port);
}

// ---- PAC runtime ----

/**
 * ES5 helpers every generated PAC carries. __dsIp mirrors address.ts parseIp step for step
 * (16 numbers, IPv4 as ::ffff:a.b.c.d) so CIDR tests need neither DNS nor isInNet().
 */
export const PAC_RUNTIME = `function __dsV4(t, out, at) {
  var p = t.split(".");
  if (p.length !== 4) return false;
  for (var i = 0; i < 4; i++) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p[i])) return false;
    var n = +p[i];
    if (n > 255) return false;
    out[at + i] = n;
  }
  return true;
}
function __dsGroups(s) {
  return s === "" ? [] : s.split(":");
}
function __dsIp(t) {
  var out = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], i, w;
  if (t.charAt(0) === "[" && t.charAt(t.length - 1) === "]") {
    t = t.substring(1, t.length - 1);
    if (t.indexOf(":") < 0) return null;
  }
  if (t.indexOf(":") < 0) {
    out[10] = 255;
    out[11] = 255;
    return __dsV4(t, out, 12) ? out : null;
  }
  if (t.length > 45 || t.indexOf("%") >= 0) return null;
  var halves = t.split("::");
  if (halves.length > 2) return null;
  var two = halves.length === 2;
  var head = __dsGroups(halves[0]), tail = two ? __dsGroups(halves[1]) : [];
  var all = head.concat(tail);
  var last = all.length > 0 ? all[all.length - 1] : "";
  var v4 = last.indexOf(".") >= 0;
  if (v4 && two && tail.length === 0) return null;
  var count = all.length + (v4 ? 1 : 0);
  if (two ? count > 7 : count !== 8) return null;
  var hg = v4 && tail.length === 0 ? head.slice(0, head.length - 1) : head;
  var tg = v4 && tail.length > 0 ? tail.slice(0, tail.length - 1) : tail;
  var words = hg.concat(tg);
  for (i = 0; i < words.length; i++) {
    if (!/^[0-9a-f]{1,4}$/i.test(words[i])) return null;
    words[i] = parseInt(words[i], 16);
  }
  var gap = 8 - words.length - (v4 ? 2 : 0);
  if (two ? gap < 1 : gap !== 0) return null;
  for (i = 0, w = 0; i < words.length; i++, w++) {
    if (i === hg.length) w += gap;
    out[w * 2] = words[i] >> 8;
    out[w * 2 + 1] = words[i] & 255;
  }
  if (v4 && !__dsV4(last, out, 12)) return null;
  return out;
}
function __dsIn(ip, net, bits) {
  for (var i = 0; i < 16 && bits > 0; i++, bits -= 8) {
    var m = bits >= 8 ? 255 : (255 << (8 - bits)) & 255;
    if ((net[i] & m) !== (ip[i] & m)) return false;
  }
  return true;
}
function __dsPort(url, scheme) {
  var a = /^[^:]*:\\/\\/([^\\/?#]*)/.exec(url);
  var auth = a ? a[1] : "";
  auth = auth.substring(auth.lastIndexOf("@") + 1);
  var p = /^(?:\\[[^\\]]*\\]|[^:\\[\\]]*):([0-9]+)$/.exec(auth);
  if (p) return +p[1];
${[...DEFAULT_PORTS].map(([s, n]) => `  if (scheme === ${JSON.stringify(s)}) return ${n};\n`).join('')}  return 0;
}
`;

/** Start of FindProxyForURL: the PAC side of requestInfo(). */
export const PAC_PRELUDE = `  var h = String(host).toLowerCase();
  if (h.charAt(0) === "[" && h.charAt(h.length - 1) === "]") h = h.substring(1, h.length - 1);
  if (h.length > 1 && h.charAt(h.length - 1) === ".") h = h.substring(0, h.length - 1);
  var ip = __dsIp(h);
  var u = String(url), s = u.indexOf(":");
  var scheme = s > 0 ? u.substring(0, s).toLowerCase() : "";
  var port = __dsPort(u, scheme);
`;
