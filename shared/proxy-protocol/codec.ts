// The PROXY protocol header a TCP balancer (HAProxy `send-proxy`, `send-proxy-v2`) puts in front
// of a connection to name the client it relays, version 1 (one text line) and version 2
// (binary), as HAProxy's doc/proxy-protocol.txt specifies them. Sans-IO in the manner of
// shared/socks5/codec.ts: the decoder takes the bytes received so far and answers "need more",
// the header with its size (what follows is the next protocol's), or a typed error. Every check
// looks only at bytes already there, in the order they arrive, so any split of the input gives
// the one-piece answer and a bad header is refused as soon as its first wrong byte is in.
import { ProxyProtocolError, type ErrorCode } from '../errors.js';
import { formatIp, ipFromV4Bytes, isV4, parseIp, type HostPort } from '../net/address.js';
import { concatBytes, type Decoded } from '../socks5/codec.js';

export interface ProxyHeader {
  version: 1 | 2;
  /** v2's command; v1 is always PROXY. */
  command: 'local' | 'proxy';
  /**
   * The client and the address it reached, or null when the header names none: a LOCAL command
   * (a health check), v1 UNKNOWN, or a v2 family other than TCP over IPv4/IPv6. Then the
   * connection's own endpoints stand, as the specification says.
   */
  source: HostPort | null;
  destination: HostPort | null;
}

export type ProxyDecoded = Decoded<ProxyHeader, ProxyProtocolError>;

/** The v2 signature: 12 bytes no other protocol starts with. */
export const V2_SIGNATURE = Uint8Array.of(0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a);
const V1_PREFIX = Uint8Array.from('PROXY ', (c) => c.charCodeAt(0));
/** The longest v1 line, CRLF included ("PROXY UNKNOWN" with two full IPv6 addresses and ports). */
export const V1_MAX_LINE = 107;
const V2_FIXED = 16;
const V2_VERSION = 2;
const CMD_LOCAL = 0;
const CMD_PROXY = 1;
const TLV_HEADER = 3;
/** The family/protocol byte → its address block's length; any other byte is refused. */
const V2_ADDRESS_LENGTH: Record<number, number> = {
  0x00: 0, // UNSPEC
  0x11: 12, // TCP over IPv4
  0x12: 12, // UDP over IPv4
  0x21: 36, // TCP over IPv6
  0x22: 36, // UDP over IPv6
  0x31: 216, // UNIX stream
  0x32: 216, // UNIX datagram
};
const FAM_TCP4 = 0x11;
const FAM_TCP6 = 0x21;
const CR = 0x0d;
const LF = 0x0a;
const PRINTABLE_MIN = 0x20;
const PRINTABLE_MAX = 0x7e;

const NEED = { status: 'need' } as const;
const fail = (code: ErrorCode, detail: string): ProxyDecoded => ({ status: 'error', error: new ProxyProtocolError(code, detail) });
const ok = (msg: ProxyHeader, size: number): ProxyDecoded => ({ status: 'ok', msg, size });

/** Index of the first byte where `buf` and `want` differ (within both), or -1. */
function mismatch(buf: Uint8Array, want: Uint8Array): number {
  const n = Math.min(buf.length, want.length);
  for (let i = 0; i < n; i++) if (buf[i] !== want[i]) return i;
  return -1;
}

/** A PROXY protocol header of either version at the start of `buf`. */
export function decodeProxyHeader(buf: Uint8Array): ProxyDecoded {
  if (buf.length === 0) return NEED;
  if (buf[0] === V2_SIGNATURE[0]) return decodeV2(buf);
  if (buf[0] === V1_PREFIX[0]) return decodeV1(buf);
  return fail('ERR_PROXY_MISSING', `first byte 0x${buf[0]!.toString(16).padStart(2, '0')}`);
}

// ---- version 1 ----

