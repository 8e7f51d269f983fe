// `npm run bench`: the gateway, the bridge→gateway chain and the peers from Debian (Dante,
// microsocks, Privoxy→Dante) against direct TCP on loopback, in one run. Every round runs each
// test on every target, in an order that rotates from round to round, so slow drift of the
// machine (other load, thermal limits) spreads over all targets; the figures are medians.
//   npm run bench                full run, writes BENCHMARKS.md
//   npm run bench -- --quick     a few-second smoke run (also BENCH_QUICK=1), writes nothing
//   npm run bench -- --scaling   the gateway with 1, 2 and N workers only (64-at-a-time connections,
//                                8 streams), prints the scaling, writes nothing
// Options: --rounds N, --size MIB, --conns N, --concurrency N, --streams N, --tunnels N, --out FILE, --no-write,
// --cases ID,… (only these tests: download, upload, download8, conn-c1, conn-c64, iperf-up,
// iperf-down; no idle tunnels; writes nothing), --no-install (a missing peer is otherwise
// installed with apt-get when run as root).
// Processes: this one is the client; the origin servers run in a child (origin.ts); each
// SOCKS5 target is its own process. Only 127.0.0.1 is used, and every wait has a deadline.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Sha256Worker } from './hasher.js';
import { bulkDownload, bulkUpload, connections, cpuMark, cpuShare, idleTunnels, median, parallelDownload, quantile, type IdleResult } from './measure.js';
import { startOrigin, type Origin } from './origin.js';
import { patternBytes, periodFor, streamDigest } from './pattern.js';
import { iperf, startIperfServer, type IperfServer } from './iperf.js';
import { installMissingPeers, nofileOf, procCpuSeconds, raiseNofile } from './peers.js';
import { transparentBench, transparentTable, type TransparentSamples } from './transparent.js';
import { benchmarksMarkdown, costMedian, cpuTable, machine, machineLines, med, peerTable, relayCostTable, roundsTable, summaryTable, table, throughputSvg, type CaseInfo, type Machine, type Sample, type Samples } from './report.js';
import {
  BRIDGE_HTTP,
  BRIDGE_SOCKS,
  bridgeHttp,
  bridgeSocks,
  DANTE,
  danteTarget,
  DIRECT,
  directTarget,
  dualsocksGateway,
  dualsocksGatewayWorkers,
  dualsocksGatewayWorkersN,
  GATEWAY,
  GATEWAY_W2,
  GATEWAY_WN,
  WORKERS_N,
  MICROSOCKS,
  microsocksTarget,
  PRIVOXY,
  privoxyTarget,
  type Route,
  type Target,
} from './targets.js';

const MiB = 1024 * 1024;

/** Direct first: the ratios are taken against it. */
const TARGETS: Target[] = [directTarget, dualsocksGateway, dualsocksGatewayWorkers, dualsocksGatewayWorkersN, bridgeSocks, bridgeHttp, danteTarget, microsocksTarget, privoxyTarget];
const OURS = [GATEWAY, GATEWAY_W2, GATEWAY_WN, BRIDGE_SOCKS, BRIDGE_HTTP];
const PEERS = [DANTE, MICROSOCKS, PRIVOXY];
/** Targets that only take part in some tests (the multi-core gateway: parallel streams and connections). */
const ONLY: Record<string, string[]> = { [GATEWAY_W2]: ['download8', 'conn-c64'], [GATEWAY_WN]: ['download8', 'conn-c64'] };
/** --scaling: the gateway with 1, 2 and N workers, in the tests that spread over workers. */
const SCALING = { targets: [DIRECT, GATEWAY, GATEWAY_W2, GATEWAY_WN], cases: ['download8', 'conn-c64'] };
/** Descriptors asked for each process holding the idle tunnels (the relay needs two per tunnel). */
const NOFILE = 65536;

export interface BenchConfig {
  quick: boolean;
  rounds: number;
  /** A discarded round first, at a quarter of the sizes, so JIT and socket buffers settle. */
  warmup: boolean;
  bulkBytes: number;
  /** Parallel streams in the multi-stream download, and the bytes each carries. */
  streams: number;
  streamBytes: number;
  conns: number;
  concurrency: number;
  /** Tunnels held open at once for the memory figure (fewer if descriptors run short). */
  idleTunnels: number;
  /** DNS queries per round for the fake-address DNS figure. */
  dnsQueries: number;
  /** Length of one iperf3 test, or its bytes (the quick run: a fixed amount, over in a moment). */
  iperfSeconds: number;
  iperfBytes?: number;
  /** Bound for one transfer or one connection batch. */
  stepTimeoutMs: number;
  /** Bound for the whole run. */
  totalTimeoutMs: number;
  /** Only these tests (ids) and targets (names), and no idle tunnels; undefined: everything. */
  cases?: string[] | undefined;
  targets?: string[] | undefined;
}

