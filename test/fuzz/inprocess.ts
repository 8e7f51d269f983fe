// The in-process half of the fuzz harness: every sans-IO parser and session machine, fed
// generated and mutated inputs. Properties: nothing throws; a decoder answers need/ok/error and
// nothing else; and a stream read in any chunks gives what it gives in one piece.
import fc from 'fast-check';
import { DualsocksError, ERRORS } from '../../shared/errors.js';
import { parseCidr, parseIp, splitHostPort } from '../../shared/net/address.js';
import {
  concatBytes,
  decodeAuthReply,
  decodeAuthRequest,
  decodeGreeting,
  decodeMethodSelection,
  decodeReply,
  decodeRequest,
  decodeSocks4Reply,
  decodeSocks4Request,
  decodeUdpHeader,
  decodeUdpLayers,
  type Decoded,
} from '../../shared/socks5/codec.js';
import { decodeProxyHeader } from '../../shared/proxy-protocol/codec.js';
import { Socks5ClientSession, type ClientCommand } from '../../shared/socks5/client.js';
import { CMD } from '../../shared/socks5/constants.js';
import { Socks5ServerSession, type ServerCommand } from '../../shared/socks5/server.js';
import { RequestError } from '../../shared/errors.js';
import { FtpTranslator, LineReader, parse229, parseEprt, parseHostPortCommas, type FtpAction } from '../../bridge/gateway/ftp-translate.js';
import { parseAbsoluteUri, parseAuthority } from '../../bridge/local/http.js';
import * as g from './grammar.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** Throws unless `d` is one of the three answers, well formed for an input of `len` bytes. */
export function checkDecoded(d: Decoded<unknown>, len: number): void {
  if (d === null || typeof d !== 'object') throw new Error(`decoder returned ${String(d)}`);
  switch (d.status) {
    case 'need':
      return;
    case 'ok':
      if (!Number.isInteger(d.size) || d.size < 1 || d.size > len) throw new Error(`ok with size ${d.size} for ${len} bytes`);
      return;
    case 'error':
      if (!(d.error instanceof DualsocksError) || !(d.error.code in ERRORS)) throw new Error(`error without a known code: ${String(d.error)}`);
      return;
    default:
      throw new Error(`decoder status ${JSON.stringify((d as { status: unknown }).status)}`);
  }
}

const summary = (d: Decoded<unknown>): string =>
  d.status === 'ok' ? `ok ${d.size} ${JSON.stringify(d.msg)}` : d.status === 'error' ? `error ${d.error.code}` : 'need';

/** Decodes the growing buffer after each chunk, as a stream reader does; stops at the first answer. */
export function decodeChunks<T>(decode: (b: Uint8Array) => Decoded<T>, chunks: Uint8Array[]): Decoded<T> {
  let buf: Uint8Array = new Uint8Array(0);
  let d: Decoded<T> = { status: 'need' };
  for (const c of chunks) {
    buf = concatBytes(buf, c);
    d = decode(buf);
    checkDecoded(d, buf.length);
    if (d.status !== 'need') break;
  }
  return d;
}

/** The split property of a stream decoder: any chunking gives the one-piece answer. */
export function streamDecoderProperty<T>(decode: (b: Uint8Array) => Decoded<T>, input: fc.Arbitrary<Uint8Array>): fc.IPropertyWithHooks<[Uint8Array, number[]]> {
  return fc.property(input, g.cuts, (b, at) => {
    const whole = decode(b);
    checkDecoded(whole, b.length);
    const chunked = decodeChunks(decode, g.split(b, at));
    if (summary(chunked) !== summary(whole)) throw new Error(`split ${JSON.stringify(at)}: ${summary(chunked)} vs whole: ${summary(whole)}`);
  });
}

/** A valid message decodes whole, to its full length. */
function roundTrip<T>(decode: (b: Uint8Array) => Decoded<T>, valid: fc.Arbitrary<g.Msg>, accept: (b: Uint8Array) => boolean = () => true): fc.IPropertyWithHooks<[g.Msg]> {
  return fc.property(valid, (m) => {
    if (!accept(m.bytes)) return;
    const d = decode(m.bytes);
    if (d.status !== 'ok' || d.size !== m.bytes.length) throw new Error(`valid ${hex(m.bytes)} decoded as ${summary(d)}`);
  });
}

