// The live half of the fuzz harness: real `dualsocks gateway` (with and without --users),
// `bridge` (with a gateway behind it) and `start` processes, each input on a fresh connection,
// many at once, some clients aborting mid-send, some half-closing. After each batch: every
// process alive, descriptors back to their baseline within 5 s of the last input, a valid
// request still served, RSS bounded. Run it inside a network namespace with only loopback
// (run.ts does): mutated requests name random addresses, which must go nowhere.
// The gateway's native front (accept, handshake and dial in splice_relay.c) gets valid CONNECTs
// with early data, sent in pieces or reset mid-dial, to places that answer, refuse or (with
// DUALSOCKS_FUZZ_BLACKHOLE, IPv4 addresses a.b.c.d/28 whose packets run.ts drops) never answer,
// and to names with several such addresses before one that answers (RFC 8305 attempts in
// flight); it runs in `gateway` and in each worker of `gateway --workers 2`.
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { hashPassword } from '../../bridge/gateway/users.js';
import { decodeProxyHeader, startsLikeProxyHeader } from '../../shared/proxy-protocol/codec.js';
import { concatBytes, decodeAuthRequest, decodeGreeting, decodeReply, decodeRequest, decodeSocks4Request, decodeUdpHeader, encodeGreeting, encodeRequest } from '../../shared/socks5/codec.js';
import { Socks5ClientSession } from '../../shared/socks5/client.js';
import { CMD, METHOD } from '../../shared/socks5/constants.js';
import { closedTcpPort, startOrigin, startTcp, type Origin } from '../helpers/origin.js';
import { startCli, type Running } from '../helpers/process.js';
import { startUdpEcho, type UdpEcho } from '../helpers/udp.js';
import { prng } from '../helpers/bytes.js';
import * as g from './grammar.js';

/**
 * Input classes with a known defect of issue 10 that is being fixed elsewhere, so a run can
 * leave them out (--skip) to measure the rest. Each names the item and where it bites.
 */
export const KNOWN: Record<string, string> = {
  item1: 'greeting offering 0x02 without 0x00 to a gateway without --users (crash: users!.verify)',
  item8: 'UDP ASSOCIATE to the bridge, client gone before the reply (descriptors held)',
  item12: 'greeting offering 0x02 without 0x00 to the bridge (no answer, closed after 30 s)',
  item15: 'BIND to the bridge, client half-closes while waiting (CLOSE-WAIT until the peer timeout)',
  item6: 'RFC 1929 credentials (each one an scrypt of 16 MiB on one of 4 threads, also for clients already gone: RSS +130 MiB, logins starved)',
  dep0118: 'DOMAINNAME "." (SOCKS5 request, SOCKS4a, UDP header): an empty name reaches dns.lookup (DEP0118 on stderr; part of item 7)',
  item13: 'a complete CONNECT (SOCKS5, SOCKS4, HTTP CONNECT or GET) whose FIN comes with it (FIN lost: tunnel open until the idle timeout)',
};

/** split: in pieces (a byte each at times) with small delays, then FIN or hold; reset: a prefix, a wait, then RST. */
type Mode = 'end' | 'abort' | 'hold' | 'trickle' | 'split' | 'reset';
type Kind = 'gateway' | 'gateway-users' | 'gateway-workers' | 'gateway-pp' | 'bridge' | 'bridge-users' | 'start-gateway' | 'start-bridge';

/** How a split or reset input is sent: piece ends (ascending offsets), the wait before each piece, then the last act. */
interface Plan {
  ends: number[];
  delays: number[];
  last: { end: true } | { hold: true } | { resetAfterMs: number };
}

interface Input {
  cls: string;
  bytes: Uint8Array;
  mode: Mode;
  plan?: Plan;
  /** What the client must receive before the connection ends (a pipelined CONNECT's answer). */
  expect?: string;
  holdMs?: number;
  /** For the udp class: datagrams sent once the association is up. */
  datagrams?: Uint8Array[];
}

interface Proc {
  name: string;
  running: Running;
  pid: number;
  /** A --workers worker: alive while its pid is; its stderr is its primary's, its ports too. */
  worker?: boolean;
  /** --metrics: scraped after each batch and during it, the text must parse. */
  metricsPort?: number;
  /** The ports inputs go to, and which kind of listener each is. */
  ports: { port: number; kind: Kind }[];
  fdBaseline: number;
  fdAfter: number;
  socketBaseline: number;
  rssBefore: number;
  rssAfter: number;
  rssMax: number;
  dead: boolean;
  /** stderr lines already looked at. */
  stderrSeen: number;
}

export interface LiveFinding {
  kind: 'crash' | 'leak' | 'unserved' | 'rss' | 'stderr' | 'metrics';
  process: string;
  batch: number;
  classes: string;
  detail: string;
}

export interface LiveResult {
  inputs: number;
  /** Inputs whose answer was checked (valid CONNECTs with early data to the origin or the sink). */
  answersChecked: number;
  /** Of those, the ones not owed an answer after all: sent in pieces slower than the handshake timeout. */
  answersLate: number;
  perClass: Record<string, number>;
  findings: LiveFinding[];
  processes: { name: string; fdBaseline: number; fdAfter: number; rssBeforeMiB: number; rssAfterMiB: number; rssMaxMiB: number; alive: boolean }[];
  ms: number;
}

export interface LiveOptions {
  total: number;
  seed: number;
  skip: Set<string>;
  parallel?: number;
  batch?: number;
  /** RSS growth over the baseline that counts as unbounded. */
  rssSlackMiB?: number;
  /** Descriptors above the baseline tolerated after the settle time (pooled keep-alive tunnels). */
  fdSlack?: number;
  /** Only the input classes whose name contains this. */
  only?: string;
  /** Only these processes (gateway, gateway-users, gateway-workers, gateway-pp, bridge, bridge-users, start). */
  processes?: string[];
  /** How long a client waits for the server's close before closing itself. */
  holdMs?: number;
  log?: (s: string) => void;
}

const MiB = 1024 * 1024;

export function fdCount(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return -1;
  }
}

/** Sockets among the descriptors: what a connection leaves behind (pipes and eventfds are the runtime's, which starts threads lazily). */
export function socketCount(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).filter((fd) => {
      try {
        return readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:');
      } catch {
        return false;
      }
    }).length;
  } catch {
    return -1;
  }
}