export const FULL: BenchConfig = {
  quick: false,
  rounds: 5,
  warmup: true,
  bulkBytes: 128 * MiB,
  streams: 8,
  streamBytes: 32 * MiB,
  conns: 1000,
  concurrency: 64,
  idleTunnels: 10_000,
  dnsQueries: 20_000,
  iperfSeconds: 2,
  stepTimeoutMs: 120_000,
  totalTimeoutMs: 15 * 60_000,
};

export const QUICK: BenchConfig = {
  quick: true,
  rounds: 2,
  warmup: false,
  bulkBytes: 4 * MiB,
  streams: 4,
  streamBytes: 1 * MiB,
  conns: 40,
  concurrency: 16,
  idleTunnels: 100,
  dnsQueries: 500,
  iperfSeconds: 1,
  iperfBytes: 16 * MiB,
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
  /** Peers that could not run, with the reason. */
  missing: string[];
  cases: CaseInfo[];
  samples: Samples;
  idle: Map<string, IdleResult>;
  /** The transparent port beside the SOCKS5 port, and the DNS responder (a namespace of their own); null: not measured (see missing). */
  transparent: TransparentSamples | null;
  /** Descriptor limit obtained for the client, the origin and the relays. */
  nofile: number;
  hashMiBps: number;
  seconds: number;
}

