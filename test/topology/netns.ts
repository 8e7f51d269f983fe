// Network-namespace topology for RFC 3089 tests: an IPv4-only and an IPv6-only client, an
// IPv4-only and an IPv6-only server, and a dual-stack gateway between them that does NOT
// forward, so a client reaches a server only through the SOCKS gateway. The test names are
// known only to the gateway; each client has a logging resolver that knows none of them, so a
// local lookup by the client cannot pass unnoticed.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eventually } from '../helpers/settle.js';

/**
 * Like run() in ../helpers/process.ts, which crashes the test process with an unhandled EPIPE
 * when a short-lived child exits before its (empty) stdin is written; here stdin is ignored
 * unless there is input, and stdin errors are swallowed.
 */
export function run(cmd: string, args: string[], opts: { netns?: string; input?: string | Buffer; timeoutMs?: number } = {}): Promise<ExecResult> {
  const [c, a] = opts.netns ? ['ip', ['netns', 'exec', opts.netns, cmd, ...args]] : [cmd, args];
  return new Promise((resolve, reject) => {
    const p = spawn(c, a, { stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 60000);
    p.stdout!.on('data', (d: Buffer) => out.push(d));
    p.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr: err });
    });
    if (p.stdin) {
      p.stdin.on('error', () => {});
      p.stdin.end(opts.input);
    }
  });
}

export type Role = 'gw' | 'c4' | 'c6' | 's4' | 's6';
export const ROLES: readonly Role[] = ['gw', 'c4', 'c6', 's4', 's6'];

/** Addresses on each link. gw.* is the gateway's side of the link to that namespace. */
export const ADDR = {
  gw: { c4: '203.0.113.1', c6: '2001:db8:c6::1', s4: '198.51.100.1', s6: '2001:db8:56::1' },
  c4: '203.0.113.2',
  c6: '2001:db8:c6::2',
  s4: '198.51.100.10',
  s6: '2001:db8:56::10',
} as const;
const PREFIX = { c4: 26, c6: 64, s4: 24, s6: 64 } as const;

/** The gateway has no route at all to these (connect fails with ENETUNREACH). */
export const UNROUTED_V4 = '203.0.113.200';
export const UNROUTED_V6 = '2001:db8:ff::1';
/** The gateway routes these into s4/s6, which silently drop them (forwarding is off there): connects hang. */
export const BLACKHOLE_V4 = '203.0.113.130';
export const BLACKHOLE_V6 = '2001:db8:56:1::1';

/** `--allow` flags for `addrs`, one host route each: documentation ranges are refused by default. */
export const allowArgs = (addrs: readonly string[]): string[] => addrs.flatMap((a) => ['--allow', a]);

/**
 * What a gateway in this topology may reach: the servers and the unrouted and black-holed
 * destinations, address by address, so that the gateway's own addresses on the same links stay refused.
 */
export const ALLOW_DESTINATIONS: string[] = allowArgs([ADDR.s4, ADDR.s6, UNROUTED_V4, UNROUTED_V6, BLACKHOLE_V4, BLACKHOLE_V6]);

export const HTTP_PORT = 80;
/** Reads to EOF, then answers "BYTES SHA256HEX\n": checks uploads and half-close end to end. */
export const SHA_PORT = 9000;
const SHA_SERVER = `
import hashlib, socket, socketserver, sys
class H(socketserver.BaseRequestHandler):
    def handle(self):
        h, n = hashlib.sha256(), 0
        while True:
            b = self.request.recv(65536)
            if not b: break
            h.update(b); n += len(b)
        self.request.sendall(f"{n} {h.hexdigest()}\\n".encode())
class S(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    address_family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
S((sys.argv[1], int(sys.argv[2])), H).serve_forever()
`;
export const NAMES = {
  v4only: 'v4only.test',
  v6only: 'v6only.test',
  dual: 'dual.test',
  /** AAAA black-holed, A working: Happy Eyeballs must fall back to IPv4. */
  brokenV6: 'brokenv6.test',
  /** Known only to the gateway-side dnsmasq (for `--dns`), not in the hosts file. Points at s6. */
  dnsOnly: 'dnsonly.test',
  /** Known to nobody. */
  unknown: 'nowhere.test',
} as const;
/** The gateway-side resolver, reachable only inside gw. */
export const GW_DNS = { host: '127.0.0.1', port: 5353 } as const;
export const BLOB_SIZE = 8 * 1024 * 1024;

