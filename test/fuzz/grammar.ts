// fast-check arbitraries for the wire formats dualsocks reads, built from their grammars (RFC 1928
// greeting/request/reply/UDP header, RFC 1929, SOCKS4/4a, HTTP request heads, FTP commands):
// valid messages come from the project's own encoders, then mutations (bit flips, truncations,
// splices, length-field lies) turn them into the inputs a hostile or broken peer sends.
import fc from 'fast-check';
import {
  concatBytes,
  encodeAuthReply,
  encodeGreeting,
  encodeMethodSelection,
  encodeReply,
  encodeRequest,
  encodeSocks4Reply,
  encodeSocks4Request,
  encodeUdpHeader,
} from '../../shared/socks5/codec.js';
import { ERRORS } from '../../shared/errors.js';
import { formatIp, ipFromV4Bytes } from '../../shared/net/address.js';
import { encodeProxyV1, encodeProxyV2, V1_MAX_LINE } from '../../shared/proxy-protocol/codec.js';
import { ATYP, CMD, METHOD } from '../../shared/socks5/constants.js';

/** A message and the offsets of its length fields (the bytes a "length lie" rewrites). */
export interface Msg {
  bytes: Uint8Array;
  lens: number[];
}

const u8 = fc.integer({ min: 0, max: 255 });
const port = fc.oneof(fc.integer({ min: 0, max: 65535 }), fc.constantFrom(0, 1, 80, 443, 65535));

/** Printable ASCII without space, the bytes a DOMAINNAME may hold. */
const nameBytes = (max: number): fc.Arbitrary<Uint8Array> =>
  fc.uint8Array({ minLength: 1, maxLength: max }).map((b) => b.map((x) => 0x21 + (x % 94)));
const asciiText = (b: Uint8Array): string => String.fromCharCode(...b);

/** A name the codec takes (RFC 1035 shape: labels of 1-63 printable bytes, 255 in all); mutations make the others. */
const hostName: fc.Arbitrary<string> = fc
  .array(nameBytes(63).map((b) => asciiText(b.map((x) => (x === 0x2e ? 0x5f : x)))), { minLength: 1, maxLength: 8 })
  .map((labels) => labels.join('.').slice(0, 255).replace(/\.$/, ''))
  .filter((s) => s.length > 0 && !/^[\d.:]+$/.test(s));

/** Hosts as the live tests want them: names the gateway knows or does not, and loopback literals. */
export interface HostSet {
  names: string[];
  ips: string[];
  /** Ports where something listens (origin, sink, echo), so valid requests get somewhere. */
  ports?: number[];
}

const portFor = (known?: HostSet): fc.Arbitrary<number> =>
  known?.ports?.length ? fc.oneof({ weight: 1, arbitrary: port }, { weight: 2, arbitrary: fc.constantFrom(...known.ports) }) : port;

export const host = (known?: HostSet): fc.Arbitrary<string> =>
  fc.oneof(
    { weight: 2, arbitrary: fc.uint8Array({ minLength: 4, maxLength: 4 }).map((b) => formatIp(ipFromV4Bytes(b))) },
    { weight: 1, arbitrary: fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => formatIp(b)) },
    { weight: 2, arbitrary: hostName },
    ...(known ? [{ weight: 6, arbitrary: fc.constantFrom(...known.names, ...known.ips) }] : []),
  );

export const greeting = (): fc.Arbitrary<Msg> =>
  fc
    .array(fc.oneof(fc.constantFrom(METHOD.NO_AUTH, METHOD.GSSAPI, METHOD.USERPASS, METHOD.ERROR_CODES, METHOD.NO_ACCEPTABLE), u8), { minLength: 1, maxLength: 255 })
    .map((methods) => ({ bytes: encodeGreeting({ methods }), lens: [1] }));

/** RFC 1929 request, built from bytes (a password is bytes, not text). */
export const authRequest = (creds?: { user: string; password: string }[]): fc.Arbitrary<Msg> =>
  fc
    .oneof(
      fc.tuple(fc.uint8Array({ minLength: 1, maxLength: 255 }), fc.uint8Array({ minLength: 0, maxLength: 255 })),
      ...(creds && creds.length > 0 ? [fc.constantFrom(...creds.map((c) => [Buffer.from(c.user), Buffer.from(c.password)] as [Uint8Array, Uint8Array]))] : []),
    )
    .map(([u, p]) => ({ bytes: concatBytes(Uint8Array.of(1, u.length), u, Uint8Array.of(p.length), p), lens: [1, 2 + u.length] }));

