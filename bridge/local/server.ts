// The bridge's one port: SOCKS5, SOCKS4/4a and HTTP told apart by the first byte, each passed
// to a gateway by name. Also serves the PAC file and the status API (through the HTTP side).
import type { Server, Socket } from 'node:net';
import type { Server as HttpServer } from 'node:http';
import { RequestError } from '../../shared/errors.js';
import { canonicalHost, CidrSet, formatIp, joinHostPort, parseIp, type HostPort } from '../../shared/net/address.js';
import { checkDestination } from '../../shared/net/policy.js';
import { decide, type Settings } from '../../shared/rules/index.js';
import { sniffProtocol } from '../../shared/socks5/codec.js';
import { CMD } from '../../shared/socks5/constants.js';
import { relay, RelayGroup } from '../relay.js';
import { releasedToNative } from '../native/loader.js';
import { hostAddresses, isLocalPeer } from '../host-addresses.js';
import { closeAll, listenAll } from '../listen.js';
import { say } from '../log.js';
import { connectTcp } from '../upstream/direct.js';
import type { GatewayPool, Tunnel } from '../upstream/pool.js';
import { readRules, type BridgeConfig } from './config.js';
import { ProxyAuth } from './auth.js';
import { guardSocket, type BridgeContext } from './context.js';
import { createHttpFrontend } from './http.js';
import { serveSocks4, serveSocks5 } from './socks.js';
import { serveTransparent } from './transparent.js';
import { BridgeMetrics } from './metrics.js';
import { BridgeState, type Inbound } from './state.js';
import { FakeDns } from './fake/index.js';
import { FakeTable, type FakeLease } from './fake/table.js';

const NOTHING = new CidrSet([]);

export class Bridge {
  readonly state: BridgeState;
  /** Its Prometheus metrics, served at /metrics (ctx.metrics: `start` adds its gateway's). */
  readonly metrics: BridgeMetrics;
  /** Tunnels being relayed; close() ends them. */
  readonly relays = new RelayGroup();
  readonly http: HttpServer;
  private readonly servers: Server[] = [];
  private readonly sockets = new Set<Socket>();
  private settings: Settings;
  readonly ctx: BridgeContext;
  /** The fake-address DNS (--dns-listen), once started. */
  fake: FakeDns | undefined;
  /** Without --dns-listen: nothing is mapped, so every fake address is refused as unmapped. */
  private readonly noFakes: FakeTable;
  private transparentBound: string[] = [];

  constructor(
    readonly config: BridgeConfig,
    readonly pool: GatewayPool,
    version: string,
  ) {
    this.settings = config.rules;
    // checks --fake-range/--fake-range6 before anything listens
    this.noFakes = new FakeTable({ range4: config.fake.fakeRange, range6: config.fake.fakeRange6 });
    this.state = new BridgeState(version, pool, config.rules);
    this.state.fakeName = (host) => this.fakeName(host);
    const metrics = (this.metrics = new BridgeMetrics(() => ({ open: this.state.open, gateways: pool.health })));
    this.state.count = (line) => metrics.observe(line);
    this.ctx = {
      state: this.state,
      open: (host, port, via, from) => {
        const asked = Date.now();
        const opening = this.open(host, port, via, from);
        const took = (): void => metrics.tunnelOpened(via, Date.now() - asked);
        opening.then(took, took);
        return opening;
      },
      metrics,
      // 0.0.0.0:0: our port toward the gateway is fixed by our first datagram
      associate: (signal) => this.pool.associate(signal),
      // the peer connects to the gateway, so BIND always goes there, whatever the rules say; a
      // fake address as its name (the gateway resolves the expected peer), never as the address
      bind: (host, port, signal) => this.byName(host, (h) => this.pool.open(h, port, CMD.BIND, signal)),
      relay: (client, tunnel) => {
        // the tunnel object holds its socket: keep only what the end needs
        const { release } = tunnel;
        return relay(client, tunnel.socket, { idleTimeoutMs: config.idleTimeoutMs, group: this.relays }).finally(release);
      },
      rules: () => this.settings,
      idleTimeoutMs: config.idleTimeoutMs,
      fakeName: (host) => this.fakeName(host),
      port: config.listen[0]?.port ?? 1080,
      pacProxy: config.pacProxy,
      auth: config.usersFile ? new ProxyAuth(config.usersFile, config.noAuthLocal) : undefined,
    };
    this.http = createHttpFrontend(this.ctx, { handshakeTimeoutMs: config.handshakeTimeoutMs });
  }