export type Server = 's4' | 's6';

export interface ExecResult {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

export interface Topology {
  /** Real namespace names, for `ip netns exec` and startCli({ netns }). */
  ns: Record<Role, string>;
  dir: string;
  /** hosts(5) file naming the test hosts, for the gateway's `--hosts`. */
  hostsFile: string;
  /** index.html content per server (distinct). */
  index: Record<Server, string>;
  /** sha256 (hex) of each server's blob.bin. */
  blobSha256: Record<Server, string>;
  exec(role: Role, cmd: string, args: string[], opts?: { input?: string | Buffer; timeoutMs?: number }): Promise<ExecResult>;
  /** Opens a TCP connection from inside `role`: 'connected' or the errno code (ECONNREFUSED proves a route). */
  connectProbe(role: Role, host: string, port: number, timeoutMs?: number): Promise<string>;
  /** How many queries for `name` (any type) the namespace's resolver has logged. gw counts its :5353 resolver. */
  queriesFor(role: 'c4' | 'c6' | 'gw', name: string): number;
  destroy(): Promise<void>;
}

let seq = 0;
const live = new Map<string, () => void>();
let hooked = false;

// Only synchronous work runs in 'exit', so the exit and signal paths share a sync cleanup.
function hookExit(): void {
  if (hooked) return;
  hooked = true;
  const all = (): void => [...live.values()].forEach((f) => f());
  process.on('exit', all);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      all();
      process.kill(process.pid, sig);
    });
  }
}

function sh(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  } catch {
    return '';
  }
}

/** Kills everything inside the namespace, deletes it and its /etc/netns files. Tolerates absence. */
function removeNamespaceSync(name: string): void {
  for (const pid of sh('ip', ['netns', 'pids', name]).split(/\s+/).filter(Boolean)) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  if (sh('ip', ['netns', 'list']).split('\n').some((l) => l.split(' ')[0] === name)) sh('ip', ['netns', 'del', name]);
  rmSync(`/etc/netns/${name}`, { recursive: true, force: true });
}

