// One measurement each: a checksummed bulk transfer, or a batch of short connections. Every
// wait has a deadline, and a wrong byte count or checksum is an error, never a figure.
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Sha256Worker } from './hasher.js';
import { bulkHeader, OP_DOWNLOAD, OP_UPLOAD } from './origin.js';
import { slices } from './pattern.js';
import { treeCpuSeconds, treeMemory } from './peers.js';
import type { HostPort, Route } from './targets.js';

const MiB = 1024 * 1024;

/** CPU time of this process and of other process trees (Linux /proc; absent elsewhere). */
export interface CpuMark {
  at: number;
  self: number;
  /** CPU seconds per tree, keyed by the tree's name. */
  trees: Map<string, number>;
}

/** `trees`: name → root pids (a relay's processes and their workers). */
export function cpuMark(trees: Record<string, number[]>): CpuMark {
  const u = process.cpuUsage();
  const m = new Map<string, number>();
  for (const [name, roots] of Object.entries(trees)) {
    const s = treeCpuSeconds(roots);
    if (s !== undefined) m.set(name, s);
  }
  return { at: performance.now(), self: (u.user + u.system) / 1e6, trees: m };
}

/** CPU use between two marks, as a share of one core (1 = one core busy all the time). */
export function cpuShare(a: CpuMark, b: CpuMark, tree?: string): number | undefined {
  const wall = (b.at - a.at) / 1000;
  if (wall <= 0) return undefined;
  if (tree === undefined) return (b.self - a.self) / wall;
  const x = a.trees.get(tree);
  const y = b.trees.get(tree);
  return x === undefined || y === undefined ? undefined : (y - x) / wall;
}

function deadline<T>(p: Promise<T>, ms: number, what: string, onTimeout: () => void): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onTimeout();
      reject(new Error(`${what}: no result within ${ms} ms`));
    }, ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

function closed(s: Socket): Promise<void> {
  return new Promise((resolve) => (s.closed ? resolve() : s.once('close', () => resolve())));
}

export interface BulkResult {
  bytes: number;
  seconds: number;
  mibPerSecond: number;
}

/** Downloads `size` bytes from the origin and checks them against `expected` (sha256 hex). */
export async function bulkDownload(route: Route, origin: HostPort, size: number, expected: string, hasher: Sha256Worker, timeoutMs: number): Promise<BulkResult> {
  const s = await route.dial(origin, timeoutMs);
  let n = 0;
  const t0 = performance.now();
  const done = new Promise<void>((resolve, reject) => {
    s.on('data', (c: Buffer) => {
      n += c.length;
      hasher.update(c, s);
    });
    s.once('end', () => resolve());
    s.once('error', reject);
    s.once('close', () => reject(new Error(`download via ${route.name}: closed after ${n} of ${size} bytes`)));
  });
  s.write(bulkHeader(OP_DOWNLOAD, size));
  s.resume();
  // the clock stops when the last byte is hashed: checking is part of receiving
  const got = await deadline(
    done.then(() => hasher.digest()),
    timeoutMs,
    `download via ${route.name}`,
    () => s.destroy(),
  );
  const seconds = (performance.now() - t0) / 1000;
  s.end();
  await closed(s);
  if (n !== size || got !== expected) throw new Error(`download via ${route.name}: got ${n} bytes sha256 ${got}, want ${size} bytes sha256 ${expected}`);
  return { bytes: size, seconds, mibPerSecond: size / MiB / seconds };
}

/** Uploads `size` bytes of `pattern` to the origin, which answers with the sha256 it computed. */
export async function bulkUpload(route: Route, origin: HostPort, pattern: Buffer, size: number, expected: string, timeoutMs: number): Promise<BulkResult> {
  const s = await route.dial(origin, timeoutMs);
  const answer: Buffer[] = [];
  const t0 = performance.now();
  let answered = 0;
  const done = new Promise<void>((resolve, reject) => {
    s.on('data', (c: Buffer) => {
      answer.push(c);
      // the digest ends the upload; the FIN waits for it (some relays do not half-close)
      if ((answered += c.length) >= 32) resolve();
    });
    s.once('end', () => resolve());
    s.once('error', reject);
    s.once('close', () => reject(new Error(`upload via ${route.name}: closed before the origin answered`)));
  });
  s.resume();
  s.write(bulkHeader(OP_UPLOAD, size));
  const it = slices(pattern, size, MiB);
  const pump = (): void => {
    for (let r = it.next(); !r.done; r = it.next()) {
      if (!s.write(r.value)) {
        s.once('drain', pump);
        return;
      }
    }
  };
  pump();
  await deadline(done, timeoutMs, `upload via ${route.name}`, () => s.destroy());
  const seconds = (performance.now() - t0) / 1000;
  s.end();
  await closed(s);
  const got = Buffer.concat(answer).toString('hex');
  if (got !== expected) throw new Error(`upload via ${route.name}: origin computed sha256 ${got || '(nothing)'}, want ${expected}`);
  return { bytes: size, seconds, mibPerSecond: size / MiB / seconds };
}

const ONE_BYTE = Buffer.from([0x2a]);

