// The only place in dualsocks that reads or writes SOCKS bytes. Sans-IO: decoders take the bytes
// received so far and answer "need more", a message with its size, or a typed error carrying the
// RFC reply code; encoders build the bytes. Nothing here touches a socket.
import { ERRORS, SocksProtocolError, type DualsocksError, type ErrorCode } from '../errors.js';
import { formatIp, ipFromV4Bytes, isV4, parseIp, type HostPort } from '../net/address.js';
import { ATYP, AUTH_USERPASS_VERSION, CMD, SOCKS4_VERSION, SOCKS5_VERSION } from './constants.js';

export type Decoded<T, E extends DualsocksError = SocksProtocolError> =
  | { readonly status: 'need' }
  | { readonly status: 'ok'; readonly msg: T; readonly size: number }
  | { readonly status: 'error'; readonly error: E };

const NEED = { status: 'need' } as const;
const ok = <T>(msg: T, size: number): Decoded<T> => ({ status: 'ok', msg, size });
const fail = (code: ErrorCode, detail?: string): { status: 'error'; error: SocksProtocolError } => ({
  status: 'error',
  error: new SocksProtocolError(code, detail),
});

export interface Greeting {
  methods: number[];
}
export interface MethodSelection {
  method: number;
}
/** RFC 1929 fields are bytes, not text: two passwords that differ in one byte are different. */
export interface AuthRequest {
  username: Uint8Array;
  password: Uint8Array;
}
export interface AuthReply {
  status: number;
}
/** A destination or bound address. `host` is canonical IP text or a domain name. */
export interface SocksAddress {
  atyp: number;
  host: string;
  port: number;
}
export interface Request extends SocksAddress {
  cmd: number;
}
export interface Reply extends SocksAddress {
  rep: number;
}
export interface UdpHeader extends SocksAddress {
  frag: number;
  /** Offset of the payload in the datagram. */
  dataOffset: number;
}
export interface Socks4Request {
  cmd: number;
  port: number;
  /** Dotted IPv4, or the name for SOCKS4a. */
  host: string;
  socks4a: boolean;
  userId: string;
}
export interface Socks4Reply {
  cd: number;
  port: number;
  host: string;
}

/** Which protocol a mixed port is hearing, from its first byte. */
export function sniffProtocol(firstByte: number): 'socks5' | 'socks4' | 'other' {
  if (firstByte === SOCKS5_VERSION) return 'socks5';
  if (firstByte === SOCKS4_VERSION) return 'socks4';
  return 'other';
}

const MAX_NAME = 255;
const MAX_LABEL = 63;

/**
 * Why a destination name cannot be a host name, or null. Printable ASCII without spaces (names
 * travel into logs, resolvers and HTTP headers), no empty label and none over 63 bytes (RFC 1035
 * §2.3.4), at most 255 bytes. Real names pass: underscores, a final dot, IP text (which is taken
 * as the address). An empty name would reach dns.lookup as "" (DEP0118), "." too.
 */
function nameProblem(bytes: Uint8Array): string | null {
  if (bytes.length === 0) return 'empty name';
  if (bytes.length > MAX_NAME) return `name longer than ${MAX_NAME} bytes`;
  for (const b of bytes) if (b < 0x21 || b > 0x7e) return 'name has bytes outside printable ASCII';
  const text = ascii(bytes);
  if (parseIp(text)) return null;
  const labels = (text.endsWith('.') ? text.slice(0, -1) : text).split('.');
  if (labels.some((l) => l.length === 0)) return 'name has an empty label';
  if (labels.some((l) => l.length > MAX_LABEL)) return `name has a label longer than ${MAX_LABEL} bytes`;
  return null;
}

function ascii(bytes: Uint8Array): string {
  return String.fromCharCode(...bytes);
}

function utf8(bytes: Uint8Array): string {
  return new TextDecoder().decode(bytes);
}

/** ATYP, address and port starting at `off`; `end` is the offset after the port. */
function decodeAddress(buf: Uint8Array, off: number): Decoded<SocksAddress> {
  if (buf.length < off + 1) return NEED;
  const atyp = buf[off]!;
  let host: string;
  let p: number;
  switch (atyp) {
    case ATYP.IPV4:
      if (buf.length < off + 1 + 4 + 2) return NEED;
      host = formatIp(ipFromV4Bytes(buf.subarray(off + 1, off + 5)));
      p = off + 5;
      break;
    case ATYP.IPV6: {
      if (buf.length < off + 1 + 16 + 2) return NEED;
      host = formatIp(buf.slice(off + 1, off + 17));
      p = off + 17;
      break;
    }
    case ATYP.DOMAIN: {
      if (buf.length < off + 2) return NEED;
      const len = buf[off + 1]!;
      if (buf.length < off + 2 + len + 2) return NEED;
      const name = buf.subarray(off + 2, off + 2 + len);
      const problem = nameProblem(name);
      if (problem) return fail('ERR_SOCKS_NAME', problem);
      host = ascii(name);
      p = off + 2 + len;
      break;
    }
    default:
      return fail('ERR_SOCKS_ATYP', `ATYP 0x${atyp.toString(16).padStart(2, '0')}`);
  }
  const port = (buf[p]! << 8) | buf[p + 1]!;
  return ok({ atyp, host, port }, p + 2 - off);
}

