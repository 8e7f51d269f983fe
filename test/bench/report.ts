// Turns the samples of every round into tables (Markdown, also readable in a terminal) and the
// BENCHMARKS.md document, with the machine they were measured on.
import { cpus, freemem, loadavg, release, totalmem, type as osType } from 'node:os';
import { nativeRelayStatus } from '../../bridge/native/loader.js';
import { median } from './measure.js';

export interface Machine {
  cpu: string;
  logicalCores: number;
  memoryGiB: number;
  freeGiB: number;
  os: string;
  node: string;
  date: string;
  load: string;
  /** Which relay our processes use: the splice(2) addon or JavaScript, and why. */
  relay: string;
}

export function machine(): Machine {
  const c = cpus();
  return {
    cpu: c[0]?.model.trim() ?? 'unknown',
    logicalCores: c.length,
    memoryGiB: totalmem() / 2 ** 30,
    freeGiB: freemem() / 2 ** 30,
    os: `${osType()} ${release()} ${process.arch}`,
    node: process.version,
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    load: loadavg().map((l) => l.toFixed(2)).join(' '),
    relay: relayLine(),
  };
}

// our processes load the same addon this one does, with the same environment
function relayLine(): string {
  const n = nativeRelayStatus();
  return n.available ? `native splice(2) addon, pipes of ${n.pipeSize / 1024} KiB` : `JavaScript (native relay: ${n.reason})`;
}

export interface Metric {
  key: string;
  label: string;
  unit: string;
  /** Decimals to print. */
  digits: number;
}

/** One test (download, connection rate, …) and the figures each run of it gives. */
export interface CaseInfo {
  id: string;
  label: string;
  metrics: Metric[];
  /** The relay's CPU per unit of work: cores busy / values.rate × scale, printed with `unit`. */
  cost: { unit: string; scale: number; digits: number };
}

export interface Sample {
  values: Record<string, number>;
  /** Cores busy during the measurement: client, origin and the relaying process. */
  cpu: { client?: number | undefined; origin?: number | undefined; relay?: number | undefined };
}

/** samples[caseId][target] = one Sample per round. */
export type Samples = Record<string, Record<string, Sample[]>>;

const fmt = (v: number | undefined, digits: number): string => (v === undefined || !Number.isFinite(v) ? '—' : v.toFixed(digits));

export function table(header: string[], rows: string[][], align: ('l' | 'r')[]): string {
  const width = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    `| ${cells.map((c, i) => (align[i] === 'r' ? c.padStart(width[i]!) : c.padEnd(width[i]!))).join(' | ')} |`;
  const rule = `|${width.map((w, i) => (align[i] === 'r' ? `${'-'.repeat(w + 1)}:` : `:${'-'.repeat(w + 1)}`)).join('|')}|`;
  return [line(header), rule, ...rows.map(line)].join('\n');
}

/** The median of one metric of one test on one target (NaN when it did not run). */
export function med(samples: Samples, caseId: string, target: string, key: string): number {
  return median((samples[caseId]?.[target] ?? []).map((s) => s.values[key]!));
}

/** Medians over rounds, one row per test, metric and target, with the ratio to direct. */
export function summaryTable(cases: CaseInfo[], targets: string[], direct: string, samples: Samples): string {
  const rows: string[][] = [];
  for (const c of cases) {
    for (const m of c.metrics) {
      const base = med(samples, c.id, direct, m.key);
      for (const t of targets) {
        const v = med(samples, c.id, t, m.key);
        if (!Number.isFinite(v)) continue;
        rows.push([c.label, `${m.label} (${m.unit})`, t, fmt(v, m.digits), t === direct ? '' : `${fmt(v / base, 2)}×`]);
      }
    }
  }
  return table(['test', 'metric', 'target', 'median', `/ ${direct}`], rows, ['l', 'l', 'l', 'r', 'r']);
}

/** The median of the relay's CPU per unit of work (CaseInfo.cost) of one test on one target (NaN when not measured). */
export function costMedian(samples: Samples, c: CaseInfo, target: string): number {
  return median((samples[c.id]?.[target] ?? []).flatMap((s) => (s.cpu.relay === undefined ? [] : [(s.cpu.relay / s.values.rate!) * c.cost.scale])));
}