export async function must(cmd: string, args: string[], netns?: string): Promise<string> {
  const r = await run(cmd, args, netns ? { netns, timeoutMs: 15000 } : { timeoutMs: 15000 });
  if (r.code !== 0) throw new Error(`${netns ? `[${netns}] ` : ''}${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout.toString();
}

// ---- Building blocks shared by both topologies ----

/** A set of namespaces under one id, with its scratch dir, its children and its cleanup. */
export interface Lab<R extends string> {
  id: string;
  ns: Record<R, string>;
  dir: string;
  children: ChildProcess[];
  cleanupSync(): void;
  /** Starts a long-running child inside `role`, its output appended to `dir/logName`. */
  spawnIn(role: R, logName: string, cmd: string, args: string[]): ChildProcess;
}

export function openLab<R extends string>(prefix: string, roles: readonly R[]): Lab<R> {
  const id = `${prefix}${process.pid % 10000}-${seq++}`;
  const ns = Object.fromEntries(roles.map((r) => [r, `${id}-${r}`])) as Record<R, string>;
  const dir = mkdtempSync(join(tmpdir(), `${id}-`));
  const children: ChildProcess[] = [];
  const cleanupSync = (): void => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const r of roles) removeNamespaceSync(ns[r]);
    rmSync(dir, { recursive: true, force: true });
  };
  // A crashed earlier run with the same pid may have left these behind.
  for (const r of roles) removeNamespaceSync(ns[r]);
  hookExit();
  live.set(id, cleanupSync);
  const spawnIn = (role: R, logName: string, cmd: string, args: string[]): ChildProcess => {
    const fd = openSync(join(dir, logName), 'a');
    const child = spawn('ip', ['netns', 'exec', ns[role], cmd, ...args], { stdio: ['ignore', fd, fd] });
    closeSync(fd);
    child.on('error', () => {});
    children.push(child);
    return child;
  };
  return { id, ns, dir, children, cleanupSync, spawnIn };
}

/** Runs `build`; if it throws, the lab is torn down before the error goes on. */
export async function buildLab<R extends string, T>(lab: Lab<R>, build: () => Promise<T>): Promise<T> {
  try {
    return await build();
  } catch (err) {
    lab.cleanupSync();
    live.delete(lab.id);
    throw err;
  }
}

/**
 * Creates each namespace with its own /etc files (the hosts file never names the test hosts; the
 * resolver is ::1 for `v6Resolver` roles, else 127.0.0.1), forwarding off, IPv6 off in `v4Only`.
 */
export async function addNamespaces<R extends string>(lab: Lab<R>, roles: readonly R[], v6Resolver: readonly R[], v4Only: readonly R[]): Promise<void> {
  for (const r of roles) {
    const ns = lab.ns[r];
    mkdirSync(`/etc/netns/${ns}`, { recursive: true });
    writeFileSync(`/etc/netns/${ns}/hosts`, '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n');
    const resolver = v6Resolver.includes(r) ? '::1' : '127.0.0.1';
    // A namespace with nothing on :53 has a system resolver that fails fast instead of leaking anywhere.
    writeFileSync(`/etc/netns/${ns}/resolv.conf`, `nameserver ${resolver}\noptions timeout:1 attempts:1\n`);
    await must('ip', ['netns', 'add', ns]);
    // Set before the veths exist, so "default" covers them.
    const sysctls = ['net.ipv4.ip_forward=0', 'net.ipv6.conf.all.forwarding=0', 'net.ipv6.conf.default.accept_dad=0', 'net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_ra=0'];
    if (v4Only.includes(r)) sysctls.push('net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1');
    await must('sysctl', ['-q', '-w', ...sysctls], ns);
    await must('ip', ['link', 'set', 'lo', 'up'], ns);
  }
}

/**
 * A veth between two namespaces (`to-b` in a, `to-a` in b) with one or more [a's, b's, prefix
 * length] address pairs on it. Created directly inside the namespaces: nothing ever appears in
 * the host namespace.
 */
export async function link<R extends string>(lab: Lab<R>, a: R, b: R, pairs: [string, string, number][]): Promise<void> {
  const { ns } = lab;
  const nodad = (addr: string): string[] => (addr.includes(':') ? ['nodad'] : []);
  await must('ip', ['-n', ns[a], 'link', 'add', `to-${b}`, 'type', 'veth', 'peer', 'name', `to-${a}`, 'netns', ns[b]]);
  for (const [aa, bb, plen] of pairs) {
    await must('ip', ['-n', ns[a], 'addr', 'add', `${aa}/${plen}`, 'dev', `to-${b}`, ...nodad(aa)]);
    await must('ip', ['-n', ns[b], 'addr', 'add', `${bb}/${plen}`, 'dev', `to-${a}`, ...nodad(bb)]);
  }
  await must('ip', ['-n', ns[a], 'link', 'set', `to-${b}`, 'up']);
  await must('ip', ['-n', ns[b], 'link', 'set', `to-${a}`, 'up']);
}

/** A dnsmasq in `role` that answers NXDOMAIN for every name (but `extra`) and logs every query to dir/dns-ROLE.log. */
function startResolver<R extends string>(lab: Lab<R>, role: R, listen: string, port: number, extra: string[] = []): ChildProcess {
  return lab.spawnIn(role, `dnsmasq-${role}.out`, 'dnsmasq', [
    '--keep-in-foreground', '--conf-file=/dev/null', '--no-resolv', '--no-hosts', '--no-poll',
    '--log-queries', `--log-facility=${join(lab.dir, `dns-${role}.log`)}`, '--user=root',
    `--listen-address=${listen}`, '--bind-interfaces', `--port=${port}`, `--pid-file=${join(lab.dir, `dnsmasq-${role}.pid`)}`,
    '--address=/#/', ...extra,
  ]);
}

/**
 * In s4 and s6, an HTTP server on `addr[s]`:HTTP_PORT serving a distinct index.html and a random
 * blob.bin, and with `sha`, the SHA_PORT checksum server.
 */
function startServers<R extends string>(lab: Lab<R | Server>, addr: Record<Server, string>, sha: boolean): { index: Record<Server, string>; blobSha256: Record<Server, string> } {
  const index = { s4: `<h1>s4: IPv4-only server ${addr.s4} (${lab.id})</h1>\n`, s6: `<h1>s6: IPv6-only server ${addr.s6} (${lab.id})</h1>\n` };
  const blobSha256 = {} as Record<Server, string>;
  for (const s of ['s4', 's6'] as const) {
    const www = join(lab.dir, `www-${s}`);
    mkdirSync(www);
    writeFileSync(join(www, 'index.html'), index[s]);
    const blob = randomBytes(BLOB_SIZE);
    writeFileSync(join(www, 'blob.bin'), blob);
    blobSha256[s] = createHash('sha256').update(blob).digest('hex');
    lab.spawnIn(s, `http-${s}.out`, '/usr/bin/python3', ['-m', 'http.server', '--bind', addr[s], String(HTTP_PORT), '--directory', www]);
    if (sha) lab.spawnIn(s, `sha-${s}.out`, '/usr/bin/python3', ['-c', SHA_SERVER, addr[s], String(SHA_PORT)]);
  }
  return { index, blobSha256 };
}

async function listeningOn<R extends string>(lab: Lab<R>, role: R, proto: '-t' | '-u', port: number): Promise<boolean> {
  return (await run('ss', ['-Hln', proto, 'sport', '=', `:${port}`], { netns: lab.ns[role] })).stdout.length > 0;
}

/** Waits for each resolver ([role, port]) in turn, then for the servers startServers() started. */
async function waitReady<R extends string>(lab: Lab<R | Server>, resolvers: [R, number][], addr: Record<Server, string>, sha: boolean): Promise<void> {
  for (const [role, port] of resolvers) await eventually(() => listeningOn(lab, role, '-u', port), `dnsmasq in ${role} listening`, { timeoutMs: 10000 });
  for (const s of ['s4', 's6'] as const) {
    const url = `http://${s === 's6' ? `[${addr.s6}]` : addr.s4}:${HTTP_PORT}/index.html`;
    if (sha) await eventually(() => listeningOn(lab, s, '-t', SHA_PORT), `sha server in ${s} listening`, { timeoutMs: 15000 });
    await eventually(async () => (await run('curl', ['-sf', '-o', '/dev/null', '--max-time', '2', url], { netns: lab.ns[s] })).code === 0, `HTTP server in ${s} serving`, { timeoutMs: 15000 });
  }
}