  /**
   * A fake address (the DNS's answer for a proxied name) goes to the gateway as its name, the
   * entry pinned while the tunnel lives; an unmapped one is refused here, never sent anywhere.
   */
  private open(host: string, port: number, via: Inbound, from?: string): Promise<Tunnel> {
    return this.byName(host, (name) => this.pool.open(name, port), () => this.openReal(host, port, via, from));
  }

  /**
   * `dial(name)` for a mapped fake address, its entry pinned until the tunnel ends; an unmapped
   * one is refused (ERR_FAKE_UNMAPPED); any other host goes to `other` (default: `dial(host)`).
   */
  private byName(host: string, dial: (host: string) => Promise<Tunnel>, other: () => Promise<Tunnel> = () => dial(host)): Promise<Tunnel> {
    let lease: FakeLease | undefined;
    try {
      lease = this.leaseFake(host);
    } catch (e) {
      return Promise.reject(e);
    }
    if (!lease) return other();
    const l = lease;
    return dial(l.name).then(
      (t) => {
        // as the pool does: the socket's close ends the tunnel unless the native relay took it over
        t.socket.once('close', () => {
          if (!releasedToNative(t.socket)) l.release();
        });
        const release = t.release;
        t.release = () => {
          l.release();
          release();
        };
        return t;
      },
      (e: unknown) => {
        l.release();
        throw e;
      },
    );
  }

  /** For open() and the UDP relay: undefined for an ordinary address or name; throws FakeAddressError when unmapped. */
  leaseFake(host: string): FakeLease | undefined {
    const ip = parseIp(host);
    return ip ? (this.fake?.table ?? this.noFakes).acquire(ip) : undefined;
  }

  /** The name a fake address stands for (not pinned: a datagram is gone at once); null: unmapped; undefined: not fake. */
  fakeName(host: string): string | null | undefined {
    const ip = parseIp(host);
    if (!ip) return undefined;
    const table = this.fake?.table ?? this.noFakes;
    return table.isFake(ip) ? (table.nameOf(ip) ?? null) : undefined;
  }

  /** Starts the fake-address DNS when --dns-listen was given; returns the line to print. */
  async startFakeDns(onError?: (e: unknown) => void): Promise<string | undefined> {
    if (this.config.fake.dnsListen.length === 0) return undefined;
    this.fake = await FakeDns.start({ ...this.config.fake, clients: this.config.clients }, () => this.settings, onError ? { onError } : {});
    const fake = this.fake;
    this.state.fake = () => fake.status();
    return fake.describe();
  }

  private openReal(host: string, port: number, _via: Inbound, from?: string): Promise<Tunnel> {
    const ip = parseIp(host);
    if (ip && decide(this.settings, { host: formatIp(ip), port }).type === 'DIRECT') {
      // The bypass list sends loopback and the LAN direct, meant for programs on this machine. For
      // any other client they would be this machine's loopback and its networks, and the gateway
      // would take them for its own: refused, by the gateway's table with this host as "self".
      if (!isLocalPeer(from)) {
        const why = checkDestination({ allow: NOTHING, allowPrivate: false, self: hostAddresses(), selfName: 'the bridge' }, ip);
        if (why) return Promise.reject(new RequestError('ERR_POLICY_DESTINATION', `${formatIp(ip)}: ${why}`));
      }
      // a bypassed IP literal is reached without a gateway: there is no name to resolve
      return connectTcp({ host: formatIp(ip), port }, this.config.connectTimeoutMs).then((s) => ({
        socket: s,
        reply: { rep: 0, atyp: 0, host: canonicalHost(s.localAddress ?? '0.0.0.0'), port: s.localPort ?? 0 },
        gateway: 'direct',
        overhead: { up: 0, down: 0 },
        release: () => {},
      }));
    }
    return this.pool.open(host, port);
  }

