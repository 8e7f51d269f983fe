// iperf3 through proxychains-ng: the method behind the reference figures of issue 6. A C client
// and a C server cost the machine little, so the relay, not a JavaScript client that reads and
// hashes, sets the pace. iperf3 checks no bytes: the sha256-checked transfers of the same run
// are what shows that each relay delivers exactly what it was given.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, spawnDaemon, which, type Daemon } from './peers.js';

/** How a route is reached as a proxy: proxychains' "socks5" or "http" (CONNECT). */
export interface Proxy {
  scheme: 'socks5' | 'http';
  host: string;
  port: number;
}

export interface IperfServer extends Daemon {
  /** Where the proxychains configurations are written; gone with stop(). */
  dir: string;
}

/** Why iperf3 through proxychains cannot run here, or null. */
export function iperfMissing(): string | null {
  const gone = ['iperf3', 'proxychains4'].filter((c) => !which(c));
  return gone.length ? `${gone.join(' and ')} not found (Debian packages iperf3, proxychains4)` : null;
}

export async function startIperfServer(): Promise<IperfServer | string> {
  const why = iperfMissing();
  if (why) return why;
  const dir = mkdtempSync(join(tmpdir(), 'bench-iperf-'));
  const port = await freePort();
  try {
    const d = await spawnDaemon('iperf3', which('iperf3')!, ['-s', '-B', '127.0.0.1', '-p', String(port)], port, 0, () => rmSync(dir, { recursive: true, force: true }));
    return { ...d, dir };
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

export interface IperfRun {
  /** Rate the receiving end saw. */
  mibPerSecond: number;
  bytes: number;
}

function proxyConf(server: IperfServer, proxy: Proxy): string {
  const path = join(server.dir, `${proxy.scheme}-${proxy.port}.conf`);
  // strict_chain with one proxy; quiet: proxychains' own lines would mix with the JSON
  writeFileSync(path, ['strict_chain', 'quiet_mode', 'tcp_read_time_out 15000', 'tcp_connect_time_out 8000', '[ProxyList]', `${proxy.scheme} ${proxy.host} ${proxy.port}`, ''].join('\n'));
  return path;
}

/**
 * One iperf3 test, one stream, through `proxy` (or direct when null): `seconds` long, or
 * `bytes` long when given. reverse: the server sends (a download).
 */
export function iperf(server: IperfServer, proxy: Proxy | null, opts: { reverse: boolean; seconds: number; bytes?: number; timeoutMs: number }): Promise<IperfRun> {
  const args = ['-c', server.host, '-p', String(server.port), '-J', ...(opts.bytes ? ['-n', String(opts.bytes)] : ['-t', String(opts.seconds)]), ...(opts.reverse ? ['-R'] : [])];
  const [cmd, argv] = proxy ? ['proxychains4', ['-q', '-f', proxyConf(server, proxy), 'iperf3', ...args]] : ['iperf3', args];
  const what = `iperf3${opts.reverse ? ' -R' : ''}${proxy ? ` via ${proxy.scheme}://${proxy.host}:${proxy.port}` : ''}`;
  return new Promise((resolve, reject) => {
    const p = spawn(which(cmd as string)!, argv as string[], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    p.stderr!.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-2000)));
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs);
    p.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`${what}: ${e.message}`));
    });
    p.once('close', (code, signal) => {
      clearTimeout(timer);
      let j: { error?: string; end?: { sum_received?: { bytes: number; seconds: number } } };
      try {
        j = JSON.parse(out) as typeof j;
      } catch {
        reject(new Error(`${what}: exit ${code ?? signal}, no report (${err.trim().split('\n').pop() ?? ''})`));
        return;
      }
      const got = j.end?.sum_received;
      if (j.error || !got || got.seconds <= 0 || got.bytes <= 0) {
        reject(new Error(`${what}: ${j.error ?? `exit ${code ?? signal}, nothing received`}`));
        return;
      }
      resolve({ mibPerSecond: got.bytes / 2 ** 20 / got.seconds, bytes: got.bytes });
    });
  });
}
