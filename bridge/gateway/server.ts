// The gateway's I/O layer: accepts sockets, drives the sans-IO SOCKS5 session with them, and
// hands granted requests to the command handlers. Protocol logic stays in shared/socks5.
import cluster from 'node:cluster';
import { closeSync } from 'node:fs';
import type { Server, Socket } from 'node:net';
import { DualsocksError, ProxyProtocolError, RequestError, SocksProtocolError } from '../../shared/errors.js';
import { canonicalHost, familyOf, formatIp, joinHostPort, parseIp, type Ip } from '../../shared/net/address.js';
import { checkDestination, specialClass } from '../../shared/net/policy.js';
import { decodeProxyHeader, startsLikeProxyHeader, type ProxyHeader } from '../../shared/proxy-protocol/codec.js';
import { concatBytes, decodeRequest, encodeFailureReply, encodeMethodSelection, type Request } from '../../shared/socks5/codec.js';
import { CMD, METHOD, REP, type Rep } from '../../shared/socks5/constants.js';
import { Socks5ServerSession, type ServerCommand } from '../../shared/socks5/server.js';
import { hostAddresses } from '../host-addresses.js';
import { closeAll, listenAll } from '../listen.js';
import { say, type GatewayConnectRecord, type GatewayHandshakeRecord, type GatewayLine, type GatewayRecord, type GatewayRequestRecord, type Logger } from '../log.js';
import { adoptDescriptor, bindListen, frontDial, frontHandshakes, frontStats, frontListen, frontListenFd, frontStep, nativeFrontStatus, frontUnlisten, releasedToNative, type FrontAdopt, type FrontEnded, type FrontHandlers, type FrontRequest } from '../native/loader.js';
import { errnoToError, interleave } from '../upstream/direct.js';
import { goesUpstream } from './chain.js';
import { WORKER_LISTEN_ENV, WORKER_LISTENING } from './workers.js';
import { PipeliningCache } from '../upstream/pipelining.js';
import { RelayGroup } from '../relay.js';
import type { GatewayConfig, HostPort } from './config.js';
import { serveBind } from './bind.js';
import type { ConnectContext, GatewayServices, RequestContext } from './context.js';
import { FtpDataSlots } from './ftp-slots.js';
import { GatewayMetrics, type LookupSource } from './metrics.js';
import { serveConnect } from './connect.js';
import { serveUdp } from './udp.js';
import { NameResolver } from './resolver.js';
import { checkRemembered, PassedLogins, PasswordChecks, sourceKey, Users, type CheckResult } from './users.js';

const CMD_NAMES: Record<number, GatewayRequestRecord['cmd']> = { [CMD.CONNECT]: 'connect', [CMD.BIND]: 'bind', [CMD.UDP_ASSOCIATE]: 'udp' };
// abort() without a reason builds a DOMException (with a stack) on every client close
const CLIENT_CLOSED = Object.freeze(new Error('client closed'));
// what a client may send behind its credentials before its password check ends (pipelined request
// and early data); past this the socket is paused
const MAX_READ_DURING_AUTH = 64 * 1024;
// handshakes at once: a quarter of --max-connections, at least this many
const MIN_HANDSHAKE_BUDGET = 16;
const MS_PER_SECOND = 1000;
const NO_EVICT = (): void => {};

export interface GatewayStats {
  accepted: number;
  /** Connections past their request: what --max-connections counts. */
  active: number;
  /** Connections still in their handshake (their own budget, see Gateway.handshakeBudget). */
  readonly handshaking: number;
  /** Handshakes ended to make room for a newer one. */
  evicted: number;
  succeeded: number;
  failed: number;
}

/**
 * A connection's log line and its place in the counts. Kept apart from the handshake's state
 * (the socket, the session, the closures) so that a tunnel the native relay took over holds
 * only this until it ends.
 */
class Conn {
  private logged = false;
  /** Which budget holds this connection. */
  private place: 'none' | 'handshake' | 'served' = 'none';
  /** Ends the connection to make room for a newer handshake. */
  evict: () => void = NO_EVICT;

  constructor(
    private readonly gateway: Gateway,
    /** The same object the handler fills in: a handshake record until the request, then the command's. */
    readonly record: GatewayRecord,
    private readonly started: number,
  ) {}

  /** Takes a place in the handshake budget, evicting the oldest handshake when it is full. */
  enterHandshake(evict: () => void): void {
    const { gateway } = this;
    const oldest = gateway.handshakes.values().next().value;
    if (oldest && gateway.handshakes.size >= gateway.handshakeBudget) {
      gateway.stats.evicted++;
      oldest.evict();
      // a defect in its eviction must not leave it holding a place
      oldest.release();
    }
    this.evict = evict;
    this.place = 'handshake';
    gateway.handshakes.add(this);
    gateway.jsHandshakes++;
  }

