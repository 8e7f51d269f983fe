// The bridge's status API (GET /api/status), as the popup reads it. Only the fields shown are typed.
import { joinHostPort } from '../../shared/net/address.js';
import type { ProxyAddress } from '../../shared/rules/index.js';

export interface GatewayHealth {
  url: string;
  up: boolean;
  latencyMs: number | null;
  lastError: string | null;
}

export interface RecentDestination {
  time: string;
  host: string;
  port: number;
  family: 4 | 6 | null;
  bound: string | null;
  gateway: string | null;
  result: string;
}

export interface BridgeStatus {
  name: string;
  version: string;
  gateways: GatewayHealth[];
  connections: { open: number; total: number; failed: number };
  recent: RecentDestination[];
}

export function bridgeBase(proxy: ProxyAddress): string {
  return `http://${joinHostPort(proxy.host.replace(/^\[(.*)\]$/, '$1'), proxy.port)}`;
}

export async function fetchStatus(proxy: ProxyAddress, timeoutMs = 3000): Promise<BridgeStatus> {
  const res = await fetch(`${bridgeBase(proxy)}/api/status`, { signal: AbortSignal.timeout(timeoutMs), cache: 'no-store' });
  if (!res.ok) throw new Error(`HTTP ${res.status} from the bridge`);
  const body = (await res.json()) as BridgeStatus;
  if (!Array.isArray(body.gateways) || !Array.isArray(body.recent)) throw new Error('not a dualsocks bridge status');
  return body;
}

/** The newest connection the bridge made to this host (any port), or null. */
export function latestFor(status: BridgeStatus, host: string): RecentDestination | null {
  const h = host.toLowerCase().replace(/^\[(.*)\]$/, '$1').replace(/\.$/, '');
  for (let i = status.recent.length - 1; i >= 0; i--) {
    const r = status.recent[i]!;
    if (r.host.toLowerCase().replace(/^\[(.*)\]$/, '$1').replace(/\.$/, '') === h) return r;
  }
  return null;
}

/** "IPv6 via gateway", or why there is no family to show. */
export function familyText(r: RecentDestination | null): string {
  if (!r) return 'no connection seen by the bridge yet';
  if (r.result !== 'ok') return `failed at the gateway: ${r.result}`;
  if (r.family === null) return 'via gateway (family not reported)';
  return `IPv${r.family} via gateway`;
}