/** What both topologies hand to the tests, over a finished lab. */
function labHandle<R extends string>(lab: Lab<R>, hostsFile: string, servers: { index: Record<Server, string>; blobSha256: Record<Server, string> }) {
  const { id, ns, dir, children } = lab;
  let destroyed = false;
  return {
    ns,
    dir,
    hostsFile,
    index: servers.index,
    blobSha256: servers.blobSha256,
    exec: (role: R, cmd: string, args: string[], opts: { input?: string | Buffer; timeoutMs?: number } = {}): Promise<ExecResult> => run(cmd, args, { ...opts, netns: ns[role] }),
    async connectProbe(role: R, host: string, port: number, timeoutMs = 3000): Promise<string> {
      const script = `const s=require('net').connect({host:process.argv[1],port:+process.argv[2],timeout:+process.argv[3]});
s.on('connect',()=>{console.log('connected');s.destroy()});s.on('timeout',()=>{console.log('ETIMEDOUT');s.destroy()});
s.on('error',e=>console.log(e.code))`;
      const r = await run(process.execPath, ['-e', script, host, String(port), String(timeoutMs)], { netns: ns[role] });
      return r.stdout.toString().trim() || `exit ${r.code}: ${r.stderr}`;
    },
    queriesFor(role: R, name: string): number {
      const file = join(dir, `dns-${role}.log`);
      if (!existsSync(file)) return 0;
      const want = name.toLowerCase().replace(/\.$/, '');
      return readFileSync(file, 'utf8').split('\n').filter((l) => {
        const m = /query\[[^\]]+\] (\S+) from /.exec(l);
        return m !== null && m[1]!.toLowerCase().replace(/\.$/, '') === want;
      }).length;
    },
    async destroy(): Promise<void> {
      if (destroyed) return;
      destroyed = true;
      await Promise.all(children.map((c) => new Promise<void>((resolve) => {
        if (c.exitCode !== null || c.signalCode !== null) return resolve();
        const timer = setTimeout(() => c.kill('SIGKILL'), 5000);
        c.once('exit', () => { clearTimeout(timer); resolve(); });
        c.kill('SIGTERM');
      })));
      lab.cleanupSync();
      live.delete(id);
    },
  };
}