const cmd = fc.oneof({ weight: 4, arbitrary: fc.constant(CMD.CONNECT) }, { weight: 1, arbitrary: fc.constantFrom(CMD.BIND, CMD.UDP_ASSOCIATE) }, { weight: 1, arbitrary: u8 });

/** Offset of the DOMAINNAME length byte in a request/reply/UDP header whose address starts at `atypAt`. */
const nameLens = (b: Uint8Array, atypAt: number): number[] => (b[atypAt] === ATYP.DOMAIN ? [atypAt + 1] : []);

export const request = (known?: HostSet, cmds: fc.Arbitrary<number> = cmd): fc.Arbitrary<Msg> =>
  fc.tuple(cmds, host(known), portFor(known)).map(([c, h, p]) => {
    const valid = encodeRequest({ cmd: c === CMD.CONNECT || c === CMD.BIND || c === CMD.UDP_ASSOCIATE ? c : CMD.CONNECT, host: h, port: p });
    valid[1] = c;
    return { bytes: valid, lens: nameLens(valid, 3) };
  });

// a dualsocks server's error code in BND (METHOD.ERROR_CODES), and names that only look like one
const errorName = fc.constantFrom(...Object.keys(ERRORS), 'ERR_NOT_A_CODE', 'err_name_not_found', 'constructor', '__proto__');

export const reply = (): fc.Arbitrary<Msg> =>
  fc.tuple(fc.oneof(fc.integer({ min: 0, max: 8 }), u8), fc.oneof({ weight: 3, arbitrary: host() }, { weight: 1, arbitrary: errorName }), port).map(([rep, h, p]) => {
    const b = encodeReply({ rep, host: h, port: p });
    return { bytes: b, lens: nameLens(b, 3) };
  });

export const methodSelection = (): fc.Arbitrary<Msg> =>
  fc.constantFrom(METHOD.NO_AUTH, METHOD.USERPASS, METHOD.GSSAPI, METHOD.NO_ACCEPTABLE).map((method) => ({ bytes: encodeMethodSelection({ method }), lens: [] }));

export const authReply = (): fc.Arbitrary<Msg> => fc.constantFrom(0, 1, 0xff).map((status) => ({ bytes: encodeAuthReply({ status }), lens: [] }));

export const udpDatagram = (known?: HostSet): fc.Arbitrary<Msg> =>
  fc.tuple(host(known), portFor(known), fc.oneof({ weight: 5, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: u8 }), fc.uint8Array({ maxLength: 64 })).map(([h, p, frag, payload]) => {
    const head = encodeUdpHeader({ host: h, port: p, frag });
    return { bytes: concatBytes(head, payload), lens: nameLens(head, 3) };
  });

export const socks4Request = (known?: HostSet): fc.Arbitrary<Msg> =>
  fc
    .tuple(
      fc.constantFrom(CMD.CONNECT, CMD.BIND, 3),
      fc.oneof(fc.uint8Array({ minLength: 4, maxLength: 4 }).map((b) => formatIp(ipFromV4Bytes(b))), hostName.filter((s) => !s.includes(":")), ...(known ? [fc.constantFrom(...known.names, ...known.ips.filter((i) => !i.includes(':')))] : [])),
      portFor(known),
      fc.uint8Array({ maxLength: 40 }).map((b) => b.map((x) => (x === 0 ? 0x41 : x))),
    )
    .map(([c, h, p, user]) => {
      const b = encodeSocks4Request({ cmd: c === 3 ? CMD.CONNECT : c, host: h, port: p, userId: Buffer.from(user).toString('latin1') });
      b[1] = c;
      return { bytes: b, lens: [] };
    });

export const socks4Reply = (): fc.Arbitrary<Msg> =>
  fc.tuple(fc.constantFrom(0x5a, 0x5b, 0x5c, 0x5d), port, fc.uint8Array({ minLength: 4, maxLength: 4 })).map(([cd, p, ip]) => ({
    bytes: encodeSocks4Reply({ cd, port: p, host: formatIp(ipFromV4Bytes(ip)) }),
    lens: [],
  }));

const token = fc.constantFrom('GET', 'CONNECT', 'HEAD', 'POST', 'OPTIONS', 'PUT', 'get', 'X');
const headerName = fc.constantFrom('Host', 'Proxy-Connection', 'Connection', 'Content-Length', 'Transfer-Encoding', 'Proxy-Authorization', 'Upgrade', 'X-A', 'Expect');
const headerValue = fc.oneof(fc.constantFrom('close', 'keep-alive', '0', '5', 'chunked', 'web.test', ''), fc.string({ maxLength: 40 }));

