// The fake-address DNS responder's I/O (issue 11): UDP and TCP listeners (--dns-listen), and
// forwarding of DIRECT names to upstream resolvers over UDP (--dns-upstream, default the system's).
//
// A TCP client whose UDP answer came back truncated (TC) gets the answer asked again over TCP.
// Each forwarded query gets its own connected UDP socket (random source port, random ID; only the
// upstream's own answers arrive) that is closed when the answer comes, the timeout fires, or the
// TCP client that asked goes away. Upstream answers are passed back as they came, with the
// client's ID. A failure ends that query (SERVFAIL), never the listener or the process.
import { randomInt } from 'node:crypto';
import { createSocket, type RemoteInfo, type Socket as UdpSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { networkInterfaces } from 'node:os';
import { canonicalHost, parseIp, splitHostPort, type HostPort } from '../../../shared/net/address.js';
import { ConfigError } from '../../../shared/errors.js';
import { RCODE, type FakeDnsResponder } from './dns.js';

export const DNS_PORT = 53;
export const DEFAULT_UPSTREAM_TIMEOUT_MS = 2000;
export const DEFAULT_TCP_IDLE_MS = 10_000;
export const DEFAULT_TCP_MAX_CONNECTIONS = 256;
/** Queries in flight on one TCP connection; beyond it the connection is not read until one ends. */
export const DEFAULT_TCP_MAX_INFLIGHT = 16;
/** Forwarded queries in flight at once; beyond it a DIRECT query gets SERVFAIL at once. */
export const DEFAULT_MAX_FORWARDS = 1024;

const SYSTEMD_STUB = '127.0.0.53';

/** --dns-listen HOST[:PORT]: an IP literal (IPv6 in brackets), port 53 by default. */
export function parseDnsListen(text: string): HostPort {
  const hp = splitHostPort(text, DNS_PORT);
  if (!hp || !parseIp(hp.host)) throw new ConfigError('dnsListen', `${JSON.stringify(text)}: expected IP:PORT or [IPv6]:PORT`);
  return { host: canonicalHost(hp.host), port: hp.port };
}

/** --dns-upstream SERVER[:PORT]: an IP literal (a name would need a resolver to find the resolver). */
export function parseUpstream(text: string): HostPort {
  const hp = splitHostPort(text, DNS_PORT);
  if (!hp || !parseIp(hp.host) || hp.port === 0) throw new ConfigError('dnsUpstream', `${JSON.stringify(text)}: expected an IP address, optionally with :PORT ([IPv6]:PORT)`);
  return { host: canonicalHost(hp.host), port: hp.port };
}

/** The nameserver lines of a resolv.conf, in order (scope ids such as %eth0 kept). */
export function parseResolvConf(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (m && parseIp(m[1]!.split('%')[0]!)) out.push(m[1]!);
  }
  return out;
}

function isUnspecified(host: string): boolean {
  return host === '0.0.0.0' || host === '::';
}

function isLoopback(host: string): boolean {
  return host.startsWith('127.') || host === '::1';
}

/**
 * The system's resolvers for --dns-upstream's default: /etc/resolv.conf's nameservers, with
 * systemd-resolved's stub (127.0.0.53) replaced by the servers it uses, minus every address this
 * responder itself listens on (port 53 on that address, on loopback when it listens on loopback or
 * on every address, or on any of this host's addresses when it listens on every address).
 */
export function systemResolvers(
  listeners: HostPort[],
  files: { resolvConf?: string; resolvedConf?: string; ownAddresses?: string[] } = {},
): HostPort[] {
  const read = (f: string): string => {
    try {
      return readFileSync(f, 'utf8');
    } catch {
      return ''; // no such file on this system: no resolvers from it (none at all is reported by the caller)
    }
  };
  const servers: string[] = [];
  for (const ns of parseResolvConf(read(files.resolvConf ?? '/etc/resolv.conf'))) {
    if (ns === SYSTEMD_STUB) servers.push(...parseResolvConf(read(files.resolvedConf ?? '/run/systemd/resolve/resolv.conf')));
    else servers.push(ns);
  }
  const own = new Set(files.ownAddresses ?? Object.values(networkInterfaces()).flatMap((l) => (l ?? []).map((a) => canonicalHost(a.address))));
  const isSelf = (host: string): boolean =>
    listeners.some((l) => {
      if (l.port !== DNS_PORT) return false;
      const h = canonicalHost(host.split('%')[0]!);
      if (h === l.host) return true;
      return isUnspecified(l.host) && (isLoopback(h) || own.has(h) || isUnspecified(h));
    });
  const seen = new Set<string>();
  const out: HostPort[] = [];
  for (const s of servers) {
    if (isSelf(s) || s === SYSTEMD_STUB || seen.has(s)) continue;
    seen.add(s);
    out.push({ host: s, port: DNS_PORT });
  }
  return out;
}