/** Connect (and SOCKS handshake), one byte to the echo server and back, then close. Returns ms to the echo. */
async function echoOnce(route: Route, echo: HostPort, timeoutMs: number): Promise<number> {
  const t0 = performance.now();
  const s = await route.dial(echo, timeoutMs);
  const work = (async (): Promise<number> => {
    await new Promise<void>((resolve, reject) => {
      s.once('data', (d: Buffer) => (d[0] === ONE_BYTE[0] ? resolve() : reject(new Error(`echo via ${route.name}: got byte ${d[0]}`))));
      s.once('error', reject);
      s.once('close', () => reject(new Error(`echo via ${route.name}: closed before the echo`)));
      s.resume();
      s.write(ONE_BYTE);
    });
    const ms = performance.now() - t0;
    s.removeAllListeners('close');
    // the server closes first; the client closes when its FIN arrives
    if (!s.readableEnded) await new Promise<void>((resolve) => s.once('end', () => resolve()).once('close', () => resolve()));
    s.end();
    await closed(s);
    return ms;
  })();
  return deadline(work, timeoutMs, `echo via ${route.name}`, () => s.destroy());
}

export interface ConnResult {
  count: number;
  concurrency: number;
  seconds: number;
  perSecond: number;
  /** Milliseconds from connect to the echoed byte, sorted. */
  latencies: number[];
}

/** `count` connections, `concurrency` at a time, each a full connect/echo/close. */
export async function connections(route: Route, echo: HostPort, count: number, concurrency: number, timeoutMs: number): Promise<ConnResult> {
  const latencies: number[] = [];
  let started = 0;
  const t0 = performance.now();
  const worker = async (): Promise<void> => {
    while (started < count) {
      started++;
      latencies.push(await echoOnce(route, echo, timeoutMs));
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  const seconds = (performance.now() - t0) / 1000;
  latencies.sort((a, b) => a - b);
  return { count, concurrency, seconds, perSecond: count / seconds, latencies };
}

/** The q-quantile (0..1) of sorted values, nearest rank. */
export function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i]!;
}

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** `streams` downloads of `size` bytes each at once, every one checksummed on its own hasher. */
export async function parallelDownload(route: Route, origin: HostPort, size: number, expected: string, hashers: Sha256Worker[], timeoutMs: number): Promise<BulkResult> {
  const t0 = performance.now();
  await Promise.all(hashers.map((h) => bulkDownload(route, origin, size, expected, h, timeoutMs)));
  const seconds = (performance.now() - t0) / 1000;
  const bytes = size * hashers.length;
  return { bytes, seconds, mibPerSecond: bytes / MiB / seconds };
}

export interface IdleResult {
  tunnels: number;
  openSeconds: number;
  /** Growth of the relay's memory (all its processes) per open tunnel, bytes. */
  rssPerTunnel: number;
  pssPerTunnel: number;
  processes: number;
  /** Why opening stopped short of the count asked for, if it did. */
  error?: string | undefined;
}

/**
 * Opens `count` tunnels to the echo server, `concurrency` at a time, each carrying one echoed
 * byte (so the relay is past its handshake), waits `settleMs`, then reads the relay's memory with all of them
 * open and idle. The figure is the growth over the memory before the first one opened.
 */
export async function idleTunnels(route: Route, echo: HostPort, count: number, concurrency: number, settleMs: number, timeoutMs: number): Promise<IdleResult> {
  const before = treeMemory(route.pids);
  const open: Socket[] = [];
  let started = 0;
  const t0 = performance.now();
  let error: string | undefined;
  const worker = async (): Promise<void> => {
    while (started < count && !error) {
      started++;
      let s: Socket;
      try {
        s = await route.dial(echo, timeoutMs);
      } catch (e) {
        // a relay that cannot hold more tunnels is measured with those it holds
        error ??= (e instanceof Error ? e.message : String(e)).split('\n')[0];
        return;
      }
      open.push(s);
      await new Promise<void>((resolve, reject) => {
        s.once('data', () => resolve());
        s.once('error', reject);
        s.resume();
        s.write(ONE_BYTE);
      });
      s.removeAllListeners('error');
      s.on('error', () => {});
      s.pause();
    }
  };
  try {
    await deadline(Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker)), timeoutMs * 4, `${count} idle tunnels via ${route.name}`, () => {});
    const openSeconds = (performance.now() - t0) / 1000;
    // let allocators and timers settle before reading memory
    await new Promise((r) => setTimeout(r, settleMs));
    const after = treeMemory(route.pids);
    const tunnels = Math.max(1, open.length);
    return {
      tunnels: open.length,
      error,
      openSeconds,
      rssPerTunnel: (after.rss - before.rss) / tunnels,
      pssPerTunnel: (after.pss - before.pss) / tunnels,
      processes: after.processes,
    };
  } finally {
    // the origin closes first (asked by a byte), so no TIME_WAIT is left on ephemeral ports
    for (const s of open) {
      s.on('data', () => {});
      s.once('end', () => s.end());
      s.resume();
      s.write(ONE_BYTE);
    }
    const timer = setTimeout(() => open.forEach((s) => s.destroy()), timeoutMs);
    await Promise.all(open.map(closed));
    clearTimeout(timer);
    // give the relay time to tear the tunnels down before the next target is measured
    await new Promise((r) => setTimeout(r, settleMs / 3));
  }
}
