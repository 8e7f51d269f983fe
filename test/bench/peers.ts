// The peers from Debian the bench compares with, started on 127.0.0.1 with a generated config:
// Dante (danted, package dante-server), microsocks and Privoxy (chained to a Dante of its own).
// A peer that is not installed is installed from Debian with apt-get when the bench runs as root
// (npm run bench -- --no-install: never); one that still is not there is reported loudly and the
// run goes on without it. Also: process trees, their CPU time and memory from
// /proc, and raising descriptor limits with prlimit(1), for our processes and the peers alike.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A running peer: where it listens, its processes and how to stop it. */
export interface Daemon {
  host: string;
  port: number;
  pids: number[];
  stop(): Promise<void>;
}

const isRoot = process.getuid?.() === 0;

/** The absolute path of an executable on PATH (or in the sbin directories), or null. */
export function which(cmd: string): string | null {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin', '/usr/local/sbin'];
  for (const d of dirs) {
    if (!d) continue;
    const p = join(d, cmd);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return null;
}

/** Every descendant of `roots` (Dante forks its workers), roots included. */
export function processTree(roots: number[]): number[] {
  if (roots.length === 0) return [];
  const children = new Map<number, number[]>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const st = readFileSync(`/proc/${e}/stat`, 'utf8');
      const ppid = Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]);
      const list = children.get(ppid);
      if (list) list.push(Number(e));
      else children.set(ppid, [Number(e)]);
    } catch {
      // gone meanwhile
    }
  }
  const out: number[] = [];
  const queue = [...roots];
  for (let p = queue.shift(); p !== undefined; p = queue.shift()) {
    out.push(p);
    queue.push(...(children.get(p) ?? []));
  }
  return out;
}

const TICK_S = 0.01; // USER_HZ is 100 on every Linux that Node runs on

/**
 * CPU seconds of a process and of its children it has reaped (utime, stime, cutime, cstime):
 * summed over a live tree, a worker that exits moves into its parent's figure, not out of it.
 */
export function procCpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) * TICK_S;
  } catch {
    return undefined;
  }
}

export function treeCpuSeconds(roots: number[]): number | undefined {
  if (roots.length === 0) return undefined;
  let sum = 0;
  for (const p of processTree(roots)) sum += procCpuSeconds(p) ?? 0;
  return sum;
}

export interface Memory {
  /** Sum of resident set sizes (shared pages counted in every process). */
  rss: number;
  /** Sum of proportional set sizes (shared pages split among their users), bytes. */
  pss: number;
  processes: number;
}