function makeCases(cfg: BenchConfig, origin: Origin, pattern: Buffer, hashers: Sha256Worker[], digests: Map<number, string>, iperfServer: IperfServer | null): Case[] {
  const bulk = { host: origin.host, port: origin.bulkPort };
  const echo = { host: origin.host, port: origin.pingPort };
  const measured = async (route: Route, f: () => Promise<Record<string, number>>): Promise<Sample> => {
    const trees = { origin: [origin.pid], relay: route.pids };
    const a = cpuMark(trees);
    const values = await f();
    const b = cpuMark(trees);
    return { values, cpu: { client: cpuShare(a, b), origin: cpuShare(a, b, 'origin'), relay: route.pids.length ? cpuShare(a, b, 'relay') : undefined } };
  };
  const digest = (size: number): string => {
    let d = digests.get(size);
    if (!d) digests.set(size, (d = streamDigest(pattern, size)));
    return d;
  };
  const mib = cfg.bulkBytes / MiB;
  const throughput = [{ key: 'rate', label: 'throughput', unit: 'MiB/s', digits: 0 }];
  const perGiB = { unit: 'CPU seconds per GiB', scale: 1024, digits: 2 };
  const connCase = (concurrency: number): Case => ({
    id: `conn-c${concurrency === 1 ? 1 : 64}`,
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
      metrics: throughput,
      cost: perGiB,
      run: (route, scale) =>
        measured(route, async () => {
          const size = Math.round(cfg.bulkBytes * scale);
          return { rate: (await bulkDownload(route, bulk, size, digest(size), hashers[0]!, cfg.stepTimeoutMs)).mibPerSecond };
        }),
    },
    {
      id: 'upload',
      label: `upload ${mib} MiB, one stream`,
      metrics: throughput,
      cost: perGiB,
      run: (route, scale) =>
        measured(route, async () => {
          const size = Math.round(cfg.bulkBytes * scale);
          return { rate: (await bulkUpload(route, bulk, pattern, size, digest(size), cfg.stepTimeoutMs)).mibPerSecond };
        }),
    },
    {
      id: 'download8',
      label: `download ${cfg.streams} × ${cfg.streamBytes / MiB} MiB, ${cfg.streams} streams at once`,
      metrics: throughput,
      cost: perGiB,
      run: (route, scale) =>
        measured(route, async () => {
          const size = Math.round(cfg.streamBytes * scale);
          return { rate: (await parallelDownload(route, bulk, size, digest(size), hashers.slice(0, cfg.streams), cfg.stepTimeoutMs)).mibPerSecond };
        }),
    },
    connCase(1),
    connCase(cfg.concurrency),
    ...(iperfServer ? [iperfCase(false), iperfCase(true)] : []),
  ];

  /** iperf3's client is a child process: its CPU is this process's reaped children's. */
  function iperfCase(reverse: boolean): Case {
    const server = iperfServer!;
    const length = cfg.iperfBytes ? `${cfg.iperfBytes / MiB} MiB` : `${cfg.iperfSeconds} s`;
    return {
      id: reverse ? 'iperf-down' : 'iperf-up',
      label: `iperf3 through proxychains-ng, one stream, ${reverse ? 'download (-R)' : 'upload'}, ${length}`,
      metrics: throughput,
      cost: perGiB,
      run: async (route, scale) => {
        const trees = { origin: server.pids, relay: route.pids };
        const a = cpuMark(trees);
        const c0 = procCpuSeconds(process.pid);
        const r = await iperf(server, route.proxy, { reverse, seconds: Math.max(1, Math.round(cfg.iperfSeconds * scale)), bytes: cfg.iperfBytes, timeoutMs: cfg.stepTimeoutMs });
        const c1 = procCpuSeconds(process.pid);
        const b = cpuMark(trees);
        const wall = (b.at - a.at) / 1000;
        const client = c0 !== undefined && c1 !== undefined && wall > 0 ? (c1 - c0) / wall : undefined;
        return { values: { rate: r.mibPerSecond }, cpu: { client, origin: cpuShare(a, b, 'origin'), relay: route.pids.length ? cpuShare(a, b, 'relay') : undefined } };
      },
    };
  }
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
    const pattern = patternBytes(periodFor(Math.max(cfg.bulkBytes, cfg.streamBytes)));
    const hashMiBps = hashSpeed(pattern);
    const origin = await startOrigin(pattern.length);
    track(origin.stop);
    // the client and the origin each hold one end of every idle tunnel
    const nofile = Math.min(await raiseNofile([process.pid, origin.pid], NOFILE), NOFILE);
    const routes: Route[] = [];
    const missing: string[] = [];
    for (const t of TARGETS) {
      if (cfg.targets && !cfg.targets.includes(t.name)) continue;
      let r: Route | string;
      try {
        r = await t.start({ nofile });
      } catch (e) {
        r = e instanceof Error ? e.message : String(e);
      }
      if (typeof r === 'string') {
        missing.push(`${t.name}: ${r}`);
        progress(`!!! PEER MISSING: ${t.name}: ${r}; the run goes on without it`);
        continue;
      }
      track(r.stop);
      routes.push(r);
    }
    let iperfServer: IperfServer | null = null;
    const wantIperf = !cfg.cases || cfg.cases.some((id) => id.startsWith('iperf'));
    const ip = wantIperf ? await startIperfServer().catch((e: unknown) => (e instanceof Error ? e.message : String(e))) : null;
    if (ip === null) {
      // not asked for (--cases)
    } else if (typeof ip === 'string') {
      missing.push(`iperf3 through proxychains-ng: ${ip}`);
      progress(`!!! PEER MISSING: iperf3 through proxychains-ng: ${ip}; the run goes on without it`);
    } else {
      track(ip.stop);
      iperfServer = ip;
    }
    const hashers = Array.from({ length: Math.max(1, cfg.streams) }, () => new Sha256Worker());
    track(() => Promise.all(hashers.map((h) => h.close())).then(() => {}));
    const cases = makeCases(cfg, origin, pattern, hashers, new Map(), iperfServer).filter((c) => !cfg.cases || cfg.cases.includes(c.id));
    const samples: Samples = {};
    const plan = [...(cfg.warmup ? [{ round: 0, scale: 0.25 }] : []), ...Array.from({ length: cfg.rounds }, (_, i) => ({ round: i + 1, scale: 1 }))];
    for (const { round, scale } of plan) {
      for (const c of cases) {
        const here = routes.filter((r) => !ONLY[r.name] || ONLY[r.name]!.includes(c.id));
        const order = here.map((_, i) => here[(i + round) % here.length]!);
        for (const route of order) {
          const s = await c.run(route, scale);
          const shown = c.metrics.map((mt) => `${mt.label} ${s.values[mt.key]!.toFixed(mt.digits)} ${mt.unit}`).join(', ');
          progress(`${round === 0 ? 'warm-up' : `round ${round}/${cfg.rounds}`}  ${c.id.padEnd(9)} ${route.name.padEnd(38)} ${shown}`);
          if (round === 0) continue;
          ((samples[c.id] ??= {})[route.name] ??= []).push(s);
        }
      }
    }
    // memory: once per relay, at the end (holding the tunnels takes long; medians would cost minutes)
    const idle = new Map<string, IdleResult>();
    const limit = Math.min(nofile, nofileOf(process.pid), nofileOf(origin.pid));
    const tunnels = Math.max(1, Math.min(cfg.idleTunnels, Math.floor((limit - 500) / 2)));
    for (const route of routes) {
      if (route.name === DIRECT || ONLY[route.name] || cfg.cases) continue;
      const r = await idleTunnels(route, { host: origin.host, port: origin.echoPort }, tunnels, 128, cfg.quick ? 50 : 1500, cfg.stepTimeoutMs);
      idle.set(route.name, r);
      progress(`idle      ${String(r.tunnels).padStart(5)} tunnels ${route.name.padEnd(38)} RSS ${(r.rssPerTunnel / 1024).toFixed(2)} KiB, PSS ${(r.pssPerTunnel / 1024).toFixed(2)} KiB per tunnel (${r.processes} processes, opened in ${r.openSeconds.toFixed(1)} s)${r.error ? `; !!! stopped short of ${tunnels}: ${r.error}` : ''}`);
    }
    const t = await transparentBench({ rounds: cfg.rounds, conns: cfg.conns, concurrency: cfg.concurrency, queries: cfg.dnsQueries, inFlight: 64, stepTimeoutMs: cfg.stepTimeoutMs }, progress);
    if (typeof t === 'string') {
      missing.push(`the transparent port and the fake-address DNS: ${t}`);
      progress(`!!! NOT MEASURED: the transparent port and the fake-address DNS: ${t}`);
    }
    const transparent = typeof t === 'string' ? null : t;
    return { config: cfg, machine: m, targets: routes.map((r) => r.name), missing, cases, samples, idle, transparent, nofile, hashMiBps, seconds: 0 };
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
  const idleN = [...r.idle.values()][0]?.tunnels ?? c.idleTunnels;
  return [
    `Everything on 127.0.0.1: the client (this script), the origin servers (test/bench/origin.ts, its own process) and each relay in its own processes, all started by the bench: \`dualsocks gateway --listen 127.0.0.1:0 --allow-private --quiet\`; \`dualsocks bridge --quiet\` with rules sending everything to such a gateway; Dante (\`danted -N 1\`, no authentication); \`microsocks -i 127.0.0.1\`; Privoxy (\`forward-socks5t / DANTE .\`, no filtering, CONNECT to any port) in front of a Dante of its own.`,
    `The client speaks SOCKS5 with the project's own client (bridge/upstream/socks5.ts, CONNECT by IP, no auth) to the SOCKS targets, and HTTP CONNECT to the two chains that take HTTP (our bridge→gateway and Privoxy→Dante), so both chains do the same work. "direct" is plain TCP to the origin.`,
    `download / upload: one TCP stream of ${c.bulkBytes / MiB} MiB of an AES-CTR keystream. The client hashes every downloaded byte with sha256 and compares it with the expected digest; for uploads the origin hashes and sends its digest back. Hashing runs on worker threads (${Math.round(r.hashMiBps)} MiB/s on one core here), so the thread that reads the socket only reads. Time runs from the request until the last byte is hashed (download) or the origin's digest arrives (upload).`,
    `${c.streams} streams: ${c.streams} downloads of ${c.streamBytes / MiB} MiB at once, each checked on its own hashing thread; the rate is all bytes over the time until the last stream is checked. \`dualsocks gateway --workers 2\` takes part here and in the 64-at-a-time connections only.`,
    `iperf3 through proxychains-ng (the method of the issue's reference figures): \`proxychains4 -q -f CONF iperf3 -c 127.0.0.1 -J ${c.iperfBytes ? `-n ${c.iperfBytes}` : `-t ${c.iperfSeconds}`}\` (\`-R\` for the download) against one \`iperf3 -s\`, CONF naming the target as \`socks5\` or, for the two HTTP chains, \`http\` (CONNECT); direct runs iperf3 alone. A C client and server leave the cores to the relay, so these figures show what each relay can carry; iperf3 checks no bytes, which the sha256-checked transfers above do for every relay in the same run. Client CPU is iperf3's, origin CPU the iperf3 server's.`,
    `connection rate: ${c.conns} connections per round, each a connect (and SOCKS5 or CONNECT handshake), one byte to an echo server and back, the server's FIN, and the client's close (the server closes first so that TIME_WAIT does not use up ephemeral ports); sequential, then ${c.concurrency} at a time. Latency is from the start of connect to the echoed byte.`,
    `idle tunnels: ${idleN} tunnels opened through each relay (128 at a time), each carrying one echoed byte, then held idle for 1.5 s; the figure is the growth of the relay's memory (every process of it, from /proc) over its memory before the first tunnel, divided by the tunnels. RSS counts a shared page in every process that maps it; PSS splits it between them, which is the fair figure for the multi-process Dante. Measured once per relay, after the rounds. Descriptor limit obtained with prlimit for the client, the origin and every relay: ${r.nofile}.`,
    `transparent port and fake-address DNS (issue 11): in a network namespace of its own, \`dualsocks start --transparent 127.0.0.1:1082 --dns-listen 127.0.0.1:5300\` running as nobody, the ruleset of \`dualsocks transparent nft --uid nobody\` applied there, an origin and this client inside. The same connection test as above (${c.conns} per round, sequential, then ${c.concurrency} at a time) once through the bridge's SOCKS5 port (CONNECT by name) and once as a plain connect to the name's fake address, which nftables redirects to the transparent port; then ${c.dnsQueries} A queries per round for names not asked before, 64 outstanding over one UDP socket.`,
    `${c.rounds} rounds${c.warmup ? ' after a discarded warm-up round at a quarter of the sizes' : ''}; within a round each test runs on every target, in an order rotated every round. Any wrong byte count or digest stops the run. CPU: utime+stime (and the reaped children's) from /proc/PID/stat, over every process of the relay.`,
  ];
}

