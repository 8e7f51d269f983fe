// The transparent port and the fake-address DNS (issue 11), beside the SOCKS5 port of the same
// bridge. nftables `redirect` must not touch the host's own rules, so this part runs in a network
// namespace of its own (root only): the client half of this file, an origin, `dualsocks start
// --transparent --dns-listen` running as nobody (the user `dualsocks transparent nft --uid`
// leaves alone) and the ruleset, all on that namespace's loopback. The parent creates the
// namespace, runs `node transparent.js --bench-transparent CONFIG` inside it and reads one JSON
// line of samples back; the namespace goes with everything in it at the end.
//   SOCKS5 port: CONNECT to the origin's name (the gateway resolves it)
//   transparent port: a plain connect to the name's fake address, redirected by nftables
//   DNS: A queries for distinct proxied names, `inFlight` at a time over one UDP socket
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createSocket } from 'node:dgram';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import dnsPacket from 'dns-packet';
import { dialSocks5 } from '../../bridge/upstream/socks5.js';
import { CLI, run, startCli } from '../helpers/process.js';
import { connections, median, quantile } from './measure.js';
import { startOrigin } from './origin.js';
import { tcp, type HostPort, type Route } from './targets.js';

export const VIA_SOCKS5 = 'bridge SOCKS5 port, CONNECT by name';
export const VIA_TRANSPARENT = 'bridge transparent port, fake address via nftables redirect';
const PATHS = [VIA_SOCKS5, VIA_TRANSPARENT] as const;
const NAME = 'origin.bench';
const NOBODY = 65534;
const TPORT = 1082;
const DNS_PORT = 5300;

export interface TransparentConfig {
  rounds: number;
  conns: number;
  concurrency: number;
  /** DNS queries per round, and how many are outstanding at once. */
  queries: number;
  inFlight: number;
  stepTimeoutMs: number;
}

export interface TransparentSamples {
  /** Per path: conn/s sequential and `concurrency` at a time, p50 latency (ms) sequential; one entry per round. */
  conn: Record<string, { seq: number[]; par: number[]; p50: number[] }>;
  /** Answered queries per second, one entry per round. */
  dnsQps: number[];
}

/** Why this part cannot run here, or undefined. */
function unavailable(): string | undefined {
  if (process.platform !== 'linux' || process.getuid?.() !== 0) return 'needs root on Linux (a network namespace and nftables)';
  for (const [cmd, arg] of [['ip', '-V'], ['nft', '--version'], ['setpriv', '--version']] as const) {
    if (spawnSync(cmd, [arg], { stdio: 'ignore' }).status !== 0) return `${cmd} is not installed`;
  }
  return undefined;
}

/** Runs the measurement in a fresh namespace; a string says why it could not. */
export async function transparentBench(cfg: TransparentConfig, progress: (line: string) => void): Promise<TransparentSamples | string> {
  const why = unavailable();
  if (why) return why;
  const ns = `dsbench${process.pid % 100000}`;
  await run('ip', ['netns', 'del', ns]);
  try {
    for (const args of [['netns', 'add', ns], ['-n', ns, 'link', 'set', 'lo', 'up'], ['-n', ns, 'route', 'add', '198.18.0.0/15', 'dev', 'lo', 'src', '127.0.0.1']]) {
      const r = await run('ip', args);
      if (r.code !== 0) return `ip ${args.join(' ')}: ${r.stderr.trim()}`;
    }
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, fileURLToPath(import.meta.url), '--bench-transparent', JSON.stringify(cfg)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => d.split('\n').filter(Boolean).forEach(progress));
    const limit = setTimeout(() => child.kill('SIGKILL'), cfg.stepTimeoutMs * (cfg.rounds * 4 + 2));
    const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
    clearTimeout(limit);
    const line = out.trim().split('\n').pop() ?? '';
    if (code !== 0 || !line.startsWith('{')) throw new Error(`transparent bench failed (exit ${code}): ${out.slice(-500)}`);
    return JSON.parse(line) as TransparentSamples;
  } finally {
    // kills whatever is left inside (the bridge, the origin), then the namespace
    const pids = (await run('ip', ['netns', 'pids', ns])).stdout.toString().split(/\s+/).filter(Boolean);
    for (const pid of pids) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await run('ip', ['netns', 'del', ns]);
  }
}

/** `count` A queries for distinct names, `inFlight` outstanding, over one UDP socket; returns answers per second and the first answer. */
async function dnsRound(server: HostPort, names: (i: number) => string, count: number, inFlight: number, timeoutMs: number): Promise<{ qps: number; first: string }> {
  const sock = createSocket('udp4');
  await new Promise<void>((r) => sock.connect(server.port, server.host, r));
  const waiting = new Map<number, () => void>();
  let first = '';
  sock.on('message', (m: Buffer) => {
    const id = m.readUInt16BE(0);
    if (!first) {
      const a = dnsPacket.decode(m).answers?.[0];
      if (a && a.type === 'A') first = a.data;
    }
    waiting.get(id)?.();
    waiting.delete(id);
  });
  let next = 0;
  const t0 = performance.now();
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      const id = i & 0xffff;
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`DNS query ${i} not answered within ${timeoutMs} ms`)), timeoutMs);
        waiting.set(id, () => {
          clearTimeout(timer);
          resolve();
        });
        sock.send(dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name: names(i) }] }));
      });
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(inFlight, count) }, worker));
  } finally {
    sock.close();
  }
  return { qps: count / ((performance.now() - t0) / 1000), first };
}

