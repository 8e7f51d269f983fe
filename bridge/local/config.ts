// The bridge's settings: one table for flags and JSON keys.
import { ConfigError } from '../../shared/errors.js';
import { type CidrSet, type HostPort, splitHostPort } from '../../shared/net/address.js';
import { DEFAULT_SETTINGS, parseSettings, type Settings } from '../../shared/rules/index.js';
import { cidrs, isLoopbackListen, listenAddresses, readConfigFile } from '../config-common.js';
import { originalDestinationUnavailable } from '../native/loader.js';
import { millis, type OptionSpec, type OptionValues } from '../options.js';
import { parseGatewayUrl, type Hop } from '../upstream/hops.js';
import type { Balance } from '../upstream/pool.js';
import type { FakeDnsConfig } from './fake/index.js';
import { parseDnsListen, parseUpstream } from './fake/server.js';
import { DEFAULT_FAKE_RANGE, DEFAULT_FAKE_RANGE6 } from './fake/table.js';

/** Health checks no more often than this, whatever --health-interval says. */
const MIN_HEALTH_INTERVAL_MS = 1000;

export const BRIDGE_LISTEN_OPTIONS: OptionSpec[] = [
  { key: 'listen', kind: 'list', arg: 'HOST:PORT', help: 'address of the mixed HTTP/SOCKS port, repeatable (default 127.0.0.1:1080 and [::1]:1080)' },
  { key: 'clients', kind: 'list', arg: 'CIDR', help: 'sources allowed to use the bridge; beyond loopback this or --users is required' },
  { key: 'users', kind: 'string', arg: 'FILE', help: "clients log in (SOCKS5 username/password, HTTP Proxy-Authorization: Basic) as users of this file, the gateway's format; SOCKS4 is refused" },
  { key: 'noAuthLocal', kind: 'flag', help: 'with --users: programs on this machine (loopback or its own addresses) need no login' },
  { key: 'rules', kind: 'string', arg: 'FILE', help: 'routing rules (JSON) for the PAC file and the bridge' },
  { key: 'pacProxy', kind: 'string', arg: 'HOST:PORT', help: "proxy address written into the PAC (default: the address the PAC was fetched from)" },
  { key: 'handshakeTimeout', kind: 'seconds', arg: 'SECONDS', help: 'time allowed for a SOCKS handshake or an HTTP request head (default 10)' },
  { key: 'connectTimeout', kind: 'seconds', arg: 'SECONDS', help: 'time allowed to reach a gateway and the destination (default 10)' },
  { key: 'idleTimeout', kind: 'seconds', zero: 'never', arg: 'SECONDS', help: 'close a tunnel or UDP association idle this long, 0 for never (default 3600)' },
  { key: 'dnsListen', kind: 'list', arg: 'HOST:PORT', help: 'fake-address DNS server (UDP and TCP) for programs without proxy support, repeatable; beyond loopback needs --clients' },
  { key: 'dnsUpstream', kind: 'list', arg: 'SERVER[:PORT]', help: 'resolver for names the rules send DIRECT, repeatable (default: the nameservers in /etc/resolv.conf)' },
  { key: 'fakeRange', kind: 'string', arg: 'CIDR', help: `IPv4 addresses the DNS hands out for proxied names (default ${DEFAULT_FAKE_RANGE})` },
  { key: 'fakeRange6', kind: 'string', arg: 'CIDR', help: `IPv6 addresses the DNS hands out for proxied names (default ${DEFAULT_FAKE_RANGE6})` },
  { key: 'fakeState', kind: 'string', arg: 'FILE', help: 'keep the fake-address table in FILE across restarts' },
  { key: 'transparent', kind: 'list', arg: 'HOST:PORT', help: 'port for connections redirected by nftables (see `dualsocks transparent nft`), repeatable; Linux only; beyond loopback needs --clients' },
];

/**
 * Greeted connections kept per gateway: enough for a browser's burst of new connections to start
 * warm; a gateway counts each in its handshake budget (at least 16) until used or closed.
 */
const DEFAULT_WARM = 4;
/** Well inside the gateway's default handshake timeout (10 s), so it is the bridge that closes them. */
const WARM_IDLE_MS = 3000;

export const BRIDGE_OPTIONS: OptionSpec[] = [
  ...BRIDGE_LISTEN_OPTIONS,
  { key: 'gateway', kind: 'list', arg: 'URL', help: 'socks5://user:pass@host:port, repeatable; hops of one chain joined by commas' },
  { key: 'balance', kind: 'string', arg: 'round-robin|sticky', choices: ['round-robin', 'sticky'], help: 'how new connections are spread over gateways (default round-robin)' },
  { key: 'healthInterval', kind: 'seconds', arg: 'SECONDS', help: 'gateway health check period (default 10)' },
  { key: 'warm', kind: 'count', arg: 'N', help: `connections to each gateway opened and greeted ahead of requests, each closed after ${WARM_IDLE_MS / 1000} s unused; 0 for none (default ${DEFAULT_WARM})` },
  { key: 'quiet', kind: 'flag', help: 'do not print the per-connection log lines' },
];