export function rssBytes(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : -1;
  } catch {
    return -1;
  }
}

/** The harness's inputs whose connections this process still holds (by the client's port). */
function heldInputs(pid: number, ports: number[]): string[] {
  const inodes = new Set<string>();
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m) inodes.add(m[1]!);
      } catch {
        /* closed meanwhile */
      }
    }
  } catch {
    return [];
  }
  const out: string[] = [];
  const rows: { local: number; remote: number; state: string }[] = [];
  for (const f of ['tcp', 'tcp6']) {
    let text = '';
    try {
      text = readFileSync(`/proc/${pid}/net/${f}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const p = line.trim().split(/\s+/);
      if (p.length < 10 || !inodes.has(p[9]!)) continue;
      rows.push({ local: parseInt(p[1]!.split(':')[1]!, 16), remote: parseInt(p[2]!.split(':')[1]!, 16), state: p[3]! });
    }
  }
  // `start` connects to its own gateway port: those peers are the process itself, not the harness
  const own = new Set(rows.filter((r) => !ports.includes(r.local)).map((r) => r.local));
  {
    for (const r of rows) {
      const p = ['', '', '', r.state];
      const input = ports.includes(r.local) && !own.has(r.remote) ? byClientPort.get(r.remote) : undefined;
      if (input) out.push(`${p[3] === '08' ? 'CLOSE_WAIT' : p[3] === '01' ? 'ESTABLISHED' : `state ${p[3]}`} ${input.cls} ${input.mode} ${Buffer.from(input.bytes).toString('hex').slice(0, 160)}`);
    }
  }
  return out;
}

/** What a process's descriptors are, TCP sockets by state, for a leak report. */
export function fdKinds(pid: number): string {
  const states: Record<string, string> = {};
  for (const f of ['tcp', 'tcp6']) {
    try {
      for (const line of readFileSync(`/proc/${pid}/net/${f}`, 'utf8').split('\n').slice(1)) {
        const p = line.trim().split(/\s+/);
        if (p.length > 9) states[p[9]!] = { '01': 'ESTABLISHED', '06': 'TIME_WAIT', '08': 'CLOSE_WAIT', '0A': 'LISTEN', '04': 'FIN_WAIT1', '05': 'FIN_WAIT2', '09': 'LAST_ACK', '07': 'CLOSE', '02': 'SYN_SENT', '03': 'SYN_RECV', '0B': 'CLOSING' }[p[3]!] ?? p[3]!;
      }
    } catch {
      /* gone */
    }
  }
  const udp = new Set<string>();
  for (const f of ['udp', 'udp6']) {
    try {
      for (const line of readFileSync(`/proc/${pid}/net/${f}`, 'utf8').split('\n').slice(1)) {
        const p = line.trim().split(/\s+/);
        if (p.length > 9) udp.add(p[9]!);
      }
    } catch {
      /* gone */
    }
  }
  const counts: Record<string, number> = {};
  let dir: string[] = [];
  try {
    dir = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return 'gone';
  }
  for (const fd of dir) {
    let link = '';
    try {
      link = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue;
    }
    const m = /^socket:\[(\d+)\]$/.exec(link);
    const k = m ? (states[m[1]!] ? `tcp ${states[m[1]!]}` : udp.has(m[1]!) ? 'udp' : 'socket') : link.startsWith('anon_inode:') ? link : link.startsWith('pipe:') ? 'pipe' : 'file';
    counts[k] = (counts[k] ?? 0) + 1;
  }
  return Object.entries(counts)
    .sort((a, b) => b[1] - a[1])
    .map(([k, n]) => `${k}: ${n}`)
    .join(', ');
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** After the warm-up, before the descriptor baselines are taken. */
const WARM_UP_SETTLE_MS = 1000;
/** Between looks at the descriptor counts while waiting for them to come back. */
const LEAK_POLL_MS = 100;

/** Sends one input on a fresh connection the way its mode says, and is done when the socket is. */
/** Client port → input of the current batch, to name the inputs whose connections were left open. */
const byClientPort = new Map<number, Input>();
/** Inputs of the current batch that did not get what they expected. */
const unanswered: string[] = [];
/** The fuzz gateways' --handshake-timeout: a request sent slower than this is not owed an answer. */
const HANDSHAKE_TIMEOUT_MS = 2000;
/** Answers not owed: the harness, loaded, took longer than the handshake timeout to send the request. */
let lateSends = 0;

function hit(port: number, input: Input, holdMs: number): Promise<void> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    s.once('connect', () => byClientPort.set(s.localPort!, input));
    // a plan's hold starts once its last piece is sent
    let timer = setTimeout(() => s.destroy(), input.holdMs ?? holdMs);
    let got = '';
    let connectedAt = 0;
    // how long the whole input took to send; unset: it was not all sent
    let sentMs: number | undefined = input.plan ? undefined : 0;
    s.once('connect', () => (connectedAt = Date.now()));
    const done = (): void => {
      clearTimeout(timer);
      if (input.expect !== undefined && !got.includes(input.expect)) {
        // the gateway rightly gave up on a request that came after its handshake timeout (or
        // was still coming then)
        const ms = sentMs ?? Date.now() - connectedAt;
        if (ms > HANDSHAKE_TIMEOUT_MS - 500) lateSends++;
        else unanswered.push(`${input.cls} ${input.mode} on port ${port} (${sentMs === undefined ? `closed after ${ms} ms, before all was sent` : `sent in ${ms} ms`}): got ${JSON.stringify(got.slice(0, 120))}; sent ${Buffer.from(input.bytes).toString('hex').slice(0, 200)}`);
      }
      resolve();
    };
    s.on('error', () => s.destroy());
    s.on('close', done);
    s.on('data', (d: Buffer) => {
      if (input.expect !== undefined) got += d.toString('latin1');
    });
    // the server's end: nothing more will come, close our side too
    s.on('end', () => s.end());
    s.once('connect', () => {
      const b = input.bytes;
      switch (input.mode) {
        case 'end':
          s.end(b);
          break;
        case 'hold':
          s.write(b);
          break;
        case 'abort':
          s.write(b.subarray(0, Math.floor(b.length / 2)), () => s.resetAndDestroy());
          break;
        case 'trickle': {
          const mid = Math.floor(b.length / 2);
          s.write(b.subarray(0, mid));
          setTimeout(() => !s.destroyed && s.end(b.subarray(mid)), 5);
          break;
        }
        case 'split':
        case 'reset': {
          const plan = input.plan!;
          const step = (i: number, from: number): void => {
            if (s.destroyed) return;
            if (i < plan.ends.length) {
              s.write(b.subarray(from, plan.ends[i]!));
              setTimeout(() => step(i + 1, plan.ends[i]!), plan.delays[i]!);
              return;
            }
            const last = plan.last;
            sentMs = Date.now() - connectedAt;
            if ('end' in last) s.end();
            else if ('resetAfterMs' in last) setTimeout(() => !s.destroyed && s.resetAndDestroy(), last.resetAfterMs);
            clearTimeout(timer);
            timer = setTimeout(() => s.destroy(), input.holdMs ?? holdMs);
          };
          step(0, 0);
          break;
        }
      }
    });
  });
}

/** UDP ASSOCIATE, then the datagrams to the relay port; the association ends with the control connection. */
function hitUdp(port: number, input: Input, holdMs: number): Promise<void> {
  return new Promise((resolve) => {
    const udp: UdpSocket = createSocket('udp4');
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => byClientPort.set(s.localPort!, input));
    let buf: Uint8Array = new Uint8Array(0);
    let stage = 0;
    const finish = (): void => {
      clearTimeout(timer);
      s.destroy();
      try {
        udp.close();
      } catch {
        /* closed */
      }
      resolve();
    };
    const timer = setTimeout(finish, holdMs);
    s.on('error', finish);
    s.on('close', finish);
    udp.on('error', () => {});
    udp.on('message', () => {});
    udp.bind(0, '127.0.0.1', () => {
      s.once('connect', () => {
        // announce our UDP port in DST.PORT, as RFC 1928 asks
        s.write(concatBytes(encodeGreeting({ methods: [METHOD.NO_AUTH] }), encodeRequest({ cmd: CMD.UDP_ASSOCIATE, host: '0.0.0.0', port: udp.address().port })));
      });
      s.on('data', (chunk: Buffer) => {
        buf = concatBytes(buf, chunk);
        if (stage === 0 && buf.length >= 2) {
          buf = buf.subarray(2);
          stage = 1;
        }
        if (stage !== 1) return;
        const r = decodeReply(buf);
        if (r.status === 'need') return;
        stage = 2;
        if (r.status !== 'ok' || r.msg.rep !== 0) return finish();
        const relayPort = r.msg.port;
        let left = input.datagrams!.length;
        if (left === 0) return finish();
        for (const d of input.datagrams!) {
          udp.send(d, relayPort, '127.0.0.1', () => {
            if (--left === 0) setTimeout(input.mode === 'abort' ? () => s.resetAndDestroy() : () => s.end(), 20);
          });
        }
      });
    });
  });
}

/** One real request through a listener: SOCKS5 CONNECT (with credentials where needed) and an HTTP GET. */
let servedCount = 0;

/**
 * Ports a valid request from outside must get through. start's gateway admits its bridge alone
 * (a password made at start-up), so start is checked through its bridge, which uses that gateway.
 */
const servesOutsiders = (kind: Kind): boolean => kind !== 'start-gateway';

async function served(port: number, kind: Kind, origin: Origin, timeoutMs = 5000): Promise<string | null> {
  // the bridge's two sides in turn
  const viaHttp = (kind === 'bridge' || kind === 'start-bridge' || kind === 'bridge-users') && servedCount++ % 2 === 0;
  const login = kind === 'gateway-users' || kind === 'bridge-users';
  return new Promise((resolve) => {
    // the hostile logins come from 127.0.0.1 and earn it the gateway's back-off; a real user elsewhere is served
    const s = connect({ host: '127.0.0.1', port, ...(login ? { localAddress: '127.0.0.2' } : {}) });
    let got = '';
    const timer = setTimeout(() => {
      s.destroy();
      resolve(`no answer within ${timeoutMs} ms (${viaHttp ? 'HTTP proxy' : 'SOCKS5'}; got ${JSON.stringify(got.slice(0, 80))})`);
    }, timeoutMs);
    const done = (err: string | null): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(err);
    };
    s.on('error', (e) => done(`${e.message}`));
    s.on('close', () => done(got.includes('hello from origin') ? null : `closed; got ${JSON.stringify(got.slice(0, 120))}`));
    const get = `GET / HTTP/1.0\r\nHost: web.test:${origin.port}\r\nConnection: close\r\n\r\n`;
    if (viaHttp) {
      const auth = login ? `Proxy-Authorization: Basic ${Buffer.from('u:pw').toString('base64')}\r\n` : '';
      s.once('connect', () => s.write(`GET http://web.test:${origin.port}/ HTTP/1.1\r\nHost: web.test:${origin.port}\r\n${auth}Connection: close\r\n\r\n`));
      s.on('data', (c: Buffer) => {
        got += c.toString('latin1');
        if (got.includes('hello from origin')) done(null);
      });
      return;
    }
    const session = new Socks5ClientSession({ host: 'web.test', port: origin.port, auth: login ? { username: 'u', password: 'pw' } : undefined }, 'fuzz');
    let open = false;
    const run = (cmds: ReturnType<typeof session.start>): void => {
      for (const c of cmds) {
        if (c.type === 'send') s.write(c.data);
        else if (c.type === 'failed') done(`SOCKS5: ${c.error.code} ${c.error.message}`);
        else {
          open = true;
          got += Buffer.from(c.rest).toString('latin1');
          s.write(get);
        }
      }
    };
    // --proxy-protocol: the balancer's header first
    if (kind === 'gateway-pp') s.once('connect', () => s.write(`PROXY TCP4 192.0.2.7 127.0.0.1 40000 ${port}\r\n`));
    s.once('connect', () => run(session.start()));
    s.on('data', (c: Buffer) => {
      if (!open) return run(session.feed(c));
      got += c.toString('latin1');
      if (got.includes('hello from origin')) done(null);
    });
  });
}