interface Goal {
  what: string;
  goal: string;
  /** The figure when the goal was set (issue 12: the run of 2026-11-27), for the before/after column. */
  before?: string;
  measured: string;
  met: boolean | undefined;
}

/** The targets of issue 6, each with the measured figure. */
function goals(r: BenchResult): Goal[] {
  const s = r.samples;
  const ratio = (id: string, a: string, b: string, key = 'rate'): number => med(s, id, a, key) / med(s, id, b, key);
  const x = (v: number): string => (Number.isFinite(v) ? `${v.toFixed(2)}×` : 'not measured');
  const check = (v: number, ok: (v: number) => boolean): boolean | undefined => (Number.isFinite(v) ? ok(v) : undefined);
  const out: Goal[] = [];
  const gd = ratio('download', GATEWAY, DANTE);
  const gu = ratio('upload', GATEWAY, DANTE);
  out.push({ what: 'gateway single-stream throughput / Dante, sha256-checked (download, upload)', goal: '≥ 1.2×', measured: `${x(gd)}, ${x(gu)}`, met: check(Math.min(gd, gu), (v) => v >= 1.2) });
  const id = ratio('iperf-down', GATEWAY, DANTE);
  const iu = ratio('iperf-up', GATEWAY, DANTE);
  out.push({ what: 'the same, iperf3 through proxychains-ng (download, upload)', goal: '≥ 1.2×', measured: `${x(id)}, ${x(iu)}`, met: check(Math.min(id, iu), (v) => v >= 1.2) });
  const dd = ratio('download', GATEWAY, DIRECT);
  const du = ratio('upload', GATEWAY, DIRECT);
  out.push({ what: 'gateway single-stream throughput / direct (download, upload)', goal: '≥ 0.6×', measured: `${x(dd)}, ${x(du)}`, met: check(Math.min(dd, du), (v) => v >= 0.6) });
  const cd = ratio('download', BRIDGE_HTTP, PRIVOXY);
  const cu = ratio('upload', BRIDGE_HTTP, PRIVOXY);
  out.push({ what: 'bridge→gateway / Privoxy→Dante, HTTP CONNECT (download, upload)', goal: '≥ 1.0×', measured: `${x(cd)}, ${x(cu)}`, met: check(Math.min(cd, cu), (v) => v >= 1.0) });
  const c1 = ratio('conn-c1', GATEWAY, DANTE);
  const c64 = ratio('conn-c64', GATEWAY, DANTE);
  out.push({ what: 'gateway connection setup rate / Dante (sequential, 64 at a time)', goal: '≥ 1.5×', measured: `${x(c1)}, ${x(c64)}`, met: check(Math.min(c1, c64), (v) => v >= 1.5) });
  const added = med(s, 'conn-c1', GATEWAY, 'p50') - med(s, 'conn-c1', DIRECT, 'p50');
  out.push({ what: 'gateway p50 latency added over direct, sequential', goal: '≤ 0.3 ms', measured: Number.isFinite(added) ? `${added.toFixed(3)} ms` : 'not measured', met: check(added, (v) => v <= 0.3) });
  const idle = r.idle.get(GATEWAY);
  const kib = idle ? idle.rssPerTunnel / 1024 : NaN;
  out.push({ what: `gateway RSS per idle tunnel (${idle?.tunnels ?? 0} tunnels)`, goal: '≤ 4 KB', measured: Number.isFinite(kib) ? `${kib.toFixed(2)} KiB` : 'not measured', met: check(kib, (v) => v * 1024 <= 4000) });
  return out;
}

