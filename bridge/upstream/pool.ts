// The bridge's gateways (the draft's §5.11 "easy load balancing"): each gateway is a chain of
// SOCKS5 hops; new connections go round-robin (or sticky per destination) over the healthy
// ones and fail over when a gateway cannot be reached. A gateway's own answer (its REP) is final
// and passed on: another gateway would resolve the same name the same way.
import type { Socket } from 'node:net';
import { ConfigError, DualsocksError, RequestError, SocksProtocolError } from '../../shared/errors.js';
import { joinHostPort } from '../../shared/net/address.js';
import { concatBytes, decodeAuthReply, decodeMethodSelection, encodeAuthRequest, encodeGreeting, type Reply } from '../../shared/socks5/codec.js';
import { CMD, METHOD } from '../../shared/socks5/constants.js';
import { connectTcp } from './direct.js';
import { releasedToNative } from '../native/loader.js';
import { hopLabel, parseHopUrl, socks5Handshake, type Hop, type Socks5Dial } from './socks5.js';
import { openUdpChain, type UdpChain } from './udp-chain.js';

export type Balance = 'round-robin' | 'sticky';

export interface GatewayHealth {
  url: string;
  up: boolean;
  latencyMs: number | null;
  checkedAt: string | null;
  lastError: string | null;
  active: number;
  opened: number;
  failed: number;
  /** Whether the first hop takes greeting, credentials and request in one write (probed once; null: not yet). */
  pipelining: boolean | null;
}

type Counts = Omit<GatewayHealth, 'pipelining'>;

/** A UDP association at a gateway (at each hop of a chain); the gateway's active count follows chain.ended. */
export interface UdpAssociation {
  chain: UdpChain;
  gateway: string;
}

export interface Tunnel {
  socket: Socket;
  /** The last hop's reply: BND.ADDR shows the family it used toward the destination. */
  reply: Reply;
  gateway: string;
  /** Bytes of the SOCKS talk with the gateway on `socket`, to leave out of a relay's counts. */
  overhead: { up: number; down: number };
  /** BIND: the request, still waiting for its second reply (bindSecondReply). */
  dial?: Socks5Dial;
  /** Leaves the gateway's active count (once): at the socket's close, or at the relay's end when the native relay took the socket over. */
  release(): void;
}

/** Parses "socks5://u:p@h1:1081,socks5://h2:1081" (hops in order). */
export function parseGatewayUrl(text: string, key = 'gateway'): Hop[] {
  const hops = text.split(',').map((part) => {
    const hop = parseHopUrl(part.trim());
    if (!hop) throw new ConfigError(key, `"${part}" is not socks5://[user:pass@]host:port`);
    return hop;
  });
  if (hops.length === 0) throw new ConfigError(key, 'empty');
  return hops;
}

/** URL with the password hidden, for status pages and logs. */
export function redactedUrl(hops: Hop[]): string {
  return hops.map((h) => `socks5://${h.username ? `${encodeURIComponent(h.username)}:***@` : ''}${joinHostPort(h.host, h.port)}`).join(',');
}

/** A SOCKS5 greeting answered with a method we can use: the gateway is up and speaking SOCKS. */
async function greet(hop: Hop, timeoutMs: number): Promise<void> {
  const s = await connectTcp(hop, timeoutMs);
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new RequestError('ERR_CONNECT_TIMEOUT', `${hopLabel(hop)} did not answer the greeting`)), timeoutMs);
      let buf: Uint8Array = new Uint8Array(0);
      s.on('data', (chunk: Buffer) => {
        buf = concatBytes(buf, chunk);
        const d = decodeMethodSelection(buf);
        if (d.status === 'need') return;
        clearTimeout(timer);
        if (d.status === 'error') reject(d.error);
        else if (d.msg.method === METHOD.NO_ACCEPTABLE) reject(new RequestError('ERR_CONNECT_FAILED', `${hopLabel(hop)} accepts none of our auth methods`));
        else resolve();
      });
      s.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      s.once('end', () => {
        clearTimeout(timer);
        reject(new RequestError('ERR_CONNECT_FAILED', `${hopLabel(hop)} closed without answering`));
      });
      s.resume();
      s.write(encodeGreeting({ methods: [hop.username !== undefined ? METHOD.USERPASS : METHOD.NO_AUTH] }));
    });
  } finally {
    s.destroy();
  }
}

