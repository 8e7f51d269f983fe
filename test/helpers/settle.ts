// Leak checks on a running process: its open descriptors, and a bounded wait for a state to
// come back (a generous bound, never a speed claim).
import { readdirSync, readlinkSync } from 'node:fs';
import { get } from 'node:http';
import type { Running } from './process.js';

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

export interface BridgeStatus {
  connections: { open: number; total: number };
  gateways: { active: number; opened: number; checkedAt: string | null }[];
}

/** The bridge's /api/status, on a connection of its own that closes (so it holds no descriptor after). */
export function bridgeStatus(port: number, host = '127.0.0.1'): Promise<BridgeStatus> {
  return new Promise((resolve, reject) => {
    get({ host, port, path: '/api/status', agent: false, headers: { connection: 'close' } }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.once('end', () => resolve(JSON.parse(Buffer.concat(parts).toString()) as BridgeStatus));
      res.once('error', reject);
    }).once('error', reject);
  });
}
