// The gateway's settings: one table for flags and JSON keys, turned into a checked config.
import { ConfigError } from '../../shared/errors.js';
import { familyOf, formatIp, parseIp, splitHostPort, type CidrSet, type Family, type HostPort, type Ip } from '../../shared/net/address.js';
import { cidrs, isLoopbackListen, listenAddresses, readConfigFile } from '../config-common.js';
import { parseSettings, type Settings } from '../../shared/rules/index.js';
import { flagOf, millis, parseOptions, type OptionSpec, type OptionValues } from '../options.js';
import { parseGatewayUrl, type Hop } from '../upstream/hops.js';

export type { HostPort };

export const GATEWAY_OPTIONS: OptionSpec[] = [
  { key: 'listen', kind: 'list', arg: 'HOST:PORT', help: 'address to listen on, repeatable; IPv6 in brackets (default 127.0.0.1:1081 and [::1]:1081)' },
  { key: 'users', kind: 'string', arg: 'FILE', help: 'username/password file (lines made by `dualsocks passwd USER`)' },
  { key: 'noAuth', kind: 'flag', help: 'serve without authentication even on a non-loopback address' },
  { key: 'hosts', kind: 'string', arg: 'FILE', help: 'hosts(5) file of static names, looked up before DNS' },
  { key: 'dns', kind: 'list', arg: 'SERVER[:PORT]', help: 'resolver to ask instead of the system one, repeatable; "none" for hosts file only' },
  { key: 'dnsCache', kind: 'seconds', zero: 'no cache', arg: 'SECONDS', help: 'keep resolved names this long at most (their TTL with --dns), 0 for no cache (default 60)' },
  { key: 'prefer', kind: 'string', arg: 'ipv6|ipv4', choices: ['ipv6', 'ipv4'], help: 'family tried first by Happy Eyeballs (default ipv6)' },
  { key: 'allow', kind: 'list', arg: 'CIDR', help: 'destination range to allow although the special-purpose table refuses it (loopback, private, documentation…), repeatable' },
  { key: 'allowPrivate', kind: 'flag', help: 'allow every destination the special-purpose table refuses (loopback, private, link-local, documentation, multicast…) and this host\'s own addresses' },
  { key: 'clients', kind: 'list', arg: 'CIDR', help: 'client source addresses allowed to connect, repeatable (default any)' },
  { key: 'proxyProtocol', kind: 'list', arg: 'CIDR', help: 'connections from these addresses (a TCP balancer such as HAProxy) start with a PROXY protocol v1 or v2 header naming the client; repeatable' },
  { key: 'udpAdvertise', kind: 'list', arg: 'ADDRESS', help: 'BND.ADDR of UDP ASSOCIATE replies: the address clients send datagrams to, when it is not the one they connected to (behind a balancer); one per family' },
  { key: 'handshakeTimeout', kind: 'seconds', arg: 'SECONDS', help: 'time allowed for greeting, auth and request (default 10)' },
  { key: 'connectTimeout', kind: 'seconds', arg: 'SECONDS', help: 'time allowed to reach the destination (default 10)' },
  { key: 'bindTimeout', kind: 'seconds', arg: 'SECONDS', help: 'time a BIND waits for its peer to connect (default 60)' },
  { key: 'idleTimeout', kind: 'seconds', zero: 'never', arg: 'SECONDS', help: 'close a tunnel idle this long, 0 for never (default 3600)' },
  { key: 'maxConnections', kind: 'count', arg: 'N', help: 'connections served at once; more are refused cleanly (default 4096)' },
  { key: 'workers', kind: 'count', arg: 'N', help: 'gateway processes sharing the listening addresses, e.g. one per core (default 1)' },
  { key: 'upstream', kind: 'list', arg: 'URL', help: 'reach destinations through this SOCKS5 gateway, socks5://user:pass@host:port; repeat for more hops, in order' },
  { key: 'upstreamRules', kind: 'string', arg: 'FILE', help: 'routing rules (JSON, as the bridge\'s --rules) choosing upstream (proxy) or direct per destination (default: all upstream)' },
  { key: 'quiet', kind: 'flag', help: 'do not print the per-connection log lines' },
  { key: 'metrics', kind: 'string', arg: 'HOST:PORT', help: 'serve Prometheus metrics at http://HOST:PORT/metrics (off by default; loopback clients only unless --metrics-clients)' },
  { key: 'metricsClients', kind: 'list', arg: 'CIDR', help: 'sources allowed to scrape --metrics, repeatable (default loopback only)' },
  { key: 'ftp', kind: 'flag', help: 'translate FTP control connections to port 21 that cross families (PASV/227 ↔ EPSV/229, PORT ↔ EPRT)' },
  { key: 'ftpPort', kind: 'list', arg: 'PORT', help: 'translate FTP on this destination port too, repeatable (enables FTP translation)' },
];

