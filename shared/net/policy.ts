// Destination policy classes. Checked on every resolved address (never on the name), so a name
// that resolves into loopback or a private range cannot reach it (DNS rebinding, SSRF).
import { CidrSet, ipFromV4Bytes, isV4, type Ip } from './address.js';

/** Address classes denied by default, each with the ranges that make it up. */
export const SPECIAL_RANGES: Record<string, string[]> = {
  unspecified: ['0.0.0.0/8', '::/128'],
  loopback: ['127.0.0.0/8', '::1/128'],
  'link-local': ['169.254.0.0/16', 'fe80::/10'],
  private: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10'],
  'unique-local': ['fc00::/7'],
  multicast: ['224.0.0.0/4', 'ff00::/8'],
  reserved: ['240.0.0.0/4', '255.255.255.255/32'],
};

const CLASSES = Object.entries(SPECIAL_RANGES).map(([name, ranges]) => ({ name, set: new CidrSet(ranges) }));

// IPv6 forms that carry an IPv4 address a router may reach: NAT64 well-known prefix and 6to4.
const NAT64 = new CidrSet(['64:ff9b::/96']);
const SIX_TO_FOUR = new CidrSet(['2002::/16']);

/** The IPv4 address embedded in a NAT64 or 6to4 address, if any. */
export function embeddedV4(ip: Ip): Ip | null {
  if (isV4(ip)) return null;
  if (NAT64.has(ip)) return ipFromV4Bytes(ip.subarray(12, 16));
  if (SIX_TO_FOUR.has(ip)) return ipFromV4Bytes(ip.subarray(2, 6));
  return null;
}

/** Name of the special class the address falls in (also through an embedded IPv4), else null. */
export function specialClass(ip: Ip): string | null {
  for (const c of CLASSES) if (c.set.has(ip)) return c.name;
  const inner = embeddedV4(ip);
  if (inner) {
    const cls = specialClass(inner);
    if (cls) return `${cls} (embedded IPv4)`;
  }
  return null;
}

export interface DestinationPolicy {
  /** Explicitly allowed ranges; they win over the special classes. */
  allow: CidrSet;
  /** Allow every special class (an operator's escape hatch for labs). */
  allowPrivate: boolean;
  /** The gateway's own addresses: reaching them would let clients into its local services. */
  self?: CidrSet | undefined;
}

/** null when allowed, otherwise the reason it is denied. */
export function checkDestination(policy: DestinationPolicy, ip: Ip): string | null {
  if (policy.allowPrivate || policy.allow.has(ip)) return null;
  const cls = specialClass(ip);
  if (cls) return `${cls} address`;
  return policy.self?.has(ip) ? "the gateway's own address" : null;
}
