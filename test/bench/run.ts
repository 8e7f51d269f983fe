// `npm run bench`: the gateway against direct TCP on loopback, in one run. Every round runs each
// test on every target, in an order that rotates from round to round, so slow drift of the
// machine (other load, thermal limits) spreads over all targets; the figures are medians.
//   npm run bench                full run, writes BENCHMARKS.md
//   npm run bench -- --quick     a few-second smoke run (also BENCH_QUICK=1), writes nothing
// Options: --rounds N, --size MIB, --conns N, --concurrency N, --out FILE, --no-write.
// Processes: this one is the client; the origin servers run in a child (origin.ts); each
// SOCKS5 target is its own process. Only 127.0.0.1 is used, and every wait has a deadline.
import { createHash } from 'node:crypto';
import { realpathSync, writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Sha256Worker } from './hasher.js';
import { bulkDownload, bulkUpload, connections, cpuMark, cpuShare, median, quantile } from './measure.js';
import { startOrigin, type Origin } from './origin.js';
import { patternBytes, periodFor, streamDigest } from './pattern.js';
import { benchmarksMarkdown, cpuTable, machine, machineLines, relayCostTable, roundsTable, summaryTable, type CaseInfo, type Machine, type Sample, type Samples } from './report.js';
import { DIRECT, directTarget, dualsocksGateway, type Route, type Target } from './targets.js';

const MiB = 1024 * 1024;

/** Direct first: the ratios are taken against it. Peers join this list. */
const TARGETS: Target[] = [directTarget, dualsocksGateway];

export interface BenchConfig {
  quick: boolean;
  rounds: number;
  /** A discarded round first, at a quarter of the sizes, so JIT and socket buffers settle. */
  warmup: boolean;
  bulkBytes: number;
  conns: number;
  concurrency: number;
  /** Bound for one transfer or one connection batch. */
  stepTimeoutMs: number;
  /** Bound for the whole run. */
  totalTimeoutMs: number;
}

export const FULL: BenchConfig = {
  quick: false,
  rounds: 7,
  warmup: true,
  bulkBytes: 256 * MiB,
  conns: 2000,
  concurrency: 64,
  stepTimeoutMs: 120_000,
  totalTimeoutMs: 20 * 60_000,
};

export const QUICK: BenchConfig = {
  quick: true,
  rounds: 2,
  warmup: false,
  bulkBytes: 8 * MiB,
  conns: 100,
  concurrency: 16,
  stepTimeoutMs: 20_000,
  totalTimeoutMs: 60_000,
};

interface Case extends CaseInfo {
  run(route: Route, scale: number): Promise<Sample>;
}

export interface BenchResult {
  config: BenchConfig;
  machine: Machine;
  targets: string[];
  cases: CaseInfo[];
  samples: Samples;
  hashMiBps: number;
  seconds: number;
}