// ---- One gateway ----

export async function createTopology(): Promise<Topology> {
  const lab = openLab('ds', ROLES);
  const { ns, dir } = lab;
  return buildLab(lab, async () => {
    await addNamespaces(lab, ROLES, ['c6'], ['c4', 's4']);
    for (const peer of ['c4', 'c6', 's4', 's6'] as const) await link(lab, 'gw', peer, [[ADDR.gw[peer], ADDR[peer], PREFIX[peer]]]);
    await must('ip', ['-n', ns.gw, 'route', 'add', `${BLACKHOLE_V4}/32`, 'via', ADDR.s4, 'dev', 'to-s4']);
    await must('ip', ['-n', ns.gw, '-6', 'route', 'add', `${BLACKHOLE_V6}/128`, 'via', ADDR.s6, 'dev', 'to-s6']);

    // Resolvers: clients' know nothing (NXDOMAIN for every name) and log every query.
    startResolver(lab, 'c4', '127.0.0.1', 53);
    startResolver(lab, 'c6', '::1', 53);
    // a TTL, so that the gateway's cache has something to keep
    startResolver(lab, 'gw', GW_DNS.host, GW_DNS.port, [`--host-record=${NAMES.dnsOnly},${ADDR.s6}`, '--local-ttl=300']);
    const servers = startServers(lab, ADDR, true);

    const hostsFile = join(dir, 'gateway-hosts');
    writeFileSync(hostsFile, [
      `${ADDR.s4}\t${NAMES.v4only}`,
      `${ADDR.s6}\t${NAMES.v6only}`,
      `${ADDR.s4}\t${NAMES.dual}`,
      `${ADDR.s6}\t${NAMES.dual}`,
      `${BLACKHOLE_V6}\t${NAMES.brokenV6}`,
      `${ADDR.s4}\t${NAMES.brokenV6}`,
      '',
    ].join('\n'));

    await waitReady(lab, [['c4', 53], ['c6', 53], ['gw', GW_DNS.port]], ADDR, true);
    return labHandle(lab, hostsFile, servers);
  });
}

// ---- Two chained gateways (RFC 3089 §4, types E–L) ----
//
//   c4 ─┐                  ┌─ s4
//       g1 ══(v4 + v6)══ g2
//   c6 ─┘                  └─ s6
//
// g1 and g2 are dual-stack; g1 has no route to s4/s6 and nothing forwards, so a client reaches a
// server only through g1 and then g2. Test names are known only to g2's hosts file; c4, c6 and g1
// each have a logging resolver that knows none of them.

export type ChainRole = 'c4' | 'c6' | 'g1' | 'g2' | 's4' | 's6';
export const CHAIN_ROLES: readonly ChainRole[] = ['c4', 'c6', 'g1', 'g2', 's4', 's6'];

export const CHAIN_ADDR = {
  g1: { c4: '203.0.113.65', c6: '2001:db8:1c6::1', g2v4: '198.51.100.129', g2v6: '2001:db8:12::1' },
  g2: { g1v4: '198.51.100.130', g1v6: '2001:db8:12::2', s4: '198.51.100.1', s6: '2001:db8:256::1' },
  c4: '203.0.113.66',
  c6: '2001:db8:1c6::2',
  s4: '198.51.100.10',
  s6: '2001:db8:256::10',
} as const;

/** What g2, the last hop, may reach (documentation addresses are refused by default): the servers. */
export const ALLOW_CHAIN_DESTINATIONS: string[] = allowArgs([CHAIN_ADDR.s4, CHAIN_ADDR.s6]);

/** g1's resolver (knows nothing, logs everything), for the gateway's `--dns`. */
export const G1_DNS = { host: '127.0.0.1', port: 5353 } as const;