  /** Leaves the handshake for a place under --max-connections; false when those are all taken. */
  serve(): boolean {
    this.release();
    const { stats, config } = this.gateway;
    if (stats.active >= config.maxConnections) return false;
    this.place = 'served';
    stats.active++;
    return true;
  }

  /** Leaves whichever count holds it (once). */
  release(): void {
    const { gateway } = this;
    if (this.place === 'handshake') {
      gateway.handshakes.delete(this);
      gateway.jsHandshakes--;
      // only a handshake is evicted; the closure holds the client socket and its session, which a
      // tunnel the native relay took over must not keep alive (this Conn lives as long as it)
      this.evict = NO_EVICT;
    } else if (this.place === 'served') gateway.stats.active--;
    this.place = 'none';
  }

  /** Logs the outcome (once) and leaves the active count. */
  finish(result: string, extra: Partial<GatewayRecord> = {}): void {
    this.release();
    if (this.logged) return;
    this.logged = true;
    const { gateway } = this;
    const record: GatewayLine = Object.assign(this.record, extra, { result, durationMs: Date.now() - this.started });
    if (result === 'ok') gateway.stats.succeeded++;
    else gateway.stats.failed++;
    gateway.metrics.observe(record);
    // a peer that left before asking for anything (health checks, a bridge's pipelining probe,
    // scanners) is not worth a line; a failed login, one it left before it was checked, or a
    // protocol error is
    const worth = record.cmd !== undefined || result !== 'ERR_CLIENT_CLOSED' || (record.auth !== undefined && record.auth !== 'ok');
    if (!gateway.config.quiet && worth) gateway.log(record);
  }
}

export class Gateway implements GatewayServices {
  /** Both replaced by reload(); a request in progress keeps the ones it started with. */
  resolver: NameResolver;
  /** Tunnels being relayed; close() ends them. */
  readonly relays = new RelayGroup();
  users: Users | undefined;
  /** Password checks: concurrency cap, per-source turns and failure back-off (see users.ts). */
  passwordChecks = new PasswordChecks();
  /** Logins that passed lately: a bridge's many connections cost one scrypt (see users.ts). */
  readonly logins = new PassedLogins();
  /** Which --upstream first hops take a pipelined handshake. */
  readonly pipelining: PipeliningCache;
  /** FTP passive data connections a CONNECT may claim (ftp-slots.ts). */
  readonly ftpSlots = new FtpDataSlots<ConnectContext>();
  readonly stats: GatewayStats;
  /** Handshakes in the session here; the native front's are counted by the addon. */
  jsHandshakes = 0;
  /**
   * Connections in their handshake, oldest first. They have their own budget, apart from
   * --max-connections: idle or slow clients cannot take the places of served ones, and when the
   * budget is full the oldest handshake makes room (a slowloris only evicts itself).
   */
  readonly handshakes = new Set<Conn>();
  readonly handshakeBudget: number;
  /** Its Prometheus metrics (served by --metrics; bridge/metrics.ts). */
  readonly metrics = new GatewayMetrics(() => this.stats);
  private readonly servers: Server[] = [];
  /** Listening sockets the native front accepts on. */
  private readonly frontLids: number[] = [];
  /** Descriptors of front clients whose destination name is being resolved. */
  private readonly frontWaiting = new Map<number, Conn>();
  private readonly sockets = new Set<Socket>();

  constructor(
    readonly config: GatewayConfig,
    readonly log: Logger<GatewayLine>,
  ) {
    this.users = config.usersFile ? Users.fromFile(config.usersFile) : undefined;
    this.resolver = new NameResolver({ hostsFile: config.hostsFile, dns: config.dns, cacheSeconds: config.dnsCacheSeconds });
    this.pipelining = new PipeliningCache(config.connectTimeoutMs);
    this.handshakeBudget = Math.max(MIN_HANDSHAKE_BUDGET, Math.ceil(config.maxConnections / 4));
    const frontLids = this.frontLids;
    const self = this;
    this.stats = {
      accepted: 0,
      active: 0,
      get handshaking(): number {
        return self.jsHandshakes + frontLids.reduce((n, lid) => n + frontHandshakes(lid), 0);
      },
      evicted: 0,
      succeeded: 0,
      failed: 0,
    };
  }

  async listen(): Promise<HostPort[]> {
    const own = process.env[WORKER_LISTEN_ENV];
    if (own !== undefined && cluster.isWorker) return this.listenShared(JSON.parse(own) as HostPort[]);
    const { servers, bound } = await listenAll(this.config.listen, (s) => this.accept(s), { defaults: this.config.listenIsDefault });
    const front = this.frontOptions();
    for (const server of servers) {
      const lid = front ? frontListen(server, this.front, front) : undefined;
      if (lid === undefined) this.servers.push(server);
      else {
        // the addon accepts on its duplicate from now on
        this.frontLids.push(lid);
        server.close();
      }
    }
    return bound;
  }