export interface GatewayConfig {
  listen: HostPort[];
  /** No --listen given: a loopback family the host lacks is skipped. */
  listenIsDefault: boolean;
  usersFile?: string | undefined;
  requireAuth: boolean;
  hostsFile?: string | undefined;
  /** undefined: system resolver; []: hosts file only. */
  dns?: HostPort[] | undefined;
  /** Longest time a resolved name is kept; 0: no cache. */
  dnsCacheSeconds: number;
  prefer: 'ipv6' | 'ipv4';
  allow: CidrSet;
  allowPrivate: boolean;
  clients?: CidrSet | undefined;
  /** Sources whose connections start with a PROXY protocol header; undefined: none. */
  proxyProtocol?: CidrSet | undefined;
  /** BND.ADDR of UDP ASSOCIATE replies, per family of the relay socket. */
  udpAdvertise: Partial<Record<Family, Ip>>;
  handshakeTimeoutMs: number;
  connectTimeoutMs: number;
  bindTimeoutMs: number;
  idleTimeoutMs: number;
  maxConnections: number;
  /** Processes serving the same listeners (bridge/gateway/workers.ts). */
  workers: number;
  quiet: boolean;
  /** Destination ports whose cross-family FTP control connections are translated; [] for none. */
  ftpPorts: number[];
  /** Hops toward the destination, in order; names go on unresolved. */
  upstream?: Hop[] | undefined;
  /** decide() → PROXY: upstream, DIRECT: here. Unset: everything upstream. */
  upstreamRules?: Settings | undefined;
  /** Where /metrics is served (bridge/metrics.ts); unset: nowhere. */
  metrics?: HostPort | undefined;
  /** Who may scrape it; unset: loopback only. */
  metricsClients?: CidrSet | undefined;
}

export const DEFAULT_GATEWAY_LISTEN: HostPort[] = [
  { host: '127.0.0.1', port: 1081 },
  { host: '::1', port: 1081 },
];

function readUpstreamRules(path: string): Settings {
  const text = readConfigFile('upstreamRules', path);
  try {
    return parseSettings(text);
  } catch (e) {
    throw e instanceof ConfigError ? new ConfigError('upstreamRules', `${path}: ${e.message}`) : e;
  }
}

function ftpPorts(o: OptionValues): number[] {
  const ports = ((o.ftpPort as string[] | undefined) ?? []).map((p) => {
    if (!/^[0-9]{1,5}$/.test(p) || Number(p) < 1 || Number(p) > 65535) throw new ConfigError('ftpPort', `"${p}" is not a port number`);
    return Number(p);
  });
  if (o.ftp === true) ports.unshift(21);
  return [...new Set(ports)];
}

/** --udp-advertise: an address a client can send to, at most one per family. */
function udpAdvertise(o: OptionValues): Partial<Record<Family, Ip>> {
  const flag = flagOf('udpAdvertise');
  const out: Partial<Record<Family, Ip>> = {};
  for (const text of (o.udpAdvertise as string[] | undefined) ?? []) {
    const ip = parseIp(text);
    if (!ip) throw new ConfigError(flag, `"${text}" is not an IP address`);
    const multicast = familyOf(ip) === 4 ? ip[12]! >> 4 === 0xe : ip[0] === 0xff;
    if (formatIp(ip) === '0.0.0.0' || formatIp(ip) === '::' || multicast) throw new ConfigError(flag, `"${text}" is ${multicast ? 'multicast' : 'unspecified'}: clients cannot send to it`);
    const f = familyOf(ip);
    if (out[f]) throw new ConfigError(flag, `two IPv${f} addresses (${formatIp(out[f])}, ${formatIp(ip)}): give one per family`);
    out[f] = ip;
  }
  return out;
}