  async listen(): Promise<HostPort[]> {
    const { servers, bound } = await listenAll(this.config.listen, (s) => this.accept(s), { defaults: this.config.listenIsDefault });
    this.servers.push(...servers);
    this.ctx.port = bound[0]?.port ?? this.ctx.port;
    this.state.listen = bound.map((b) => joinHostPort(b.host, b.port));
    return bound;
  }

  /** The --transparent listeners (after listen(), so that they know the bridge's own ports); [] without. */
  async listenTransparent(): Promise<HostPort[]> {
    if (this.config.transparent.length === 0) return [];
    const { servers, bound } = await listenAll(this.config.transparent, (s) => {
      if (this.admit(s)) serveTransparent(this.ctx, s, () => this.own);
    });
    this.servers.push(...servers);
    this.transparentBound = bound.map((b) => joinHostPort(b.host, b.port));
    this.state.transparent = this.transparentBound;
    return bound;
  }

  /** Every address the bridge listens on: never a destination of the transparent port. */
  private get own(): string[] {
    return [...this.state.listen, ...this.transparentBound];
  }

  /**
   * SIGHUP: re-reads the --rules file (and --users); new connections and the PAC file follow it, open tunnels
   * stay as they are. A file that does not parse leaves the rules as they were. Returns what to say.
   */
  reload(): string {
    const users = this.ctx.auth?.reload();
    const rules = this.reloadRules();
    return users === undefined ? rules : `${rules}; ${users}`;
  }

  private reloadRules(): string {
    const file = this.config.rulesFile;
    if (!file) return 'nothing to reload (no --rules file)';
    try {
      this.settings = readRules(file);
    } catch (e) {
      return `--rules not reloaded, the previous rules stay: ${(e as Error).message}`;
    }
    this.state.rules = this.settings;
    return `rules reloaded from ${file} (mode ${this.settings.mode})`;
  }

  async close(): Promise<void> {
    this.relays.closeAll();
    this.pool.stop();
    this.http.close();
    await Promise.all([closeAll(this.servers, this.sockets), this.fake?.close()]);
  }

  /** The guard, the count of open sockets and --clients, for every accepted socket; false: closed. */
  private admit(client: Socket): boolean {
    let failed = false;
    guardSocket(client, (e) => {
      if (failed) return;
      failed = true;
      const host = canonicalHost(client.remoteAddress ?? '');
      say(`dualsocks bridge: internal error serving ${joinHostPort(host, client.remotePort ?? 0)}, connection closed: ${e instanceof Error ? e.stack : String(e)}`);
      try {
        this.state.emit({ client: host, clientPort: client.remotePort, result: 'ERR_INTERNAL', rep: 1, error: e instanceof Error ? e.message : String(e) });
      } catch {
        // the logger may be what failed: the stack above is the record
      }
      client.destroy();
    });
    this.sockets.add(client);
    client.once('close', () => this.sockets.delete(client));
    client.on('error', () => client.destroy());
    const ip = parseIp(canonicalHost(client.remoteAddress ?? ''));
    if (this.config.clients && !(ip && this.config.clients.has(ip))) {
      client.destroy();
      return false;
    }
    return true;
  }

  private accept(client: Socket): void {
    if (!this.admit(client)) return;
    // from the first byte to a complete SOCKS request (HTTP heads: the HTTP server's headersTimeout)
    const timer = setTimeout(() => client.destroy(), this.config.handshakeTimeoutMs);
    // gone before saying anything (a port scan, a health check): closed now, not at the timeout
    const early = (): void => {
      clearTimeout(timer);
      client.destroy();
    };
    client.once('end', early);
    client.once('data', (first: Buffer) => {
      client.off('end', early);
      client.pause();
      client.unshift(first);
      switch (sniffProtocol(first[0]!)) {
        case 'socks5':
          serveSocks5(this.ctx, client, timer);
          break;
        case 'socks4':
          serveSocks4(this.ctx, client, timer);
          break;
        default:
          clearTimeout(timer);
          this.http.emit('connection', client);
      }
      client.resume();
    });
  }
}