// ---- inputs ----

const MODES: Mode[] = ['end', 'end', 'abort', 'hold', 'trickle', 'split', 'reset'];
/** For valid CONNECTs: mostly the ways that reach the dial, and resets during it. */
const DIAL_MODES: Mode[] = ['end', 'end', 'split', 'split', 'reset', 'reset', 'hold', 'abort'];

interface ClassDef {
  name: string;
  weight: number;
  kinds: Kind[];
  arb: fc.Arbitrary<Uint8Array>;
  udp?: boolean;
  modes?: Mode[];
  /** What a client of this input must receive if it does not cut the connection short. */
  expect?: (b: Uint8Array) => string | undefined;
}

/** Destinations of the valid CONNECTs, by what is there. */
interface Destinations {
  origin: number;
  sink: number;
  closed: number;
  /** An address whose packets are dropped (a dial that times out), if the namespace has one. */
  blackhole?: string;
}

/**
 * Names and literals that reach the origin and the sink: happy.test has a blackholed address
 * first (RFC 8305's next attempt answers, 250 ms on), few.test four (the fifth, 1 s on).
 */
const REACHES = ['127.0.0.1', 'web.test', 'echo.test', 'happy.test', 'few.test'];

/**
 * A valid greeting and CONNECT, then early data: an HTTP request to the origin, bytes for the
 * sink to echo, or nothing; to places that answer, refuse, do not resolve, or never answer.
 */