export interface FakeDnsServerOptions {
  responder: FakeDnsResponder;
  listen: HostPort[];
  upstreams: HostPort[];
  upstreamTimeoutMs?: number;
  tcpIdleMs?: number;
  tcpMaxConnections?: number;
  tcpMaxInflight?: number;
  maxForwards?: number;
  /**
   * Which sources may ask (the bridge's --clients; loopback only by default there). Others are
   * ignored over UDP (no reflection) and disconnected over TCP. Default: everyone.
   */
  allowClient?: (address: string) => boolean;
  /** One record per query (name, type, result), for the bridge's log; never throws into us. */
  onQuery?: (rec: QueryRecord) => void;
  /** An unexpected error inside one query (a bug): logged once with its stack. */
  onError?: (e: unknown) => void;
}

export interface QueryRecord {
  transport: 'udp' | 'tcp';
  client: string;
  name?: string;
  qtype?: string;
  /** answer: answered here; forward: upstream's answer passed on; servfail: upstream failed; drop. */
  result: 'answer' | 'forward' | 'servfail' | 'drop';
  fake?: string;
  upstream?: string;
}

export interface FakeDnsStats {
  queries: number;
  answered: number;
  forwarded: number;
  upstreamFailures: number;
  dropped: number;
}

/** Sends query to each upstream in turn until one answers; null when none does (or on abort). */
export async function forwardUdp(
  query: Uint8Array,
  upstreams: HostPort[],
  timeoutMs: number,
  signal?: AbortSignal,
  opts: { retryTruncatedOverTcp?: boolean } = {},
): Promise<{ answer: Buffer; upstream: HostPort } | null> {
  if (query.length < 12) return null;
  const clientId = (query[0]! << 8) | query[1]!;
  for (const up of upstreams) {
    if (signal?.aborted) return null;
    let answer = await askOnce(query, up, timeoutMs, signal);
    // TC: the whole answer only fits over TCP; a UDP client retries itself, a TCP one cannot
    if (answer && opts.retryTruncatedOverTcp && (answer[2]! & 0x02) !== 0) {
      const q = Buffer.from(query);
      q.writeUInt16BE(randomInt(0x10000), 0);
      answer = (await askOnceTcp(q, up, timeoutMs, signal)) ?? answer;
    }
    if (answer) {
      answer.writeUInt16BE(clientId, 0);
      return { answer, upstream: up };
    }
  }
  return null;
}

/** The same over TCP (RFC 7766), for a TCP client whose UDP answer came back truncated. */
export function askOnceTcp(query: Uint8Array, up: HostPort, timeoutMs: number, signal?: AbortSignal): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const id = (query[0]! << 8) | query[1]!;
    let buf: Buffer = Buffer.alloc(0);
    let done = false;
    const sock = connect({ host: up.host, port: up.port, noDelay: true });
    const finish = (answer: Buffer | null): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      sock.destroy();
      resolve(answer);
    };
    const onAbort = (): void => finish(null);
    const timer = setTimeout(() => finish(null), timeoutMs);
    signal?.addEventListener('abort', onAbort, { once: true });
    sock.on('error', () => finish(null));
    sock.on('close', () => finish(null));
    sock.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) return;
      const msg = Buffer.from(buf.subarray(2, 2 + buf.readUInt16BE(0)));
      finish(msg.length >= 12 && msg.readUInt16BE(0) === id && (msg[2]! & 0x80) !== 0 ? msg : null);
    });
    const len = Buffer.alloc(2);
    len.writeUInt16BE(query.length);
    sock.write(Buffer.concat([len, query]));
  });
}

function askOnce(query: Uint8Array, up: HostPort, timeoutMs: number, signal?: AbortSignal): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const host = up.host;
    const sock: UdpSocket = createSocket(host.includes(':') ? 'udp6' : 'udp4');
    const id = randomInt(0x10000);
    const out = Buffer.from(query);
    out.writeUInt16BE(id, 0);
    let done = false;
    const finish = (answer: Buffer | null): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      sock.removeAllListeners('message');
      sock.on('error', () => {}); // a late ICMP error on a closing socket
      try {
        sock.close();
      } catch {
        /* not yet bound */
      }
      resolve(answer);
    };
    const onAbort = (): void => finish(null);
    const timer = setTimeout(() => finish(null), timeoutMs);
    signal?.addEventListener('abort', onAbort, { once: true });
    // ECONNREFUSED (ICMP port unreachable on the connected socket) and send failures: next upstream
    sock.on('error', () => finish(null));
    sock.on('message', (msg: Buffer) => {
      // the connected socket only receives from the upstream; check it answers this query
      if (msg.length >= 12 && msg.readUInt16BE(0) === id && (msg[2]! & 0x80) !== 0) finish(msg);
    });
    sock.connect(up.port, host, () => {
      if (done) return;
      sock.send(out, (err) => {
        if (err) finish(null);
      });
    });
  });
}

