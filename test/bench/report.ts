// Turns the samples of every round into tables (Markdown, also readable in a terminal) and the
// BENCHMARKS.md document, with the machine they were measured on.
import { cpus, freemem, loadavg, release, totalmem, type as osType } from 'node:os';
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
  };
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

/** Medians over rounds, one row per metric, with each relay's ratio to direct. */
export function summaryTable(cases: CaseInfo[], targets: string[], direct: string, samples: Samples): string {
  const relays = targets.filter((t) => t !== direct);
  const header = ['test', 'metric', ...targets, ...relays.map((r) => `${r} / ${direct}`)];
  const rows: string[][] = [];
  for (const c of cases) {
    for (const m of c.metrics) {
      const med = (t: string): number => median((samples[c.id]?.[t] ?? []).map((s) => s.values[m.key]!));
      const base = med(direct);
      rows.push([
        c.label,
        `${m.label} (${m.unit})`,
        ...targets.map((t) => fmt(med(t), m.digits)),
        ...relays.map((r) => `${fmt(med(r) / base, 2)}×`),
      ]);
    }
  }
  return table(header, rows, ['l', 'l', ...targets.map(() => 'r' as const), ...relays.map(() => 'r' as const)]);
}

/** Median CPU use per test and target: client / origin / relay, in cores. */
export function cpuTable(cases: CaseInfo[], targets: string[], samples: Samples): string {
  const rows = cases.map((c) => [
    c.label,
    ...targets.map((t) => {
      const ss = samples[c.id]?.[t] ?? [];
      const part = (k: 'client' | 'origin' | 'relay'): string => {
        const v = ss.map((s) => s.cpu[k]).filter((x): x is number => x !== undefined);
        return v.length ? median(v).toFixed(2) : '—';
      };
      return `${part('client')} / ${part('origin')} / ${part('relay')}`;
    }),
  ]);
  return table(['test', ...targets.map((t) => `${t}: client / origin / relay`)], rows, ['l', ...targets.map(() => 'r' as const)]);
}

/** What relaying costs each relay in CPU, per GiB or per connection (medians over rounds). */
export function relayCostTable(cases: CaseInfo[], relays: string[], samples: Samples): string {
  const rows = cases.map((c) => [
    c.label,
    c.cost.unit,
    ...relays.map((t) => {
      const v = (samples[c.id]?.[t] ?? []).flatMap((s) => (s.cpu.relay === undefined ? [] : [(s.cpu.relay / s.values.rate!) * c.cost.scale]));
      return v.length ? median(v).toFixed(c.cost.digits) : '—';
    }),
  ]);
  return table(['test', 'unit', ...relays], rows, ['l', 'l', ...relays.map(() => 'r' as const)]);
}

/** Every round's figures, so the spread behind each median is visible. */
export function roundsTable(cases: CaseInfo[], targets: string[], samples: Samples): string {
  const rows: string[][] = [];
  for (const c of cases)
    for (const m of c.metrics)
      for (const t of targets)
        rows.push([c.label, `${m.label} (${m.unit})`, t, (samples[c.id]?.[t] ?? []).map((s) => fmt(s.values[m.key], m.digits)).join(', ')]);
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
  ];
}

export interface Document {
  machine: Machine;
  command: string;
  rounds: number;
  method: string[];
  summary: string;
  cpu: string;
  cost: string;
  perRound: string;
  notes: string[];
  seconds: number;
}

export function benchmarksMarkdown(d: Document): string {
  return `# Benchmarks

Written by \`${d.command}\` (test/bench/run.ts); run it again to replace this file. Figures are
the medians of ${d.rounds} rounds; the whole run took ${Math.round(d.seconds)} s.

## Machine

${machineLines(d.machine).join('\n')}

## Method

${d.method.map((l) => `- ${l}`).join('\n')}

## Results

${d.summary}

For rates higher is better; for latencies lower is better, so a latency ratio above 1× is the
time the relay adds.

## CPU

Cores busy during each measurement (1.00 = one core all the time), medians:

${d.cpu}

What the relay process spends per unit of work (its CPU time divided by what it carried):

${d.cost}

## Every round

${d.perRound}
${d.notes.length ? `\n## Notes\n\n${d.notes.map((n) => `- ${n}`).join('\n')}\n` : ''}`;
}
