// Fake-address delegation for the bridge (issue 11) in one piece: the table (loaded from and saved
// to --fake-state), the responder, and its listeners (--dns-listen, --dns-upstream). The bridge
// calls lease() in its open() for every destination, before the routing rules see it.
import { ConfigError } from '../../../shared/errors.js';
import { joinHostPort, parseIp, type CidrSet, type HostPort } from '../../../shared/net/address.js';
import type { Settings } from '../../../shared/rules/index.js';
import { FakeDnsResponder } from './dns.js';
import { FakeDnsServer, systemResolvers, type QueryRecord } from './server.js';
import { autosave, FakeTable, type Autosave, type FakeLease } from './table.js';
import type { FakeDnsStatus } from '../../../shared/status.js';

export interface FakeDnsConfig {
  dnsListen: HostPort[];
  /** Empty or absent: the system's resolvers (never this responder itself). */
  dnsUpstream?: HostPort[] | undefined;
  fakeRange?: string | undefined;
  fakeRange6?: string | undefined;
  /** Where the table is kept across restarts. */
  fakeState?: string | undefined;
  /** The bridge's --clients; absent: every source that reaches the listeners (loopback ones). */
  clients?: CidrSet | undefined;
  upstreamTimeoutMs?: number;
  /** For tests: where systemResolvers() reads. */
  resolvConf?: string;
}

export type { FakeDnsStatus };

export class FakeDns {
  private constructor(
    readonly table: FakeTable,
    readonly server: FakeDnsServer,
    readonly bound: HostPort[],
    readonly upstreams: HostPort[],
    private readonly saver: Autosave | undefined,
  ) {}

  /** Loads --fake-state, starts the listeners. Errors are ConfigErrors naming the option. */
  static async start(cfg: FakeDnsConfig, settings: () => Settings, opts: { onQuery?: (r: QueryRecord) => void; onError?: (e: unknown) => void } = {}): Promise<FakeDns> {
    const table = new FakeTable({ range4: cfg.fakeRange, range6: cfg.fakeRange6 });
    if (cfg.fakeState) table.load(cfg.fakeState);
    const upstreams = cfg.dnsUpstream?.length ? cfg.dnsUpstream : systemResolvers(cfg.dnsListen, cfg.resolvConf ? { resolvConf: cfg.resolvConf } : {});
    if (upstreams.length === 0) throw new ConfigError('dnsUpstream', 'no resolver in /etc/resolv.conf other than this responder itself: give --dns-upstream SERVER[:PORT]');
    const clients = cfg.clients;
    const server = new FakeDnsServer({
      responder: new FakeDnsResponder({ table, settings }),
      listen: cfg.dnsListen,
      upstreams,
      ...(cfg.upstreamTimeoutMs === undefined ? {} : { upstreamTimeoutMs: cfg.upstreamTimeoutMs }),
      ...(clients ? { allowClient: (a: string) => clients.has(parseIp(a) ?? new Uint8Array(16)) } : {}),
      ...opts,
    });
    const bound = await server.start();
    const saver = cfg.fakeState ? autosave(table, cfg.fakeState, opts.onError ? { onError: opts.onError } : {}) : undefined;
    return new FakeDns(table, server, bound, upstreams, saver);
  }

  /**
   * For the bridge's open(): host not an address in a fake range → undefined (an ordinary
   * destination); a mapped fake address → its name, pinned until release() (call it when the
   * tunnel ends or fails to open); an unmapped one → throws FakeAddressError ERR_FAKE_UNMAPPED.
   */
  lease(host: string): FakeLease | undefined {
    const ip = parseIp(host);
    return ip ? this.table.acquire(ip) : undefined;
  }

  status(recent = 20): FakeDnsStatus {
    const { queries, answered, forwarded, upstreamFailures } = this.server.stats;
    return { size: this.table.size, recent: this.table.recent(recent), queries, answered, forwarded, upstreamFailures };
  }

  /** Listening addresses as the bridge prints them. */
  describe(): string {
    return `fake-address DNS on ${this.bound.map((b) => joinHostPort(b.host, b.port)).join(', ')} (fake ${this.table.range4} and ${this.table.range6}; upstream ${this.upstreams.map((u) => joinHostPort(u.host, u.port)).join(', ')})`;
  }

  /** Stops the listeners and saves the table one last time. */
  async close(): Promise<void> {
    await this.server.close();
    this.saver?.stop();
  }
}