/** The connection-setup targets of issue 12, each with the measured figure. */
function goals12(r: BenchResult): Goal[] {
  const s = r.samples;
  const ratio = (id: string, a: string, b: string, key = 'rate'): number => med(s, id, a, key) / med(s, id, b, key);
  const x = (v: number): string => (Number.isFinite(v) ? `${v.toFixed(2)}×` : 'not measured');
  const ms = (v: number): string => (Number.isFinite(v) ? `${v.toFixed(3)} ms` : 'not measured');
  const check = (v: number, ok: (v: number) => boolean): boolean | undefined => (Number.isFinite(v) ? ok(v) : undefined);
  const added = (t: string): number => med(s, 'conn-c1', t, 'p50') - med(s, 'conn-c1', DIRECT, 'p50');
  const c64m = ratio('conn-c64', GATEWAY, MICROSOCKS);
  const c64d = ratio('conn-c64', GATEWAY, DANTE);
  const c1m = ratio('conn-c1', GATEWAY, MICROSOCKS);
  const gw = added(GATEWAY);
  const brHttp = added(BRIDGE_HTTP);
  const brSocks = added(BRIDGE_SOCKS);
  const cost = (id: string): number => {
    const c = r.cases.find((k) => k.id === id);
    return c ? costMedian(s, c, GATEWAY) / costMedian(s, c, DANTE) : NaN;
  };
  const cpu1 = cost('conn-c1');
  const cpu64 = cost('conn-c64');
  return [
    { what: 'gateway connections/s, 64 at a time / microsocks', goal: '≥ 1.0×', before: '0.72×', measured: x(c64m), met: check(c64m, (v) => v >= 1.0) },
    { what: 'gateway connections/s, 64 at a time / Dante', goal: '≥ 1.5×', before: '0.97×', measured: x(c64d), met: check(c64d, (v) => v >= 1.5) },
    { what: 'gateway connections/s, sequential / microsocks', goal: '≥ 1.0×', before: '0.68×', measured: x(c1m), met: check(c1m, (v) => v >= 1.0) },
    { what: 'gateway p50 added over direct, sequential', goal: '≤ 0.30 ms', before: '0.539 ms', measured: ms(gw), met: check(gw, (v) => v <= 0.3) },
    { what: 'bridge→gateway p50 added over direct, sequential (HTTP CONNECT; SOCKS5)', goal: '≤ 0.60 ms', before: '0.912 ms; 1.069 ms', measured: `${ms(brHttp)}; ${ms(brSocks)}`, met: check(brHttp, (v) => v <= 0.6) },
    { what: 'gateway relay CPU per connection / Dante (sequential, 64 at a time)', goal: '≤ 1.0×', before: '1.18×, 1.22×', measured: `${x(cpu1)}, ${x(cpu64)}`, met: check(Math.max(cpu1, cpu64), (v) => v <= 1.0) },
  ];
}