// ---- session machines ----

/** Events with adjacent sends (and adjacent relay data) merged: what the peer sees does not depend on write boundaries. */
function pushEvent(events: string[], e: string): void {
  const last = events[events.length - 1];
  for (const kind of ['send ', 'data ']) {
    if (e.startsWith(kind) && last?.startsWith(kind)) {
      events[events.length - 1] = last + e.slice(kind.length);
      return;
    }
  }
  events.push(e);
}

const SERVER_TYPES = new Set(['send', 'authenticate', 'request', 'data', 'close']);

/** Drives a server session as the gateway does: auth succeeds for password "pw", odd ports are granted. */
export function driveServer(requireAuth: boolean, chunks: Uint8Array[]): string[] {
  const s = new Socks5ServerSession({ requireAuth });
  const events: string[] = [];
  let open = false;
  const handle = (cmds: ServerCommand[]): void => {
    if (!Array.isArray(cmds)) throw new Error('commands not an array');
    for (const c of cmds) {
      if (!SERVER_TYPES.has(c.type)) throw new Error(`command ${JSON.stringify(c)}`);
      switch (c.type) {
        case 'send':
          pushEvent(events, `send ${hex(c.data)}`);
          break;
        case 'data':
          if (!open) throw new Error('relay data before the request was granted');
          // a socket never reads 0 bytes; an empty chunk fed here is passed on empty, harmless
          if (c.data.length > 0) pushEvent(events, `data ${hex(c.data)}`);
          break;
        case 'close':
          if (c.error && !(c.error.code in ERRORS)) throw new Error(`close with unknown code ${c.error.code}`);
          events.push(`close ${c.error?.code ?? ''}`);
          break;
        case 'authenticate':
          if (!requireAuth && s.phase !== 'auth-wait') throw new Error('authenticate outside auth');
          events.push(`auth ${hex(c.username)} ${hex(c.password)}`);
          handle(s.authResult(Buffer.from(c.password).equals(Buffer.from('pw'))));
          break;
        case 'request':
          events.push(`request ${JSON.stringify(c.request)}`);
          if (c.request.port % 2 === 1) {
            open = true;
            handle(s.succeed({ host: '192.0.2.1', port: 1 }));
          } else handle(s.fail(new RequestError('ERR_CONNECT_FAILED')));
          break;
      }
    }
  };
  for (const c of chunks) handle(s.feed(c));
  return events;
}

const CLIENT_TYPES = new Set(['send', 'reply', 'failed']);

/** Drives a client session; after the final reply the I/O layer relays, so later chunks count as data. */
export function driveClient(req: ConstructorParameters<typeof Socks5ClientSession>[0], chunks: Uint8Array[]): string[] {
  const s = new Socks5ClientSession(req, 'fuzz');
  const events: string[] = [];
  let open = false;
  const handle = (cmds: ClientCommand[]): void => {
    for (const c of cmds) {
      if (!CLIENT_TYPES.has(c.type)) throw new Error(`command ${JSON.stringify(c)}`);
      if (c.type === 'send') pushEvent(events, `send ${hex(c.data)}`);
      else if (c.type === 'failed') {
        if (!(c.error.code in ERRORS)) throw new Error(`failed with unknown code ${c.error.code}`);
        events.push(`failed ${c.error.code} ${c.error.rep}`);
      } else {
        events.push(`reply ${JSON.stringify(c.reply)}`);
        if (c.rest.length > 0) pushEvent(events, `data ${hex(c.rest)}`);
        if (req.cmd !== CMD.BIND || events.filter((e) => e.startsWith('reply')).length === 2) open = true;
      }
    }
  };
  handle(s.start());
  for (const c of chunks) {
    if (open) {
      if (c.length > 0) pushEvent(events, `data ${hex(c)}`);
    } else handle(s.feed(c));
  }
  return events;
}

function sameEvents(a: string[], b: string[], what: string): void {
  if (a.length !== b.length || a.some((x, i) => x !== b[i])) throw new Error(`${what}:\n  split: ${a.join(' | ')}\n  whole: ${b.join(' | ')}`);
}

