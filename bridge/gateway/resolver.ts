// Name resolution at the gateway (the draft's "DNS name resolving delegation"): hosts file first,
// then every A and AAAA record from the chosen resolver. Failures keep their kind, so a name that
// does not exist is reported as such (REP 0x04) instead of looking like a refused connection.
import { promises as dns } from 'node:dns';
import { readFileSync } from 'node:fs';
import { ConfigError, RequestError } from '../../shared/errors.js';
import { joinHostPort, parseIp, type Ip } from '../../shared/net/address.js';
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

export class NameResolver {
  private readonly hosts: Map<string, Ip[]>;
  private readonly resolver: dns.Resolver | null;
  private readonly hostsOnly: boolean;

  constructor(opts: { hostsFile?: string | undefined; dns?: HostPort[] | undefined }) {
    this.hosts = new Map();
    if (opts.hostsFile) {
      let text: string;
      try {
        text = readFileSync(opts.hostsFile, 'utf8');
      } catch (e) {
        throw new ConfigError('hosts', `${opts.hostsFile}: ${(e as Error).message}`);
      }
      this.hosts = parseHosts(text, opts.hostsFile);
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
    if (this.resolver) {
      const [a, aaaa] = await Promise.allSettled([this.resolver.resolve4(key), this.resolver.resolve6(key)]);
      const ips = [
        ...(a.status === 'fulfilled' ? a.value : []),
        ...(aaaa.status === 'fulfilled' ? aaaa.value : []),
      ].map((t) => parseIp(t)).filter((ip): ip is Ip => ip !== null);
      if (ips.length > 0) return ips;
      const code = (r: PromiseSettledResult<string[]>): string | undefined =>
        r.status === 'rejected' ? (r.reason as NodeJS.ErrnoException).code : 'ENODATA';
      throw dnsError(name, [code(a), code(aaaa)]);
    }
    try {
      const found = await dns.lookup(key, { all: true, verbatim: true });
      const ips = found.map((f) => parseIp(f.address)).filter((ip): ip is Ip => ip !== null);
      if (ips.length === 0) throw new RequestError('ERR_NO_ADDRESS', name);
      return ips;
    } catch (e) {
      if (e instanceof RequestError) throw e;
      throw dnsError(name, [(e as NodeJS.ErrnoException).code]);
    }
  }
}