function goalsTable(r: BenchResult, of: (r: BenchResult) => Goal[] = goals): string {
  const rows = of(r);
  const met = (g: Goal): string => (g.met === undefined ? '—' : g.met ? 'yes' : 'NO');
  if (rows.some((g) => g.before !== undefined)) {
    return table(['goal', 'target', 'when set (2026-11-27)', 'measured', 'met'], rows.map((g) => [g.what, g.goal, g.before ?? '—', g.measured, met(g)]), ['l', 'l', 'r', 'r', 'l']);
  }
  return table(['goal', 'target', 'measured', 'met'], rows.map((g) => [g.what, g.goal, g.measured, met(g)]), ['l', 'l', 'r', 'l']);
}

/** `--workers` 1, 2 and N: the connection rate and the 8-stream download, each against one worker. */
function scalingTable(r: BenchResult): string {
  const s = r.samples;
  const c64 = r.cases.find((c) => c.id === 'conn-c64');
  const rows: string[][] = [];
  for (const [n, t] of [[1, GATEWAY], [2, GATEWAY_W2], [WORKERS_N, GATEWAY_WN]] as const) {
    const rate = med(s, 'conn-c64', t, 'rate');
    const mib = med(s, 'download8', t, 'rate');
    if (!Number.isFinite(rate) && !Number.isFinite(mib)) continue;
    const busy = median((s['conn-c64']?.[t] ?? []).flatMap((x) => (x.cpu.relay === undefined ? [] : [x.cpu.relay])));
    const f = (v: number, d: number): string => (Number.isFinite(v) ? v.toFixed(d) : '—');
    const x = (v: number): string => (Number.isFinite(v) ? `${v.toFixed(2)}×` : '—');
    rows.push([String(n), f(rate, 0), x(rate / med(s, 'conn-c64', GATEWAY, 'rate')), f(c64 ? costMedian(s, c64, t) : NaN, 0), f(busy, 2), f(mib, 0), x(mib / med(s, 'download8', GATEWAY, 'rate'))]);
  }
  return table(['workers', 'conn/s, 64 at a time', '/ 1 worker', 'relay CPU µs / conn', 'relay cores busy', '8 streams MiB/s', '/ 1 worker'], rows, ['r', 'r', 'r', 'r', 'r', 'r', 'r']);
}

