// One measurement each: a checksummed bulk transfer, or a batch of short connections. Every
// wait has a deadline, and a wrong byte count or checksum is an error, never a figure.
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Sha256Worker } from './hasher.js';
import { bulkHeader, OP_DOWNLOAD, OP_UPLOAD } from './origin.js';
import { slices } from './pattern.js';
import type { HostPort, Route } from './targets.js';

const MiB = 1024 * 1024;

/** CPU time of this process and of other processes (Linux /proc; absent elsewhere). */
export interface CpuMark {
  at: number;
  self: number;
  pids: Map<number, number>;
}

const TICK_S = 0.01; // USER_HZ is 100 on every Linux that Node runs on

function procCpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // fields after the parenthesised command name; utime and stime are fields 14 and 15
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) * TICK_S;
  } catch {
    return undefined;
  }
}

export function cpuMark(pids: number[]): CpuMark {
  const u = process.cpuUsage();
  const m = new Map<number, number>();
  for (const p of pids) {
    const s = procCpuSeconds(p);
    if (s !== undefined) m.set(p, s);
  }
  return { at: performance.now(), self: (u.user + u.system) / 1e6, pids: m };
}

/** CPU use between two marks, as a share of one core (1 = one core busy all the time). */
export function cpuShare(a: CpuMark, b: CpuMark, pid?: number): number | undefined {
  const wall = (b.at - a.at) / 1000;
  if (wall <= 0) return undefined;
  if (pid === undefined) return (b.self - a.self) / wall;
  const x = a.pids.get(pid);
  const y = b.pids.get(pid);
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
  const done = new Promise<void>((resolve, reject) => {
    s.on('data', (c: Buffer) => answer.push(c));
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
    s.end();
  };
  pump();
  await deadline(done, timeoutMs, `upload via ${route.name}`, () => s.destroy());
  const seconds = (performance.now() - t0) / 1000;
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