function makeCases(cfg: BenchConfig, origin: Origin, pattern: Buffer, hasher: Sha256Worker, digests: Map<number, string>): Case[] {
  const bulk = { host: origin.host, port: origin.bulkPort };
  const echo = { host: origin.host, port: origin.echoPort };
  const pids = (route: Route): number[] => [origin.pid, ...(route.pid ? [route.pid] : [])];
  const measured = async (route: Route, f: () => Promise<Record<string, number>>): Promise<Sample> => {
    const a = cpuMark(pids(route));
    const values = await f();
    const b = cpuMark(pids(route));
    return { values, cpu: { client: cpuShare(a, b), origin: cpuShare(a, b, origin.pid), relay: route.pid ? cpuShare(a, b, route.pid) : undefined } };
  };
  const digest = (size: number): string => {
    let d = digests.get(size);
    if (!d) digests.set(size, (d = streamDigest(pattern, size)));
    return d;
  };
  const mib = cfg.bulkBytes / MiB;
  const connCase = (concurrency: number): Case => ({
    id: `conn-c${concurrency}`,
    label: concurrency === 1 ? `connect + 1-byte echo + close, sequential, ${cfg.conns} per round` : `connect + 1-byte echo + close, ${concurrency} at a time, ${cfg.conns} per round`,
    cost: { unit: 'CPU µs per connection', scale: 1e6, digits: 0 },
    metrics: [
      { key: 'rate', label: 'rate', unit: 'conn/s', digits: 0 },
      { key: 'p50', label: 'p50 latency', unit: 'ms', digits: 3 },
      { key: 'p99', label: 'p99 latency', unit: 'ms', digits: 3 },
    ],
    run: (route, scale) =>
      measured(route, async () => {
        const r = await connections(route, echo, Math.max(1, Math.round(cfg.conns * scale)), concurrency, cfg.stepTimeoutMs);
        return { rate: r.perSecond, p50: quantile(r.latencies, 0.5), p99: quantile(r.latencies, 0.99) };
      }),
  });
  return [
    {
      id: 'download',
      label: `download ${mib} MiB, one stream`,
      metrics: [{ key: 'rate', label: 'throughput', unit: 'MiB/s', digits: 0 }],
      cost: { unit: 'CPU seconds per GiB', scale: 1024, digits: 2 },
      run: (route, scale) =>
        measured(route, async () => {
          const size = Math.round(cfg.bulkBytes * scale);
          return { rate: (await bulkDownload(route, bulk, size, digest(size), hasher, cfg.stepTimeoutMs)).mibPerSecond };
        }),
    },
    {
      id: 'upload',
      label: `upload ${mib} MiB, one stream`,
      metrics: [{ key: 'rate', label: 'throughput', unit: 'MiB/s', digits: 0 }],
      cost: { unit: 'CPU seconds per GiB', scale: 1024, digits: 2 },
      run: (route, scale) =>
        measured(route, async () => {
          const size = Math.round(cfg.bulkBytes * scale);
          return { rate: (await bulkUpload(route, bulk, pattern, size, digest(size), cfg.stepTimeoutMs)).mibPerSecond };
        }),
    },
    connCase(1),
    connCase(cfg.concurrency),
  ];
}

/** How fast this process alone hashes, to tell whether the client's sha256 can be the limit. */
function hashSpeed(pattern: Buffer): number {
  const chunk = pattern.subarray(0, Math.min(pattern.length, 64 * MiB));
  const t0 = performance.now();
  createHash('sha256').update(chunk).digest();
  return chunk.length / MiB / ((performance.now() - t0) / 1000);
}

/** Stops for every process started and not yet stopped (also used on SIGINT/SIGTERM). */
const stops: (() => Promise<void>)[] = [];

async function stopAll(): Promise<void> {
  for (let stop = stops.pop(); stop; stop = stops.pop()) await stop().catch(() => {});
}