/** Inside the namespace: start everything, measure every round, print the samples as one JSON line. */
async function child(cfg: TransparentConfig): Promise<void> {
  const say = (l: string): boolean => process.stderr.write(`${l}\n`);
  const origin = await startOrigin(1024 * 1024);
  const dir = mkdtempSync(join(tmpdir(), 'dualsocks-bench-transparent-'));
  // the bridge runs as nobody: it must read this
  chmodSync(dir, 0o755);
  const hosts = join(dir, 'hosts');
  writeFileSync(hosts, `127.0.0.1 ${NAME}\n`);
  chmodSync(hosts, 0o644);
  const bridge = await startCli(['start', '--listen', '127.0.0.1:0', '--hosts', hosts, '--dns', 'none', '--allow-private', '--quiet', '--transparent', `127.0.0.1:${TPORT}`, '--dns-listen', `127.0.0.1:${DNS_PORT}`, '--dns-upstream', '127.0.0.1:9'], { uid: NOBODY });
  try {
    await bridge.waitStderr(/fake-address DNS on /);
    const nft = await run(process.execPath, [CLI, 'transparent', 'nft', '--port', String(TPORT), '--uid', String(NOBODY), '--apply']);
    if (nft.code !== 0) throw new Error(`nft: ${nft.stderr}`);
    const dns = { host: '127.0.0.1', port: DNS_PORT };
    const fake = (await dnsRound(dns, () => NAME, 1, 1, cfg.stepTimeoutMs)).first;
    if (!/^198\.1[89]\./.test(fake)) throw new Error(`no fake address for ${NAME}: ${JSON.stringify(fake)}`);
    const socksAt = bridge.listening[0]!;
    const routes: Route[] = [
      { name: VIA_SOCKS5, pids: [], proxy: null, stop: async () => {}, dial: async (dst, ms) => (await dialSocks5(socksAt, { host: NAME, port: dst.port }, { timeoutMs: ms })).socket },
      { name: VIA_TRANSPARENT, pids: [], proxy: null, stop: async () => {}, dial: (dst, ms) => tcp({ host: fake, port: dst.port }, ms) },
    ];
    const ping = { host: origin.host, port: origin.pingPort };
    const samples: TransparentSamples = { conn: Object.fromEntries(PATHS.map((p) => [p, { seq: [], par: [], p50: [] }])), dnsQps: [] };
    for (let round = 1; round <= cfg.rounds; round++) {
      for (const route of round % 2 ? routes : [...routes].reverse()) {
        const seq = await connections(route, ping, cfg.conns, 1, cfg.stepTimeoutMs);
        const par = await connections(route, ping, cfg.conns, cfg.concurrency, cfg.stepTimeoutMs);
        const s = samples.conn[route.name]!;
        s.seq.push(seq.perSecond);
        s.par.push(par.perSecond);
        s.p50.push(quantile(seq.latencies, 0.5));
        say(`round ${round}/${cfg.rounds}  conn      ${route.name.padEnd(58)} ${seq.perSecond.toFixed(0)} conn/s sequential, ${par.perSecond.toFixed(0)} conn/s ${cfg.concurrency} at a time`);
      }
      // fresh names every round: each query allocates a fake address
      const d = await dnsRound(dns, (i) => `n${i}.r${round}.bench`, cfg.queries, cfg.inFlight, cfg.stepTimeoutMs);
      samples.dnsQps.push(d.qps);
      say(`round ${round}/${cfg.rounds}  dns       fake-address DNS, A for new names, ${cfg.inFlight} in flight          ${d.qps.toFixed(0)} queries/s`);
    }
    process.stdout.write(`${JSON.stringify(samples)}\n`);
  } finally {
    await bridge.stop();
    await origin.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The markdown table of the medians. */
export function transparentTable(s: TransparentSamples, concurrency: number): string {
  const rows = PATHS.map((p) => {
    const c = s.conn[p]!;
    return `| ${p} | ${median(c.seq).toFixed(0)} | ${median(c.p50).toFixed(3)} | ${median(c.par).toFixed(0)} |`;
  });
  return [
    `| path | conn/s, sequential | p50 latency, ms | conn/s, ${concurrency} at a time |`,
    '|:--|--:|--:|--:|',
    ...rows,
    '',
    `Fake-address DNS: ${median(s.dnsQps).toFixed(0)} queries/s (A queries for names not asked before, each given a fake address).`,
  ].join('\n');
}

if (process.argv[2] === '--bench-transparent') {
  child(JSON.parse(process.argv[3]!) as TransparentConfig).then(
    () => process.exit(0),
    (e: unknown) => {
      process.stderr.write(`transparent bench: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exit(1);
    },
  );
}
