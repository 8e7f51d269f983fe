// What the bridge knows about itself: counters, open connections and the recent destinations
// with the family the gateway reached each over (from BND.ADDR). Served by GET /api/status.
import type { Socket } from 'node:net';
import { canonicalHost, familyOf, joinHostPort, parseIp } from '../../shared/net/address.js';
import type { Settings } from '../../shared/rules/index.js';
import { silent, type BridgeBindRecord, type BridgeConnectRecord, type BridgeHttpRecord, type BridgeLine, type BridgeLoginLine, type BridgeRecord, type BridgeSocksRecord, type BridgeUdpRecord, type Ended, type Logger } from '../log.js';
import type { GatewayPool, Tunnel } from '../upstream/pool.js';
import type { RelayResult } from '../relay.js';
import type { FakeDnsStatus, Inbound, RecentDestination, StatusSnapshot } from '../../shared/status.js';

export type { Inbound, RecentDestination, StatusSnapshot };

/** What a finished tunnel's log line needs of it (not its socket, which may be gone). */
export type TunnelSummary = Pick<Tunnel, 'gateway' | 'reply' | 'overhead'>;

export function summary(t: Tunnel): TunnelSummary {
  return { gateway: t.gateway, reply: t.reply, overhead: t.overhead };
}

const RECENT_MAX = 200;

/** A connection's record while it is served, and when it started. */
export interface Pending<R extends BridgeRecord> {
  rec: R;
  started: number;
}

/** The fields a connection's end adds: always its result, and any of its record's. */
export type EndFields<R extends BridgeRecord> = Partial<R> & { result: string };

type SocksInbound = BridgeSocksRecord['inbound'];

export class BridgeState {
  readonly startedAt = new Date().toISOString();
  open = 0;
  total = 0;
  failed = 0;
  readonly byInbound: Record<Inbound, number> = { http: 0, connect: 0, socks5: 0, socks4: 0, transparent: 0 };
  private readonly recent: RecentDestination[] = [];
  listen: string[] = [];
  /** The --transparent listeners. */
  transparent: string[] = [];
  /** Where the per-connection lines go (stdout as JSON, or nowhere with --quiet). */
  log: Logger<BridgeLine> = silent;
  /** Where every line is counted, --quiet or not (the metrics). */
  count: Logger<BridgeLine> = silent;
  /** Set when the fake-address DNS runs. */
  fake: (() => FakeDnsStatus) | undefined;
  /** The user each client socket logged in as (--users), for its log lines. */
  private readonly users = new WeakMap<Socket, string>();
  /** The name a fake address stands for (null: unmapped, undefined: not fake): logs show the name. */
  fakeName: ((host: string) => string | null | undefined) | undefined;

  constructor(
    readonly version: string,
    readonly pool: GatewayPool,
    public rules: Settings,
  ) {}

  /** Counts one inbound connection; returns the function that marks it closed. */
  opened(via: Inbound): () => void {
    this.open++;
    this.total++;
    this.byInbound[via]++;
    let closed = false;
    return () => {
      if (!closed) {
        closed = true;
        this.open--;
      }
    };
  }

  record(via: Inbound, host: string, port: number, outcome: { tunnel: Tunnel } | { error: { code: string } }): void {
    const tunnel = 'tunnel' in outcome ? outcome.tunnel : null;
    const ip = tunnel ? parseIp(tunnel.reply.host) : null;
    if (!tunnel) this.failed++;
    this.recent.push({
      time: new Date().toISOString(),
      ...this.named(host),
      port,
      via,
      family: ip && tunnel!.reply.host !== '0.0.0.0' ? familyOf(ip) : null,
      bound: tunnel ? `${tunnel.reply.host}` : null,
      gateway: tunnel?.gateway ?? null,
      result: tunnel ? 'ok' : (outcome as { error: { code: string } }).error.code,
    });
    if (this.recent.length > RECENT_MAX) this.recent.splice(0, this.recent.length - RECENT_MAX);
  }

