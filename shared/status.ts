// The bridge's status API (GET /api/status): the shapes it serves, declared once for the bridge
// that writes them (bridge/local/state.ts) and the extension that reads them (extension/lib/bridge.ts).
// Types only: nothing here runs.

/** How a connection came into the bridge. */
export type Inbound = 'http' | 'connect' | 'socks5' | 'socks4' | 'transparent';

/** One --upstream gateway as the bridge's pool sees it. */
export interface GatewayHealth {
  url: string;
  up: boolean;
  latencyMs: number | null;
  checkedAt: string | null;
  lastError: string | null;
  active: number;
  opened: number;
  failed: number;
  /** Whether the first hop takes greeting, credentials and request in one write (probed once; null: not yet). */
  pipelining: boolean | null;
}

export interface RecentDestination {
  time: string;
  /** The destination; for a fake address, the name it stands for. */
  host: string;
  /** The fake address the program connected to, when host is its name (or an unmapped one). */
  fakeAddress?: string;
  port: number;
  via: Inbound;
  /** Family the gateway used toward the destination, from the reply's BND.ADDR. */
  family: 4 | 6 | null;
  bound: string | null;
  gateway: string | null;
  result: string;
}

/** The fake-address table and DNS counters (--dns-listen). */
export interface FakeDnsStatus {
  size: { 4: number; 6: number };
  recent: { name: string; address: string; refs: number }[];
  queries: number;
  answered: number;
  forwarded: number;
  upstreamFailures: number;
}

export interface StatusSnapshot {
  name: 'dualsocks-bridge';
  version: string;
  startedAt: string;
  listen: string[];
  /** The --transparent listeners (absent: none). */
  transparent?: string[];
  gateways: GatewayHealth[];
  connections: { open: number; total: number; failed: number; byInbound: Record<Inbound, number> };
  recent: RecentDestination[];
  /** The fake-address table and DNS counters (--dns-listen); null without it. */
  fake?: FakeDnsStatus | null;
}