  /** A --workers worker with the front: its own socket on each port its primary holds (SO_REUSEPORT). */
  private listenShared(addrs: HostPort[]): HostPort[] {
    const front = this.frontOptions();
    if (!front) throw new Error(`${WORKER_LISTEN_ENV} without the native front`);
    for (const a of addrs) {
      const { fd } = bindListen(a.host, a.port, true, true);
      try {
        const lid = frontListenFd(fd, this.front, front);
        if (lid === undefined) throw new Error(`the native front did not start: ${nativeFrontStatus().reason}`);
        this.frontLids.push(lid);
      } finally {
        closeSync(fd);
      }
    }
    process.send?.(WORKER_LISTENING);
    return addrs;
  }

  /**
   * The native front (see splice_relay.c) takes the listening sockets where every handshake is
   * the plain one it reads: no --users (the password check is here) and no --proxy-protocol.
   */
  private frontOptions(): { clients: Uint8Array | null; handshakeMs: number; budget: number } | undefined {
    const { config } = this;
    if (this.users || !frontFits(config)) return undefined;
    let clients: Uint8Array | null = null;
    if (config.clients) {
      clients = new Uint8Array(config.clients.entries.length * 17);
      config.clients.entries.forEach((c, i) => {
        clients!.set(c.ip, i * 17);
        clients![i * 17 + 16] = c.bits;
      });
    }
    return { clients, handshakeMs: config.handshakeTimeoutMs, budget: this.handshakeBudget };
  }

  /** What the front hands over (guarded by the loader: a throw closes that connection only). */
  private readonly front: FrontHandlers = {
    request: (m) => this.frontRequest(m),
    adopt: (m) => this.adopt(m, m.methodSent ? 2 : 0),
    ended: (m) => this.frontEnded(m),
    internal: (e) => say(`dualsocks gateway: internal error in a connection from the native front, connection closed: ${e instanceof Error ? e.stack : String(e)}`),
  };

  /**
   * A CONNECT the front read whole. The plain case — a direct destination (an IP literal, or a
   * name resolved here) on a port without FTP translation, a place under --max-connections — is
   * dialed and relayed by the front, policy checked here on every address; anything else goes to
   * the session as if Node had accepted it, so every other refusal and error is the one code path.
   */
  private frontRequest(m: FrontRequest): void {
    const { config } = this;
    const d = decodeRequest(m.bytes.subarray(m.greetingLength, m.greetingLength + m.requestLength));
    if (d.status !== 'ok') return this.adopt(m, 2);
    const request = d.msg;
    const plain = request.port !== 0 && this.ftpSlots.size === 0 && !config.ftpPorts.includes(request.port) && !goesUpstream(config, request.host, request.port);
    if (!plain) return this.adopt(m, 2);
    const record: GatewayConnectRecord = { client: canonicalHost(m.peer), clientPort: m.port, cmd: 'connect', host: request.host, port: request.port };
    const conn = new Conn(this, record, Date.now() - m.ms);
    if (!conn.serve()) return this.adopt(m, 2);
    this.stats.accepted++;
    this.metrics.handshake(m.ms);
    const ip = parseIp(request.host);
    if (ip) return this.frontGuard(m, conn, () => this.frontDial(m, conn, record, [ip]));
    // a name: the client waits unread while it is resolved (a --hosts or cache hit at once);
    // close() ends the wait
    this.frontWaiting.set(m.fd, conn);
    this.addressesFor(request.host).then(
      (ips) => {
        if (this.frontWaiting.delete(m.fd)) this.frontGuard(m, conn, () => this.frontDial(m, conn, record, ips));
      },
      (e: unknown) => {
        if (!this.frontWaiting.delete(m.fd)) return;
        this.frontGuard(m, conn, () => {
          if (e instanceof DualsocksError) return this.frontReject(m, conn, e);
          // a defect in the lookup: this client is told "general failure" (ERR_INTERNAL)
          sayInternal(m, e);
          this.frontReject(m, conn, new RequestError('ERR_INTERNAL', e instanceof Error ? e.message : String(e)));
        });
      },
    );
  }

  /**
   * Runs a step of a front connection outside the loader's guard (after a lookup): a defect ends
   * this connection (ERR_INTERNAL, its place given back, the descriptor closed if nothing took it).
   */
  private frontGuard(m: FrontRequest, conn: Conn, step: () => void): void {
    const failed = frontStep(m.fd, step);
    if (!failed) return;
    const e = failed.error;
    sayInternal(m, e);
    conn.finish('ERR_INTERNAL', { rep: REP.GENERAL_FAILURE, error: e instanceof Error ? e.message : String(e) });
  }

