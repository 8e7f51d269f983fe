// The gateway's Prometheus metrics. Most are counted from the connection's log line when it ends
// (observe(), called where the line is emitted, --quiet or not); the rest where no line carries
// them: the handshake and connect latencies, name lookups, refused addresses, and the gauges read
// at scrape time. Labels take only a bounded set of values (commands, result codes, families,
// reasons): never a client, a user or a destination.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { GatewayLine, GatewayRequestRecord, UdpCountFields } from '../log.js';
import { LATENCY_BUCKETS, seconds, type MetricsSource } from '../metrics.js';

/** A UDP association's drop counters and the reason each stands for (udp-session.ts DropReason). */
const UDP_DROPS: [keyof UdpCountFields, string][] = [
  ['droppedSource', 'source'],
  ['droppedMalformed', 'malformed'],
  ['droppedFrag', 'frag'],
  ['droppedName', 'name'],
  ['droppedPolicy', 'policy'],
  ['droppedSize', 'size'],
  ['droppedSender', 'sender'],
  ['droppedError', 'error'],
  ['droppedUpstream', 'upstream'],
];

/** Outcomes of a password check that refused the login. */
const LOGIN_FAILURES = new Set(['fail', 'backoff', 'busy']);

/** Where a name's addresses came from (see Gateway.addressesFor). */
export type LookupSource = 'hosts' | 'cache' | 'dns';

/** What the gauges read at scrape time. */
export interface GatewayGauges {
  /** Connections past their request (dialing, relaying, UDP associations): what --max-connections counts. */
  active: number;
  handshaking: number;
}

export class GatewayMetrics implements MetricsSource {
  readonly registry = new Registry();
  private readonly connections: Counter<'cmd' | 'result' | 'family'>;
  private readonly bytes: Counter<'cmd' | 'direction'>;
  private readonly handshakeSeconds: Histogram;
  private readonly connectSeconds: Histogram<'cmd'>;
  private readonly lookups: Counter<'source'>;
  private readonly lookupFailures: Counter<'code'>;
  private readonly refusals: Counter<'class'>;
  private readonly loginFailures: Counter<'reason'>;
  private readonly datagrams: Counter<'direction'>;
  private readonly drops: Counter<'reason'>;

  constructor(gauges: () => GatewayGauges) {
    const registers = [this.registry];
    this.connections = new Counter({ name: 'dualsocks_gateway_connections_total', help: 'Connections ended, by command (none: ended before a request), result code (ok or an ERR_ code) and the destination family reached (none: not known here).', labelNames: ['cmd', 'result', 'family'], registers });
    this.bytes = new Counter({ name: 'dualsocks_gateway_bytes_total', help: 'Bytes relayed, up (client to destination) and down, by command; counted when the connection ends.', labelNames: ['cmd', 'direction'], registers });
    this.handshakeSeconds = new Histogram({ name: 'dualsocks_gateway_handshake_seconds', help: 'From accepting a connection to reading its request (greeting, login, request).', buckets: LATENCY_BUCKETS, registers });
    this.connectSeconds = new Histogram({ name: 'dualsocks_gateway_connect_seconds', help: 'From the request to its success reply, by command (CONNECT: name lookup, policy and Happy Eyeballs, or the upstream chain).', labelNames: ['cmd'], buckets: LATENCY_BUCKETS, registers });
    this.lookups = new Counter({ name: 'dualsocks_gateway_dns_lookups_total', help: 'Names looked up for requests (IP literals are not), by where the answer came from: hosts file, cache (or a lookup already in flight), dns (the resolver was asked).', labelNames: ['source'], registers });
    this.lookupFailures = new Counter({ name: 'dualsocks_gateway_dns_failures_total', help: 'Name lookups that failed, by error code (ERR_NAME_NOT_FOUND, ERR_NO_ADDRESS, ERR_DNS_FAILED).', labelNames: ['code'], registers });
    this.refusals = new Counter({ name: 'dualsocks_gateway_policy_refusals_total', help: 'Policy refusals, by class: client (a connection from outside --clients), self (the gateway\'s own address), or the special-purpose class of a refused destination address (loopback, private-use, ...; one per address).', labelNames: ['class'], registers });
    this.loginFailures = new Counter({ name: 'dualsocks_gateway_login_failures_total', help: 'Refused logins, by reason: fail (wrong user or password), backoff (too many failures from the source), busy (too many checks waiting).', labelNames: ['reason'], registers });
    this.datagrams = new Counter({ name: 'dualsocks_gateway_udp_datagrams_total', help: 'UDP datagrams relayed, up and down; counted when the association ends.', labelNames: ['direction'], registers });
    this.drops = new Counter({ name: 'dualsocks_gateway_udp_drops_total', help: 'UDP datagrams dropped, by reason (source, malformed, frag, name, policy, size, sender, error, upstream); counted when the association ends.', labelNames: ['reason'], registers });
    new Gauge({
      name: 'dualsocks_gateway_open_tunnels',
      help: 'Connections past their request (dialing, relaying, UDP associations, BIND waits): what --max-connections counts.',
      registers,
      collect() {
        this.set(gauges().active);
      },
    });
    new Gauge({
      name: 'dualsocks_gateway_handshakes',
      help: 'Connections still in their handshake.',
      registers,
      collect() {
        this.set(gauges().handshaking);
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
  observe(line: GatewayLine): void {
    const cmd = line.cmd ?? 'none';
    const family = (line.cmd === 'connect' || line.cmd === 'bind') && line.family !== undefined ? String(line.family) : 'none';
    this.connections.inc({ cmd, result: line.result, family });
    if (line.cmd !== undefined) {
      if (line.bytesUp) this.bytes.inc({ cmd, direction: 'up' }, line.bytesUp);
      if (line.bytesDown) this.bytes.inc({ cmd, direction: 'down' }, line.bytesDown);
    }
    if (line.auth !== undefined && LOGIN_FAILURES.has(line.auth)) this.loginFailures.inc({ reason: line.auth });
    if (line.result === 'ERR_POLICY_CLIENT') this.refusals.inc({ class: 'client' });
    if (line.cmd === 'udp') {
      if (line.datagramsUp) this.datagrams.inc({ direction: 'up' }, line.datagramsUp);
      if (line.datagramsDown) this.datagrams.inc({ direction: 'down' }, line.datagramsDown);
      for (const [field, reason] of UDP_DROPS) {
        const n = line[field];
        if (n) this.drops.inc({ reason }, n);
      }
    }
  }

  handshake(ms: number): void {
    this.handshakeSeconds.observe(seconds(ms));
  }

  connected(cmd: GatewayRequestRecord['cmd'], ms: number): void {
    this.connectSeconds.observe({ cmd }, seconds(ms));
  }

  lookup(source: LookupSource, failure?: string): void {
    this.lookups.inc({ source });
    if (failure !== undefined) this.lookupFailures.inc({ code: failure });
  }

  refused(cls: string): void {
    this.refusals.inc({ class: cls });
  }
}