function validConnect(d: Destinations): fc.Arbitrary<g.Msg> {
  const places: { host: string; port: number }[] = [
    ...REACHES.map((host) => ({ host, port: d.origin })),
    ...REACHES.map((host) => ({ host, port: d.sink })),
    { host: '127.0.0.1', port: d.closed },
    { host: '127.0.0.2', port: d.origin },
    { host: 'web6.test', port: d.origin },
    { host: '::1', port: d.sink },
    { host: 'nx.test', port: d.origin },
    // many.test: ten blackholed addresses first, the one that answers comes after the deadline
    ...(d.blackhole ? [{ host: d.blackhole, port: 80 }, { host: 'hole.test', port: d.origin }, { host: 'many.test', port: d.sink }] : []),
  ];
  const methods = fc.constantFrom([METHOD.NO_AUTH], [METHOD.NO_AUTH, METHOD.USERPASS], [METHOD.USERPASS, METHOD.NO_AUTH], [METHOD.NO_AUTH, METHOD.ERROR_CODES]);
  const early = fc.oneof(
    fc.constant(new Uint8Array(0)),
    fc.constant(Uint8Array.from(Buffer.from('GET / HTTP/1.0\r\nHost: web.test\r\n\r\n'))),
    fc.uint8Array({ minLength: 1, maxLength: 300 }),
    // more than the front reads before it hands the rest to the tunnel (1 KiB)
    fc.uint8Array({ minLength: 700, maxLength: 3000 }),
  );
  return fc.tuple(methods, fc.constantFrom(...places), early).map(([m, p, e]) => ({
    bytes: concatBytes(encodeGreeting({ methods: [...m] }), encodeRequest({ cmd: CMD.CONNECT, host: p.host, port: p.port }), e),
    lens: [],
  }));
}

/** The answer a valid CONNECT's early data must bring back (after an optional PROXY header), if it goes where something answers. */
function connectAnswer(d: Destinations): (b: Uint8Array) => string | undefined {
  return (b) => {
    if (startsLikeProxyHeader(b)) {
      const h = decodeProxyHeader(b);
      if (h.status !== 'ok') return undefined;
      b = b.subarray(h.size);
    }
    const gr = decodeGreeting(b);
    if (gr.status !== 'ok') return undefined;
    const r = decodeRequest(b.subarray(gr.size));
    if (r.status !== 'ok' || r.msg.cmd !== CMD.CONNECT || !REACHES.includes(r.msg.host)) return undefined;
    const early = b.subarray(gr.size + r.size);
    if (early.length === 0) return undefined;
    if (r.msg.port === d.sink) return Buffer.from(early).toString('latin1');
    if (r.msg.port === d.origin && Buffer.from(early).toString('latin1').startsWith('GET / ')) return 'hello from origin';
    return undefined;
  };
}

function classes(known: g.HostSet, dests: Destinations): ClassDef[] {
  const s5Kinds: Kind[] = ['gateway', 'gateway-workers', 'bridge', 'start-gateway', 'start-bridge'];
  const bridgeKinds: Kind[] = ['bridge', 'start-bridge', 'bridge-users'];
  const noAuth: fc.Arbitrary<g.Msg> = fc.constant({ bytes: encodeGreeting({ methods: [METHOD.NO_AUTH] }), lens: [1] });
  const anyBytes = fc.uint8Array({ maxLength: 48 }).map((bytes) => ({ bytes, lens: [] as number[] }));
  return [
    { name: 'socks5 greeting', weight: 10, kinds: [...s5Kinds, 'gateway-users', 'bridge-users'], arb: g.hostile(g.greeting()) },
    // the front's dial and relay; through a bridge, its gateway's
    { name: 'valid connect', weight: 16, kinds: ['gateway', 'gateway-workers', 'bridge', 'start-bridge'], arb: validConnect(dests).map((m) => m.bytes), modes: DIAL_MODES, expect: connectAnswer(dests) },
    { name: 'proxy header + connect', weight: 6, kinds: ['gateway-pp'], arb: g.sequence([g.proxyHeader(), validConnect(dests)]).map((m) => m.bytes), modes: DIAL_MODES, expect: connectAnswer(dests) },
    { name: 'proxy header hostile', weight: 6, kinds: ['gateway-pp'], arb: g.hostile(g.sequence([g.proxyHeader(), fc.oneof(noAuth, g.greeting()), g.request(known), anyBytes])) },
    { name: 'socks5 request', weight: 30, kinds: s5Kinds, arb: g.hostile(g.sequence([fc.oneof(noAuth, g.greeting()), g.request(known), anyBytes])) },
    // every RFC 1929 input that parses costs an scrypt at the gateway: a smaller share
    {
      name: 'rfc1929',
      weight: 3,
      kinds: ['gateway-users', 'bridge-users'],
      arb: g.hostile(g.sequence([fc.constant({ bytes: encodeGreeting({ methods: [METHOD.USERPASS] }), lens: [1] }), g.authRequest([{ user: 'u', password: 'pw' }, { user: 'u', password: 'wrong' }]), g.request(known), anyBytes])),
    },
    { name: 'socks4/4a', weight: 15, kinds: bridgeKinds, arb: g.hostile(g.socks4Request(known)) },
    { name: 'http head', weight: 20, kinds: bridgeKinds, arb: g.hostile(g.httpHead(known)) },
    { name: 'udp datagrams', weight: 4, kinds: ['gateway', 'gateway-workers', 'bridge', 'start-gateway', 'start-bridge'], arb: g.hostile(g.udpDatagram(known)), udp: true },
    { name: 'noise', weight: 5, kinds: [...s5Kinds, 'gateway-users', 'gateway-pp', 'bridge-users'], arb: fc.uint8Array({ maxLength: 400 }) },
  ];
}

