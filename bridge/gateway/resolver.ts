// Name resolution at the gateway (the draft's "DNS name resolving delegation"): hosts file first,
// then every A and AAAA record from the chosen resolver. Failures keep their kind, so a name that
// does not exist is reported as such (REP 0x04) instead of looking like a refused connection.
// Answers are cached: with delegation the browser's own DNS cache is out of play, and a page
// opens many connections to one name at once. An answer lives for its TTL (--dns; the system
// resolver tells none, so there the cap itself, as Chrome's host cache does with getaddrinfo),
// never longer than the cap; failures are not cached, and concurrent lookups of a name share one.
import { promises as dns } from 'node:dns';
import { ConfigError, RequestError } from '../../shared/errors.js';
import { joinHostPort, parseIp, type Ip } from '../../shared/net/address.js';
import { readConfigFile } from '../config-common.js';
import type { HostPort } from './config.js';

export function normaliseName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

/** hosts(5): "ADDRESS NAME [ALIAS…]", '#' comments. Later lines add addresses to a name. */
export function parseHosts(text: string, source = 'hosts'): Map<string, Ip[]> {
  const table = new Map<string, Ip[]>();
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/#.*/, '').trim();
    if (line === '') return;
    const [addr, ...names] = line.split(/\s+/);
    const ip = parseIp(addr!);
    if (!ip || names.length === 0) throw new ConfigError('hosts', `${source} line ${i + 1}: expected "ADDRESS NAME…"`);
    for (const n of names) {
      const key = normaliseName(n);
      const list = table.get(key) ?? [];
      list.push(ip);
      table.set(key, list);
    }
  });
  return table;
}

function dnsError(name: string, codes: (string | undefined)[]): RequestError {
  if (codes.every((c) => c === 'ENODATA')) return new RequestError('ERR_NO_ADDRESS', name);
  if (codes.every((c) => c === 'ENOTFOUND' || c === 'ENODATA')) return new RequestError('ERR_NAME_NOT_FOUND', name);
  return new RequestError('ERR_DNS_FAILED', `${name} (${codes.filter(Boolean).join(', ')})`);
}

/** Names kept at most (least recently used go first). */
export const CACHE_ENTRIES = 10_000;

interface Answer {
  ips: Ip[];
  /** Seconds the answer may be kept (the smallest record TTL), or null when the resolver tells none. */
  ttl: number | null;
}

export class NameResolver {
  private readonly hosts: Map<string, Ip[]>;
  private readonly resolver: dns.Resolver | null;
  private readonly hostsOnly: boolean;
  private readonly cacheMs: number;
  private readonly cache = new Map<string, { ips: Ip[]; until: number }>();
  private readonly pending = new Map<string, Promise<Ip[]>>();
  /** Lookups answered from the cache or by joining one in flight, and lookups sent. */
  readonly stats = { cached: 0, asked: 0 };

  constructor(opts: { hostsFile?: string | undefined; dns?: HostPort[] | undefined; cacheSeconds?: number | undefined }) {
    this.cacheMs = Math.max(0, (opts.cacheSeconds ?? 0) * 1000);
    this.hosts = new Map();
    if (opts.hostsFile) {
      this.hosts = parseHosts(readConfigFile('hosts', opts.hostsFile), opts.hostsFile);
    }
    this.hostsOnly = opts.dns !== undefined && opts.dns.length === 0;
    this.resolver = null;
    if (opts.dns && opts.dns.length > 0) {
      this.resolver = new dns.Resolver({ timeout: 2000, tries: 2 });
      this.resolver.setServers(opts.dns.map((s) => joinHostPort(s.host, s.port)));
    }
  }

  /** Every address of the name, in the resolver's order. Throws RequestError with REP 0x04. */
  async resolve(name: string): Promise<Ip[]> {
    const key = normaliseName(name);
    const fixed = this.hosts.get(key);
    if (fixed) return fixed;
    if (this.hostsOnly) throw new RequestError('ERR_NAME_NOT_FOUND', `${name} (not in hosts file)`);
    if (this.cacheMs === 0) {
      this.stats.asked++;
      return (await this.lookup(key, name)).ips;
    }
    const hit = this.cache.get(key);
    if (hit) {
      this.cache.delete(key);
      if (hit.until > Date.now()) {
        // most recently used goes last
        this.cache.set(key, hit);
        this.stats.cached++;
        return [...hit.ips];
      }
    }
    const inFlight = this.pending.get(key);
    if (inFlight) {
      this.stats.cached++;
      return [...(await inFlight)];
    }
    this.stats.asked++;
    const p = this.lookup(key, name).then((a) => {
      const ms = a.ttl === null ? this.cacheMs : Math.min(a.ttl * 1000, this.cacheMs);
      if (ms > 0) {
        this.cache.set(key, { ips: a.ips, until: Date.now() + ms });
        if (this.cache.size > CACHE_ENTRIES) this.cache.delete(this.cache.keys().next().value!);
      }
      return a.ips;
    });
    this.pending.set(key, p);
    try {
      return [...(await p)];
    } finally {
      this.pending.delete(key);
    }
  }

  private async lookup(key: string, name: string): Promise<Answer> {
    if (this.resolver) {
      const [a, aaaa] = await Promise.allSettled([this.resolver.resolve4(key, { ttl: true }), this.resolver.resolve6(key, { ttl: true })]);
      const records = [...(a.status === 'fulfilled' ? a.value : []), ...(aaaa.status === 'fulfilled' ? aaaa.value : [])];
      const ips = records.map((r) => parseIp(r.address)).filter((ip): ip is Ip => ip !== null);
      if (ips.length > 0) return { ips, ttl: Math.min(...records.map((r) => r.ttl)) };
      const code = (r: PromiseSettledResult<unknown>): string | undefined =>
        r.status === 'rejected' ? (r.reason as NodeJS.ErrnoException).code : 'ENODATA';
      throw dnsError(name, [code(a), code(aaaa)]);
    }
    try {
      const found = await dns.lookup(key, { all: true, verbatim: true });
      const ips = found.map((f) => parseIp(f.address)).filter((ip): ip is Ip => ip !== null);
      if (ips.length === 0) throw new RequestError('ERR_NO_ADDRESS', name);
      return { ips, ttl: null };
    } catch (e) {
      if (e instanceof RequestError) throw e;
      throw dnsError(name, [(e as NodeJS.ErrnoException).code]);
    }
  }
}
