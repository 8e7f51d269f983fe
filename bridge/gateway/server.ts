// The gateway's I/O layer: accepts sockets, drives the sans-IO SOCKS5 session with them, and
// hands granted requests to the command handlers. Protocol logic stays in shared/socks5.
import type { Server, Socket } from 'node:net';
import { networkInterfaces } from 'node:os';
import { DualsocksError, RequestError, SocksProtocolError } from '../../shared/errors.js';
import { CidrSet, canonicalHost, joinHostPort, parseIp, type Ip } from '../../shared/net/address.js';
import { checkDestination } from '../../shared/net/policy.js';
import { encodeMethodSelection, type Request } from '../../shared/socks5/codec.js';
import { CMD, METHOD } from '../../shared/socks5/constants.js';
import { Socks5ServerSession, type ServerCommand } from '../../shared/socks5/server.js';
import { closeAll, listenAll } from '../listen.js';
import type { LogRecord, Logger } from '../log.js';
import { releasedToNative } from '../native/loader.js';
import { PipeliningCache } from '../upstream/pool.js';
import { RelayGroup } from '../relay.js';
import type { GatewayConfig, HostPort } from './config.js';
import { serveBind } from './bind.js';
import { serveConnect } from './connect.js';
import { serveUdp } from './udp.js';
import { NameResolver } from './resolver.js';
import { Users } from './users.js';

const CMD_NAMES: Record<number, string> = { [CMD.CONNECT]: 'connect', [CMD.BIND]: 'bind', [CMD.UDP_ASSOCIATE]: 'udp' };
// abort() without a reason builds a DOMException (with a stack) on every client close
const CLIENT_CLOSED = Object.freeze(new Error('client closed'));

/** What a command handler gets: the request, the client socket, and ways to answer. */
export interface RequestContext {
  readonly gateway: Gateway;
  readonly client: Socket;
  readonly request: Request;
  readonly record: LogRecord;
  readonly signal: AbortSignal;
  /** Sends the success reply; returns relay data the client sent early. */
  succeed(bound: HostPort): Uint8Array[];
  fail(error: DualsocksError): void;
  /** A further reply after succeed() (BIND's second reply). */
  reply(rep: number, bound: HostPort): void;
  /** Logs the end of a granted request (once). */
  finish(result: string, extra?: LogRecord): void;
}

export interface GatewayStats {
  accepted: number;
  active: number;
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
  private counted = true;

  constructor(
    private readonly gateway: Gateway,
    readonly record: LogRecord,
    private readonly started: number,
  ) {}

  /** Leaves the active count (once). */
  release(): void {
    if (!this.counted) return;
    this.counted = false;
    this.gateway.stats.active--;
  }

  /** Logs the outcome (once) and leaves the active count. */
  finish(result: string, extra: LogRecord = {}): void {
    this.release();
    if (this.logged) return;
    this.logged = true;
    const { record, gateway } = this;
    Object.assign(record, extra, { result, durationMs: Date.now() - this.started });
    if (result === 'ok') gateway.stats.succeeded++;
    else gateway.stats.failed++;
    // a peer that left before asking for anything (health checks, a bridge's pipelining probe,
    // scanners) is not worth a line; a failed login or a protocol error is
    if (!gateway.config.quiet && (record.cmd !== undefined || result !== 'ERR_CLIENT_CLOSED')) gateway.log(record);
  }
}

export class Gateway {
  /** Both replaced by reload(); a request in progress keeps the ones it started with. */
  resolver: NameResolver;
  /** Tunnels being relayed; close() ends them. */
  readonly relays = new RelayGroup();
  users: Users | undefined;
  /** Which --upstream first hops take a pipelined handshake. */
  readonly pipelining: PipeliningCache;
  readonly stats: GatewayStats = { accepted: 0, active: 0, succeeded: 0, failed: 0 };
  private readonly servers: Server[] = [];
  private readonly sockets = new Set<Socket>();

  constructor(
    readonly config: GatewayConfig,
    readonly log: Logger,
  ) {
    this.users = config.usersFile ? Users.fromFile(config.usersFile) : undefined;
    this.resolver = new NameResolver({ hostsFile: config.hostsFile, dns: config.dns, cacheSeconds: config.dnsCacheSeconds });
    this.pipelining = new PipeliningCache(config.connectTimeoutMs);
  }

  async listen(): Promise<HostPort[]> {
    const { servers, bound } = await listenAll(this.config.listen, (s) => this.accept(s), { defaults: this.config.listenIsDefault });
    this.servers.push(...servers);
    return bound;
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
    this.relays.closeAll();
    return closeAll(this.servers, this.sockets);
  }