/** The known defects an input would hit on a listener of this kind. */
function knownTags(b: Uint8Array, kind: Kind, mode: Mode): string[] {
  const tags: string[] = [];
  const fin = mode === 'end' || mode === 'trickle' || mode === 'split';
  const gateway = kind === 'gateway' || kind === 'gateway-workers' || kind === 'start-gateway';
  const bridge = kind === 'bridge' || kind === 'start-bridge' || kind === 'bridge-users';
  if (dotName(b)) tags.push('dep0118');
  if (fin && completeConnect(b)) tags.push('item13');
  if (b[0] === 5 && b.length >= 2) {
    const methods = [...b.subarray(2, 2 + b[1]!)];
    const userpassOnly = methods.includes(METHOD.USERPASS) && !methods.includes(METHOD.NO_AUTH);
    if (userpassOnly && gateway) tags.push('item1');
    if (userpassOnly && bridge && kind !== 'bridge-users') tags.push('item12');
    const req = b[1]! < b.length - 2 ? 2 + b[1]! : -1;
    if (req > 0 && b[req] === 5 && bridge) {
      if (b[req + 1] === CMD.BIND && mode !== 'abort') tags.push('item15');
      if (b[req + 1] === CMD.UDP_ASSOCIATE) tags.push('item8');
    }
  }
  if (b[0] === 4 && b[1] === CMD.BIND && mode !== 'abort' && bridge) tags.push('item15');
  return tags;
}

/** The DOMAINNAME "." that becomes "" at the resolver, in a request, a SOCKS4a request or a UDP header. */
function dotName(b: Uint8Array, udp = false): boolean {
  if (udp) {
    const d = decodeUdpHeader(b);
    return d.status === 'ok' && d.msg.host === '.';
  }
  if (b[0] === 4) {
    const r = decodeSocks4Request(b);
    return r.status === 'ok' && r.msg.host === '.';
  }
  const gr = decodeGreeting(b);
  if (gr.status !== 'ok') return false;
  let rest = b.subarray(gr.size);
  if (rest[0] === 1) {
    const a = decodeAuthRequest(rest);
    if (a.status !== 'ok') return false;
    rest = rest.subarray(a.size);
  }
  const r = decodeRequest(rest);
  return r.status === 'ok' && r.msg.host === '.';
}

/** Whether the input holds a whole CONNECT request (the FIN after it is what item 13 loses). */
function completeConnect(b: Uint8Array): boolean {
  if (b[0] === 5) {
    const gr = decodeGreeting(b);
    if (gr.status !== 'ok') return false;
    let rest = b.subarray(gr.size);
    if (rest[0] === 1) {
      const a = decodeAuthRequest(rest);
      if (a.status !== 'ok') return false;
      rest = rest.subarray(a.size);
    }
    const r = decodeRequest(rest);
    return r.status === 'ok' && r.msg.cmd === CMD.CONNECT;
  }
  if (b[0] === 4) {
    const r = decodeSocks4Request(b);
    return r.status === 'ok' && r.msg.cmd === CMD.CONNECT;
  }
  const text = Buffer.from(b.subarray(0, 64)).toString('latin1');
  return /^[A-Za-z]+ /.test(text) && Buffer.from(b).includes('\r\n\r\n');
}

/**
 * How a split or reset input goes out: a third of the time a byte a write (the front reads a
 * greeting and a request that come a byte at a time), else a few random cuts; waits of a few ms.
 * A reset cuts at a random point and waits up to 2.5 s first (a blackholed dial takes 2 s).
 */
function makePlan(len: number, mode: Mode, rnd: { nextInt(lo: number, hi: number): number }): Plan {
  const stop = mode === 'reset' ? rnd.nextInt(0, len) : len;
  const ends: number[] = [];
  if (rnd.nextInt(0, 2) === 0) {
    // a byte a write for the first 64 bytes (greeting and request), the rest at once
    for (let i = 1; i <= Math.min(stop, 64); i++) ends.push(i);
    if (stop > 64) ends.push(stop);
  } else {
    const cuts = new Set<number>([stop]);
    for (let k = rnd.nextInt(1, 5); k > 0; k--) cuts.add(rnd.nextInt(1, Math.max(1, stop)));
    ends.push(...[...cuts].filter((c) => c <= stop).sort((a, b) => a - b));
  }
  const one = ends.length > 8;
  const delays = ends.map(() => rnd.nextInt(0, one ? 3 : 30));
  const last: Plan['last'] = mode === 'reset' ? { resetAfterMs: rnd.nextInt(0, 1) === 0 ? rnd.nextInt(0, 30) : rnd.nextInt(0, 2500) } : rnd.nextInt(0, 3) === 0 ? { hold: true } : { end: true };
  return { ends, delays, last };
}

// ---- the run ----

const RSS_SLACK_MIB = 128;