/** The error of a dial given up because the client it was for went away. */
const clientGone = (): RequestError => new RequestError('ERR_CONNECT_FAILED', 'client went away');

/**
 * Opens host:port through a chain: TCP to the first hop, then CONNECT to each next hop. `signal`
 * (the client went away) ends the dial at once: its socket is closed, so the gateway frees what
 * it held for the request.
 */
export async function dialChain(hops: Hop[], req: { cmd?: number; host: string; port: number }, timeoutMs: number, opts: { pipelineFirst?: boolean; signal?: AbortSignal | undefined } = {}): Promise<Socks5Dial> {
  const { signal } = opts;
  if (signal?.aborted) throw clientGone();
  const socket = await connectTcp(hops[0]!, timeoutMs);
  const onAbort = (): void => void socket.destroy();
  if (signal?.aborted) onAbort();
  signal?.addEventListener('abort', onAbort);
  try {
    for (let i = 0; i < hops.length - 1; i++) {
      try {
        await socks5Handshake(socket, hops[i]!, { cmd: CMD.CONNECT, host: hops[i + 1]!.host, port: hops[i + 1]!.port }, { timeoutMs, pipeline: i === 0 && opts.pipelineFirst });
      } catch (e) {
        if (signal?.aborted) throw clientGone();
        // a refusal on the way is a broken chain, not the destination's answer
        throw new RequestError('ERR_CONNECT_FAILED', `${hopLabel(hops[i]!)} → ${hopLabel(hops[i + 1]!)}: ${(e as Error).message}`);
      }
    }
    return await socks5Handshake(socket, hops[hops.length - 1]!, req, { timeoutMs, pipeline: hops.length === 1 && opts.pipelineFirst }).catch((e: unknown) => {
      throw signal?.aborted ? clientGone() : e;
    });
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

/**
 * Whether `hop` reads a greeting and credentials sent in one write (then it takes the request
 * along too): both answers mean yes. microsocks answers the greeting, drops the rest and waits:
 * no. Only hops with credentials are asked, and nothing is requested, so no destination is
 * touched; without credentials there is no second message to try, and the answer is no.
 */
export async function probePipelining(hop: Hop, timeoutMs: number): Promise<boolean> {
  if (hop.username === undefined) return false;
  let s: Socket;
  try {
    s = await connectTcp(hop, timeoutMs);
  } catch {
    return false;
  }
  try {
    return await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      let buf: Uint8Array = new Uint8Array(0);
      const settle = (answer: boolean): void => {
        clearTimeout(timer);
        resolve(answer);
      };
      s.on('data', (chunk: Buffer) => {
        buf = concatBytes(buf, chunk);
        const m = decodeMethodSelection(buf);
        if (m.status === 'error' || (m.status === 'ok' && m.msg.method !== METHOD.USERPASS)) return settle(false);
        if (m.status !== 'ok') return;
        const a = decodeAuthReply(buf.subarray(m.size));
        if (a.status !== 'need') settle(a.status === 'ok');
      });
      s.once('error', () => settle(false));
      s.once('end', () => settle(false));
      s.resume();
      s.write(concatBytes(encodeGreeting({ methods: [METHOD.USERPASS] }), encodeAuthRequest({ username: hop.username!, password: hop.password ?? '' })));
    });
  } finally {
    s.destroy();
  }
}

/**
 * Probe answers per hop, for a dialer without health checks (the gateway's --upstream): the first
 * ask starts the probe and says no; later asks get its answer.
 */
export class PipeliningCache {
  private readonly known = new Map<string, Promise<boolean>>();
  private readonly answers = new Map<string, boolean>();

  private readonly timeoutMs: number;

