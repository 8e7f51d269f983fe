#!/usr/bin/env node
// dualsocks command line: the commands of COMMANDS. Configuration errors name the flag or key and exit 2.
import cluster from 'node:cluster';
import { randomBytes, scryptSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { setFlagsFromString } from 'node:v8';
import { ConfigError } from '../shared/errors.js';
import { joinHostPort, parseIp } from '../shared/net/address.js';
import { GATEWAY_OPTIONS, gatewayConfig, gatewayConfigFrom } from './gateway/config.js';
import { BRIDGE_LISTEN_OPTIONS, BRIDGE_OPTIONS, bridgeConfig, type BridgeConfig } from './local/config.js';
import { Bridge } from './local/server.js';
import { GatewayPool } from './upstream/pool.js';
import { frontFits, Gateway } from './gateway/server.js';
import { nativeFrontBuilt } from './native/loader.js';
import { reservePorts, startWorkers } from './gateway/workers.js';
import { hashPassword, PasswordChecks, Users } from './gateway/users.js';
import { policyCommand } from './policy.js';
import { pacCommand } from './pac.js';
import { transparentCommand } from './transparent-nft.js';
import { jsonLines, say } from './log.js';
import { Registry } from 'prom-client';
import { clusterMetrics, metricsLine, serveMetrics, withProcessMetrics, workerMetrics } from './metrics.js';
import { helpText, parseOptions } from './options.js';

const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/**
 * Every command: `dualsocks --help` is made from this table and main() dispatches through it, so
 * a command added here is listed there. `server`: a long-running process (see serverHeap).
 */
const COMMANDS: Record<string, { args: string; summary: string; run: (argv: string[]) => Promise<void>; server?: true }> = {
  gateway: { args: '[options]', summary: 'dual-stack SOCKS5 gateway that resolves names for its clients', run: (a) => gateway(a), server: true },
  bridge: { args: '[options]', summary: 'local HTTP + SOCKS4/5 port and PAC server, forwarding names to gateways', run: (a) => bridge(a), server: true },
  start: { args: '[options]', summary: 'a bridge on 127.0.0.1:1080 with an in-process gateway (what npm start runs)', run: (a) => start(a), server: true },
  passwd: { args: 'USER', summary: 'read a password on stdin, print a line for the --users file', run: (a) => passwd(a) },
  policy: { args: 'firefox|chromium', summary: 'enterprise-policy file for a browser (Firefox DNS leak guard, PAC)', run: (a) => policyCommand(a) },
  pac: { args: '--proxy HOST:PORT [--rules FILE] [--out FILE]', summary: "the bridge's PAC file for the same rules, to serve elsewhere (WPAD, GPO)", run: async (a) => pacCommand(a) },
  transparent: { args: 'nft [--apply|--remove]', summary: "the nftables rules for the bridge's --transparent port (prints; --apply loads)", run: (a) => transparentCommand(a) },
};

function usage(): string {
  const rows = Object.entries(COMMANDS).map(([name, c]) => [`dualsocks ${name} ${c.args}`, c.summary]);
  rows.push(['dualsocks COMMAND --help', 'options of a command'], ['dualsocks --version', 'print the version']);
  const width = Math.max(...rows.map(([l]) => l!.length)) + 2;
  return `dualsocks ${VERSION} — SOCKS-based IPv6/IPv4 gateway (RFC 3089)\n\nUsage:\n${rows.map(([l, r]) => `  ${l!.padEnd(width)}${r}\n`).join('')}`;
}

async function readPassword(): Promise<string> {
  const rl = createInterface({ input: process.stdin, terminal: false });
  for await (const line of rl) {
    rl.close();
    return line;
  }
  throw new ConfigError('password', 'none given on stdin');
}

async function gateway(argv: string[]): Promise<void> {
  if (argv.includes('--help')) {
    process.stdout.write(helpText('Usage: dualsocks gateway [options]', 'Dual-stack SOCKS5 gateway: resolves names for its clients (A and AAAA, Happy Eyeballs) and relays\nbetween IPv4 and IPv6. Logs one JSON line per finished connection on stdout.', GATEWAY_OPTIONS));
    return;
  }
  const cfg = gatewayConfig(argv);
  // workers that run the native front listen themselves on the ports reserved here
  const own = cfg.workers > 1 && cluster.isPrimary && frontFits(cfg) && nativeFrontBuilt() && cfg.listen.every((a) => parseIp(a.host) !== null);
  if (startWorkers(cfg.workers, say, own ? { listen: reservePorts(cfg.listen, cfg.listenIsDefault) } : {})) {
    // the primary serves the workers' metrics, summed
    if (cfg.metrics) say(`dualsocks gateway: ${metricsLine((await serveMetrics(cfg.metrics, cfg.metricsClients, clusterMetrics())).bound)}`);
    return;
  }
  const gw = new Gateway(cfg, jsonLines);
  // every handler before the first line: whoever waits for it may signal at once
  onStop(() => gw.close());
  // as daemons do (Dante too): re-read the files, keep serving
  process.on('SIGHUP', () => {
    for (const line of gw.reload()) say(`dualsocks gateway: SIGHUP: ${line}`);
  });
  if (cfg.metrics) {
    withProcessMetrics(gw.metrics.registry);
    if (cluster.isWorker) workerMetrics(gw.metrics.registry);
    else say(`dualsocks gateway: ${metricsLine((await serveMetrics(cfg.metrics, cfg.metricsClients, gw.metrics)).bound)}`);
  }
  const bound = await gw.listen();
  for (const b of bound) say(`dualsocks gateway ${VERSION} listening on ${joinHostPort(b.host, b.port)}${cfg.requireAuth ? ' (username/password)' : ''}`);
}

const START_GATEWAY_KEYS = ['hosts', 'dns', 'prefer', 'allow', 'allowPrivate', 'quiet'];
const START_OPTIONS = [...BRIDGE_LISTEN_OPTIONS, ...GATEWAY_OPTIONS.filter((o) => START_GATEWAY_KEYS.includes(o.key))];

function newBridge(cfg: BridgeConfig): Bridge {
  const pool = new GatewayPool(cfg.gateways, { balance: cfg.balance, connectTimeoutMs: cfg.connectTimeoutMs, healthIntervalMs: cfg.healthIntervalMs, warm: cfg.warm });
  const bridge = new Bridge(cfg, pool, VERSION);
  if (!cfg.quiet) bridge.state.log = jsonLines;
  withProcessMetrics(bridge.metrics.registry);
  return bridge;
}

async function listenBridge(bridge: Bridge): Promise<void> {
  const bound = await bridge.listen();
  const transparent = await bridge.listenTransparent();
  const dns = await bridge.startFakeDns((e) => say(`dualsocks bridge: --fake-state not saved: ${e instanceof Error ? e.message : String(e)}`));
  bridge.pool.startHealthChecks();
  for (const b of bound) say(`dualsocks bridge ${VERSION} listening on ${joinHostPort(b.host, b.port)}`);
  const first = bound[0]!;
  const base = `http://${joinHostPort(first.host, first.port)}`;
  say(`  HTTP proxy:  ${base}    SOCKS5/4a: socks5h://${joinHostPort(first.host, first.port)}`);
  say(`  PAC file:    ${base}/proxy.pac   (also /wpad.dat)`);
  say(`  status:      ${base}/   and ${base}/api/status`);
  if (transparent.length) say(`  transparent: ${transparent.map((b) => joinHostPort(b.host, b.port)).join(', ')} (connections redirected by nftables: dualsocks transparent nft)`);
  if (dns) say(`  ${dns}`);
}

/** How long a stop waits for listeners and tunnels to close before the process exits anyway. */
const STOP_GRACE_MS = 5000;

function onStop(fn: () => Promise<void>): void {
  const stop = (): void => {
    // one stuck connection must not keep a stopped process alive (systemd would wait 90 s, then kill)
    setTimeout(() => {
      say(`dualsocks: not closed within ${STOP_GRACE_MS} ms of the signal; exiting`);
      process.exit(1);
    }, STOP_GRACE_MS);
    fn().then(
      () => process.exit(0),
      (e: unknown) => {
        say(`dualsocks: error while stopping: ${e instanceof Error ? e.message : String(e)}`);
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

async function bridge(argv: string[]): Promise<void> {
  if (argv.includes('--help')) {
    process.stdout.write(helpText('Usage: dualsocks bridge --gateway socks5://user:pass@host:port [options]', 'One local port for HTTP proxy requests, CONNECT, SOCKS5 and SOCKS4/4a. Every connection goes to a\ngateway as SOCKS5 with the name unresolved. Serves /proxy.pac, /wpad.dat and /api/status.', BRIDGE_OPTIONS));
    return;
  }
  const b = newBridge(bridgeConfig(parseOptions(argv, BRIDGE_OPTIONS)));
  // every handler before the first line: whoever waits for it may signal at once
  onStop(() => b.close());
  process.on('SIGHUP', () => say(`dualsocks bridge: SIGHUP: ${b.reload()}`));
  await listenBridge(b);
}

async function start(argv: string[]): Promise<void> {
  if (argv.includes('--help')) {
    process.stdout.write(helpText('Usage: dualsocks start [options]', 'A bridge (default 127.0.0.1:1080 and [::1]:1080) with its own gateway in the same process, for one\nmachine with both IP families: names are resolved by the gateway part, never by the client.', START_OPTIONS));
    return;
  }
  const o = parseOptions(argv, START_OPTIONS);
  // --clients is who may use the bridge. The gateway inside serves the bridge alone: it listens
  // on loopback and asks for a password made here, which only the bridge knows, so another
  // process on this host cannot go around the bridge's --clients through it.
  const { clients: _c, users: _u, noAuthLocal: _n, ...gwOpts } = o;
  const gwCfg = { ...gatewayConfigFrom({ ...gwOpts, listen: ['127.0.0.1:0'] }), requireAuth: true };
  const gw = new Gateway(gwCfg, jsonLines);
  const inner = innerCredentials();
  gw.users = inner.users;
  // a password of 192 random bits cannot be guessed, and any local process can reach this port:
  // a back-off per source would let it lock the bridge (also 127.0.0.1) out
  gw.passwordChecks = new PasswordChecks({ freeFailures: Number.POSITIVE_INFINITY });
  const { hosts: _h, dns: _d, prefer: _p, allow: _a, allowPrivate: _ap, quiet: _q, ...bridgeOpts } = o;
  // checked before anything listens; the gateway's port is known once it does
  // --quiet silences both parts
  const bCfg = bridgeConfig({ ...bridgeOpts, quiet: o.quiet }, [[{ host: '127.0.0.1', port: 0 }]]);
  let b: Bridge | undefined;
  onStop(async () => {
    await b?.close();
    await gw.close();
  });
  const [bound] = await gw.listen();
  say(`dualsocks gateway ${VERSION} in process on ${joinHostPort(bound!.host, bound!.port)}`);
  bCfg.gateways = [[{ host: bound!.host, port: bound!.port, username: inner.username, password: inner.password }]];
  b = newBridge(bCfg);
  // one /metrics for both parts
  b.ctx.metrics = Registry.merge([b.metrics.registry, gw.metrics.registry]);
  await listenBridge(b);
}

/**
 * A user and a random password for the in-process gateway. The password is 192 random bits, so
 * the hash needs no work factor: scrypt at its cheapest keeps each of the bridge's logins to
 * microseconds.
 */
function innerCredentials(): { username: string; password: string; users: Users } {
  const username = 'bridge';
  const password = randomBytes(24).toString('base64url');
  const salt = randomBytes(16);
  const hash = scryptSync(password, salt, 32, { N: 2, r: 1, p: 1 });
  return { username, password, users: Users.parse(`${username}:scrypt$2$1$1$${salt.toString('base64')}$${hash.toString('base64')}`) };
}

async function passwd(argv: string[]): Promise<void> {
  const user = argv[0];
  if (!user || user === '--help' || argv.length > 1) {
    process.stdout.write('Usage: dualsocks passwd USER < password\n\nPrints "USER:scrypt$…" for the gateway\'s --users file.\n');
    if (!user) process.exitCode = 2;
    return;
  }
  if (user.includes(':') || /\s/.test(user) || Buffer.byteLength(user) > 255) throw new ConfigError('USER', 'no colon or space, at most 255 bytes');
  const password = await readPassword();
  if (Buffer.byteLength(password) > 255) throw new ConfigError('password', 'at most 255 bytes (RFC 1929)');
  process.stdout.write(`${user}:${await hashPassword(password)}\n`);
}

/**
 * Servers allocate per connection, not per byte (the addon moves the bytes), yet a burst of
 * connections makes V8 double its young generation up to 32 MiB, which then stays resident:
 * about 2 KiB per tunnel at 10,000 tunnels. Keeping it at its first size costs more frequent,
 * small scavenges. DUALSOCKS_V8_DEFAULTS=1 leaves V8 as it is.
 */
function serverHeap(): void {
  if (process.env.DUALSOCKS_V8_DEFAULTS !== '1') setFlagsFromString('--semi-space-growth-factor=1');
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  const command = cmd === undefined ? undefined : Object.hasOwn(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
  if (command) {
    if (command.server) serverHeap();
    return command.run(rest);
  }
  switch (cmd) {
    case '--version':
      process.stdout.write(`${VERSION}\n`);
      return;
    case undefined:
    case '--help':
    case 'help':
      process.stdout.write(usage());
      return;
    default:
      process.stderr.write(`dualsocks: unknown command "${cmd}"\n\n${usage()}`);
      process.exitCode = 2;
  }
}

main(process.argv.slice(2)).catch((e: unknown) => {
  if (e instanceof ConfigError) {
    process.stderr.write(`dualsocks: ${e.message}\n`);
    process.exit(2);
  }
  const err = e as NodeJS.ErrnoException;
  if (err.code === 'EADDRINUSE' || err.code === 'EADDRNOTAVAIL' || err.code === 'EACCES') {
    process.stderr.write(`dualsocks: cannot listen: ${err.message}\n`);
    process.exit(1);
  }
  process.stderr.write(`dualsocks: ${err.stack ?? String(e)}\n`);
  process.exit(1);
});