/** An HTTP/1.x request head (RFC 9112) as a proxy client sends it, with a little body sometimes. */
export const httpHead = (known?: HostSet, proxyPort = 1080): fc.Arbitrary<Msg> =>
  fc
    .tuple(
      token,
      host(known),
      portFor(known),
      fc.constantFrom('absolute', 'authority', 'origin', 'pages'),
      fc.constantFrom('HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'HTTP/1.1 x'),
      fc.array(fc.tuple(headerName, headerValue), { maxLength: 6 }),
      fc.uint8Array({ maxLength: 16 }),
    )
    .map(([m, h, p, form, version, headers, body]) => {
      const authority = h.includes(':') ? `[${h}]:${p}` : `${h}:${p}`;
      const target =
        form === 'absolute' ? `http://${authority}/x?y` : form === 'authority' ? authority : form === 'pages' ? ['/proxy.pac', '/api/status', '/wpad.dat', '/'][p % 4]! : `/p${p}`;
      const method = form === 'authority' ? 'CONNECT' : m;
      const lines = [`${method} ${target} ${version}`, `Host: ${form === 'pages' ? `127.0.0.1:${proxyPort}` : authority}`, ...headers.map(([k, v]) => `${k}: ${v}`)];
      return { bytes: concatBytes(new TextEncoder().encode(`${lines.join('\r\n')}\r\n\r\n`), body), lens: [] };
    });

/** FTP control lines from a client (RFC 959, RFC 2428) and replies from a server. */
export const ftpClientLine = (): fc.Arbitrary<string> =>
  fc.oneof(
    fc.tuple(fc.constantFrom('PASV', 'EPSV', 'PORT', 'EPRT', 'LPRT', 'USER', 'RETR', 'epsv', 'EPSV ALL'), fc.oneof(
      fc.tuple(u8, u8, u8, u8, u8, u8).map((n) => n.join(',')),
      fc.tuple(fc.constantFrom('|', '!', ' ', ''), fc.constantFrom('1', '2', '3', 'x', ''), fc.constantFrom('127.0.0.1', '::1', '2001:db8::1', '1.2.3', ''), fc.integer({ min: -1, max: 70000 })).map(([d, af, a, p]) => `${d}${af}${d}${a}${d}${p}${d}`),
      fc.constantFrom('', '1', '2', 'ALL', 'x'),
      fc.string({ maxLength: 30 }),
    )).map(([v, a]) => `${v} ${a}`),
    fc.string({ maxLength: 60 }),
  );

export const ftpServerLine = (): fc.Arbitrary<string> =>
  fc.oneof(
    fc.tuple(fc.constantFrom('227', '229', '200', '150', '226', '421', '500', '220', '230'), fc.constantFrom(' ', '-', ''), fc.oneof(
      fc.tuple(u8, u8, u8, u8, u8, u8).map((n) => `Entering Passive Mode (${n.join(',')})`),
      fc.tuple(fc.constantFrom('|', '!'), fc.integer({ min: 0, max: 70000 })).map(([d, p]) => `Entering Extended Passive Mode (${d}${d}${d}${p}${d})`),
      fc.string({ maxLength: 30 }),
    )).map(([c, s, t]) => `${c}${s}${t}`),
    fc.string({ maxLength: 60 }),
  );

// ---- mutations ----

type Mutation =
  | { kind: 'flip'; at: number; bit: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'splice'; at: number; insert: Uint8Array }
  | { kind: 'cut'; at: number; n: number }
  | { kind: 'lie'; which: number; value: number }
  | { kind: 'set'; at: number; value: number };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('splice' as const), at: fc.nat(), insert: fc.uint8Array({ minLength: 1, maxLength: 32 }) }),
  fc.record({ kind: fc.constant('cut' as const), at: fc.nat(), n: fc.integer({ min: 1, max: 16 }) }),
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('lie' as const), which: fc.nat(), value: fc.oneof(u8, fc.constantFrom(0, 1, 255)) }) },
  fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.oneof(u8, fc.constantFrom(0, 1, 2, 3, 4, 5, 255)) }),
);

export function mutate(m: Msg, muts: Mutation[]): Uint8Array {
  let b: Uint8Array = Uint8Array.from(m.bytes);
  for (const x of muts) {
    const at = b.length === 0 ? 0 : x.kind === 'splice' ? x.at % (b.length + 1) : 'at' in x ? x.at % b.length : 0;
    switch (x.kind) {
      case 'flip':
        if (b.length > 0) b[at] = b[at]! ^ (1 << x.bit);
        break;
      case 'truncate':
        b = b.subarray(0, at);
        break;
      case 'splice':
        b = concatBytes(b.subarray(0, at), x.insert, b.subarray(at));
        break;
      case 'cut':
        b = concatBytes(b.subarray(0, at), b.subarray(at + x.n));
        break;
      case 'lie': {
        const off = m.lens.length > 0 ? m.lens[x.which % m.lens.length]! : 1;
        if (off < b.length) b[off] = x.value;
        break;
      }
      case 'set':
        // the first bytes are where versions, commands and types live
        if (b.length > 0) b[x.at % Math.min(b.length, 8)] = x.value;
        break;
    }
  }
  return b;
}

