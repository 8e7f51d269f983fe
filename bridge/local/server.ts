// The bridge's one port: SOCKS5, SOCKS4/4a and HTTP told apart by the first byte, each passed
// to a gateway by name. Also serves the PAC file and the status API (through the HTTP side).
import type { Server, Socket } from 'node:net';
import type { Server as HttpServer } from 'node:http';
import { canonicalHost, formatIp, joinHostPort, parseIp } from '../../shared/net/address.js';
import { decide, type Settings } from '../../shared/rules/index.js';
import { sniffProtocol } from '../../shared/socks5/codec.js';
import { CMD } from '../../shared/socks5/constants.js';
import { relay, RelayGroup } from '../relay.js';
import { closeAll, listenAll, type HostPort } from '../listen.js';
import { connectTcp } from '../upstream/direct.js';
import type { GatewayPool, Tunnel } from '../upstream/pool.js';
import { readRules, type BridgeConfig } from './config.js';
import type { BridgeContext } from './context.js';
import { createHttpFrontend } from './http.js';
import { serveSocks4, serveSocks5 } from './socks.js';
import { BridgeState, type Inbound } from './state.js';

const FIRST_BYTE_TIMEOUT_MS = 30_000;

export class Bridge {
  readonly state: BridgeState;
  /** Tunnels being relayed; close() ends them. */
  readonly relays = new RelayGroup();
  readonly http: HttpServer;
  private readonly servers: Server[] = [];
  private readonly sockets = new Set<Socket>();
  private settings: Settings;
  readonly ctx: BridgeContext;

  constructor(
    readonly config: BridgeConfig,
    readonly pool: GatewayPool,
    version: string,
  ) {
    this.settings = config.rules;
    this.state = new BridgeState(version, pool, config.rules);
    this.ctx = {
      state: this.state,
      open: (host, port, via) => this.open(host, port, via),
      // 0.0.0.0:0: our port toward the gateway is fixed by our first datagram
      associate: () => this.pool.associate(),
      // the peer connects to the gateway, so BIND always goes there, whatever the rules say
      bind: (host, port) => this.pool.open(host, port, CMD.BIND),
      relay: (client, tunnel) => {
        // the tunnel object holds its socket: keep only what the end needs
        const { release } = tunnel;
        return relay(client, tunnel.socket, { idleTimeoutMs: config.idleTimeoutMs, group: this.relays }).finally(release);
      },
      rules: () => this.settings,
      port: config.listen[0]?.port ?? 1080,
      pacProxy: config.pacProxy,
    };
    this.http = createHttpFrontend(this.ctx);
  }

  private open(host: string, port: number, _via: Inbound): Promise<Tunnel> {
    const ip = parseIp(host);
    if (ip && decide(this.settings, { host: formatIp(ip), port }).type === 'DIRECT') {
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

  /**
   * SIGHUP: re-reads the --rules file; new connections and the PAC file follow it, open tunnels
   * stay as they are. A file that does not parse leaves the rules as they were. Returns what to say.
   */
  reload(): string {
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
    await closeAll(this.servers, this.sockets);
  }

  private accept(client: Socket): void {
    this.sockets.add(client);
    client.once('close', () => this.sockets.delete(client));
    client.on('error', () => client.destroy());
    const ip = parseIp(canonicalHost(client.remoteAddress ?? ''));
    if (this.config.clients && !(ip && this.config.clients.has(ip))) {
      client.destroy();
      return;
    }
    const timer = setTimeout(() => client.destroy(), FIRST_BYTE_TIMEOUT_MS);
    // a client gone before its first byte is closed now, not at the timeout (CLOSE-WAIT meanwhile)
    const gone = (): void => {
      clearTimeout(timer);
      client.destroy();
    };
    client.once('end', gone);
    client.once('data', (first: Buffer) => {
      client.off('end', gone);
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