export function gatewayConfig(argv: string[]): GatewayConfig {
  return gatewayConfigFrom(parseOptions(argv, GATEWAY_OPTIONS));
}

export function gatewayConfigFrom(o: OptionValues): GatewayConfig {
  const listen = o.listen ? listenAddresses('listen', o.listen as string[]) : DEFAULT_GATEWAY_LISTEN;
  const usersFile = o.users as string | undefined;
  const noAuth = o.noAuth === true;
  if (usersFile && noAuth) throw new ConfigError('noAuth', 'cannot be combined with users');
  const clientTexts = o.clients as string[] | undefined;
  // a /0 restricts nobody (of its family): it is no --clients
  const everyone = clientTexts?.find((c) => /\/0+$/.test(c.trim()));
  const exposed = listen.filter((l) => !isLoopbackListen(l));
  // only "no users and no client restriction" is an open proxy
  if (exposed.length > 0 && !usersFile && !noAuth && (!clientTexts || everyone)) {
    throw new ConfigError(
      everyone ? 'clients' : 'listen',
      everyone
        ? `"${everyone}" admits every source: on ${exposed.map((l) => l.host).join(', ')} give --users FILE, narrower --clients, or --no-auth to run an open proxy on purpose`
        : `${exposed.map((l) => l.host).join(', ')} is not loopback: give --users FILE, --clients CIDR, or --no-auth to run an open proxy on purpose`,
    );
  }
  let dns: HostPort[] | undefined;
  const dnsList = o.dns as string[] | undefined;
  if (dnsList) {
    dns = dnsList.includes('none')
      ? []
      : dnsList.map((s) => {
          const hp = splitHostPort(s, 53);
          if (!hp || !parseIp(hp.host)) throw new ConfigError('dns', `"${s}" is not an IP address with an optional port`);
          return hp;
        });
  }
  const maxConnections = (o.maxConnections as number | undefined) ?? 4096;
  if (maxConnections < 1) throw new ConfigError('maxConnections', 'must be at least 1');
  const upstream = ((o.upstream as string[] | undefined) ?? []).flatMap((u, i) => parseGatewayUrl(u, `upstream[${i}]`));
  if (o.upstreamRules !== undefined && upstream.length === 0) throw new ConfigError('upstreamRules', 'needs --upstream');
  const workers = Math.max(1, (o.workers as number | undefined) ?? 1);
  // a passive FTP data CONNECT must reach the process holding its control connection
  if (workers > 1 && (o.ftp === true || o.ftpPort !== undefined)) throw new ConfigError('workers', 'FTP translation needs a single gateway process (--workers 1)');
  if (o.metricsClients !== undefined && o.metrics === undefined) throw new ConfigError('metricsClients', 'needs --metrics');
  return {
    listen,
    listenIsDefault: !o.listen,
    usersFile,
    requireAuth: usersFile !== undefined,
    hostsFile: o.hosts as string | undefined,
    dns,
    dnsCacheSeconds: (o.dnsCache as number | undefined) ?? 60,
    prefer: (o.prefer as 'ipv6' | 'ipv4' | undefined) ?? 'ipv6',
    allow: cidrs('allow', (o.allow as string[] | undefined) ?? []),
    allowPrivate: o.allowPrivate === true,
    clients: clientTexts ? cidrs('clients', clientTexts) : undefined,
    proxyProtocol: o.proxyProtocol ? cidrs(flagOf('proxyProtocol'), o.proxyProtocol as string[]) : undefined,
    udpAdvertise: udpAdvertise(o),
    handshakeTimeoutMs: millis(o, 'handshakeTimeout', 10),
    connectTimeoutMs: millis(o, 'connectTimeout', 10),
    bindTimeoutMs: millis(o, 'bindTimeout', 60),
    idleTimeoutMs: millis(o, 'idleTimeout', 3600),
    maxConnections,
    workers,
    quiet: o.quiet === true,
    ftpPorts: ftpPorts(o),
    upstream: upstream.length > 0 ? upstream : undefined,
    upstreamRules: o.upstreamRules !== undefined ? readUpstreamRules(o.upstreamRules as string) : undefined,
    metrics: o.metrics !== undefined ? listenAddresses('metrics', [o.metrics as string])[0] : undefined,
    metricsClients: o.metricsClients ? cidrs('metricsClients', o.metricsClients as string[]) : undefined,
  };
}