  /** Policy on every address (RFC 8305 order), then the front's dial; its outcome is logged here. */
  private frontDial(m: FrontRequest, conn: Conn, record: GatewayConnectRecord, ips: Ip[]): void {
    const { config } = this;
    const allowed: Ip[] = [];
    let refused: RequestError | undefined;
    for (const ip of interleave(ips, config.prefer)) {
      const why = this.denyDestination(ip);
      if (why) refused ??= new RequestError('ERR_POLICY_DESTINATION', `${formatIp(ip)}: ${why}`);
      else allowed.push(ip);
    }
    if (allowed.length === 0) return this.frontReject(m, conn, refused ?? new RequestError('ERR_NO_ADDRESS'));
    frontDial(m.fd, 0, allowed.map(formatIp), record.port, {
      timeoutMs: config.connectTimeoutMs,
      idleTimeoutMs: config.idleTimeoutMs,
      early: m.bytes.subarray(m.greetingLength + m.requestLength),
      eof: m.eof,
      group: this.relays.native,
      failed: (r) => {
        // the client gone: with the errno of its reset, as the session logs it
        if (r.fd < 0) return conn.finish('ERR_CLIENT_CLOSED', r.error === 'ERR_CLIENT_CLOSED' ? {} : { clientError: r.error });
        const ip = allowed[r.address];
        const error =
          ip === undefined
            ? new RequestError('ERR_CONNECT_TIMEOUT', `no answer within ${config.connectTimeoutMs} ms`)
            : errnoToError(Object.assign(new Error(r.error), { code: r.error }), formatIp(ip));
        this.frontReject({ ...m, fd: r.fd }, conn, error);
      },
      done: (r) => {
        const ip = r.address === undefined ? undefined : allowed[r.address];
        if (r.bound && ip) {
          record.address = formatIp(ip);
          record.family = familyOf(ip);
          record.bound = joinHostPort(canonicalHost(r.bound.host), r.bound.port);
          // observed at the end: the front reports a dial once, with the tunnel's end
          this.metrics.connected('connect', r.dialMs ?? 0);
        }
        conn.finish('ok', { bytesUp: r.up, bytesDown: r.down, end: r.end });
      },
    });
  }

  /** The failure reply (with its code if the client offered 0xD5) and the log line. */
  private frontReject(m: FrontRequest, conn: Conn, error: DualsocksError): void {
    conn.finish(error.code, { rep: error.rep, error: error.message });
    const s = adoptDescriptor(m.fd);
    s.on('error', () => s.destroy());
    s.end(encodeFailureReply(error.rep, m.errorCodes ? error.code : undefined), () => s.destroy());
  }

  /** A handshake the front ended before any request: counted and logged as the session would. */
  private frontEnded(m: FrontEnded): void {
    this.stats.accepted++;
    const conn = new Conn(this, { client: canonicalHost(m.peer), clientPort: m.port }, Date.now() - m.ms);
    if (m.result === 'ERR_HANDSHAKE_TIMEOUT') conn.finish(m.result, { phase: m.phase });
    else if (m.result === 'ERR_CONNECTION_CAP') {
      this.stats.evicted++;
      conn.finish(m.result, { phase: m.phase, error: `${this.handshakeBudget} handshakes at once: the oldest made room` });
    } else if (m.result === 'ERR_CLIENT_CLOSED') conn.finish(m.result);
    else conn.finish('ERR_CLIENT_CLOSED', { clientError: m.result });
  }

  /**
   * A connection the front gives to the session: its bytes so far are fed again, and the method
   * selection the front already sent (`skipSends` 2 bytes) is not sent twice.
   */
  private adopt(m: FrontAdopt | FrontRequest, skipSends: number): void {
    const socket = adoptDescriptor(m.fd);
    frontStats.adopted++;
    this.stats.accepted++;
    this.sockets.add(socket);
    new ClientConnection(this, socket, () => this.sockets.delete(socket), { bytes: m.bytes, answered: skipSends, ms: m.ms }).start();
  }

  /**
   * SIGHUP: re-reads --users and --hosts (and starts a new DNS cache); connections already
   * granted are not touched. A file that does not parse leaves its table as it was. Returns
   * what to say.
   */
  reload(): string[] {
    const { config } = this;
    const said: string[] = [];
    if (config.usersFile) {
      try {
        this.users = Users.fromFile(config.usersFile);
        this.logins.clear();
        said.push(`users reloaded from ${config.usersFile} (${this.users.size})`);
      } catch (e) {
        said.push(`--users not reloaded, the previous users stay: ${(e as Error).message}`);
      }
    }
    try {
      this.resolver = new NameResolver({ hostsFile: config.hostsFile, dns: config.dns, cacheSeconds: config.dnsCacheSeconds });
      said.push(config.hostsFile ? `hosts reloaded from ${config.hostsFile}, DNS cache emptied` : 'DNS cache emptied');
    } catch (e) {
      said.push(`--hosts not reloaded, the previous names stay: ${(e as Error).message}`);
    }
    return said;
  }

