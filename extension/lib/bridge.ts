// The bridge's status API (GET /api/status), as the popup reads it; the shapes are shared/status.ts.
import { ERRORS } from '../../shared/errors.js';
import { joinHostPort, unbracket } from '../../shared/net/address.js';
import type { ProxyAddress } from '../../shared/rules/index.js';
import type { GatewayHealth, RecentDestination, StatusSnapshot } from '../../shared/status.js';

export type { GatewayHealth, RecentDestination };
/** What GET /api/status answers (the bridge writes it in bridge/local/state.ts). */
export type BridgeStatus = StatusSnapshot;

export function bridgeBase(proxy: ProxyAddress): string {
  return `http://${joinHostPort(unbracket(proxy.host), proxy.port)}`;
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
  const h = unbracket(host.toLowerCase()).replace(/\.$/, '');
  for (let i = status.recent.length - 1; i >= 0; i--) {
    const r = status.recent[i]!;
    if (unbracket(r.host.toLowerCase()).replace(/\.$/, '') === h) return r;
  }
  return null;
}

/** "IPv6 via gateway", or why there is no family to show. */
export function familyText(r: RecentDestination | null): string {
  if (!r) return 'no connection seen by the bridge yet';
  // the bridge's code, or the gateway's own (ERR_NAME_NOT_FOUND vs ERR_HOST_UNREACHABLE) when it named it
  if (r.result !== 'ok') return `failed: ${Object.hasOwn(ERRORS, r.result) ? `${ERRORS[r.result as keyof typeof ERRORS].text} ` : ''}(${r.result})`;
  if (r.family === null) return 'via gateway (family not reported)';
  return `IPv${r.family} via gateway`;
}