function encodeAddress(host: string, port: number): Uint8Array {
  const ip = parseIp(host);
  let out: Uint8Array;
  if (ip && isV4(ip)) {
    out = new Uint8Array(1 + 4 + 2);
    out[0] = ATYP.IPV4;
    out.set(ip.subarray(12), 1);
  } else if (ip) {
    out = new Uint8Array(1 + 16 + 2);
    out[0] = ATYP.IPV6;
    out.set(ip, 1);
  } else {
    const name = new TextEncoder().encode(host);
    const problem = nameProblem(name);
    if (problem) throw new SocksProtocolError('ERR_SOCKS_NAME', `${JSON.stringify(host)}: ${problem}`);
    out = new Uint8Array(2 + name.length + 2);
    out[0] = ATYP.DOMAIN;
    out[1] = name.length;
    out.set(name, 2);
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError(`port out of range: ${port}`);
  out[out.length - 2] = port >> 8;
  out[out.length - 1] = port & 0xff;
  return out;
}

export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

// ---- SOCKS5 greeting and method selection (RFC 1928 §3) ----

export function decodeGreeting(buf: Uint8Array): Decoded<Greeting> {
  if (buf.length < 1) return NEED;
  if (buf[0] !== SOCKS5_VERSION) return fail('ERR_SOCKS_VERSION', `version byte 0x${buf[0]!.toString(16)}`);
  if (buf.length < 2) return NEED;
  const n = buf[1]!;
  if (n === 0) return fail('ERR_SOCKS_METHODS', 'no methods offered');
  if (buf.length < 2 + n) return NEED;
  return ok({ methods: [...buf.subarray(2, 2 + n)] }, 2 + n);
}

export function encodeGreeting(g: Greeting): Uint8Array {
  if (g.methods.length < 1 || g.methods.length > 255) throw new RangeError('1 to 255 methods');
  return Uint8Array.from([SOCKS5_VERSION, g.methods.length, ...g.methods]);
}

export function decodeMethodSelection(buf: Uint8Array): Decoded<MethodSelection> {
  if (buf.length < 1) return NEED;
  if (buf[0] !== SOCKS5_VERSION) return fail('ERR_SOCKS_VERSION', `version byte 0x${buf[0]!.toString(16)}`);
  if (buf.length < 2) return NEED;
  return ok({ method: buf[1]! }, 2);
}

export function encodeMethodSelection(m: MethodSelection): Uint8Array {
  return Uint8Array.from([SOCKS5_VERSION, m.method]);
}

// ---- Username/password (RFC 1929) ----

export function decodeAuthRequest(buf: Uint8Array): Decoded<AuthRequest> {
  if (buf.length < 1) return NEED;
  if (buf[0] !== AUTH_USERPASS_VERSION) return fail('ERR_SOCKS_AUTH_VERSION', `version byte 0x${buf[0]!.toString(16)}`);
  if (buf.length < 2) return NEED;
  const ulen = buf[1]!;
  if (ulen === 0) return fail('ERR_SOCKS_AUTH_MALFORMED', 'empty username');
  if (buf.length < 2 + ulen + 1) return NEED;
  const plen = buf[2 + ulen]!;
  const size = 3 + ulen + plen;
  if (buf.length < size) return NEED;
  // copies: the credentials outlive the receive buffer and must not alias it
  return ok({ username: buf.slice(2, 2 + ulen), password: buf.slice(3 + ulen, size) }, size);
}

/** Text is sent as its UTF-8 bytes; bytes as they are. */
export function encodeAuthRequest(a: { username: string | Uint8Array; password: string | Uint8Array }): Uint8Array {
  const u = typeof a.username === 'string' ? new TextEncoder().encode(a.username) : a.username;
  const p = typeof a.password === 'string' ? new TextEncoder().encode(a.password) : a.password;
  if (u.length < 1 || u.length > 255) throw new RangeError('username must be 1 to 255 bytes');
  if (p.length > 255) throw new RangeError('password must be at most 255 bytes');
  return concatBytes(Uint8Array.of(AUTH_USERPASS_VERSION, u.length), u, Uint8Array.of(p.length), p);
}

export function decodeAuthReply(buf: Uint8Array): Decoded<AuthReply> {
  if (buf.length < 1) return NEED;
  if (buf[0] !== AUTH_USERPASS_VERSION) return fail('ERR_SOCKS_AUTH_VERSION');
  if (buf.length < 2) return NEED;
  return ok({ status: buf[1]! }, 2);
}

export function encodeAuthReply(r: AuthReply): Uint8Array {
  return Uint8Array.of(AUTH_USERPASS_VERSION, r.status);
}

// ---- Request and reply (RFC 1928 §4, §6) ----

export function decodeRequest(buf: Uint8Array): Decoded<Request> {
  if (buf.length < 1) return NEED;
  if (buf[0] !== SOCKS5_VERSION) return fail('ERR_SOCKS_VERSION', `version byte 0x${buf[0]!.toString(16)}`);
  if (buf.length < 2) return NEED;
  const cmd = buf[1]!;
  if (cmd !== CMD.CONNECT && cmd !== CMD.BIND && cmd !== CMD.UDP_ASSOCIATE) {
    return fail('ERR_SOCKS_COMMAND', `command 0x${cmd.toString(16).padStart(2, '0')}`);
  }
  if (buf.length < 3) return NEED;
  const addr = decodeAddress(buf, 3);
  if (addr.status !== 'ok') return addr;
  return ok({ cmd, ...addr.msg }, 3 + addr.size);
}

export function encodeRequest(r: Omit<Request, 'atyp'>): Uint8Array {
  return concatBytes(Uint8Array.of(SOCKS5_VERSION, r.cmd, 0), encodeAddress(r.host, r.port));
}

export function decodeReply(buf: Uint8Array): Decoded<Reply> {
  if (buf.length < 1) return NEED;
  if (buf[0] !== SOCKS5_VERSION) return fail('ERR_SOCKS_VERSION', `version byte 0x${buf[0]!.toString(16)}`);
  if (buf.length < 3) return NEED;
  const rep = buf[1]!;
  const addr = decodeAddress(buf, 3);
  // some servers send a failure with a junk address; the code is what matters, keep it
  // (the size stops at ATYP, so the answer does not depend on how much junk has arrived)
  if (addr.status === 'error' && rep !== 0) return ok({ rep, atyp: buf[3]!, host: '0.0.0.0', port: 0 }, 4);
  if (addr.status !== 'ok') return addr;
  return ok({ rep, ...addr.msg }, 3 + addr.size);
}

/** A reply; failures without a bound address get 0.0.0.0:0 as RFC 1928 permits. */
export function encodeReply(r: { rep: number; host?: string; port?: number }): Uint8Array {
  return concatBytes(Uint8Array.of(SOCKS5_VERSION, r.rep, 0), encodeAddress(r.host ?? '0.0.0.0', r.port ?? 0));
}

/**
 * A failure reply. With `code` (for a client that offered METHOD.ERROR_CODES) BND is that code as
 * ATYP DOMAINNAME, port 0: RFC 1928 clients ignore BND on failure. Without it, 0.0.0.0:0.
 */
export function encodeFailureReply(rep: number, code?: ErrorCode): Uint8Array {
  return encodeReply({ rep, host: code ?? '0.0.0.0', port: 0 });
}

/**
 * The error code a failure reply carries in BND (encodeFailureReply), or null. Only a code
 * dualsocks knows counts: any other name from the server is ignored, never shown as text.
 */
export function failureCode(r: Reply): ErrorCode | null {
  if (r.rep === 0 || r.atyp !== ATYP.DOMAIN || !Object.hasOwn(ERRORS, r.host)) return null;
  return r.host as ErrorCode;
}

// ---- UDP request header (RFC 1928 §7) ----

/** Decodes one whole datagram; a short one is an error, never "need more". */
export function decodeUdpHeader(datagram: Uint8Array): Decoded<UdpHeader> {
  if (datagram.length < 4) return fail('ERR_SOCKS_TRUNCATED', 'UDP header shorter than 4 bytes');
  if (datagram[0] !== 0 || datagram[1] !== 0) return fail('ERR_SOCKS_RESERVED', 'UDP RSV not zero');
  const addr = decodeAddress(datagram, 3);
  if (addr.status === 'need') return fail('ERR_SOCKS_TRUNCATED', 'UDP address truncated');
  if (addr.status === 'error') return addr;
  const dataOffset = 3 + addr.size;
  return ok({ frag: datagram[2]!, ...addr.msg, dataOffset }, datagram.length);
}

export function encodeUdpHeader(h: { host: string; port: number; frag?: number }): Uint8Array {
  return concatBytes(Uint8Array.of(0, 0, h.frag ?? 0), encodeAddress(h.host, h.port));
}

/**
 * UDP through a chain of relays: the headers naming relays 2..n, to go before a datagram meant
 * for the last one (each relay takes one header off and sends the rest to the address it names).
 */
export function encodeUdpLayers(relays: HostPort[]): Uint8Array {
  return concatBytes(...relays.map((r) => encodeUdpHeader(r)));
}

/** A reply that came back through `layers` further relays, without the header each one added. */
export function decodeUdpLayers(datagram: Uint8Array, layers: number): Decoded<Uint8Array> {
  let rest = datagram;
  for (let i = 0; i < layers; i++) {
    const d = decodeUdpHeader(rest);
    if (d.status !== 'ok') return d;
    if (d.msg.frag !== 0) return fail('ERR_SOCKS_RESERVED', 'fragment inside a relay layer');
    rest = rest.subarray(d.msg.dataOffset);
  }
  return ok(rest, datagram.length);
}

// ---- SOCKS4 and SOCKS4a ----

const MAX_SOCKS4_FIELD = 255;

function nulTerminated(buf: Uint8Array, from: number): number | 'need' | 'long' {
  const end = buf.indexOf(0, from);
  if (end >= 0) return end - from > MAX_SOCKS4_FIELD ? 'long' : end;
  return buf.length - from > MAX_SOCKS4_FIELD ? 'long' : 'need';
}

export function decodeSocks4Request(buf: Uint8Array): Decoded<Socks4Request> {
  if (buf.length < 1) return NEED;
  if (buf[0] !== SOCKS4_VERSION) return fail('ERR_SOCKS_VERSION', `version byte 0x${buf[0]!.toString(16)}`);
  if (buf.length < 2) return NEED;
  const cmd = buf[1]!;
  if (cmd !== CMD.CONNECT && cmd !== CMD.BIND) return fail('ERR_SOCKS_COMMAND', `SOCKS4 command 0x${cmd.toString(16)}`);
  if (buf.length < 8) return NEED;
  const port = (buf[2]! << 8) | buf[3]!;
  const uidEnd = nulTerminated(buf, 8);
  if (uidEnd === 'need') return NEED;
  if (uidEnd === 'long') return fail('ERR_SOCKS4_USERID');
  const userId = utf8(buf.subarray(8, uidEnd));
  // 0.0.0.x with x != 0 announces a SOCKS4a name after the user id
  const socks4a = buf[4] === 0 && buf[5] === 0 && buf[6] === 0 && buf[7] !== 0;
  if (!socks4a) {
    const host = formatIp(ipFromV4Bytes(buf.subarray(4, 8)));
    return ok({ cmd, port, host, socks4a, userId }, uidEnd + 1);
  }
  const nameEnd = nulTerminated(buf, uidEnd + 1);
  if (nameEnd === 'need') return NEED;
  if (nameEnd === 'long') return fail('ERR_SOCKS4_USERID', 'SOCKS4a host name longer than 255 bytes');
  const name = buf.subarray(uidEnd + 1, nameEnd);
  const problem = nameProblem(name);
  if (problem) return fail('ERR_SOCKS_NAME', `SOCKS4a host name: ${problem}`);
  return ok({ cmd, port, host: ascii(name), socks4a, userId }, nameEnd + 1);
}

export function encodeSocks4Request(r: Omit<Socks4Request, 'socks4a'>): Uint8Array {
  const ip = parseIp(r.host);
  const user = new TextEncoder().encode(r.userId);
  const head = Uint8Array.of(SOCKS4_VERSION, r.cmd, r.port >> 8, r.port & 0xff, 0, 0, 0, 1);
  if (ip && isV4(ip)) {
    head.set(ip.subarray(12), 4);
    return concatBytes(head, user, Uint8Array.of(0));
  }
  if (ip) throw new SocksProtocolError('ERR_SOCKS_ATYP', 'SOCKS4 cannot carry IPv6');
  return concatBytes(head, user, Uint8Array.of(0), new TextEncoder().encode(r.host), Uint8Array.of(0));
}

export function decodeSocks4Reply(buf: Uint8Array): Decoded<Socks4Reply> {
  if (buf.length < 8) return NEED;
  if (buf[0] !== 0) return fail('ERR_SOCKS_VERSION', 'SOCKS4 reply version not 0');
  return ok({ cd: buf[1]!, port: (buf[2]! << 8) | buf[3]!, host: formatIp(ipFromV4Bytes(buf.subarray(4, 8))) }, 8);
}

export function encodeSocks4Reply(r: { cd: number; port?: number; host?: string }): Uint8Array {
  const out = new Uint8Array(8);
  out[1] = r.cd;
  const port = r.port ?? 0;
  out[2] = port >> 8;
  out[3] = port & 0xff;
  const ip = r.host ? parseIp(r.host) : null;
  if (ip && isV4(ip)) out.set(ip.subarray(12), 4);
  return out;
}