export async function bench(cfg: BenchConfig, progress: (line: string) => void): Promise<BenchResult> {
  const started = performance.now();
  let over = false;
  // a process that finishes starting after the deadline is stopped at once
  const track = (stop: () => Promise<void>): void => void (over ? stop().catch(() => {}) : stops.push(stop));
  let timer: NodeJS.Timeout | undefined;
  const overtime = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`bench did not finish within ${cfg.totalTimeoutMs / 1000} s`)), cfg.totalTimeoutMs);
  });
  const body = async (): Promise<BenchResult> => {
    const m = machine();
    const pattern = patternBytes(periodFor(cfg.bulkBytes));
    const hashMiBps = hashSpeed(pattern);
    const origin = await startOrigin(pattern.length);
    track(origin.stop);
    const routes: Route[] = [];
    for (const t of TARGETS) {
      const r = await t.start();
      track(r.stop);
      routes.push(r);
    }
    const hasher = new Sha256Worker();
    track(() => hasher.close());
    const cases = makeCases(cfg, origin, pattern, hasher, new Map());
    const samples: Samples = {};
    const plan = [...(cfg.warmup ? [{ round: 0, scale: 0.25 }] : []), ...Array.from({ length: cfg.rounds }, (_, i) => ({ round: i + 1, scale: 1 }))];
    for (const { round, scale } of plan) {
      for (const c of cases) {
        const order = routes.map((_, i) => routes[(i + round) % routes.length]!);
        for (const route of order) {
          const s = await c.run(route, scale);
          const shown = c.metrics.map((mt) => `${mt.label} ${s.values[mt.key]!.toFixed(mt.digits)} ${mt.unit}`).join(', ');
          progress(`${round === 0 ? 'warm-up' : `round ${round}/${cfg.rounds}`}  ${c.id.padEnd(9)} ${route.name.padEnd(18)} ${shown}`);
          if (round === 0) continue;
          ((samples[c.id] ??= {})[route.name] ??= []).push(s);
        }
      }
    }
    return { config: cfg, machine: m, targets: routes.map((r) => r.name), cases, samples, hashMiBps, seconds: 0 };
  };
  try {
    const result = await Promise.race([body(), overtime]);
    result.seconds = (performance.now() - started) / 1000;
    return result;
  } finally {
    over = true;
    clearTimeout(timer);
    await stopAll();
  }
}

function method(r: BenchResult): string[] {
  const c = r.config;
  return [
    `Three processes on 127.0.0.1: the client (this script), the origin servers (test/bench/origin.ts) and, for each relay, its own process: \`dualsocks gateway --listen 127.0.0.1:0 --allow-private --quiet\`.`,
    `The client speaks SOCKS5 with the project's own client (bridge/upstream/socks5.ts, CONNECT by IP, no auth). "direct" is plain TCP to the origin.`,
    `download / upload: one TCP stream of ${c.bulkBytes / MiB} MiB of an AES-CTR keystream. The client hashes every downloaded byte with sha256 and compares it with the expected digest; for uploads the origin hashes and sends its digest back. Both hash on a worker thread (${Math.round(r.hashMiBps)} MiB/s on one core here), so the thread that reads the socket only reads. Time runs from the request until the last byte is hashed (download) or the origin's digest arrives (upload).`,
    `connection rate: ${c.conns} connections per round, each a connect (and SOCKS5 handshake), one byte to an echo server and back, and a close that waits for the peer's FIN; sequential, then ${c.concurrency} at a time. Latency is from the start of connect to the echoed byte.`,
    `${c.rounds} rounds${c.warmup ? ' after a discarded warm-up round at a quarter of the sizes' : ''}; within a round each test runs on every target, in an order rotated every round. Any wrong byte count or digest stops the run.`,
  ];
}

function notes(r: BenchResult): string[] {
  const out: string[] = [];
  const cores = r.machine.logicalCores;
  if (cores < 4)
    out.push(`This machine has ${cores} logical cores. Direct, two processes share them; through a relay, three do, and the relay's cores are taken from the client and the origin. A machine with more cores would show less of this competition in the ratios.`);
  for (const id of ['download', 'upload']) {
    const busy = (r.samples[id]?.[DIRECT] ?? []).map((s) => (s.cpu.client ?? 0) + (s.cpu.origin ?? 0));
    const m = busy.length ? median(busy) : 0;
    if (m > 0.85 * cores)
      out.push(`The direct ${id} kept ${m.toFixed(2)} of the ${cores} cores busy (one end reading and hashing on two threads, the other sending), so the machine, not the path, set its rate; the ${id} ratio measures the relay together with that competition. The relay's own cost is under CPU, in CPU seconds per GiB.`);
  }
  const [l1] = r.machine.load.split(' ').map(Number);
  if (l1 !== undefined && l1 > 0.5) out.push(`The load average was ${r.machine.load} when the run started: other work was running, and figures may be lower or noisier than on an idle machine.`);
  return out;
}