/**
 * Our targets against each peer: ratios of medians (higher is better for rates, lower for
 * latencies and for the relay's CPU per unit of work, the last row of each test).
 */
export function peerTable(cases: CaseInfo[], ours: string[], peers: string[], samples: Samples): string {
  const rows: string[][] = [];
  const ratios = (label: string, c: CaseInfo, o: string, of: (t: string) => number): void => {
    const v = of(o);
    if (!Number.isFinite(v)) return;
    const cells = peers.map((p) => {
      const r = v / of(p);
      return Number.isFinite(r) ? `${r.toFixed(2)}×` : '—';
    });
    rows.push([c.label, label, o, ...cells]);
  };
  for (const c of cases) {
    for (const m of c.metrics) for (const o of ours) ratios(m.label, c, o, (t) => med(samples, c.id, t, m.key));
    for (const o of ours) ratios(`relay ${c.cost.unit}`, c, o, (t) => costMedian(samples, c, t));
  }
  return table(['test', 'metric', 'ours', ...peers.map((p) => `/ ${p}`)], rows, ['l', 'l', 'l', ...peers.map(() => 'r' as const)]);
}

const esc = (t: string): string => t.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** A horizontal bar chart (SVG, written by hand) of throughput medians as a ratio to direct. */
export function throughputSvg(cases: CaseInfo[], targets: string[], direct: string, samples: Samples, caption: string): string {
  const relays = targets.filter((t) => t !== direct);
  const palette = ['#1f77b4', '#6baed6', '#2ca02c', '#98df8a', '#17becf', '#d62728', '#ff7f0e', '#9467bd'];
  const groups = cases.filter((c) => c.metrics.some((m) => m.unit === 'MiB/s'));
  const bar = 14;
  const gap = 3;
  const left = 290;
  const width = 800;
  const plotW = width - left - 60;
  const ratios = groups.map((c) => relays.map((t) => med(samples, c.id, t, 'rate') / med(samples, c.id, direct, 'rate')));
  const max = Math.max(1.1, ...ratios.flat().filter(Number.isFinite));
  const scale = (r: number): number => (r / max) * plotW;
  let y = 44;
  const out: string[] = [];
  groups.forEach((c, gi) => {
    out.push(`<text x="10" y="${y + 12}" font-weight="bold">${esc(c.label)}</text>`);
    y += 20;
    relays.forEach((t, ti) => {
      const r = ratios[gi]![ti]!;
      if (!Number.isFinite(r)) return;
      out.push(`<text x="${left - 6}" y="${y + bar - 3}" text-anchor="end">${esc(t)}</text>`);
      out.push(`<rect x="${left}" y="${y}" width="${scale(r).toFixed(1)}" height="${bar}" fill="${palette[ti % palette.length]}"/>`);
      out.push(`<text x="${(left + scale(r) + 4).toFixed(1)}" y="${y + bar - 3}">${r.toFixed(2)}×</text>`);
      y += bar + gap;
    });
    y += 12;
  });
  const x1 = left + scale(1);
  const height = y + 10;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="20" font-size="14" font-weight="bold">${esc(caption)}</text>
<line x1="${x1.toFixed(1)}" y1="30" x2="${x1.toFixed(1)}" y2="${height - 10}" stroke="#444" stroke-dasharray="4 3"/>
<text x="${(x1 + 3).toFixed(1)}" y="40" fill="#444">direct = 1×</text>
${out.join('\n')}
</svg>
`;
}

/** Median CPU use per test and target: client / origin / relay, in cores. */
export function cpuTable(cases: CaseInfo[], targets: string[], samples: Samples): string {
  const rows: string[][] = [];
  for (const c of cases)
    for (const t of targets) {
      const ss = samples[c.id]?.[t] ?? [];
      if (!ss.length) continue;
      const part = (k: 'client' | 'origin' | 'relay'): string => {
        const v = ss.map((s) => s.cpu[k]).filter((x): x is number => x !== undefined);
        return v.length ? median(v).toFixed(2) : '—';
      };
      rows.push([c.label, t, part('client'), part('origin'), part('relay')]);
    }
  return table(['test', 'target', 'client', 'origin', 'relay'], rows, ['l', 'l', 'r', 'r', 'r']);
}

/** What relaying costs each relay in CPU, per GiB or per connection (medians over rounds). */
export function relayCostTable(cases: CaseInfo[], relays: string[], samples: Samples): string {
  const rows: string[][] = [];
  for (const c of cases)
    for (const t of relays) {
      const v = costMedian(samples, c, t);
      if (Number.isFinite(v)) rows.push([c.label, t, c.cost.unit, v.toFixed(c.cost.digits)]);
    }
  return table(['test', 'relay', 'unit', 'median'], rows, ['l', 'l', 'l', 'r']);
}

/** Every round's figures, so the spread behind each median is visible. */
export function roundsTable(cases: CaseInfo[], targets: string[], samples: Samples): string {
  const rows: string[][] = [];
  for (const c of cases)
    for (const m of c.metrics)
      for (const t of targets) {
        const ss = samples[c.id]?.[t];
        if (ss?.length) rows.push([c.label, `${m.label} (${m.unit})`, t, ss.map((s) => fmt(s.values[m.key], m.digits)).join(', ')]);
      }
  return table(['test', 'metric', 'target', 'rounds'], rows, ['l', 'l', 'l', 'l']);
}

export function machineLines(m: Machine): string[] {
  return [
    `- CPU: ${m.cpu}, ${m.logicalCores} logical cores`,
    `- memory: ${m.memoryGiB.toFixed(1)} GiB (${m.freeGiB.toFixed(1)} GiB free at start)`,
    `- OS: ${m.os}`,
    `- Node.js: ${m.node}`,
    `- date: ${m.date}`,
    `- load average at start (1/5/15 min): ${m.load}`,
    `- dualsocks relay: ${m.relay}`,
  ];
}

export interface Document {
  machine: Machine;
  command: string;
  rounds: number;
  peers: string[];
  method: string[];
  goals: string;
  /** The connection-setup goals (issue 12) and what the profile shows (test/bench/connections.md). */
  goals12: string;
  profile: string;
  scaling: string;
  summary: string;
  versus: string;
  idle: string;
  /** The transparent port beside the SOCKS5 port, and the fake-address DNS. */
  transparent: string;
  chart: string | null;
  cpu: string;
  cost: string;
  perRound: string;
  notes: string[];
  seconds: number;
}

export function benchmarksMarkdown(d: Document): string {
  return `# Benchmarks

Written by \`${d.command}\` (test/bench/run.ts); run it again to replace this file. Figures are
the medians of ${d.rounds} interleaved rounds; the whole run took ${Math.round(d.seconds)} s.

## Machine

${machineLines(d.machine).join('\n')}
${d.peers.map((p) => `- ${p}`).join('\n')}

## Method

${d.method.map((l) => `- ${l}`).join('\n')}

## Goals (issue 6)

${d.goals}

## Connection setup (issue 12)

${d.goals12}

${d.profile.trim()}

## Workers

${d.scaling}

## Results

${d.summary}

For rates higher is better; for latencies lower is better, so a latency ratio above 1× is the
time the relay adds.
${d.chart ? `\n![throughput as a ratio to direct](${d.chart})\n` : ''}
## Against the peers

Ratio of our median to the peer's median (rates: above 1× is faster; latencies: below 1× is faster).

${d.versus}

## Idle tunnels

${d.idle}

## Transparent port and fake-address DNS

Medians of the rounds, measured in a network namespace of their own (see Method).

${d.transparent}

## CPU

Cores busy during each measurement (1.00 = one core all the time), medians. "relay" counts every
process of the relay (Dante's workers, the bridge and its gateway, Privoxy and its Dante).

${d.cpu}

What the relay spends per unit of work (its CPU time divided by what it carried):

${d.cost}

## Every round

${d.perRound}
${d.notes.length ? `\n## Notes\n\n${d.notes.map((n) => `- ${n}`).join('\n')}\n` : ''}`;
}