const anyBytes = fc.uint8Array({ maxLength: 64 }).map((bytes) => ({ bytes, lens: [] as number[] }));

export const serverInput = (): fc.Arbitrary<Uint8Array> =>
  g.hostile(
    fc.oneof(
      g.sequence([g.greeting(), g.request(), anyBytes]),
      g.sequence([g.greeting(), g.authRequest([{ user: 'u', password: 'pw' }, { user: 'u', password: 'no' }]), g.request(), anyBytes]),
      g.sequence([g.greeting(), g.authRequest()]),
    ),
  );

const clientInput = (): fc.Arbitrary<Uint8Array> =>
  g.hostile(
    fc.oneof(
      g.sequence([g.methodSelection(), g.reply(), anyBytes]),
      g.sequence([g.methodSelection(), g.authReply(), g.reply(), g.reply(), anyBytes]),
    ),
  );

const clientReq = fc.record({
  cmd: fc.constantFrom(CMD.CONNECT, CMD.BIND, CMD.UDP_ASSOCIATE),
  host: fc.constantFrom('web.test', '192.0.2.1', '2001:db8::1'),
  port: fc.integer({ min: 1, max: 65535 }),
  auth: fc.option(fc.record({ username: fc.constantFrom('u', 'ü'), password: fc.constantFrom('', 'pw') }), { nil: undefined }),
  pipeline: fc.boolean(),
  errorCodes: fc.boolean(),
});

// ---- line and text parsers ----

function lineReaderProperty(): fc.IPropertyWithHooks<[Uint8Array, number[], number]> {
  const lines = fc.array(fc.oneof(g.ftpClientLine(), g.ftpServerLine()), { maxLength: 8 }).map((ls) => new Uint8Array(Buffer.from(ls.join('\r\n'), 'latin1')));
  return fc.property(fc.oneof(lines, fc.uint8Array({ maxLength: 200 })), g.cuts, fc.constantFrom(8, 64, 8192), (b, at, max) => {
    const read = (chunks: Uint8Array[]): string => {
      const r = new LineReader(max);
      const out: string[] = [];
      for (const c of chunks) {
        const got = r.feed(c);
        if (got === null) return 'too long';
        out.push(...got);
      }
      out.push(`rest:${r.rest()}`);
      return JSON.stringify(out);
    };
    const whole = read([b]);
    const split = read(g.split(b, at));
    if (whole !== split) throw new Error(`split ${JSON.stringify(at)}: ${split} vs whole: ${whole}`);
  });
}

const FTP_ACTIONS = new Set(['toClient', 'toServer', 'listen', 'dataTarget', 'closeData']);

function ftpTranslatorProperty(): fc.IPropertyWithHooks<[boolean, boolean, Array<[number, string]>]> {
  const step = fc.tuple(fc.integer({ min: 0, max: 3 }), fc.oneof(g.ftpClientLine(), g.ftpServerLine()));
  return fc.property(fc.boolean(), fc.boolean(), fc.array(step, { maxLength: 12 }), (v6client, v6server, steps) => {
    const t = new FtpTranslator({ clientIp: parseIp(v6client ? '2001:db8::2' : '127.0.0.1')!, serverIp: parseIp(v6server ? '2001:db8::10' : '198.51.100.10')! });
    const check = (acts: FtpAction[]): void => {
      for (const a of acts) if (!FTP_ACTIONS.has(a.type)) throw new Error(`action ${JSON.stringify(a)}`);
    };
    let listenId = 0;
    for (const [kind, line] of steps) {
      if (kind === 0) check(t.fromClient(line));
      else if (kind === 1) check(t.fromServer(line));
      else {
        // answer the listener the translator last asked for (or a stale id)
        listenId++;
        const addr = { ip: parseIp(kind === 2 ? '127.0.0.1' : '::1')!, port: 2000 + listenId };
        check(line.length % 3 === 0 ? t.listenFailed(listenId) : t.listening(listenId, addr));
      }
      void t.busy;
    }
  });
}