export interface ChainTopology {
  ns: Record<ChainRole, string>;
  dir: string;
  /** hosts(5) file for g2's `--hosts`: v4only.test → s4, v6only.test → s6. */
  hostsFile: string;
  index: Record<Server, string>;
  blobSha256: Record<Server, string>;
  exec(role: ChainRole, cmd: string, args: string[], opts?: { input?: string | Buffer; timeoutMs?: number }): Promise<ExecResult>;
  connectProbe(role: ChainRole, host: string, port: number, timeoutMs?: number): Promise<string>;
  /** Queries for `name` logged by the resolver of c4, c6 or g1 (:5353). */
  queriesFor(role: 'c4' | 'c6' | 'g1', name: string): number;
  destroy(): Promise<void>;
}

export async function createChainTopology(): Promise<ChainTopology> {
  const lab = openLab('dc', CHAIN_ROLES);
  return buildLab(lab, async () => {
    await addNamespaces(lab, CHAIN_ROLES, ['c6', 's6'], ['c4', 's4']);
    const A = CHAIN_ADDR;
    await link(lab, 'g1', 'c4', [[A.g1.c4, A.c4, 26]]);
    await link(lab, 'g1', 'c6', [[A.g1.c6, A.c6, 64]]);
    await link(lab, 'g1', 'g2', [[A.g1.g2v4, A.g2.g1v4, 26], [A.g1.g2v6, A.g2.g1v6, 64]]);
    await link(lab, 'g2', 's4', [[A.g2.s4, A.s4, 26]]);
    await link(lab, 'g2', 's6', [[A.g2.s6, A.s6, 64]]);

    startResolver(lab, 'c4', '127.0.0.1', 53);
    startResolver(lab, 'c6', '::1', 53);
    startResolver(lab, 'g1', G1_DNS.host, G1_DNS.port);
    const servers = startServers(lab, A, false);
    const hostsFile = join(lab.dir, 'g2-hosts');
    writeFileSync(hostsFile, `${A.s4}\t${NAMES.v4only}\n${A.s6}\t${NAMES.v6only}\n`);

    await waitReady(lab, [['c4', 53], ['c6', 53], ['g1', G1_DNS.port]], A, false);
    return labHandle(lab, hostsFile, servers);
  });
}

// ---- A LAN: a host and a client on one link, nothing else ----
//
//   b (192.0.2.1, 2001:db8:b::1) ── c (192.0.2.2, 2001:db8:b::2)
//
// No default route anywhere: a connection to any other address fails at once (ENETUNREACH), so
// a test may let a gateway try any destination without a packet leaving the namespaces.

export type LanRole = 'b' | 'c';
export const LAN_ROLES: readonly LanRole[] = ['b', 'c'];
export const LAN_ADDR = { b: '192.0.2.1', c: '192.0.2.2', b6: '2001:db8:b::1', c6: '2001:db8:b::2' } as const;

export interface Lan {
  ns: Record<LanRole, string>;
  dir: string;
  exec(role: LanRole, cmd: string, args: string[], opts?: { input?: string | Buffer; timeoutMs?: number }): Promise<ExecResult>;
  /** Starts a long-running child inside `role` (ended by destroy()), its output in dir/logName. */
  spawnIn(role: LanRole, logName: string, cmd: string, args: string[]): ChildProcess;
  /** Resolves once something listens on TCP `port` inside `role`. */
  waitListening(role: LanRole, port: number): Promise<void>;
  destroy(): Promise<void>;
}

export async function createLan(): Promise<Lan> {
  const lab = openLab('dl', LAN_ROLES);
  return buildLab(lab, async () => {
    await addNamespaces(lab, LAN_ROLES, [], []);
    await link(lab, 'b', 'c', [[LAN_ADDR.b, LAN_ADDR.c, 24], [LAN_ADDR.b6, LAN_ADDR.c6, 64]]);
    const h = labHandle(lab, '', { index: { s4: '', s6: '' }, blobSha256: { s4: '', s6: '' } });
    return {
      ns: h.ns,
      dir: h.dir,
      exec: h.exec,
      spawnIn: lab.spawnIn,
      waitListening: (role: LanRole, port: number) => eventually(() => listeningOn(lab, role, '-t', port), `a TCP listener on ${port} in ${role}`, { timeoutMs: 15000 }),
      destroy: h.destroy,
    };
  });
}