  close(): Promise<void> {
    for (const lid of this.frontLids.splice(0)) frontUnlisten(lid);
    for (const [fd, conn] of this.frontWaiting) {
      closeSync(fd);
      conn.finish('ERR_CLIENT_CLOSED');
    }
    this.frontWaiting.clear();
    this.relays.closeAll();
    return closeAll(this.servers, this.sockets);
  }

  private accept(client: Socket): void {
    this.stats.accepted++;
    this.sockets.add(client);
    new ClientConnection(this, client, () => this.sockets.delete(client)).start();
  }

  /** Why the destination address is refused, or null. */
  denyDestination(ip: Ip): string | null {
    const { allow, allowPrivate } = this.config;
    const why = checkDestination({ allow, allowPrivate, self: hostAddresses() }, ip);
    // checkDestination refuses a special-purpose class or this host's own addresses
    if (why) this.metrics.refused(specialClass(ip) ?? 'self');
    return why;
  }

  /** Addresses resolved for a request, IP literals (also inside DOMAINNAME) taken as they are. */
  async addressesFor(host: string): Promise<Ip[]> {
    const ip = parseIp(host);
    if (ip) return [ip];
    // a dead resolver must not hold the client longer than a dead destination would
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new RequestError('ERR_DNS_FAILED', `${host} (no answer within ${this.config.connectTimeoutMs} ms)`)), this.config.connectTimeoutMs);
    });
    const { resolver } = this;
    const { cached, asked } = resolver.stats;
    const answer = resolver.resolve(host);
    // resolve() counts a cache hit or a question before its first await: known here already
    const source: LookupSource = resolver.stats.cached > cached ? 'cache' : resolver.stats.asked > asked ? 'dns' : 'hosts';
    try {
      const ips = await Promise.race([answer, limit]);
      this.metrics.lookup(source);
      return ips;
    } catch (e) {
      this.metrics.lookup(source, e instanceof DualsocksError ? e.code : 'ERR_DNS_FAILED');
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }
}

/** A defect while serving a front connection: its stack, once, on stderr. */
function sayInternal(m: FrontRequest, e: unknown): void {
  say(`dualsocks gateway: internal error serving ${joinHostPort(canonicalHost(m.peer), m.port)}, connection closed: ${e instanceof Error ? e.stack : String(e)}`);
}

/**
 * Whether every handshake this configuration takes is one the native front reads: none with a
 * password (checked here) or behind a PROXY header.
 */
export function frontFits(config: GatewayConfig): boolean {
  return !config.usersFile && !config.requireAuth && !config.proxyProtocol;
}

/** A request's context before its record is typed by its command. */
type UntypedContext = Omit<RequestContext, 'record' | 'finish'> & { finish(result: string, extra?: Partial<GatewayRecord>): void };

/**
 * Runs the command's handler with the context typed by its command (`record`: the connection's
 * record, its `cmd` set); a failure that is not a DualsocksError is a defect: `internal`.
 */
function dispatch(ctx: UntypedContext, record: GatewayRecord, internal: (e: unknown) => void): void {
  const onError = (e: unknown): void => {
    if (e instanceof DualsocksError) ctx.guard(() => ctx.fail(e))();
    else internal(e);
  };
  try {
    switch (record.cmd) {
      case 'connect':
        serveConnect({ ...ctx, record }).catch(onError);
        break;
      case 'udp':
        serveUdp({ ...ctx, record }).catch(onError);
        break;
      case 'bind':
        serveBind({ ...ctx, record }).catch(onError);
        break;
      default:
        ctx.fail(new SocksProtocolError('ERR_SOCKS_COMMAND', CMD_NAMES[ctx.request.cmd]));
    }
  } catch (e) {
    onError(e);
  }
}

type CloseCommand = Extract<ServerCommand, { type: 'close' }>;

/**
 * One accepted client, from its first byte to its request's handler: the --clients filter, the
 * handshake budget and timer, the SOCKS5 session driven with the socket, the password check, and
 * the request context the handler gets.
 */
class ClientConnection {
  /** The client's address: the socket's peer, or the one its balancer's PROXY header names. */
  private clientHost: string;
  private clientPort: number;
  /** The peer is in --proxy-protocol: its connection starts with a PROXY header. */
  private readonly behindBalancer: boolean;
  /** No byte of the connection was read yet (see onData). */
  private firstRead = true;
  /** Its log record (from the request on, the same object typed by its command). */
  private readonly record: GatewayHandshakeRecord;
  /** The log line and the place in the counts. */
  private readonly conn: Conn;
  private readonly aborter = new AbortController();
  /** The success reply went out: the handler logs the outcome from then on. */
  private granted = false;
  private session: Socks5ServerSession | undefined;
  private handshakeTimer: NodeJS.Timeout | undefined;
  /** Cancels the password check this client waits for. */
  private cancelCheck: (() => boolean) | undefined;
  private failedInternally = false;
  /** Relay data the client sent before its reply. */
  private early: Uint8Array[] = [];
  /** bytesRead when the password check started (see MAX_READ_DURING_AUTH). */
  private authReadFrom = 0;
  /** When it was accepted, and when its request came (for the latency metrics). */
  private readonly started: number;
  private requestAt = 0;
  /** Bytes of the session's first replies the front already sent (replay). */
  private answered: number;

