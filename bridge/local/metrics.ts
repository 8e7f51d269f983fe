// The bridge's Prometheus metrics, served at /metrics on its own port to loopback clients. As at
// the gateway, counters come from each connection's line when it ends (observe()), the latency of
// opening a tunnel from where it is opened, and the gauges (open connections, each gateway's
// health) are read at scrape time. Labels: inbound protocol, command, result code, family, and the
// configured gateways (credentials redacted); never a client or a destination.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { familyOf, parseIp, splitHostPort } from '../../shared/net/address.js';
import type { GatewayHealth, Inbound } from '../../shared/status.js';
import type { BridgeLine } from '../log.js';
import { LATENCY_BUCKETS, seconds, type MetricsSource } from '../metrics.js';

/** What the gauges read at scrape time. */
export interface BridgeGauges {
  open: number;
  gateways: GatewayHealth[];
}

/** The family of a BND (host:port) the gateway reached the destination over; none for 0.0.0.0 or none given. */
function boundFamily(bound: string | undefined): string {
  const hp = bound !== undefined ? splitHostPort(bound) : null;
  const ip = hp ? parseIp(hp.host) : null;
  if (!ip || hp!.host === '0.0.0.0' || hp!.host === '::') return 'none';
  return String(familyOf(ip));
}

export class BridgeMetrics implements MetricsSource {
  readonly registry = new Registry();
  private readonly connections: Counter<'inbound' | 'cmd' | 'result' | 'family'>;
  private readonly bytes: Counter<'inbound' | 'direction'>;
  private readonly tunnelSeconds: Histogram<'inbound'>;
  private readonly datagrams: Counter<'direction'>;
  private readonly drops: Counter;

  constructor(gauges: () => BridgeGauges) {
    const registers = [this.registry];
    this.connections = new Counter({ name: 'dualsocks_bridge_connections_total', help: 'Connections ended, by inbound protocol (http: a forwarded request), command (forward, connect, bind, udp), result code and the family the gateway reached (from BND; none: not known).', labelNames: ['inbound', 'cmd', 'result', 'family'], registers });
    this.bytes = new Counter({ name: 'dualsocks_bridge_bytes_total', help: 'Bytes relayed through tunnels and UDP associations, up (client to destination) and down, by inbound; counted when the connection ends.', labelNames: ['inbound', 'direction'], registers });
    this.tunnelSeconds = new Histogram({ name: 'dualsocks_bridge_tunnel_open_seconds', help: 'Time to open a tunnel through a gateway (or directly), by inbound: the gateway\'s handshake and its CONNECT.', labelNames: ['inbound'], buckets: LATENCY_BUCKETS, registers });
    this.datagrams = new Counter({ name: 'dualsocks_bridge_udp_datagrams_total', help: 'UDP datagrams relayed, up and down; counted when the association ends.', labelNames: ['direction'], registers });
    this.drops = new Counter({ name: 'dualsocks_bridge_udp_drops_total', help: 'UDP datagrams dropped (unmapped fake address, too big for the chain, no client port yet); counted when the association ends.', registers });
    new Gauge({
      name: 'dualsocks_bridge_open_connections',
      help: 'Inbound connections open now.',
      registers,
      collect() {
        this.set(gauges().open);
      },
    });
    new Gauge({
      name: 'dualsocks_bridge_gateway_up',
      help: 'Whether the gateway passed its last health check (1) or not (0).',
      labelNames: ['gateway'],
      registers,
      collect() {
        this.reset();
        for (const g of gauges().gateways) this.set({ gateway: g.url }, g.up ? 1 : 0);
      },
    });
    new Gauge({
      name: 'dualsocks_bridge_gateway_latency_seconds',
      help: 'The gateway\'s last health check: time for a SOCKS5 greeting (absent before the first).',
      labelNames: ['gateway'],
      registers,
      collect() {
        this.reset();
        for (const g of gauges().gateways) if (g.latencyMs !== null) this.set({ gateway: g.url }, seconds(g.latencyMs));
      },
    });
    new Counter({
      name: 'dualsocks_bridge_gateway_tunnels_total',
      help: 'Tunnels asked of the gateway, by outcome: opened or failed (the gateway refused, or could not be reached).',
      labelNames: ['gateway', 'outcome'],
      registers,
      collect() {
        // the pool keeps the running counts: read, not added to
        this.reset();
        for (const g of gauges().gateways) {
          this.inc({ gateway: g.url, outcome: 'opened' }, g.opened);
          this.inc({ gateway: g.url, outcome: 'failed' }, g.failed);
        }
      },
    });
    new Gauge({
      name: 'dualsocks_bridge_gateway_open_tunnels',
      help: 'Tunnels open through the gateway now.',
      labelNames: ['gateway'],
      registers,
      collect() {
        this.reset();
        for (const g of gauges().gateways) this.set({ gateway: g.url }, g.active);
      },
    });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  /** A connection's line, when it ends. */
  observe(line: BridgeLine): void {
    if (line.inbound === undefined) {
      this.connections.inc({ inbound: 'none', cmd: 'none', result: line.result, family: 'none' });
      return;
    }
    const { inbound } = line;
    if ('auth' in line) {
      // a refused login (--users): no request was served
      this.connections.inc({ inbound, cmd: 'none', result: line.result, family: 'none' });
      return;
    }
    const cmd = line.cmd ?? (inbound === 'http' ? 'forward' : 'connect');
    // a UDP line's bound is the first relay's address, not the destination's
    const family = line.inbound !== 'http' && line.cmd !== 'udp' ? boundFamily(line.bound) : 'none';
    this.connections.inc({ inbound, cmd, result: line.result, family });
    if (line.inbound === 'http') return;
    if (line.bytesUp) this.bytes.inc({ inbound, direction: 'up' }, line.bytesUp);
    if (line.bytesDown) this.bytes.inc({ inbound, direction: 'down' }, line.bytesDown);
    if (line.cmd === 'udp') {
      if (line.datagramsUp) this.datagrams.inc({ direction: 'up' }, line.datagramsUp);
      if (line.datagramsDown) this.datagrams.inc({ direction: 'down' }, line.datagramsDown);
      if (line.dropped) this.drops.inc(line.dropped);
    }
  }

  /** A tunnel opened (or failed to) `ms` after it was asked for. */
  tunnelOpened(inbound: Inbound, ms: number): void {
    this.tunnelSeconds.observe({ inbound }, seconds(ms));
  }
}
