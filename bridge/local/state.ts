// What the bridge knows about itself: counters, open connections and the recent destinations
// with the family the gateway reached each over (from BND.ADDR). Served by GET /api/status.
import { parseIp, familyOf } from '../../shared/net/address.js';
import type { Settings } from '../../shared/rules/index.js';
import type { GatewayHealth, GatewayPool, Tunnel } from '../upstream/pool.js';

export type Inbound = 'http' | 'connect' | 'socks5' | 'socks4';

export interface RecentDestination {
  time: string;
  host: string;
  port: number;
  via: Inbound;
  /** Family the gateway used toward the destination, from the reply's BND.ADDR. */
  family: 4 | 6 | null;
  bound: string | null;
  gateway: string | null;
  result: string;
}

export interface StatusSnapshot {
  name: 'dualsocks-bridge';
  version: string;
  startedAt: string;
  listen: string[];
  gateways: GatewayHealth[];
  connections: { open: number; total: number; failed: number; byInbound: Record<Inbound, number> };
  recent: RecentDestination[];
}

const RECENT_MAX = 200;

export class BridgeState {
  readonly startedAt = new Date().toISOString();
  open = 0;
  total = 0;
  failed = 0;
  readonly byInbound: Record<Inbound, number> = { http: 0, connect: 0, socks5: 0, socks4: 0 };
  private readonly recent: RecentDestination[] = [];
  listen: string[] = [];

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
      host,
      port,
      via,
      family: ip && tunnel!.reply.host !== '0.0.0.0' ? familyOf(ip) : null,
      bound: tunnel ? `${tunnel.reply.host}` : null,
      gateway: tunnel?.gateway ?? null,
      result: tunnel ? 'ok' : (outcome as { error: { code: string } }).error.code,
    });
    if (this.recent.length > RECENT_MAX) this.recent.splice(0, this.recent.length - RECENT_MAX);
  }

  snapshot(): StatusSnapshot {
    return {
      name: 'dualsocks-bridge',
      version: this.version,
      startedAt: this.startedAt,
      listen: this.listen,
      gateways: this.pool.health,
      connections: { open: this.open, total: this.total, failed: this.failed, byInbound: { ...this.byInbound } },
      recent: [...this.recent].reverse(),
    };
  }
}