export function treeMemory(roots: number[]): Memory {
  let rss = 0;
  let pss = 0;
  const pids = processTree(roots);
  for (const p of pids) {
    try {
      rss += Number(readFileSync(`/proc/${p}/statm`, 'utf8').split(' ')[1]) * 4096;
      const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${p}/smaps_rollup`, 'utf8'));
      if (m) pss += Number(m[1]) * 1024;
    } catch {
      // gone meanwhile
    }
  }
  return { rss, pss, processes: pids.length };
}

/** The soft "Max open files" of a process. */
export function nofileOf(pid: number): number {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'));
    return m?.[1] === 'unlimited' ? Infinity : Number(m?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/** Raises the descriptor limit of running processes to `n` (or as far as allowed); returns the lowest got. */
export async function raiseNofile(pids: number[], n: number): Promise<number> {
  let got = Infinity;
  for (const pid of pids) {
    if (nofileOf(pid) < n && which('prlimit')) {
      // raising the hard limit needs root; otherwise the soft limit goes up to the hard one
      const r = spawnSync('prlimit', ['--pid', String(pid), `--nofile=${n}:${n}`], { stdio: 'ignore' });
      if (r.status !== 0) spawnSync('prlimit', ['--pid', String(pid), `--nofile=${n}:`], { stdio: 'ignore' });
      if (nofileOf(pid) < n) {
        const hard = /^Max open files\s+\S+\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'))?.[1];
        if (hard) spawnSync('prlimit', ['--pid', String(pid), `--nofile=${hard}:`], { stdio: 'ignore' });
      }
    }
    got = Math.min(got, nofileOf(pid));
  }
  return got;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Spawns `cmd` (under prlimit when it can raise the limit) and waits until `port` accepts. */
export async function spawnDaemon(name: string, cmd: string, args: string[], port: number, nofile: number, cleanup: () => void, timeoutMs = 15000): Promise<Daemon> {
  const limited = nofile > 0 && isRoot && which('prlimit');
  const proc: ChildProcess = limited ? spawn('prlimit', [`--nofile=${nofile}:${nofile}`, '--', cmd, ...args], { stdio: ['ignore', 'ignore', 'pipe'] }) : spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.setEncoding('utf8');
  proc.stderr!.on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  proc.once('error', () => {});
  const stop = async (): Promise<void> => {
    if (proc.exitCode === null && proc.signalCode === null) {
      // Dante's workers leave with their parent; a peer that ignores TERM is killed
      const tree = processTree([proc.pid!]);
      proc.kill('SIGTERM');
      const t = setTimeout(() => tree.forEach((p) => { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }), 3000);
      await exited;
      clearTimeout(t);
    }
    cleanup();
  };
  const until = Date.now() + timeoutMs;
  while (!(await canConnect(port))) {
    if (proc.exitCode !== null || proc.signalCode !== null || Date.now() > until) {
      await stop();
      throw new Error(`${name} did not start on 127.0.0.1:${port}: ${stderr.trim().split('\n').slice(-3).join(' / ') || 'no output'}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { host: '127.0.0.1', port, pids: [proc.pid!], stop };
}

/** The peers' commands (and the tools of the iperf3 figures) and the Debian packages that have them. */
export const PEER_PACKAGES = [
  { cmd: 'danted', pkg: 'dante-server' },
  { cmd: 'microsocks', pkg: 'microsocks' },
  { cmd: 'privoxy', pkg: 'privoxy' },
  { cmd: 'iperf3', pkg: 'iperf3' },
  { cmd: 'proxychains4', pkg: 'proxychains4' },
];

/** Debian packages of the peers whose commands are not on this machine. */
export function missingPeerPackages(): string[] {
  return PEER_PACKAGES.filter((p) => !which(p.cmd)).map((p) => p.pkg);
}

function daemonPids(): Set<number> {
  const r = spawnSync('pgrep', ['-x', PEER_PACKAGES.map((p) => p.cmd).join('|')], { encoding: 'utf8' });
  return new Set((r.stdout ?? '').split('\n').filter(Boolean).map(Number));
}

function aptGet(args: string[]): { ok: boolean; last: string } {
  const r = spawnSync('apt-get', args, { encoding: 'utf8', timeout: 600_000, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  const lines = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n');
  return { ok: r.status === 0, last: r.error ? r.error.message : (lines[lines.length - 1] ?? `exit ${r.status}`) };
}

/**
 * Installs the missing peers with apt-get (root only), and says what it did or why it could not.
 * Package scripts may start the peers as system services; those are stopped again (the bench
 * starts its own, with its own configuration), and services that ran before are left alone.
 */
export function installMissingPeers(say: (line: string) => void): void {
  const pkgs = missingPeerPackages();
  if (pkgs.length === 0) return;
  if (!isRoot || !which('apt-get')) {
    say(`!!! peers not installed: ${pkgs.join(' ')}; not root with apt-get here, so install them with: sudo apt-get install ${pkgs.join(' ')}`);
    return;
  }
  say(`installing the missing peers from Debian: apt-get install -y ${pkgs.join(' ')}`);
  const before = daemonPids();
  let r = aptGet(['install', '-y', '--no-install-recommends', ...pkgs]);
  if (!r.ok) {
    // a fresh machine has no package lists yet
    aptGet(['update']);
    r = aptGet(['install', '-y', '--no-install-recommends', ...pkgs]);
  }
  for (const pid of daemonPids()) {
    if (before.has(pid)) continue;
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // gone already
    }
  }
  if (!r.ok) say(`!!! apt-get install ${pkgs.join(' ')} failed: ${r.last}`);
  else say(`installed ${pkgs.join(' ')}`);
}

function missing(peer: string, cmd: string, pkg: string): string {
  return `${peer} not found (no ${cmd} on PATH; the Debian package is ${pkg})`;
}

/** Dante with one negotiator process, no authentication, clients and destinations on loopback. */
export async function startDante(nofile: number): Promise<Daemon | string> {
  const cmd = which('danted');
  if (!cmd) return missing('Dante', 'danted', 'dante-server');
  const dir = mkdtempSync(join(tmpdir(), 'bench-dante-'));
  const port = await freePort();
  writeFileSync(
    join(dir, 'danted.conf'),
    [
      'logoutput: stderr',
      `internal: 127.0.0.1 port = ${port}`,
      'external: 127.0.0.1',
      'socksmethod: none',
      'clientmethod: none',
      ...(isRoot ? ['user.privileged: root', 'user.unprivileged: nobody'] : []),
      'client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }',
      'socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }',
      '',
    ].join('\n'),
  );
  return spawnDaemon('Dante', cmd, ['-f', join(dir, 'danted.conf'), '-p', join(dir, 'danted.pid'), '-N', '1'], port, nofile, () => rmSync(dir, { recursive: true, force: true }));
}

export async function startMicrosocks(nofile: number): Promise<Daemon | string> {
  const cmd = which('microsocks');
  if (!cmd) return missing('microsocks', 'microsocks', 'microsocks');
  const port = await freePort();
  return spawnDaemon('microsocks', cmd, ['-i', '127.0.0.1', '-p', String(port)], port, nofile, () => {});
}

/** Privoxy as a plain HTTP proxy (no filtering) forwarding everything to a SOCKS5 server. */
export async function startPrivoxy(socks: { host: string; port: number }, nofile: number): Promise<Daemon | string> {
  const cmd = which('privoxy');
  if (!cmd) return missing('Privoxy', 'privoxy', 'privoxy');
  const dir = mkdtempSync(join(tmpdir(), 'bench-privoxy-'));
  const port = await freePort();
  // CONNECT is limited to port 443 unless an action allows every port
  writeFileSync(join(dir, 'bench.action'), '{+limit-connect{,}}\n/\n');
  writeFileSync(
    join(dir, 'config'),
    [
      `listen-address 127.0.0.1:${port}`,
      `forward-socks5t / ${socks.host}:${socks.port} .`,
      `actionsfile ${join(dir, 'bench.action')}`,
      'toggle 0',
      'enable-remote-toggle 0',
      'enable-edit-actions 0',
      'max-client-connections 20000',
      'socket-timeout 300',
      '',
    ].join('\n'),
  );
  return spawnDaemon('Privoxy', cmd, ['--no-daemon', join(dir, 'config')], port, nofile, () => rmSync(dir, { recursive: true, force: true }));
}