const textInputs = (): fc.Arbitrary<string> =>
  fc.oneof(
    fc.string({ maxLength: 80 }),
    fc.string({ unit: 'binary', maxLength: 40 }),
    g.httpHead().map((m) => Buffer.from(m.bytes).toString('latin1').split(' ')[1] ?? ''),
    fc.tuple(g.host(), fc.integer({ min: -1, max: 70000 })).map(([h, p]) => `${h.includes(':') ? `[${h}]` : h}:${p}`),
    fc.tuple(fc.constantFrom('http://', 'https://', 'ftp://', 'HTTP://', 'http:/', ''), g.host(), fc.constantFrom('', ':80', ':0', ':65536', ':x', '@a:1'), fc.constantFrom('', '/', '?q', '#f', '/a b')).map((p) => p.join('')),
  );

function parsersProperty(): fc.IPropertyWithHooks<[string]> {
  return fc.property(textInputs(), (s) => {
    const a = parseAuthority(s);
    if (a !== null && !(Number.isInteger(a.port) && a.port >= 1 && a.port <= 65535)) throw new Error(`parseAuthority ${JSON.stringify(a)}`);
    const u = parseAbsoluteUri(s);
    if (u.ok ? !u.target || typeof u.path !== 'string' : typeof u.status !== 'number') throw new Error(`parseAbsoluteUri ${JSON.stringify(u)}`);
    splitHostPort(s);
    splitHostPort(s, 80);
    parseIp(s);
    parseCidr(s);
    parseEprt(s);
    parseHostPortCommas(s);
    parse229(s);
  });
}

// ---- the run ----

export interface Target {
  name: string;
  /** Share of the inputs. */
  weight: number;
  property: () => fc.IProperty<unknown[]>;
}

const asAny = <T extends unknown[]>(p: fc.IPropertyWithHooks<T>): fc.IProperty<unknown[]> => p as unknown as fc.IProperty<unknown[]>;