  constructor(connectTimeoutMs: number) {
    // a server that drops pipelined bytes leaves the probe unanswered: keep that wait short
    this.timeoutMs = Math.min(connectTimeoutMs, 2000);
  }

  private static key(hop: Hop): string {
    return JSON.stringify([hop.host, hop.port, hop.username ?? null, hop.password ?? null]);
  }

  /** The probe's answer for `hop`, starting it if needed. */
  probe(hop: Hop): Promise<boolean> {
    const key = PipeliningCache.key(hop);
    let p = this.known.get(key);
    if (!p) {
      p = probePipelining(hop, this.timeoutMs).then((yes) => {
        this.answers.set(key, yes);
        return yes;
      });
      this.known.set(key, p);
    }
    return p;
  }

  /** Whether requests to `hop` may be pipelined now (false until the probe has said yes). */
  allows(hop: Hop): boolean {
    void this.probe(hop);
    return this.answers.get(PipeliningCache.key(hop)) === true;
  }

  /** The probe's answer, or null while there is none yet. */
  answer(hop: Hop): boolean | null {
    return this.answers.get(PipeliningCache.key(hop)) ?? null;
  }

  /** Forgets the answer (a pipelined request went unanswered): the next ask probes again. */
  forget(hop: Hop): void {
    const key = PipeliningCache.key(hop);
    this.known.delete(key);
    this.answers.delete(key);
  }

  /** dialChain, the first hop's handshake in one write once its probe said yes. */
  async dial(hops: Hop[], req: { cmd?: number; host: string; port: number }, timeoutMs: number, signal?: AbortSignal): Promise<Socks5Dial> {
    const pipelined = this.allows(hops[0]!);
    try {
      return await dialChain(hops, req, timeoutMs, { pipelineFirst: pipelined, signal });
    } catch (e) {
      // no answer after pipelining: maybe another server listens there now; ask again
      if (pipelined && e instanceof DualsocksError && e.code === 'ERR_CONNECT_TIMEOUT') this.forget(hops[0]!);
      throw e;
    }
  }
}

/**
 * A place in a gateway's active count: join() once the tunnel is up, release() once it ends (in
 * either order; only a joined place is given back). Made apart from the socket, so that holding
 * it does not hold the socket.
 */
function countPlace(h: Counts): { join(): void; release(): void } {
  let state: 'new' | 'in' | 'out' = 'new';
  return {
    join() {
      if (state !== 'new') return;
      state = 'in';
      h.active++;
    },
    release() {
      if (state === 'in') h.active--;
      state = 'out';
    },
  };
}

class Upstream {
  readonly health: Counts;
  constructor(readonly hops: Hop[]) {
    this.health = { url: redactedUrl(hops), up: true, latencyMs: null, checkedAt: null, lastError: null, active: 0, opened: 0, failed: 0 };
  }
}