export class FakeDnsServer {
  readonly stats: FakeDnsStats = { queries: 0, answered: 0, forwarded: 0, upstreamFailures: 0, dropped: 0 };
  private readonly udp: UdpSocket[] = [];
  private readonly tcp: Server[] = [];
  private readonly clients = new Set<Socket>();
  /** Aborts every UDP client's forward on close() (a TCP client's ends with its socket). */
  private readonly life = new AbortController();
  private forwards = 0;
  private readonly o: Required<Omit<FakeDnsServerOptions, 'onQuery' | 'onError' | 'allowClient'>> & Pick<FakeDnsServerOptions, 'onQuery' | 'onError' | 'allowClient'>;

  constructor(opts: FakeDnsServerOptions) {
    this.o = {
      upstreamTimeoutMs: DEFAULT_UPSTREAM_TIMEOUT_MS,
      tcpIdleMs: DEFAULT_TCP_IDLE_MS,
      tcpMaxConnections: DEFAULT_TCP_MAX_CONNECTIONS,
      tcpMaxInflight: DEFAULT_TCP_MAX_INFLIGHT,
      maxForwards: DEFAULT_MAX_FORWARDS,
      ...opts,
    };
  }

  /** Binds UDP and TCP on every address (same port; port 0 picks one for both). */
  async start(): Promise<HostPort[]> {
    const bound: HostPort[] = [];
    try {
      for (const addr of this.o.listen) {
        let lastErr: unknown;
        for (let attempt = 0; attempt < (addr.port === 0 ? 5 : 1); attempt++) {
          const server = createServer({ allowHalfOpen: true, noDelay: true }, (s) => this.onTcp(s));
          server.maxConnections = this.o.tcpMaxConnections;
          await listenTcp(server, addr);
          const port = (server.address() as AddressInfo).port;
          try {
            const sock = await bindUdp(addr.host, port, (msg, rinfo, s) => this.onUdp(msg, rinfo, s));
            this.tcp.push(server);
            this.udp.push(sock);
            bound.push({ host: addr.host, port });
            lastErr = undefined;
            break;
          } catch (e) {
            server.close();
            lastErr = e; // with port 0, the UDP port may be taken: pick another
          }
        }
        if (lastErr) throw lastErr;
      }
    } catch (e) {
      await this.close();
      throw e;
    }
    return bound;
  }

  /** Stops listening, ends every TCP client and every forward; resolves when all is closed. */
  async close(): Promise<void> {
    this.life.abort();
    for (const c of this.clients) c.destroy();
    await Promise.all([
      ...this.tcp.splice(0).map((s) => new Promise<void>((r) => s.close(() => r()))),
      ...this.udp.splice(0).map((s) => new Promise<void>((r) => s.close(() => r()))),
    ]);
  }

  private record(rec: QueryRecord): void {
    try {
      this.o.onQuery?.(rec);
    } catch {
      /* a logger's failure is not the query's */
    }
  }

  private bug(e: unknown): void {
    try {
      (this.o.onError ?? ((err: unknown) => process.stderr.write(`dualsocks dns: ${(err as Error)?.stack ?? String(err)}\n`)))(e);
    } catch {
      /* nothing more to do */
    }
  }

  /**
   * One query from either transport: reply(bytes) sends the answer; signal aborts a forward when
   * the client is gone. Resolves when the query is finished.
   */
  private async serve(query: Buffer, transport: 'udp' | 'tcp', client: string, reply: (b: Buffer) => void, signal: AbortSignal): Promise<void> {
    this.stats.queries++;
    const res = this.o.responder.handle(query);
    if (res.kind === 'drop') {
      this.stats.dropped++;
      this.record({ transport, client, result: 'drop' });
      return;
    }
    if (res.kind === 'answer') {
      this.stats.answered++;
      reply(res.message);
      this.record({ transport, client, name: res.name, qtype: res.qtype, result: 'answer', fake: res.fake });
      return;
    }
    const rec = { transport, client, name: res.name, qtype: res.qtype };
    if (this.forwards >= this.o.maxForwards || this.o.upstreams.length === 0) {
      this.fail(query, reply, rec);
      return;
    }
    this.forwards++;
    let got: Awaited<ReturnType<typeof forwardUdp>>;
    try {
      got = await forwardUdp(query, this.o.upstreams, this.o.upstreamTimeoutMs, signal, { retryTruncatedOverTcp: transport === 'tcp' });
    } finally {
      this.forwards--;
    }
    if (signal.aborted || this.life.signal.aborted) return;
    if (!got) {
      this.fail(query, reply, rec);
      return;
    }
    this.stats.forwarded++;
    reply(got.answer);
    this.record({ ...rec, result: 'forward', upstream: `${got.upstream.host}:${got.upstream.port}` });
  }