  constructor(
    private readonly gateway: Gateway,
    private readonly client: Socket,
    /** Takes the socket off the gateway's list (at its close). */
    private readonly forget: () => void,
    /** From the native front: the bytes it read, how many bytes of replies it already sent, and how long ago it accepted. */
    private readonly replay?: { bytes: Uint8Array; answered: number; ms: number },
  ) {
    this.answered = replay?.answered ?? 0;
    // a connection from the front started at its accept there: the log, the metrics and the
    // handshake timer count from then (else a client could hold a handshake twice as long)
    this.started = Date.now() - (replay?.ms ?? 0);
    this.clientHost = canonicalHost(client.remoteAddress ?? '');
    this.clientPort = client.remotePort ?? 0;
    this.record = { client: this.clientHost, clientPort: client.remotePort };
    this.conn = new Conn(gateway, this.record, this.started);
    const peerIp = parseIp(this.clientHost);
    this.behindBalancer = peerIp !== null && gateway.config.proxyProtocol?.has(peerIp) === true;
  }

  private readonly finish = (result: string, extra?: Partial<GatewayRecord>): void => this.conn.finish(result, extra);

  /**
   * One guard per connection: a defect while serving it ends this connection (ERR_INTERNAL, its
   * stack once on stderr), never the process. Every callback of this connection runs in it.
   */
  private readonly guard =
    <A extends unknown[]>(fn: (...args: A) => void) =>
    (...args: A): void => {
      try {
        fn(...args);
      } catch (e) {
        this.internal(e);
      }
    };

  private readonly onData = this.guard((chunk: Uint8Array): void => {
    const s = this.session!;
    if (this.firstRead) {
      this.firstRead = false;
      // a balancer not in --proxy-protocol, or a client trying to name another source: named in the log
      if (!this.behindBalancer && startsLikeProxyHeader(chunk)) {
        this.refuseHeader(new ProxyProtocolError('ERR_PROXY_UNTRUSTED', `from ${this.clientHost}`));
        return;
      }
    }
    this.run(s.feed(chunk));
    // bytes pipelined behind the credentials wait in the socket, not here, past a bound
    if (s.phase === 'auth-wait' && this.client.bytesRead - this.authReadFrom > MAX_READ_DURING_AUTH) this.client.pause();
  });

  start(): void {
    const { client } = this;
    client.once('close', this.guard(() => this.onClose()));
    client.on('error', this.guard((e: NodeJS.ErrnoException) => {
      this.record.clientError = e.code ?? e.message;
      client.destroy();
    }));
    this.guard(() => {
      // reset before it was accepted (a balancer's health check closes at once): nothing to judge
      if (client.remoteAddress === undefined) {
        this.finish('ERR_CLIENT_CLOSED');
        client.destroy();
        return;
      }
      if (this.behindBalancer) this.awaitProxyHeader();
      else this.begin(this.replay?.bytes);
    })();
  }

  /** The SOCKS5 handshake, once the client's address is known; `early`: bytes already read. */
  private begin(early: Uint8Array | undefined): void {
    const { client } = this;
    if (!this.admitted()) return;
    const s = this.startHandshake();
    client.on('data', this.onData);
    // a client gone before its request (a health check, a port scan) is closed now, not at the
    // timeout; one that sent all it needs (request included) before its FIN is still answered
    client.once('end', this.guard(() => {
      if (!this.granted) this.run(s.end());
    }));
    if (early && early.length > 0) this.onData(early);
  }

  /**
   * A --proxy-protocol source: the header first, within the handshake's time and budget; the
   * bytes after it in the same read are the SOCKS5 handshake's. A missing, malformed or cut-off
   * header closes the connection without a reply (the balancer logs the abort).
   */
  private awaitProxyHeader(): void {
    const { client } = this;
    this.startBudget();
    let buf: Uint8Array = new Uint8Array(0);
    const onEnd = this.guard(() => {
      client.off('data', onHeader);
      // a bare TCP health check (connect, close) is not worth a line; a header cut short is
      if (buf.length === 0) this.finish('ERR_CLIENT_CLOSED');
      else this.refuseHeader(new ProxyProtocolError('ERR_PROXY_MALFORMED', `connection ended after ${buf.length} bytes of the header`));
      client.destroy();
    });
    const onHeader = this.guard((chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : concatBytes(buf, chunk);
      const d = decodeProxyHeader(buf);
      if (d.status === 'need') return;
      client.off('data', onHeader);
      client.off('end', onEnd);
      if (d.status === 'error') return this.refuseHeader(d.error);
      this.firstRead = false;
      this.useProxyHeader(d.msg);
      this.begin(buf.subarray(d.size));
    });
    client.on('data', onHeader);
    client.once('end', onEnd);
  }

