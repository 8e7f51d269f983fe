// The bridge's gateways (the draft's §5.11 "easy load balancing"): each gateway is a chain of
// SOCKS5 hops; new connections go round-robin (or sticky per destination) over the healthy
// ones and fail over when a gateway cannot be reached. A gateway's own answer (its REP) is final
// and passed on: another gateway would resolve the same name the same way.
import type { Socket } from 'node:net';
import { ConfigError, RequestError, SocksProtocolError, SocksReplyError } from '../../shared/errors.js';
import { concatBytes, decodeMethodSelection, encodeGreeting, type Reply } from '../../shared/socks5/codec.js';
import { CMD, METHOD } from '../../shared/socks5/constants.js';
import { connectTcp } from './direct.js';
import { releasedToNative } from '../native/loader.js';
import { hopLabel, redactedUrl, type Hop } from './hops.js';
import { PipeliningCache } from './pipelining.js';
import { clientGone, type Socks5Dial } from './socks5.js';
import { openUdpChain, type UdpChain } from './udp-chain.js';
import { WarmConnections } from './warm.js';
import type { GatewayHealth } from '../../shared/status.js';

export type Balance = 'round-robin' | 'sticky';

export type { GatewayHealth };

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
  /** Connections to each first hop greeted ahead of need (warm.ts); none unless opts.warm. */
  readonly warm: WarmConnections;

  constructor(
    gateways: Hop[][],
    private readonly opts: { balance: Balance; connectTimeoutMs: number; healthIntervalMs: number; warm?: { size: number; idleMs: number } | undefined },
  ) {
    if (gateways.length === 0) throw new ConfigError('gateway', 'at least one gateway is needed');
    this.upstreams = gateways.map((g) => new Upstream(g));
    this.pipelining = new PipeliningCache(opts.connectTimeoutMs);
    this.warm = new WarmConnections({ size: opts.warm?.size ?? 0, idleMs: opts.warm?.idleMs ?? 0, timeoutMs: opts.connectTimeoutMs });
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
    this.warm.close();
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
        if (e instanceof SocksReplyError) throw e;
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
      const req = { cmd, host, port };
      const warm = this.warm.take(u.hops[0]!);
      let dial: Socks5Dial;
      try {
        dial = await this.pipelining.dial(u.hops, req, this.opts.connectTimeoutMs, signal, warm);
      } catch (e) {
        if (!warm || signal?.aborted || e instanceof SocksReplyError) throw e;
        // the gateway ended the warm connection as it was taken (its handshake timeout, eviction): once more, cold
        dial = await this.pipelining.dial(u.hops, req, this.opts.connectTimeoutMs, signal);
      }
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