/** The hand-written part of BENCHMARKS.md: where a connection's CPU goes (from profiles, not re-measured by the run). */
function profileText(): string {
  const p = fileURLToPath(new URL('../../../test/bench/connections.md', import.meta.url));
  return existsSync(p) ? readFileSync(p, 'utf8') : '';
}

function idleTable(r: BenchResult): string {
  const rows = [...r.idle].map(([name, i]) => [i.error ? `${name} (failed after ${i.tunnels}: ${i.error})` : name, String(i.tunnels), (i.rssPerTunnel / 1024).toFixed(2), (i.pssPerTunnel / 1024).toFixed(2), String(i.processes), i.openSeconds.toFixed(1)]);
  return table(['relay', 'tunnels', 'RSS KiB / tunnel', 'PSS KiB / tunnel', 'processes', 'seconds to open'], rows, ['l', 'r', 'r', 'r', 'r', 'r']);
}

function notes(r: BenchResult): string[] {
  const out: string[] = [];
  const cores = r.machine.logicalCores;
  if (cores < 4)
    out.push(`This machine has ${cores} logical cores. Direct, two processes share them; through a relay, three or more do (the chains have two relay processes), and the relay's cores are taken from the client and the origin. A machine with more cores would show less of this competition in the ratios.`);
  for (const id of ['download', 'upload']) {
    const busy = (r.samples[id]?.[DIRECT] ?? []).map((s) => (s.cpu.client ?? 0) + (s.cpu.origin ?? 0));
    const m = busy.length ? median(busy) : 0;
    if (m > 0.85 * cores)
      out.push(`The direct ${id} kept ${m.toFixed(2)} of the ${cores} cores busy (one end reading and hashing on two threads, the other sending), so the machine, not the path, set its rate; the ${id} ratio measures the relay together with that competition. The relay's own cost is under CPU, in CPU seconds per GiB.`);
  }
  for (const miss of r.missing) out.push(`Not measured: ${miss}.`);
  const [l1] = r.machine.load.split(' ').map(Number);
  if (l1 !== undefined && l1 > 0.5) out.push(`The load average was ${r.machine.load} when the run started: other work was running, and figures may be lower or noisier than on an idle machine.`);
  return out;
}

function peerVersions(): string[] {
  const out: string[] = [];
  const r = spawnSync('dpkg-query', ['-W', '-f', '${Package} ${Version}\\n', 'dante-server', 'microsocks', 'privoxy', 'iperf3', 'proxychains4'], { encoding: 'utf8' });
  for (const line of (r.stdout ?? '').split('\n')) if (line.trim() && !line.endsWith(' ')) out.push(`peer: Debian ${line.trim()}`);
  return out;
}