  /**
   * The start of a connection's log line: how it came in, from where, to what. Taken when the
   * request is known (the client's address is gone once its socket is).
   */
  begin(via: 'http', client: Socket, host: string, port: number, extra: { method: string | undefined }): Pending<BridgeHttpRecord>;
  begin(via: 'connect', client: Socket, host: string, port: number): Pending<BridgeConnectRecord>;
  begin(via: SocksInbound, client: Socket, host: string, port: number): Pending<BridgeSocksRecord>;
  begin(via: SocksInbound, client: Socket, host: string, port: number, extra: { cmd: 'bind' }): Pending<BridgeBindRecord>;
  begin(via: 'socks5', client: Socket, host: string, port: number, extra: { cmd: 'udp' }): Pending<BridgeUdpRecord>;
  begin(via: Inbound, client: Socket, host: string, port: number, extra = {}): Pending<BridgeRecord> {
    const user = this.users.get(client);
    const rec = { inbound: via, client: canonicalHost(client.remoteAddress ?? ''), clientPort: client.remotePort, ...(user !== undefined ? { user } : {}), ...this.named(host), port, ...extra };
    // the overloads above pair each inbound with its extra fields
    return { rec: rec as BridgeRecord, started: Date.now() };
  }

  /** `client` logged in as `user` (an HTTP client may change users between requests). */
  loggedIn(client: Socket, user: string): void {
    this.users.set(client, user);
  }

  /** The line of a login refused (never the password): `fields` says the user, `auth` and the result. */
  refused(via: Inbound, client: Socket, fields: Omit<BridgeLoginLine, 'inbound' | 'client' | 'clientPort' | 'durationMs'>): void {
    this.emit({ inbound: via, client: canonicalHost(client.remoteAddress ?? ''), clientPort: client.remotePort, durationMs: 0, ...fields });
  }

  /** A fake address is shown as its name, the address beside it (an unmapped one: the address in both). */
  private named(host: string): { host: string; fakeAddress?: string } {
    const name = host === '' ? undefined : this.fakeName?.(host);
    return name === undefined ? { host } : { host: name ?? host, fakeAddress: host };
  }

  /**
   * Prints the line of a finished connection: `fields` (the result, or an error code and REP), and
   * for a tunnel that carried bytes, its gateway, BND, bytes each way and how it ended.
   */
  finish<R extends BridgeRecord>(line: Pending<R>, fields: EndFields<R>, done?: { tunnel: TunnelSummary; relayed: RelayResult }): void {
    const rec: BridgeRecord = { ...line.rec };
    if (done) {
      const { tunnel, relayed } = done;
      // the SOCKS talk with the gateway is not the client's traffic
      const o = tunnel.overhead;
      Object.assign(rec, { gateway: tunnel.gateway, bound: joinHostPort(tunnel.reply.host, tunnel.reply.port), result: 'ok', bytesUp: relayed.up - o.up, bytesDown: relayed.down - o.down, end: relayed.end });
    }
    // `fields` were checked against R by the signature
    const ended: Ended = { ...fields, durationMs: Date.now() - line.started };
    this.emit(Object.assign(rec, ended));
  }

  /** The one place a line leaves: counted, then logged. */
  emit(line: BridgeLine): void {
    this.count(line);
    this.log(line);
  }

  snapshot(): StatusSnapshot {
    return {
      name: 'dualsocks-bridge',
      version: this.version,
      startedAt: this.startedAt,
      listen: this.listen,
      ...(this.transparent.length ? { transparent: this.transparent } : {}),
      gateways: this.pool.health,
      connections: { open: this.open, total: this.total, failed: this.failed, byInbound: { ...this.byInbound } },
      recent: [...this.recent].reverse(),
      fake: this.fake?.() ?? null,
    };
  }
}