  private fail(query: Buffer, reply: (b: Buffer) => void, rec: Omit<QueryRecord, 'result'>): void {
    this.stats.upstreamFailures++;
    const m = this.o.responder.failure(query, RCODE.SERVFAIL);
    if (m) reply(m);
    this.record({ ...rec, result: 'servfail' });
  }

  private allowed(address: string | undefined): boolean {
    try {
      return !this.o.allowClient || (address !== undefined && this.o.allowClient(canonicalHost(address)));
    } catch {
      return false; // a policy that throws refuses: failing closed
    }
  }

  private onUdp(msg: Buffer, rinfo: RemoteInfo, sock: UdpSocket): void {
    if (!this.allowed(rinfo.address)) {
      this.stats.dropped++;
      return;
    }
    const client = `${canonicalHost(rinfo.address)}:${rinfo.port}`;
    const reply = (b: Buffer): void => {
      try {
        sock.send(b, rinfo.port, rinfo.address, () => {});
      } catch {
        /* the listener closed meanwhile */
      }
    };
    this.serve(msg, 'udp', client, reply, this.life.signal).catch((e: unknown) => this.bug(e));
  }

  private onTcp(s: Socket): void {
    if (!this.allowed(s.remoteAddress)) {
      s.on('error', () => {}); // refused and destroyed right away: nothing to tell anyone
      s.destroy();
      return;
    }
    this.clients.add(s);
    const gone = new AbortController();
    const client = `${canonicalHost(s.remoteAddress ?? '')}:${s.remotePort ?? 0}`;
    let pending: Buffer = Buffer.alloc(0);
    let inflight = 0;
    let ended = false;
    s.setTimeout(this.o.tcpIdleMs, () => s.destroy());
    s.on('error', () => {}); // 'close' follows and cleans up; a client's reset is not the server's error
    s.on('close', () => {
      this.clients.delete(s);
      gone.abort();
    });
    const reply = (b: Buffer): void => {
      if (s.destroyed || !s.writable) return;
      const len = Buffer.alloc(2); // RFC 1035 4.2.2 framing
      len.writeUInt16BE(b.length);
      s.write(Buffer.concat([len, b]));
    };
    // Parses whole messages while fewer than tcpMaxInflight are in flight; the rest waits in
    // `pending` (and the socket is paused) until one finishes.
    const drain = (): void => {
      while (pending.length >= 2 && inflight < this.o.tcpMaxInflight) {
        const n = pending.readUInt16BE(0);
        if (pending.length < 2 + n) break;
        const msg = Buffer.from(pending.subarray(2, 2 + n)); // its own copy: pending is reused
        pending = pending.subarray(2 + n);
        inflight++;
        this.serve(msg, 'tcp', client, reply, gone.signal)
          .catch((e: unknown) => this.bug(e))
          .finally(() => {
            inflight--;
            if (s.destroyed) return;
            drain();
          });
      }
      if (inflight >= this.o.tcpMaxInflight) s.pause();
      else if (!ended) s.resume();
      // a client that half-closes after its queries gets every answer, then the end
      if (ended && inflight === 0 && !s.writableEnded) s.end();
    };
    s.on('data', (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      drain();
    });
    s.on('end', () => {
      ended = true;
      drain();
    });
  }
}

function listenTcp(server: Server, addr: HostPort): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: addr.host, port: addr.port, ipv6Only: addr.host.includes(':') }, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

function bindUdp(host: string, port: number, onMessage: (msg: Buffer, rinfo: RemoteInfo, s: UdpSocket) => void): Promise<UdpSocket> {
  return new Promise((resolve, reject) => {
    const sock = createSocket({ type: host.includes(':') ? 'udp6' : 'udp4', ipv6Only: host.includes(':') });
    sock.once('error', reject);
    sock.bind({ address: host, port }, () => {
      sock.off('error', reject);
      // a send error to one client (e.g. EPERM from a firewall) is that query's, not the listener's
      sock.on('error', () => {});
      sock.on('message', (msg, rinfo) => onMessage(msg, rinfo, sock));
      resolve(sock);
    });
  });
}