/** FNV-1a, for sticky choice: the same destination lands on the same gateway. */
function hash(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

export class GatewayPool {
  private readonly upstreams: Upstream[];
  private next = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly pipelining: PipeliningCache;

  constructor(
    gateways: Hop[][],
    private readonly opts: { balance: Balance; connectTimeoutMs: number; healthIntervalMs: number },
  ) {
    if (gateways.length === 0) throw new ConfigError('gateway', 'at least one gateway is needed');
    this.upstreams = gateways.map((g) => new Upstream(g));
    this.pipelining = new PipeliningCache(opts.connectTimeoutMs);
  }

  get health(): GatewayHealth[] {
    return this.upstreams.map((u) => ({ ...u.health, pipelining: this.pipelining.answer(u.hops[0]!) }));
  }

  /** Starts periodic health checks: a timed SOCKS5 greeting to each gateway's first hop. */
  startHealthChecks(): void {
    const tick = (): void => {
      void Promise.all(this.upstreams.map((u) => this.check(u))).finally(() => {
        this.timer = setTimeout(tick, this.opts.healthIntervalMs);
        this.timer.unref();
      });
    };
    tick();
  }

  stop(): void {
    clearTimeout(this.timer);
  }

  async check(u: Upstream): Promise<void> {
    const started = performance.now();
    try {
      // a CONNECT to the first hop's own address would be refused by policy: a greeting is enough
      await greet(u.hops[0]!, this.opts.connectTimeoutMs);
      this.markUp(u, performance.now() - started);
      if (this.pipelining.answer(u.hops[0]!) === null) await this.pipelining.probe(u.hops[0]!);
    } catch (e) {
      this.markDown(u, e);
    }
  }

  private markUp(u: Upstream, latencyMs: number | null): void {
    u.health.up = true;
    if (latencyMs !== null) u.health.latencyMs = Math.round(latencyMs * 100) / 100;
    u.health.checkedAt = new Date().toISOString();
  }

  private markDown(u: Upstream, e: unknown): void {
    u.health.up = false;
    u.health.lastError = e instanceof Error ? e.message : String(e);
    u.health.checkedAt = new Date().toISOString();
  }

  /** Gateways to try for this destination, best first: healthy ones in balance order, then the rest. */
  private order(host: string): Upstream[] {
    const n = this.upstreams.length;
    const start = this.opts.balance === 'sticky' ? hash(host.toLowerCase()) % n : this.next++ % n;
    const rotated = [...this.upstreams.slice(start), ...this.upstreams.slice(0, start)];
    return [...rotated.filter((u) => u.health.up), ...rotated.filter((u) => !u.health.up)];
  }

  /**
   * Runs `attempt` on the gateways for `host` in order until one works: an answer from a gateway
   * is final, only an unreachable one means "try another". The winner counts as opened and active
   * until the release() it is given is called. `signal`: the client went away, stop trying (that
   * says nothing about the gateway).
   */
  private async failover<T>(host: string, attempt: (u: Upstream, release: () => void) => Promise<T>, signal?: AbortSignal): Promise<T> {
    const errors: string[] = [];
    for (const u of this.order(host)) {
      if (signal?.aborted) throw clientGone();
      const started = performance.now();
      try {
        const place = countPlace(u.health);
        const r = await attempt(u, place.release);
        u.health.opened++;
        place.join();
        this.markUp(u, u.health.latencyMs === null ? performance.now() - started : null);
        return r;
      } catch (e) {
        if (signal?.aborted) throw clientGone();
        u.health.failed++;
        if (e instanceof DualsocksError && e.code === 'ERR_SOCKS_REPLY') throw e;
        this.markDown(u, e);
        errors.push(`${u.health.url}: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    throw new RequestError('ERR_NO_GATEWAY', errors.join('; '));
  }

  /**
   * Opens a tunnel to host:port through one gateway, failing over while gateways are unreachable;
   * `signal` gives up (the client went away) and closes what was opened for it.
   */
  open(host: string, port: number, cmd: number = CMD.CONNECT, signal?: AbortSignal): Promise<Tunnel> {
    if (cmd === CMD.UDP_ASSOCIATE) return Promise.reject(new SocksProtocolError('ERR_SOCKS_COMMAND', 'UDP goes through associate()'));
    return this.failover(host, async (u, release) => {
      const dial = await this.pipelining.dial(u.hops, { cmd, host, port }, this.opts.connectTimeoutMs, signal);
      const { socket, reply } = dial;
      socket.once('close', () => {
        if (!releasedToNative(socket)) release();
      });
      return { socket, reply, gateway: u.health.url, overhead: dial.overhead, release, ...(cmd === CMD.BIND ? { dial } : {}) };
    }, signal);
  }

  /** A UDP association through one gateway (an association at every hop of a chain), failing over as open() does. */
  associate(signal?: AbortSignal): Promise<UdpAssociation> {
    return this.failover('0.0.0.0', async (u, release) => {
      const chain = await openUdpChain(u.hops, this.opts.connectTimeoutMs, signal);
      void chain.ended.then(release);
      return { chain, gateway: u.health.url };
    }, signal);
  }
}