function decodeV1(buf: Uint8Array): ProxyDecoded {
  if (mismatch(buf, V1_PREFIX) >= 0) return fail('ERR_PROXY_MISSING', 'neither a v1 "PROXY " line nor the v2 signature');
  const scan = Math.min(buf.length, V1_MAX_LINE);
  for (let i = V1_PREFIX.length; i < scan; i++) {
    const b = buf[i]!;
    if (b === LF) return fail('ERR_PROXY_MALFORMED', 'v1 line ends in LF without CR');
    if (b === CR) {
      if (i + 2 > V1_MAX_LINE) break;
      if (i + 1 >= buf.length) return NEED;
      if (buf[i + 1] !== LF) return fail('ERR_PROXY_MALFORMED', 'v1 line has a CR without LF');
      return parseV1Line(String.fromCharCode(...buf.subarray(0, i)), i + 2);
    }
    if (b < PRINTABLE_MIN || b > PRINTABLE_MAX) return fail('ERR_PROXY_MALFORMED', 'v1 line has a byte outside printable ASCII');
  }
  if (buf.length < V1_MAX_LINE && scan === buf.length) return NEED;
  return fail('ERR_PROXY_MALFORMED', `no CRLF within the first ${V1_MAX_LINE} bytes of the v1 line`);
}

const V4_TEXT = /^(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}$/;
const V6_TEXT = /^[0-9A-Fa-f:.]+$/;
const PORT_TEXT = /^(?:0|[1-9][0-9]{0,4})$/;
const MAX_PORT = 65535;

/** "PROXY TCP4|TCP6 SRC DST SPORT DPORT", or "PROXY UNKNOWN" with anything after it. */
function parseV1Line(line: string, size: number): ProxyDecoded {
  const fields = line.split(' ');
  const proto = fields[1];
  if (proto === 'UNKNOWN') return ok({ version: 1, command: 'proxy', source: null, destination: null }, size);
  if (proto !== 'TCP4' && proto !== 'TCP6') return fail('ERR_PROXY_MALFORMED', `v1 protocol ${JSON.stringify(proto)} (TCP4, TCP6 or UNKNOWN)`);
  if (fields.length !== 6) return fail('ERR_PROXY_MALFORMED', `v1 ${proto} line has ${fields.length - 2} fields, not 4 (one space between each)`);
  const [src, dst, sport, dport] = fields.slice(2) as [string, string, string, string];
  const source = v1Endpoint(proto, src, sport);
  const destination = v1Endpoint(proto, dst, dport);
  if (typeof source === 'string') return fail('ERR_PROXY_MALFORMED', source);
  if (typeof destination === 'string') return fail('ERR_PROXY_MALFORMED', destination);
  return ok({ version: 1, command: 'proxy', source, destination }, size);
}

/** The address and port in the family `proto` names, or why not. */
function v1Endpoint(proto: 'TCP4' | 'TCP6', address: string, portText: string): HostPort | string {
  const ip = (proto === 'TCP4' ? V4_TEXT : V6_TEXT).test(address) ? parseIp(address) : null;
  // a TCP6 address must be IPv6 text (a v4-mapped one is, and stands for the IPv4 client)
  if (!ip || (proto === 'TCP6' && !address.includes(':'))) return `v1 ${proto} address ${JSON.stringify(address)}`;
  if (!PORT_TEXT.test(portText) || Number(portText) > MAX_PORT) return `v1 port ${JSON.stringify(portText)}`;
  return { host: formatIp(ip), port: Number(portText) };
}

// ---- version 2 ----

function decodeV2(buf: Uint8Array): ProxyDecoded {
  if (mismatch(buf, V2_SIGNATURE) >= 0) return fail('ERR_PROXY_MISSING', 'neither the v2 signature nor a v1 "PROXY " line');
  if (buf.length <= V2_SIGNATURE.length) return NEED;
  const verCmd = buf[12]!;
  if (verCmd >> 4 !== V2_VERSION) return fail('ERR_PROXY_MALFORMED', `v2 version ${verCmd >> 4}`);
  const cmd = verCmd & 0x0f;
  if (cmd !== CMD_LOCAL && cmd !== CMD_PROXY) return fail('ERR_PROXY_MALFORMED', `v2 command ${cmd} (0 LOCAL or 1 PROXY)`);
  if (buf.length < 14) return NEED;
  const fam = buf[13]!;
  const addressLength = V2_ADDRESS_LENGTH[fam];
  if (addressLength === undefined) return fail('ERR_PROXY_MALFORMED', `v2 family/protocol 0x${fam.toString(16).padStart(2, '0')}`);
  if (buf.length < V2_FIXED) return NEED;
  const len = (buf[14]! << 8) | buf[15]!;
  if (len < addressLength) return fail('ERR_PROXY_MALFORMED', `v2 length ${len} is shorter than the ${addressLength}-byte address block of family 0x${fam.toString(16)}`);
  const size = V2_FIXED + len;
  if (buf.length < size) return NEED;
  const tlvProblem = checkTlvs(buf.subarray(V2_FIXED + addressLength, size));
  if (tlvProblem) return fail('ERR_PROXY_MALFORMED', tlvProblem);
  const header: ProxyHeader = { version: 2, command: cmd === CMD_LOCAL ? 'local' : 'proxy', source: null, destination: null };
  // LOCAL: the balancer speaks for itself; other families than TCP fall back to the real endpoints
  if (cmd === CMD_PROXY && (fam === FAM_TCP4 || fam === FAM_TCP6)) Object.assign(header, v2Endpoints(buf.subarray(V2_FIXED), fam === FAM_TCP4 ? 4 : 16));
  return ok(header, size);
}