function parseArgs(argv: string[]): { cfg: BenchConfig; out: string | null; install: boolean } {
  const quick = argv.includes('--quick') || process.env.BENCH_QUICK === '1';
  const cfg: BenchConfig = { ...(quick ? QUICK : FULL) };
  // a partial run never replaces the full BENCHMARKS.md
  let out: string | null = quick || argv.includes('--scaling') || argv.includes('--cases') ? null : fileURLToPath(new URL('../../../BENCHMARKS.md', import.meta.url));
  let install = true;
  const int = (flag: string, v: string | undefined, max: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1 || n > max) throw new Error(`${flag} takes an integer from 1 to ${max}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--quick') continue;
    else if (a === '--scaling') Object.assign(cfg, SCALING);
    else if (a === '--cases') cfg.cases = (argv[++i] ?? '').split(',').filter(Boolean);
    else if (a === '--rounds') cfg.rounds = int(a, argv[++i], 50);
    else if (a === '--size') cfg.bulkBytes = int(a, argv[++i], 4096) * MiB;
    else if (a === '--conns') cfg.conns = int(a, argv[++i], 20000);
    else if (a === '--concurrency') cfg.concurrency = int(a, argv[++i], 512);
    else if (a === '--streams') cfg.streams = int(a, argv[++i], 64);
    else if (a === '--tunnels') cfg.idleTunnels = int(a, argv[++i], 100000);
    else if (a === '--out') out = argv[++i] ?? '';
    else if (a === '--no-write') out = null;
    else if (a === '--no-install') install = false;
    else if (a === '--help') {
      process.stdout.write('Usage: npm run bench [-- --quick | --scaling | --cases ID,…] [--rounds N] [--size MIB] [--conns N] [--concurrency N] [--streams N] [--tunnels N] [--out FILE | --no-write] [--no-install]\n');
      process.exit(0);
    } else throw new Error(`unknown option ${a}`);
  }
  return { cfg, out, install };
}

export function summary(r: BenchResult): string {
  return summaryTable(r.cases, r.targets, DIRECT, r.samples);
}

function versus(r: BenchResult): string {
  const peers = PEERS.filter((p) => r.targets.includes(p));
  return peers.length ? peerTable(r.cases, OURS.filter((o) => r.targets.includes(o)), peers, r.samples) : 'No peer ran (see Notes).';
}

async function main(): Promise<void> {
  const { cfg, out, install } = parseArgs(process.argv.slice(2));
  if (install) installMissingPeers((l) => process.stderr.write(`${l}\n`));
  const m = machine();
  process.stderr.write(`dualsocks bench${cfg.quick ? ' (quick)' : ''}\n${machineLines(m).join('\n')}\n\n`);
  const r = await bench(cfg, (l) => process.stderr.write(`${l}\n`));
  const cost = relayCostTable(r.cases, r.targets.filter((t) => t !== DIRECT), r.samples);
  const w = (t: string): boolean => process.stdout.write(t);
  const tTable = r.transparent ? transparentTable(r.transparent, cfg.concurrency) : 'Not measured (see Notes).';
  w(`\nMedians of ${r.config.rounds} rounds (${r.seconds.toFixed(1)} s):\n\n${summary(r)}\n\nAgainst the peers (ours / theirs):\n\n${versus(r)}\n\nIdle tunnels:\n\n${idleTable(r)}\n\nTransparent port and fake-address DNS:\n\n${tTable}\n\nGoals of issue 6:\n\n${goalsTable(r)}\n\nConnection setup, goals of issue 12:\n\n${goalsTable(r, goals12)}\n\nWorkers (--workers 1, 2, ${WORKERS_N}):\n\n${scalingTable(r)}\n\nCPU, cores busy:\n\n${cpuTable(r.cases, r.targets, r.samples)}\n\nRelay CPU per unit of work:\n\n${cost}\n`);
  for (const n of notes(r)) w(`\nnote: ${n}\n`);
  if (out) {
    const command = cfg.quick ? 'npm run bench -- --quick' : 'npm run bench';
    const svgPath = join(dirname(out), `${basename(out, '.md').toLowerCase()}-throughput.svg`);
    writeFileSync(svgPath, throughputSvg(r.cases, r.targets, DIRECT, r.samples, `Throughput through each relay as a ratio to direct TCP (medians of ${cfg.rounds} rounds, ${r.machine.logicalCores} cores)`));
    writeFileSync(
      out,
      benchmarksMarkdown({
        machine: r.machine,
        command,
        rounds: cfg.rounds,
        peers: peerVersions(),
        method: method(r),
        goals: goalsTable(r),
        goals12: goalsTable(r, goals12),
        profile: profileText(),
        scaling: scalingTable(r),
        summary: summary(r),
        versus: versus(r),
        idle: idleTable(r),
        transparent: tTable,
        chart: basename(svgPath),
        cpu: cpuTable(r.cases, r.targets, r.samples),
        cost,
        perRound: roundsTable(r.cases, r.targets, r.samples),
        notes: notes(r),
        seconds: r.seconds,
      }),
    );
    w(`\nwrote ${out} and ${svgPath}\n`);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === realpathSync(process.argv[1])) {
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