  /** The header's client is this connection's from now on (--clients, log, back-off, UDP pinning). */
  private useProxyHeader(h: ProxyHeader): void {
    const { record } = this;
    record.via = joinHostPort(this.clientHost, this.clientPort);
    record.proxy = h.source ? `v${h.version}` : `v${h.version} ${h.command === 'local' ? 'local' : 'unknown'}`;
    if (!h.source) return;
    this.clientHost = canonicalHost(h.source.host);
    this.clientPort = h.source.port;
    record.client = this.clientHost;
    record.clientPort = this.clientPort;
  }

  private refuseHeader(error: ProxyProtocolError): void {
    clearTimeout(this.handshakeTimer);
    this.finish(error.code, { error: error.message, phase: 'proxy' });
    this.client.destroy();
  }

  private onClose(): void {
    this.forget();
    clearTimeout(this.handshakeTimer);
    this.dropCheck();
    this.aborter.abort(CLIENT_CLOSED);
    // the native relay carries on with the connection: its end finishes it
    if (releasedToNative(this.client)) return;
    this.conn.release();
    // after the reply, the handler logs the relay's outcome itself
    if (!this.granted) this.finish('ERR_CLIENT_CLOSED');
  }

  private internal(e: unknown): void {
    if (this.failedInternally) return;
    this.failedInternally = true;
    const { client, record } = this;
    try {
      say(`dualsocks gateway: internal error serving ${joinHostPort(this.clientHost, record.clientPort as number)}, connection closed: ${e instanceof Error ? e.stack : String(e)}`);
      this.finish('ERR_INTERNAL', { rep: REP.GENERAL_FAILURE, error: e instanceof Error ? e.message : String(e) });
      this.aborter.abort(CLIENT_CLOSED);
      // a client waiting for its reply is told "general failure"; relayed bytes never get one mixed in
      if (this.session?.phase === 'request-wait' && !client.destroyed) client.end(this.session.failureReply(new RequestError('ERR_INTERNAL', 'internal error')), () => client.destroy());
      else client.destroy();
    } catch {
      // the report itself failed (a broken logger): the stack may be lost, the connection is not kept
      client.destroy();
    }
  }

  /**
   * A client gone while its password check waits: the check never starts ('dropped'); one
   * already computing finishes unheard ('abandoned').
   */
  private dropCheck(): void {
    if (this.cancelCheck) this.record.auth = this.cancelCheck() ? 'dropped' : 'abandoned';
    this.cancelCheck = undefined;
  }

  /** The --clients filter: a client outside it is refused before its handshake. */
  private admitted(): boolean {
    const { clients } = this.gateway.config;
    const clientIp = parseIp(this.clientHost);
    if (!clients || (clientIp && clients.has(clientIp))) return true;
    clearTimeout(this.handshakeTimer);
    this.finish('ERR_POLICY_CLIENT', { rep: REP.NOT_ALLOWED });
    this.client.end(encodeMethodSelection({ method: METHOD.NO_ACCEPTABLE }), () => this.client.destroy());
    return false;
  }

  /** The session, its timer, and a place in the handshake budget (evicting the oldest when full). */
  private startHandshake(): Socks5ServerSession {
    const s = (this.session = new Socks5ServerSession({ requireAuth: this.gateway.users !== undefined }));
    // a PROXY header's wait already started them
    if (!this.behindBalancer) this.startBudget();
    return s;
  }

  /** The handshake's timer and its place in the handshake budget. */
  private startBudget(): void {
    const { gateway, client } = this;
    const phase = (): string => this.session?.phase ?? 'proxy';
    this.handshakeTimer = setTimeout(this.guard(() => {
      this.dropCheck();
      this.finish('ERR_HANDSHAKE_TIMEOUT', { phase: phase() });
      client.destroy();
    }), Math.max(0, gateway.config.handshakeTimeoutMs - (Date.now() - this.started)));
    this.conn.enterHandshake(this.guard(() => {
      this.dropCheck();
      this.finish('ERR_CONNECTION_CAP', { phase: phase(), error: `${gateway.handshakeBudget} handshakes at once: the oldest made room` });
      client.destroy();
    }));
  }