export async function runLive(opts: LiveOptions): Promise<LiveResult> {
  const log = opts.log ?? (() => {});
  const parallel = opts.parallel ?? 128;
  const batchSize = opts.batch ?? Math.max(200, Math.min(5000, Math.ceil(opts.total / 20)));
  // what a process may keep after hostile input without it being a leak: V8's heap grows lazily,
  // and each of libuv's 4 threads keeps a glibc arena with the 16 MiB of its last scrypt (the
  // --users gateway plateaus about 100 MiB above its baseline); a leak keeps growing past this
  const rssSlack = (opts.rssSlackMiB ?? RSS_SLACK_MIB) * MiB;
  const fdSlack = opts.fdSlack ?? 4;
  const holdMs = opts.holdMs ?? 1000;
  const started = Date.now();
  const dir = mkdtempSync(join(tmpdir(), 'dualsocks-fuzz-'));
  const origin = await startOrigin('127.0.0.1', 64 * 1024);
  const echo: UdpEcho = await startUdpEcho('127.0.0.1');
  const hosts = join(dir, 'hosts');
  // blackholed addresses first, so the front's later attempts are the ones that answer (or none in time)
  const net = /^(\d+\.\d+\.\d+\.)(\d+)\/28$/.exec(process.env.DUALSOCKS_FUZZ_BLACKHOLE ?? '');
  const hole = (i: number): string => (net ? `${net[1]}${Number(net[2]) + i}` : '127.0.0.1');
  const blackhole = net ? hole(3) : undefined;
  const names: [string, string[]][] = [
    ['web.test', ['127.0.0.1']],
    ['web6.test', ['::1']],
    ['echo.test', ['127.0.0.1']],
    ['happy.test', [hole(0), '127.0.0.1']],
    ['few.test', [hole(1), hole(2), hole(3), hole(4), '127.0.0.1']],
    ['many.test', [...Array.from({ length: 10 }, (_, i) => hole(i)), '127.0.0.1']],
    ['hole.test', [hole(5)]],
  ];
  writeFileSync(hosts, names.flatMap(([name, ips]) => ips.map((ip) => `${ip} ${name}\n`)).join(''));
  const users = join(dir, 'users');
  writeFileSync(users, `u:${await hashPassword('pw')}\n`);
  // a sink: echoes, and closes only when its peer does (a destination that never hangs up first)
  const sink = await startTcp('127.0.0.1', (s) => {
    s.on('data', (d: Buffer) => s.write(d));
    s.on('end', () => s.end());
  });
  const dests: Destinations = { origin: origin.port, sink: sink.port, closed: await closedTcpPort(), ...(blackhole ? { blackhole } : {}) };
  const known: g.HostSet = { names: ['web.test', 'web6.test', 'echo.test', 'nx.test', 'localhost'], ips: ['127.0.0.1', '::1', '127.0.0.2'], ports: [origin.port, sink.port, echo.port] };
  // inside the namespace the system resolver is harmless (nothing to reach) and exercises the
  // path names take through dns.lookup; elsewhere no name may leave this host
  const dns = process.env.DUALSOCKS_FUZZ_NETNS ? [] : ['--dns', 'none'];
  const common = ['--hosts', hosts, ...dns, '--allow', '127.0.0.0/8', '--allow', '::1/128', '--connect-timeout', '2', '--quiet'];
  const gwFlags = [...common, '--handshake-timeout', String(HANDSHAKE_TIMEOUT_MS / 1000), '--bind-timeout', '3'];

  const procs: Proc[] = [];
  const extra: Running[] = [];
  // e.g. a small --max-old-space-size, to tell a heap that grows lazily from one that leaks
  const childEnv = process.env.DUALSOCKS_FUZZ_NODE_OPTIONS ? { NODE_OPTIONS: process.env.DUALSOCKS_FUZZ_NODE_OPTIONS } : {};
  lateSends = 0;
  const result: LiveResult = { inputs: 0, answersChecked: 0, answersLate: 0, perClass: {}, findings: [], processes: [], ms: 0 };
  const want = (name: string): boolean => !opts.processes || opts.processes.includes(name);
  const add = (name: string, running: Running, ports: Proc['ports'], pid = running.proc.pid!): Proc => {
    const p: Proc = { name, running, pid, ports, fdBaseline: 0, fdAfter: 0, socketBaseline: 0, rssBefore: 0, rssAfter: 0, rssMax: 0, dead: false, stderrSeen: 0 };
    procs.push(p);
    return p;
  };
  try {
    // the bridge's gateway is there even when only the bridge is fuzzed, but not watched then
    const gw = await startCli(['gateway', '--listen', '127.0.0.1:0', ...gwFlags]);
    if (want('gateway')) add('gateway', gw, [{ port: gw.listening[0]!.port, kind: 'gateway' }]);
    else extra.push(gw);
    if (want('gateway-users')) {
      const gwu = await startCli(['gateway', '--listen', '127.0.0.1:0', '--users', users, ...gwFlags]);
      add('gateway --users', gwu, [{ port: gwu.listening[0]!.port, kind: 'gateway-users' }]);
    }
    if (want('gateway-workers')) {
      // the front in each worker, on the port with SO_REUSEPORT: each worker's descriptors are
      // watched; a small --max-connections (a handshake budget of 16 per worker) so that the
      // front evicts handshakes and hands refusals to the session
      const gww = await startCli(['gateway', '--listen', '127.0.0.1:0', '--workers', '2', '--max-connections', '64', ...gwFlags], { expectListeners: 2 });
      add('gateway --workers 2', gww, [{ port: gww.listening[0]!.port, kind: 'gateway-workers' }]);
      for (const pid of childPids(gww.proc.pid!)) add(`  worker ${pid}`, gww, [], pid).worker = true;
    }
    if (want('gateway-pp')) {
      // no front here (a PROXY header first); /metrics scraped as the inputs go
      const gwp = await startCli(['gateway', '--listen', '127.0.0.1:0', '--proxy-protocol', '127.0.0.1/32', '--metrics', '127.0.0.1:0', ...gwFlags]);
      const line = await gwp.waitStderr(/metrics on http:\/\/127\.0\.0\.1:\d+/);
      add('gateway --proxy-protocol --metrics', gwp, [{ port: gwp.listening[0]!.port, kind: 'gateway-pp' }]).metricsPort = Number(/127\.0\.0\.1:(\d+)/.exec(line)![1]);
    }
    const bridgeTo = ['--gateway', `socks5://127.0.0.1:${gw.listening[0]!.port}`, '--connect-timeout', '2', '--quiet'];
    if (want('bridge')) {
      const br = await startCli(['bridge', '--listen', '127.0.0.1:0', ...bridgeTo], { env: childEnv });
      add('bridge', br, [{ port: br.listening[0]!.port, kind: 'bridge' }]);
    }
    if (want('bridge-users')) {
      const bru = await startCli(['bridge', '--listen', '127.0.0.1:0', '--users', users, ...bridgeTo], { env: childEnv });
      add('bridge --users', bru, [{ port: bru.listening[0]!.port, kind: 'bridge-users' }]);
    }
    if (want('start')) {
      const st = await startCli(['start', '--listen', '127.0.0.1:0', ...common], { env: childEnv });
      const inner = await st.waitStderr(/in process on /);
      const innerPort = Number(/:(\d+)$/.exec(inner.trim())![1]);
      add('start', st, [{ port: st.listening[0]!.port, kind: 'start-bridge' }, { port: innerPort, kind: 'start-gateway' }]);
    }

    // warm up (pools, health checks, lazy modules), then take the baselines; the kernel spreads a
    // --workers port's connections, so more of them there to reach every worker
    for (const p of procs) for (const l of p.ports.filter((x) => servesOutsiders(x.kind))) for (let i = 0; i < (l.kind === 'gateway-workers' ? 8 : 2); i++) await served(l.port, l.kind, origin);
    // time let pass on purpose: the warm-up's lazily made things (pools, threads) have no event that says "done"
    await sleep(WARM_UP_SETTLE_MS);
    for (const p of procs) {
      p.fdBaseline = fdCount(p.pid);
      p.socketBaseline = socketCount(p.pid);
      p.stderrSeen = p.running.stderr.length;
      p.rssBefore = p.rssMax = rssBytes(p.pid);
    }
    log(`  live: ${procs.map((p) => `${p.name} pid ${p.pid} fd ${p.fdBaseline} rss ${(p.rssBefore / MiB).toFixed(0)} MiB`).join('; ')}`);

    const defs = classes(known, dests).filter((d) => !opts.only || d.name.includes(opts.only));
    const weights = defs.reduce((n, d) => n + d.weight, 0);
    const r = prng(opts.seed);
    const rnd = { nextInt: (lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1)) };
    let batchNo = 0;
    let sent = 0;
    while (sent < opts.total && procs.some((p) => !p.dead)) {
      batchNo++;
      const n = Math.min(batchSize, opts.total - sent);
      const tasks: (() => Promise<void>)[] = [];
      const classCount: Record<string, number> = {};
      let made = 0;
      // seed of this batch: opts.seed and the batch number; inputs drawn in order
      const batchSeed = (opts.seed * 1000003 + batchNo) | 0;
      byClientPort.clear();
      unanswered.length = 0;
      const pool = new Map<string, Uint8Array[]>();
      for (const d of defs) pool.set(d.name, fc.sample(d.arb, { seed: batchSeed + d.weight, numRuns: Math.ceil((n * d.weight) / weights) + 16 }));
      let guard = 0;
      while (made < n && guard++ < n * 20) {
        let pick = rnd.nextInt(0, weights - 1);
        const def = defs.find((d) => (pick -= d.weight) < 0)!;
        const targets = procs.flatMap((p) => (p.dead ? [] : p.ports.filter((l) => def.kinds.includes(l.kind)).map((l) => ({ p, l }))));
        if (targets.length === 0) continue;
        const t = targets[rnd.nextInt(0, targets.length - 1)]!;
        const modes = def.modes ?? MODES;
        const mode = modes[rnd.nextInt(0, modes.length - 1)]!;
        const list = pool.get(def.name)!;
        const bytes = list[rnd.nextInt(0, list.length - 1)]!;
        if (def.udp) {
          const count = rnd.nextInt(1, 12);
          const datagrams = Array.from({ length: count }, () => list[rnd.nextInt(0, list.length - 1)]!).filter((d) => !(opts.skip.has('dep0118') && dotName(d, true)));
          if (datagrams.length === 0) continue;
          const input: Input = { cls: def.name, bytes, mode, datagrams };
          tasks.push(() => hitUdp(t.l.port, input, holdMs));
          made += datagrams.length;
          classCount[def.name] = (classCount[def.name] ?? 0) + datagrams.length;
          continue;
        }
        const tags = knownTags(bytes, t.l.kind, mode);
        if (def.name === 'rfc1929') tags.push('item6');
        if (tags.some((x) => opts.skip.has(x))) continue;
        const input: Input = { cls: def.name, bytes, mode };
        if (mode === 'split' || mode === 'reset') input.plan = makePlan(bytes.length, mode, rnd);
        // a gateway at its --max-connections refuses: no answer to check there
        if (def.expect && mode !== 'abort' && mode !== 'reset' && t.l.kind !== 'gateway-workers') input.expect = def.expect(bytes);
        if (input.expect !== undefined) result.answersChecked++;
        // long enough for a blackholed dial to time out (--connect-timeout 2) with the client
        // there, and for an answer after a few blackholed attempts
        if (def.modes === DIAL_MODES && (mode === 'hold' || input.expect !== undefined || (input.plan && 'hold' in input.plan.last))) input.holdMs = Math.max(holdMs, 3000);
        tasks.push(() => hit(t.l.port, input, holdMs));
        made++;
        classCount[def.name] = (classCount[def.name] ?? 0) + 1;
      }
      // many at once, each on its own connection; /metrics scraped meanwhile
      let next = 0;
      let inputsDone = false;
      const scraping = procs.filter((p) => p.metricsPort !== undefined && !p.dead).map(async (p) => {
        while (!inputsDone) {
          const err = await scrapeMetrics(p.metricsPort!);
          if (err) result.findings.push({ kind: 'metrics', process: p.name, batch: batchNo, classes: 'during the batch', detail: err });
          await sleep(250);
        }
      });
      await Promise.all(
        Array.from({ length: parallel }, async () => {
          while (next < tasks.length) await tasks[next++]!();
        }),
      );
      inputsDone = true;
      await Promise.all(scraping);
      sent += made;
      result.inputs += made;
      for (const [k, v] of Object.entries(classCount)) result.perClass[k] = (result.perClass[k] ?? 0) + v;
      const classes = Object.entries(classCount).map(([k, v]) => `${k} ${v}`).join(', ');
      if (unanswered.length > 0) {
        result.findings.push({ kind: 'unserved', process: 'inputs', batch: batchNo, classes, detail: `${unanswered.length} valid CONNECT(s) with early data not answered:\n    ${unanswered.slice(0, 8).join('\n    ')}` });
      }
      await checkBatch(procs, batchNo, classes, origin, fdSlack, rssSlack, result.findings);
      log(`  batch ${String(batchNo).padStart(3)}: ${String(made).padStart(5)} inputs (seed ${batchSeed}) ${procs.map((p) => `${p.name} ${p.dead ? 'DEAD' : `fd ${p.fdAfter} rss ${(p.rssAfter / MiB).toFixed(0)}M`}`).join(' | ')}`);
    }
  } finally {
    for (const p of procs) {
      result.processes.push({ name: p.name, fdBaseline: p.fdBaseline, fdAfter: p.fdAfter, rssBeforeMiB: Math.round(p.rssBefore / MiB), rssAfterMiB: Math.round(p.rssAfter / MiB), rssMaxMiB: Math.round(p.rssMax / MiB), alive: !p.dead });
    }
    await Promise.all([...procs.map((p) => p.running.stop()), ...extra.map((r) => r.stop())]);
    await origin.close();
    await echo.close();
    await sink.close();
    result.answersLate = lateSends;
    result.ms = Date.now() - started;
  }
  return result;
}