function v2Endpoints(block: Uint8Array, width: 4 | 16): Pick<ProxyHeader, 'source' | 'destination'> {
  const ip = (at: number): string => formatIp(width === 4 ? ipFromV4Bytes(block.subarray(at, at + 4)) : block.slice(at, at + 16));
  const port = (at: number): number => (block[at]! << 8) | block[at + 1]!;
  return {
    source: { host: ip(0), port: port(2 * width) },
    destination: { host: ip(width), port: port(2 * width + 2) },
  };
}

/** Why the TLVs after the address block do not fill it exactly, or null. Their contents are not used. */
function checkTlvs(tlvs: Uint8Array): string | null {
  let off = 0;
  while (off < tlvs.length) {
    if (off + TLV_HEADER > tlvs.length) return `v2 TLV header truncated (${tlvs.length - off} bytes left)`;
    const type = tlvs[off]!;
    off += TLV_HEADER + ((tlvs[off + 1]! << 8) | tlvs[off + 2]!);
    if (off > tlvs.length) return `v2 TLV 0x${type.toString(16).padStart(2, '0')} runs past the header`;
  }
  return null;
}

// ---- encoders (what HAProxy sends; the tests build their input with these) ----

/** A v1 line; null endpoints give "PROXY UNKNOWN". Both endpoints must be the same family. */
export function encodeProxyV1(source: HostPort | null, destination: HostPort | null): Uint8Array {
  const text = source && destination
    ? `PROXY ${source.host.includes(':') ? 'TCP6' : 'TCP4'} ${source.host} ${destination.host} ${source.port} ${destination.port}\r\n`
    : 'PROXY UNKNOWN\r\n';
  return Uint8Array.from(text, (c) => c.charCodeAt(0));
}

export interface V2Options {
  command: 'local' | 'proxy';
  source?: HostPort | null;
  destination?: HostPort | null;
  tlvs?: { type: number; value: Uint8Array }[];
}

/** A v2 header; without endpoints the family is UNSPEC. */
export function encodeProxyV2(o: V2Options): Uint8Array {
  let fam = 0x00;
  let block: Uint8Array = new Uint8Array(0);
  if (o.source && o.destination) {
    const src = parseIp(o.source.host)!;
    const dst = parseIp(o.destination.host)!;
    const v4 = isV4(src);
    fam = v4 ? FAM_TCP4 : FAM_TCP6;
    const ports = Uint8Array.of(o.source.port >> 8, o.source.port & 0xff, o.destination.port >> 8, o.destination.port & 0xff);
    block = v4 ? concatBytes(src.subarray(12), dst.subarray(12), ports) : concatBytes(src, dst, ports);
  }
  const tlvs = (o.tlvs ?? []).map((t) => concatBytes(Uint8Array.of(t.type, t.value.length >> 8, t.value.length & 0xff), t.value));
  const body = concatBytes(block, ...tlvs);
  const head = Uint8Array.of((V2_VERSION << 4) | (o.command === 'local' ? CMD_LOCAL : CMD_PROXY), fam, body.length >> 8, body.length & 0xff);
  return concatBytes(V2_SIGNATURE, head, body);
}

/** Whether `buf` starts like a PROXY header (all of the v1 prefix or of the v2 signature is there). */
export function startsLikeProxyHeader(buf: Uint8Array): boolean {
  return (buf.length >= V1_PREFIX.length && mismatch(buf, V1_PREFIX) < 0) || (buf.length >= V2_SIGNATURE.length && mismatch(buf, V2_SIGNATURE) < 0);
}