  /** Carries out the session's commands. */
  private run(cmds: ServerCommand[]): void {
    const s = this.session!;
    for (const c of cmds) {
      switch (c.type) {
        case 'send': {
          // the same greeting fed again gets the same method selection: sent once
          const skip = Math.min(this.answered, c.data.length);
          this.answered -= skip;
          if (skip < c.data.length) this.client.write(skip ? c.data.subarray(skip) : c.data);
          break;
        }
        case 'data':
          this.early.push(c.data);
          break;
        case 'authenticate':
          this.checkPassword(s, c.username, c.password);
          break;
        case 'request':
          this.onRequest(s, c.request);
          break;
        case 'close':
          this.onSessionClose(c);
          break;
      }
    }
  }

  private checkPassword(s: Socks5ServerSession, username: Uint8Array, password: Uint8Array): void {
    const { gateway, client, record } = this;
    // reading goes on (up to a bound) so that a client leaving is seen and its check dropped
    this.authReadFrom = client.bytesRead;
    record.user = s.username;
    const users = gateway.users;
    if (!users) throw new Error('authenticate without users');
    const source = sourceKey(this.clientHost);
    this.cancelCheck = checkRemembered(gateway.passwordChecks, gateway.logins, users, source, username, password, this.guard((r: CheckResult) => {
      this.cancelCheck = undefined;
      if (r.result === 'error') throw r.error;
      record.auth = r.result;
      client.resume();
      if (r.result === 'ok') this.run(s.authResult(true));
      else if (r.result === 'busy') this.run(s.authResult(false, new RequestError('ERR_CONNECTION_CAP', `${gateway.passwordChecks.stats.waiting} password checks waiting`)));
      else if (r.result === 'backoff') this.run(s.authResult(false, new SocksProtocolError('ERR_SOCKS_AUTH_FAILED', `user ${JSON.stringify(s.username)}: too many failed logins from ${source}, refused without a check for ${Math.ceil(r.retryMs / MS_PER_SECOND)} s`)));
      else this.run(s.authResult(false));
    }));
  }

  private onRequest(s: Socks5ServerSession, request: Request): void {
    const { client, record } = this;
    clearTimeout(this.handshakeTimer);
    this.requestAt = Date.now();
    this.gateway.metrics.handshake(this.requestAt - this.started);
    client.pause();
    client.off('data', this.onData);
    // the same object from now on holds the command's fields (an unknown command: none)
    const typed = Object.assign(record, { cmd: CMD_NAMES[request.cmd], host: request.host, port: request.port }) as GatewayRecord;
    if (!this.conn.serve()) this.run(s.fail(new RequestError('ERR_CONNECTION_CAP', `limit ${this.gateway.config.maxConnections}`)));
    else dispatch(this.context(s, request, typed), typed, (e) => this.internal(e));
  }

  private onSessionClose(c: CloseCommand): void {
    const { client } = this;
    clearTimeout(this.handshakeTimer);
    if (c.clientGone) {
      this.dropCheck();
      this.finish('ERR_CLIENT_CLOSED');
      client.destroy();
      return;
    }
    const err = c.error;
    this.finish(err?.code ?? 'closed', err ? { rep: err.rep, error: err.message } : {});
    if (!client.destroyed) client.end(() => client.destroy());
  }

  /** What the command's handler gets. */
  private context(s: Socks5ServerSession, request: Request, record: GatewayRecord): UntypedContext {
    const { client, guard } = this;
    return {
      gateway: this.gateway,
      client,
      source: { host: this.clientHost, port: this.clientPort },
      request,
      signal: this.aborter.signal,
      succeed: (bound) => {
        this.granted = true;
        this.run(s.succeed(bound));
        const data = this.early;
        this.early = [];
        if (record.cmd !== undefined) {
          record.bound = joinHostPort(bound.host, bound.port);
          this.gateway.metrics.connected(record.cmd, Date.now() - this.requestAt);
        }
        return data;
      },
      // handlers call these from their own callbacks (a BIND peer arriving, a relay ending)
      fail: guard((error: DualsocksError) => this.run(s.fail(error))),
      reply: guard((rep: Rep, bound: HostPort) => this.run(s.reply(rep, bound))),
      finish: this.finishForHandler(),
      guard,
    };
  }

  /**
   * The handler's finish(), in this connection's guard while the connection is there. A relay's
   * end calls it, however long the tunnel lives: holding this object until then would keep the
   * client socket, the session and the closures of every tunnel the native relay took over (a
   * few KiB each); through a weak reference only the Conn and its log record stay. Once this
   * object is gone, so is the socket the guard would end.
   */
  private finishForHandler(): (result: string, extra?: Partial<GatewayRecord>) => void {
    const { conn } = this;
    const self = new WeakRef(this);
    return (result, extra) => {
      try {
        conn.finish(result, extra);
      } catch (e) {
        const c = self.deref();
        if (c) c.internal(e);
        else say(`dualsocks gateway: internal error finishing a relayed connection: ${e instanceof Error ? e.stack : String(e)}`);
      }
    };
  }
}