async function checkBatch(procs: Proc[], batch: number, classes: string, origin: Origin, fdSlack: number, rssSlack: number, findings: LiveFinding[]): Promise<void> {
  for (const p of procs) {
    if (p.dead) continue;
    if (p.worker && !existsSync(`/proc/${p.pid}`)) {
      p.dead = true;
      findings.push({ kind: 'crash', process: p.name, batch, classes, detail: `worker gone; its primary's stderr:\n    ${p.running.stderr.slice(-12).join('\n    ')}` });
    } else if (!p.worker && (p.running.proc.exitCode !== null || p.running.proc.signalCode !== null)) {
      p.dead = true;
      const tail = p.running.stderr.slice(-12).join('\n    ');
      const known = /reading 'verify'/.test(tail) ? ' (known: item1)' : '';
      findings.push({ kind: 'crash', process: p.name, batch, classes, detail: `exited (${p.running.proc.exitCode ?? p.running.proc.signalCode})${known}; stderr:\n    ${tail}` });
    }
  }
  // warnings and stack traces: a defect in one connection's handling is logged, never silent
  for (const p of procs) {
    if (p.worker) continue;
    const lines = p.running.stderr.slice(p.stderrSeen);
    p.stderrSeen = p.running.stderr.length;
    // also a --workers worker replaced, and the sanitizers' reports (a build with ASan/UBSan)
    const bad = lines.filter((l) => /Warning|DEP0\d+|Error|^\s+at |exited \(|AddressSanitizer|LeakSanitizer|runtime error/.test(l));
    if (bad.length > 0 && !p.dead) findings.push({ kind: 'stderr', process: p.name, batch, classes, detail: `${bad.length} line(s) on stderr:\n    ${bad.slice(0, 6).join('\n    ')}` });
  }
  // descriptors back to the baseline within 5 s of the last input
  const deadline = Date.now() + 5000;
  for (;;) {
    // runtime descriptors (thread pool pipes, eventfds) may appear once; sockets must go back
    const over = procs.filter((p) => !p.dead && (socketCount(p.pid) > p.socketBaseline + fdSlack || fdCount(p.pid) > p.fdBaseline + fdSlack + 16));
    if (over.length === 0 || Date.now() >= deadline) {
      for (const p of over) {
        const n = fdCount(p.pid);
        if (n < 0) continue;
        const held = heldInputs(p.pid, p.ports.map((l) => l.port));
        const examples = held.length > 0 ? `; held inputs (${held.length}):\n    ${held.slice(0, 8).join('\n    ')}` : '';
        findings.push({ kind: 'leak', process: p.name, batch, classes, detail: `${n} descriptors (${socketCount(p.pid)} sockets) 5 s after the last input, baseline ${p.fdBaseline} (${p.socketBaseline} sockets): ${fdKinds(p.pid)}${examples}` });
      }
      break;
    }
    await sleep(LEAK_POLL_MS);
  }
  for (const p of procs) {
    if (p.dead) continue;
    p.fdAfter = fdCount(p.pid);
    for (const l of p.ports.filter((x) => servesOutsiders(x.kind))) {
      const err = await served(l.port, l.kind, origin);
      if (err) findings.push({ kind: 'unserved', process: p.name, batch, classes, detail: `valid request on ${l.kind} port failed: ${err}` });
    }
    if (p.metricsPort !== undefined) {
      const err = await scrapeMetrics(p.metricsPort);
      if (err) findings.push({ kind: 'metrics', process: p.name, batch, classes, detail: err });
    }
    p.rssAfter = rssBytes(p.pid);
    p.rssMax = Math.max(p.rssMax, p.rssAfter);
    if (p.rssAfter > p.rssBefore + rssSlack) {
      findings.push({ kind: 'rss', process: p.name, batch, classes, detail: `RSS ${(p.rssAfter / MiB).toFixed(0)} MiB, baseline ${(p.rssBefore / MiB).toFixed(0)} MiB` });
    }
  }
}

/** A --workers primary's children (its workers), from /proc. */
function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/**
 * A sample line of the text exposition format: name, optional labels, a value (and an optional
 * timestamp). NaN and Inf in any case, as Prometheus's parser (Go's ParseFloat) takes them:
 * prom-client writes "Nan".
 */
const SAMPLE = /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*",?)*\})? (-?[0-9.]+(e[+-]?\d+)?|nan|[+-]inf)( -?\d+)?$/i;

/** One scrape of /metrics: null, or what is wrong (status, a line that does not parse, no samples). */
function scrapeMetrics(port: number): Promise<string | null> {
  return new Promise((resolve) => {
    const req = httpGet({ host: '127.0.0.1', port, path: '/metrics', timeout: 5000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('error', (e) => resolve(`/metrics: ${e.message}`));
      res.on('end', () => {
        if (res.statusCode !== 200) return resolve(`/metrics: HTTP ${res.statusCode}`);
        const lines = text.split('\n').filter((l) => l !== '' && !l.startsWith('#'));
        const bad = lines.filter((l) => !SAMPLE.test(l));
        if (bad.length > 0) return resolve(`/metrics: ${bad.length} line(s) do not parse: ${bad.slice(0, 3).map((l) => JSON.stringify(l)).join(', ')}`);
        resolve(lines.length === 0 ? '/metrics: no samples' : null);
      });
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 5 s')));
    req.on('error', (e) => resolve(`/metrics: ${e.message}`));
  });
}