/** Valid messages half the time, mutated ones otherwise, and some pure noise. */
export function hostile(valid: fc.Arbitrary<Msg>): fc.Arbitrary<Uint8Array> {
  return fc.oneof(
    { weight: 3, arbitrary: valid.map((m) => m.bytes) },
    { weight: 5, arbitrary: fc.tuple(valid, fc.array(mutation, { minLength: 1, maxLength: 3 })).map(([m, muts]) => mutate(m, muts)) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }) },
  );
}

/** Several messages one after another (a pipelining client), the whole then mutated. */
export function sequence(parts: fc.Arbitrary<Msg>[]): fc.Arbitrary<Msg> {
  return fc.tuple(...parts).map((ms) => {
    let off = 0;
    const lens: number[] = [];
    for (const m of ms) {
      lens.push(...m.lens.map((l) => l + off));
      off += m.bytes.length;
    }
    return { bytes: concatBytes(...ms.map((m) => m.bytes)), lens };
  });
}

/** Cut points for splitting an input of unknown length into chunks. */
export const cuts = fc.array(fc.nat(), { maxLength: 6 });

export function split(b: Uint8Array, at: number[]): Uint8Array[] {
  if (b.length === 0) return [b];
  const points = [...new Set(at.map((a) => a % (b.length + 1)))].sort((x, y) => x - y);
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const p of points) {
    out.push(b.subarray(prev, p));
    prev = p;
  }
  out.push(b.subarray(prev));
  return out;
}

// ---- PROXY protocol headers (HAProxy's doc/proxy-protocol.txt) ----

const ppPort = fc.integer({ min: 0, max: 65535 });
const ppV4 = fc.uint8Array({ minLength: 4, maxLength: 4 }).map((b) => formatIp(ipFromV4Bytes(b)));
// not v4-mapped: those are written back as IPv4 text
const ppV6 = fc
  .uint8Array({ minLength: 16, maxLength: 16 })
  .filter((b) => !(b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff))
  .map((b) => formatIp(b));
const ppEndpoints = fc
  .oneof(fc.tuple(ppV4, ppV4, ppPort, ppPort), fc.tuple(ppV6, ppV6, ppPort, ppPort))
  .map(([s, d, sp, dp]) => ({ source: { host: s, port: sp }, destination: { host: d, port: dp } }));

/** v1 lines: TCP4, TCP6, UNKNOWN alone and UNKNOWN with anything printable up to the 107-byte limit. */
export function proxyV1(): fc.Arbitrary<Msg> {
  return fc
    .oneof(
      ppEndpoints.map((e) => encodeProxyV1(e.source, e.destination)),
      fc.constant(encodeProxyV1(null, null)),
      fc.uint8Array({ maxLength: V1_MAX_LINE - 16 }).map((b) => concatBytes(Uint8Array.from('PROXY UNKNOWN ', (c) => c.charCodeAt(0)), b.map((x) => 0x20 + (x % 95)), Uint8Array.of(13, 10))),
    )
    .map((bytes) => ({ bytes, lens: [] }));
}

/** v2 headers: LOCAL or PROXY, UNSPEC, TCP over IPv4 or IPv6, any TLVs; the lengths (header's, TLVs') are what a liar changes. */
export function proxyV2(): fc.Arbitrary<Msg> {
  const tlv = fc.record({ type: u8, value: fc.uint8Array({ maxLength: 40 }) });
  return fc
    .record({ command: fc.constantFrom('local' as const, 'proxy' as const), ends: fc.option(ppEndpoints, { nil: undefined }), tlvs: fc.array(tlv, { maxLength: 4 }) })
    .map(({ command, ends, tlvs }) => {
      const bytes = encodeProxyV2({ command, source: ends?.source, destination: ends?.destination, tlvs });
      const lens = [12, 13, 14, 15];
      let off = 16 + (ends ? (ends.source.host.includes(':') ? 36 : 12) : 0);
      for (const t of tlvs) {
        lens.push(off + 1, off + 2);
        off += 3 + t.value.length;
      }
      return { bytes, lens };
    });
}

export const proxyHeader = (): fc.Arbitrary<Msg> => fc.oneof(proxyV1(), proxyV2());