function parseArgs(argv: string[]): { cfg: BenchConfig; out: string | null } {
  const quick = argv.includes('--quick') || process.env.BENCH_QUICK === '1';
  const cfg = { ...(quick ? QUICK : FULL) };
  let out: string | null = quick ? null : fileURLToPath(new URL('../../../BENCHMARKS.md', import.meta.url));
  const int = (flag: string, v: string | undefined, max: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1 || n > max) throw new Error(`${flag} takes an integer from 1 to ${max}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--quick') continue;
    else if (a === '--rounds') cfg.rounds = int(a, argv[++i], 50);
    else if (a === '--size') cfg.bulkBytes = int(a, argv[++i], 4096) * MiB;
    else if (a === '--conns') cfg.conns = int(a, argv[++i], 20000);
    else if (a === '--concurrency') cfg.concurrency = int(a, argv[++i], 512);
    else if (a === '--out') out = argv[++i] ?? '';
    else if (a === '--no-write') out = null;
    else if (a === '--help') {
      process.stdout.write('Usage: npm run bench [-- --quick] [--rounds N] [--size MIB] [--conns N] [--concurrency N] [--out FILE | --no-write]\n');
      process.exit(0);
    } else throw new Error(`unknown option ${a}`);
  }
  return { cfg, out };
}

function summary(r: BenchResult): string {
  return summaryTable(r.cases, r.targets, DIRECT, r.samples);
}

async function main(): Promise<void> {
  const { cfg, out } = parseArgs(process.argv.slice(2));
  const m = machine();
  process.stderr.write(`dualsocks bench${cfg.quick ? ' (quick)' : ''}\n${machineLines(m).join('\n')}\n\n`);
  const r = await bench(cfg, (l) => process.stderr.write(`${l}\n`));
  const cost = relayCostTable(r.cases, r.targets.filter((t) => t !== DIRECT), r.samples);
  process.stdout.write(`\nMedians of ${r.config.rounds} rounds (${r.seconds.toFixed(1)} s):\n\n${summary(r)}\n\nCPU, cores busy (client / origin / relay):\n\n${cpuTable(r.cases, r.targets, r.samples)}\n\nRelay CPU per unit of work:\n\n${cost}\n`);
  for (const n of notes(r)) process.stdout.write(`\nnote: ${n}\n`);
  if (out) {
    const command = cfg.quick ? 'npm run bench -- --quick' : 'npm run bench';
    writeFileSync(out, benchmarksMarkdown({ machine: r.machine, command, rounds: cfg.rounds, method: method(r), summary: summary(r), cpu: cpuTable(r.cases, r.targets, r.samples), cost, perRound: roundsTable(r.cases, r.targets, r.samples), notes: notes(r), seconds: r.seconds }));
    process.stdout.write(`\nwrote ${out}\n`);
  }
}

if (process.env.NODE_TEST_CONTEXT) {
  // `npm test` runs every file under dist/test/: there the bench is a smoke test of its own
  // machinery (every target relays checksummed data), with no figure asserted
  const { test } = await import('node:test');
  test('bench --quick: every target carries checksummed transfers and echo connections', async (t) => {
    const r = await bench({ ...QUICK, rounds: 1 }, () => {});
    t.diagnostic(`quick bench in ${r.seconds.toFixed(1)} s, figures not checked:`);
    for (const line of summary(r).split('\n')) t.diagnostic(line);
  });
} else if (process.argv[1] && fileURLToPath(import.meta.url) === realpathSync(process.argv[1])) {
  const stopOnSignal = (): void => {
    setTimeout(() => process.exit(130), 5000).unref();
    void stopAll().then(() => process.exit(130));
  };
  process.once('SIGINT', stopOnSignal);
  process.once('SIGTERM', stopOnSignal);
  main().then(
    () => process.exit(0),
    (e: unknown) => {
      process.stderr.write(`bench failed: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(1);
    },
  );
}
