// The host's own addresses, for the gateway and the bridge: a destination there would reach this
// machine's local services, and a client there is on this machine.
import { networkInterfaces } from 'node:os';
import { canonicalHost, CidrSet, parseIp } from '../shared/net/address.js';
import { specialBlock } from '../shared/net/policy.js';

const REFRESH_MS = 5000;
let cache: { at: number; set: CidrSet } | undefined;

/** The interface addresses, re-read every few seconds (interfaces come and go). */
export function hostAddresses(): CidrSet {
  const now = Date.now();
  if (!cache || now - cache.at > REFRESH_MS) {
    const addrs = Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((i) => i.address.replace(/%.*$/, '')));
    cache = { at: now, set: new CidrSet(addrs.filter((a) => parseIp(a) !== null)) };
  }
  return cache.set;
}

/** A peer address on this machine: loopback, or one of its interface addresses. */
export function isLocalPeer(address: string | undefined): boolean {
  const ip = parseIp(canonicalHost(address ?? ''));
  if (!ip) return false;
  return specialBlock(ip)?.class === 'loopback' || hostAddresses().has(ip);
}