export const TARGETS: Target[] = [
  { name: 'decodeGreeting', weight: 6, property: () => asAny(streamDecoderProperty(decodeGreeting, g.hostile(g.greeting()))) },
  { name: 'decodeMethodSelection', weight: 2, property: () => asAny(streamDecoderProperty(decodeMethodSelection, g.hostile(g.methodSelection()))) },
  { name: 'decodeAuthRequest', weight: 6, property: () => asAny(streamDecoderProperty(decodeAuthRequest, g.hostile(g.authRequest()))) },
  { name: 'decodeAuthReply', weight: 2, property: () => asAny(streamDecoderProperty(decodeAuthReply, g.hostile(g.authReply()))) },
  { name: 'decodeRequest', weight: 10, property: () => asAny(streamDecoderProperty(decodeRequest, g.hostile(g.request()))) },
  { name: 'decodeReply', weight: 8, property: () => asAny(streamDecoderProperty(decodeReply, g.hostile(g.reply()))) },
  { name: 'decodeSocks4Request', weight: 8, property: () => asAny(streamDecoderProperty(decodeSocks4Request, g.hostile(g.socks4Request()))) },
  { name: 'decodeSocks4Reply', weight: 2, property: () => asAny(streamDecoderProperty(decodeSocks4Reply, g.hostile(g.socks4Reply()))) },
  { name: 'decodeProxyHeader', weight: 4, property: () => asAny(streamDecoderProperty(decodeProxyHeader, g.hostile(g.proxyHeader()))) },
  {
    name: 'decodeUdpHeader',
    weight: 8,
    property: () =>
      asAny(
        fc.property(g.hostile(g.udpDatagram()), fc.integer({ min: 0, max: 3 }), (b, layers) => {
          const d = decodeUdpHeader(b);
          checkDecoded(d, Math.max(b.length, 1));
          if (d.status === 'need') throw new Error('a whole datagram is never "need"');
          if (d.status === 'ok' && (d.msg.dataOffset < 7 || d.msg.dataOffset > b.length)) throw new Error(`dataOffset ${d.msg.dataOffset} of ${b.length}`);
          const l = decodeUdpLayers(b, layers);
          // zero layers of an empty datagram is an empty payload: size 0 is right there
          if (!(layers === 0 && b.length === 0)) checkDecoded(l, b.length);
          if (l.status === 'need') throw new Error('decodeUdpLayers said "need"');
        }),
      ),
  },
  {
    name: 'round trips',
    weight: 6,
    property: () =>
      asAny(
        fc.property(fc.integer({ min: 0, max: 5 }), fc.nat(), (which, salt) => {
          // one valid message of each kind per run, drawn from the same seed stream
          const [arb, dec, accept]: [fc.Arbitrary<g.Msg>, (b: Uint8Array) => Decoded<unknown>, (b: Uint8Array) => boolean] = [
            [g.greeting(), decodeGreeting, () => true],
            [g.authRequest(), decodeAuthRequest, () => true],
            [g.request(), decodeRequest, (b: Uint8Array) => b[1]! >= 1 && b[1]! <= 3],
            [g.reply(), decodeReply, () => true],
            [g.socks4Request(), decodeSocks4Request, (b: Uint8Array) => b[1] === 1 || b[1] === 2],
            [g.udpDatagram(), (b: Uint8Array) => decodeUdpHeader(b), () => true],
          ][which] as never;
          const [m] = fc.sample(arb, { seed: salt, numRuns: 1 });
          const p = roundTrip(dec, fc.constant(m!), accept);
          fc.assert(p, { numRuns: 1 });
        }),
      ),
  },
  {
    name: 'Socks5ServerSession',
    weight: 20,
    property: () =>
      asAny(
        fc.property(fc.boolean(), serverInput(), g.cuts, (requireAuth, b, at) => {
          const whole = driveServer(requireAuth, [b]);
          const split = driveServer(requireAuth, g.split(b, at));
          sameEvents(split, whole, `server session (requireAuth ${requireAuth}) input ${hex(b)} cuts ${JSON.stringify(at)}`);
        }),
      ),
  },
  {
    name: 'Socks5ClientSession',
    weight: 10,
    property: () =>
      asAny(
        fc.property(clientReq, clientInput(), g.cuts, (req, b, at) => {
          const whole = driveClient(req, [b]);
          const split = driveClient(req, g.split(b, at));
          sameEvents(split, whole, `client session ${JSON.stringify(req)} input ${hex(b)} cuts ${JSON.stringify(at)}`);
        }),
      ),
  },
  { name: 'ftp LineReader', weight: 4, property: () => asAny(lineReaderProperty()) },
  { name: 'FtpTranslator', weight: 4, property: () => asAny(ftpTranslatorProperty()) },
  { name: 'http/address parsers', weight: 4, property: () => asAny(parsersProperty()) },
];

export interface Failure {
  target: string;
  seed: number;
  path: string | undefined;
  counterexample: string;
  error: string;
}

export interface InProcessResult {
  inputs: number;
  ms: number;
  perTarget: Record<string, number>;
  failures: Failure[];
}

/** Runs every target with its share of `total` inputs; target i uses seed + i. */
export function runInProcess(total: number, seed: number, opts: { only?: string; log?: (s: string) => void } = {}): InProcessResult {
  const targets = TARGETS.filter((t) => !opts.only || t.name.toLowerCase().includes(opts.only.toLowerCase()));
  const weights = targets.reduce((n, t) => n + t.weight, 0);
  const started = Date.now();
  const result: InProcessResult = { inputs: 0, ms: 0, perTarget: {}, failures: [] };
  targets.forEach((t, i) => {
    const numRuns = Math.max(1, Math.ceil((total * t.weight) / weights));
    const s = (seed + i) | 0;
    const t0 = Date.now();
    const details = fc.check(t.property(), { numRuns, seed: s, endOnFailure: false, maxSkipsPerRun: 0 });
    result.perTarget[t.name] = details.numRuns;
    result.inputs += details.numRuns;
    opts.log?.(`  ${t.name.padEnd(22)} ${String(details.numRuns).padStart(8)} inputs  ${String(Date.now() - t0).padStart(6)} ms  seed ${s}${details.failed ? '  FAILED' : ''}`);
    if (details.failed) {
      result.failures.push({
        target: t.name,
        seed: s,
        path: details.counterexamplePath ?? undefined,
        counterexample: fc.stringify(details.counterexample),
        error: details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance),
      });
    }
  });
  result.ms = Date.now() - started;
  return result;
}