export interface BridgeConfig {
  listen: HostPort[];
  /** No --listen given: a loopback family the host lacks is skipped. */
  listenIsDefault: boolean;
  clients?: CidrSet | undefined;
  /** --users: clients must log in. */
  usersFile?: string | undefined;
  /** --no-auth-local: except programs on this machine. */
  noAuthLocal: boolean;
  gateways: Hop[][];
  balance: Balance;
  rules: Settings;
  /** Where `rules` came from (--rules), re-read on SIGHUP. */
  rulesFile?: string | undefined;
  pacProxy?: HostPort | undefined;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  healthIntervalMs: number;
  /** Connections kept greeted at each gateway (bridge/upstream/warm.ts), and how long each waits unused. */
  warm: { size: number; idleMs: number };
  /** No per-connection log lines. */
  quiet: boolean;
  /** A SOCKS handshake or an HTTP request head not complete within this closes the connection. */
  handshakeTimeoutMs: number;
  /** --dns-listen and the fake ranges; without --dns-listen the ranges are still refused as unmapped. */
  fake: Omit<FakeDnsConfig, 'clients'>;
  /** --transparent: listeners for connections redirected by nftables. */
  transparent: HostPort[];
}

export const DEFAULT_BRIDGE_LISTEN: HostPort[] = [
  { host: '127.0.0.1', port: 1080 },
  { host: '::1', port: 1080 },
];

export function readRules(path: string): Settings {
  return parseSettings(readConfigFile('rules', path));
}

/** The proxy address a PAC names (--pac-proxy, `dualsocks pac --proxy`); errors name `key`. */
export function pacProxy(text: string, key = 'pacProxy'): HostPort {
  const hp = splitHostPort(text);
  if (!hp || hp.port === 0 || !/^[A-Za-z0-9.:-]+$/.test(hp.host)) throw new ConfigError(key, `"${text}" is not HOST:PORT (IPv6 in brackets)`);
  return hp;
}

/**
 * --transparent: checked before anything listens. It needs the kernel's record of where a
 * redirected connection was going, which only the native addon on Linux can read.
 */
function transparentListen(o: OptionValues, clients: CidrSet | undefined): HostPort[] {
  const list = (o.transparent as string[] | undefined) ?? [];
  if (list.length === 0) return [];
  const addrs = listenAddresses('--transparent', list);
  const exposed = addrs.filter((l) => !isLoopbackListen(l));
  if (exposed.length > 0 && !clients) {
    throw new ConfigError('--transparent', `${exposed.map((l) => l.host).join(', ')} is not loopback: give --clients CIDR so the port is not an open proxy`);
  }
  const why = originalDestinationUnavailable();
  if (why) throw new ConfigError('--transparent', `cannot read the original destination of redirected connections here (${why}); it needs Linux and the native addon (npm run build:native)`);
  return addrs;
}

/** Builds the config from parsed options; `gateways` may come from elsewhere (dualsocks start). */
export function bridgeConfig(o: OptionValues, gateways?: Hop[][]): BridgeConfig {
  const listen = o.listen ? listenAddresses('listen', o.listen as string[]) : DEFAULT_BRIDGE_LISTEN;
  const clients = o.clients ? cidrs('clients', o.clients as string[]) : undefined;
  const usersFile = o.users as string | undefined;
  if (o.noAuthLocal === true && !usersFile) throw new ConfigError('noAuthLocal', 'needs --users FILE');
  const exposed = listen.filter((l) => !isLoopbackListen(l));
  // as for the gateway: only "no users and no client restriction" is an open proxy
  if (exposed.length > 0 && !clients && !usersFile) {
    throw new ConfigError('listen', `${exposed.map((l) => l.host).join(', ')} is not loopback: give --clients CIDR or --users FILE so the bridge is not an open proxy`);
  }
  const dnsListen = ((o.dnsListen as string[] | undefined) ?? []).map(parseDnsListen);
  const dnsExposed = dnsListen.filter((l) => !isLoopbackListen(l));
  if (dnsExposed.length > 0 && !clients) {
    throw new ConfigError('dnsListen', `${dnsExposed.map((l) => l.host).join(', ')} is not loopback: give --clients CIDR so the DNS server is not open to everyone`);
  }
  const transparent = transparentListen(o, clients);
  const gw = gateways ?? ((o.gateway as string[] | undefined) ?? []).map((u, i) => parseGatewayUrl(u, `gateway[${i}]`));
  if (gw.length === 0) throw new ConfigError('gateway', 'give at least one --gateway socks5://host:port');
  return {
    listen,
    listenIsDefault: !o.listen,
    clients,
    usersFile,
    noAuthLocal: o.noAuthLocal === true,
    gateways: gw,
    balance: (o.balance as Balance | undefined) ?? 'round-robin',
    rules: o.rules ? readRules(o.rules as string) : DEFAULT_SETTINGS,
    rulesFile: o.rules as string | undefined,
    pacProxy: o.pacProxy ? pacProxy(o.pacProxy as string) : undefined,
    connectTimeoutMs: millis(o, 'connectTimeout', 10),
    idleTimeoutMs: millis(o, 'idleTimeout', 3600),
    healthIntervalMs: Math.max(MIN_HEALTH_INTERVAL_MS, millis(o, 'healthInterval', 10)),
    warm: { size: (o.warm as number | undefined) ?? DEFAULT_WARM, idleMs: WARM_IDLE_MS },
    quiet: o.quiet === true,
    handshakeTimeoutMs: millis(o, 'handshakeTimeout', 10),
    fake: {
      dnsListen,
      dnsUpstream: ((o.dnsUpstream as string[] | undefined) ?? []).map(parseUpstream),
      fakeRange: o.fakeRange as string | undefined,
      fakeRange6: o.fakeRange6 as string | undefined,
      fakeState: o.fakeState as string | undefined,
    },
    transparent,
  };
}