  private accept(client: Socket): void {
    const started = Date.now();
    this.stats.accepted++;
    this.stats.active++;
    this.sockets.add(client);
    const clientHost = canonicalHost(client.remoteAddress ?? '');
    const record: LogRecord = { client: clientHost, clientPort: client.remotePort };
    const conn = new Conn(this, record, started);
    const finish = conn.finish.bind(conn);
    const aborter = new AbortController();
    let granted = false;
    client.once('close', () => {
      this.sockets.delete(client);
      aborter.abort(CLIENT_CLOSED);
      // the native relay carries on with the connection: its end finishes it
      if (releasedToNative(client)) return;
      conn.release();
      // after the reply, the handler logs the relay's outcome itself
      if (!granted) finish('ERR_CLIENT_CLOSED');
    });
    client.on('error', (e: NodeJS.ErrnoException) => {
      record.clientError = e.code ?? e.message;
      client.destroy();
    });

    const clientIp = parseIp(clientHost);
    if (this.config.clients && !(clientIp && this.config.clients.has(clientIp))) {
      finish('ERR_POLICY_CLIENT', { rep: 2 });
      client.end(encodeMethodSelection({ method: METHOD.NO_ACCEPTABLE }), () => client.destroy());
      return;
    }
    const overCap = this.stats.active > this.config.maxConnections;
    const session = new Socks5ServerSession({ requireAuth: this.users !== undefined });
    const handshakeTimer = setTimeout(() => {
      finish('ERR_HANDSHAKE_TIMEOUT', { phase: session.phase });
      client.destroy();
    }, this.config.handshakeTimeoutMs);
    let early: Uint8Array[] = [];

    const run = (cmds: ServerCommand[]): void => {
      for (const c of cmds) {
        switch (c.type) {
          case 'send':
            client.write(c.data);
            break;
          case 'data':
            early.push(c.data);
            break;
          case 'authenticate':
            client.pause();
            record.user = c.username;
            this.users!.verify(c.username, c.password).then(
              (ok) => {
                client.resume();
                run(session.authResult(ok));
                if (client.readableEnded) onEnd();
              },
              () => run(session.authResult(false)),
            );
            break;
          case 'request':
            clearTimeout(handshakeTimer);
            client.pause();
            client.off('data', onData);
            Object.assign(record, { cmd: CMD_NAMES[c.request.cmd], host: c.request.host, port: c.request.port });
            if (overCap) run(session.fail(new RequestError('ERR_CONNECTION_CAP', `limit ${this.config.maxConnections}`)));
            else this.dispatch(ctx(c.request));
            break;
          case 'close': {
            clearTimeout(handshakeTimer);
            const err = c.error;
            finish(err?.code ?? 'closed', err ? { rep: err.rep, error: err.message } : {});
            if (!client.destroyed) client.end(() => client.destroy());
            break;
          }
        }
      }
    };
    const onData = (chunk: Buffer): void => run(session.feed(chunk));
    client.on('data', onData);
    // a client gone before its request (a health check, a port scan) is closed now, not at the timeout;
    // a FIN behind credentials still being checked may follow a whole request: judged after the check
    const onEnd = (): void => {
      if (!granted && session.phase !== 'request-wait' && session.phase !== 'auth-wait') {
        clearTimeout(handshakeTimer);
        client.destroy();
      }
    };
    client.once('end', onEnd);

    const ctx = (request: Request): RequestContext => ({
      gateway: this,
      client,
      request,
      record,
      signal: aborter.signal,
      succeed: (bound) => {
        granted = true;
        run(session.succeed(bound));
        const data = early;
        early = [];
        record.bound = joinHostPort(bound.host, bound.port);
        return data;
      },
      fail: (error) => run(session.fail(error)),
      reply: (rep, bound) => run(session.reply(rep, bound)),
      finish,
    });
  }

  private dispatch(ctx: RequestContext): void {
    const onError = (e: unknown): void => {
      ctx.fail(e instanceof DualsocksError ? e : new SocksProtocolError('ERR_CONNECT_FAILED', String(e)));
    };
    try {
      switch (ctx.request.cmd) {
        case CMD.CONNECT:
          serveConnect(ctx).catch(onError);
          break;
        case CMD.UDP_ASSOCIATE:
          serveUdp(ctx).catch(onError);
          break;
        case CMD.BIND:
          serveBind(ctx).catch(onError);
          break;
        default:
          ctx.fail(new SocksProtocolError('ERR_SOCKS_COMMAND', CMD_NAMES[ctx.request.cmd]));
      }
    } catch (e) {
      onError(e);
    }
  }

  private selfCache: { at: number; set: CidrSet } | undefined;

  /** The host's interface addresses, refreshed every few seconds (interfaces come and go). */
  private selfAddresses(): CidrSet {
    const now = Date.now();
    if (!this.selfCache || now - this.selfCache.at > 5000) {
      const addrs = Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((i) => i.address.replace(/%.*$/, '')));
      this.selfCache = { at: now, set: new CidrSet(addrs.filter((a) => parseIp(a) !== null)) };
    }
    return this.selfCache.set;
  }

  /** Why the destination address is refused, or null. */
  denyDestination(ip: Ip): string | null {
    const { allow, allowPrivate } = this.config;
    return checkDestination({ allow, allowPrivate, self: this.selfAddresses() }, ip);
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
    try {
      return await Promise.race([this.resolver.resolve(host), limit]);
    } finally {
      clearTimeout(timer);
    }
  }
}
