// Leak checks on a running process: its open descriptors, and a bounded wait for a state to
// come back (a generous bound, never a speed claim).
import { readdirSync, readlinkSync } from 'node:fs';
import { get } from 'node:http';
import type { StatusSnapshot } from '../../shared/status.js';
import { startCli, type Running } from './process.js';

/** Open descriptors of a process (its /proc/PID/fd). */
export function openFds(p: Running | number): number {
  const pid = typeof p === 'number' ? p : p.proc.pid!;
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** What each open descriptor of a process points to ('gone' for one closed while reading). */
export function fdLinks(pid: number): string[] {
  return readdirSync(`/proc/${pid}/fd`).map((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      return 'gone'; // closed between the listing and the read: not open any more
    }
  });
}

/** Open sockets of a process. */
export const openSockets = (pid: number): number => fdLinks(pid).filter((l) => l.startsWith('socket:')).length;

/**
 * Polls `check` until it returns true; rejects after `timeoutMs` with `what` and the last value
 * `describe` gives (what the state was instead).
 */
export async function eventually(check: () => boolean | Promise<boolean>, what: string, opts: { timeoutMs?: number; describe?: () => unknown } = {}): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`${what}: not so after ${opts.timeoutMs ?? 20_000} ms${opts.describe ? ` (${JSON.stringify(await opts.describe())})` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The bridge's /api/status, on a connection of its own that closes (so it holds no descriptor after). */
export function bridgeStatus(port: number, host = '127.0.0.1'): Promise<StatusSnapshot> {
  return new Promise((resolve, reject) => {
    get({ host, port, path: '/api/status', agent: false, headers: { connection: 'close' } }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.once('end', () => resolve(JSON.parse(Buffer.concat(parts).toString()) as StatusSnapshot));
      res.once('error', reject);
    }).once('error', reject);
  });
}

export interface Pair {
  gw: Running;
  bridge: Running;
  /** The bridge's port. */
  port: number;
  /** Open descriptors of each once the start-up health check is over. */
  base: { bridge: number; gw: number };
}

/**
 * A quiet gateway (`gwArgs` after `gateway --listen 127.0.0.1:0`) and a bridge to it that checks it
 * once, at start-up; returns when that check is over, with the descriptor baseline taken then.
 */
export async function startBridgeOverGateway(gwArgs: string[]): Promise<Pair> {
  const gw = await startCli(['gateway', '--listen', '127.0.0.1:0', ...gwArgs, '--quiet']);
  const bridge = await startCli(['bridge', '--listen', '127.0.0.1:0', '--gateway', `socks5://127.0.0.1:${gw.listening[0]!.port}`, '--health-interval', '3600', '--quiet']);
  const port = bridge.listening[0]!.port;
  await eventually(async () => (await bridgeStatus(port)).gateways[0]!.checkedAt !== null, 'the start-up health check done');
  return { gw, bridge, port, base: { bridge: openFds(bridge), gw: openFds(gw) } };
}

/** Counts of both back to 0 (bridge open, gateway active) and descriptors back to the baseline. */
export async function backToBaseline({ gw, bridge, port, base }: Pair): Promise<void> {
  await eventually(async () => {
    const st = await bridgeStatus(port);
    return st.connections.open === 0 && st.gateways[0]!.active === 0;
  }, "the bridge's open count and the gateway's active count back to 0", { describe: () => bridgeStatus(port) });
  await eventually(() => openFds(bridge) <= base.bridge, `bridge descriptors back to ${base.bridge}`, { describe: () => openFds(bridge) });
  await eventually(() => openFds(gw) <= base.gw, `gateway descriptors back to ${base.gw}`, { describe: () => openFds(gw) });
}
