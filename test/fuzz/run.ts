// `npm run fuzz`: the in-process fuzzing of every sans-IO parser and session machine, then the
// live fuzzing of real gateway/bridge/start processes (inside a fresh network namespace with
// only loopback, so mutated destinations reach nothing). Prints its figures and exits 1 on any
// crash, leak, unserved request or unbounded RSS.
//
//   node dist/test/fuzz/run.js [--in-process N] [--live N] [--seed S] [--parallel N]
//     [--skip item1,item8,item12,item15] [--only TARGET-OR-CLASS]
//     [--processes gateway,gateway-users,gateway-workers,gateway-pp,bridge,bridge-users,start]
//     [--hold MS] [--batch N] [--rss-slack MIB] [--no-netns]
import { spawn, execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { runInProcess, type InProcessResult } from './inprocess.js';
import { KNOWN, runLive, type LiveResult } from './live.js';

export interface FuzzOptions {
  inProcess: number;
  live: number;
  seed: number;
  skip: Set<string>;
  parallel: number;
  only?: string;
  netns: boolean;
  rssSlackMiB?: number;
  processes?: string[];
  holdMs?: number;
  batch?: number;
}

export function parseArgs(argv: string[]): FuzzOptions {
  const o: FuzzOptions = { inProcess: 1_000_000, live: 100_000, seed: Date.now() % 1_000_000_007, skip: new Set(), parallel: 128, netns: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = (): string => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${a} needs a value`);
      return x;
    };
    if (a === '--in-process') o.inProcess = Number(v());
    else if (a === '--live') o.live = Number(v());
    else if (a === '--seed') o.seed = Number(v());
    else if (a === '--parallel') o.parallel = Number(v());
    else if (a === '--rss-slack') o.rssSlackMiB = Number(v());
    else if (a === '--only') o.only = v();
    else if (a === '--processes') o.processes = v().split(',');
    else if (a === '--hold') o.holdMs = Number(v());
    else if (a === '--batch') o.batch = Number(v());
    else if (a === '--no-netns') o.netns = false;
    else if (a === '--skip') {
      for (const s of v().split(',').filter(Boolean)) {
        if (!(s in KNOWN)) throw new Error(`--skip ${s}: known classes are ${Object.keys(KNOWN).join(', ')}`);
        o.skip.add(s);
      }
    } else throw new Error(`unknown option ${a}`);
  }
  for (const [k, n] of [['--in-process', o.inProcess], ['--live', o.live], ['--seed', o.seed], ['--parallel', o.parallel]] as const) {
    if (!Number.isInteger(n) || n < 0) throw new Error(`${k} wants a whole number, got ${n}`);
  }
  return o;
}

const NETNS_ENV = 'DUALSOCKS_FUZZ_NETNS';
/** In the namespace, loopback addresses whose packets are dropped: dials there time out. */
const BLACKHOLE = '127.0.0.96/28';

/** The drop rule for BLACKHOLE, or false where nft is not there (the inputs that need it are left out). */
function blackhole(ns: string): boolean {
  try {
    execFileSync('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], { input: `table ip dsfuzz { chain out { type filter hook output priority 0; ip daddr ${BLACKHOLE} drop; } }\n`, stdio: ['pipe', 'ignore', 'ignore'] });
    return true;
  } catch {
    return false;
  }
}

/** Runs the live part in a fresh namespace with only `lo` up: this same script, told so by the environment. */
function liveInNetns(o: FuzzOptions, write: (s: string) => void): Promise<LiveResult> {
  const ns = `dsfuzz-${process.pid}`;
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    execFileSync('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
  } catch (e) {
    execFileSync('ip', ['netns', 'del', ns]);
    throw e;
  }
  const args = [fileURLToPath(import.meta.url), '--in-process', '0', '--live', String(o.live), '--seed', String(o.seed), '--parallel', String(o.parallel), '--no-netns'];
  if (o.skip.size > 0) args.push('--skip', [...o.skip].join(','));
  if (o.rssSlackMiB !== undefined) args.push('--rss-slack', String(o.rssSlackMiB));
  if (o.only) args.push('--only', o.only);
  if (o.processes) args.push('--processes', o.processes.join(','));
  if (o.holdMs !== undefined) args.push('--hold', String(o.holdMs));
  if (o.batch !== undefined) args.push('--batch', String(o.batch));
  return new Promise((resolve, reject) => {
    const hole = blackhole(ns) ? { DUALSOCKS_FUZZ_BLACKHOLE: BLACKHOLE } : {};
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, [NETNS_ENV]: ns, ...hole } });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d: string) => {
      out += d;
      // progress lines pass through; the last line is the result
      const lines = out.split('\n');
      out = lines.pop()!;
      for (const l of lines) {
        if (l.startsWith('LIVE-RESULT ')) resultLine = l.slice('LIVE-RESULT '.length);
        else write(`${l}\n`);
      }
    });
    let resultLine = '';
    child.on('error', reject);
    child.on('close', (code) => {
      try {
        execFileSync('ip', ['netns', 'del', ns]);
      } catch {
        /* already gone */
      }
      if (!resultLine) return reject(new Error(`live fuzzing in ${ns} ended (${code}) without a result`));
      resolve(JSON.parse(resultLine) as LiveResult);
    });
  });
}

export interface FuzzResult {
  inProcess: InProcessResult | undefined;
  live: LiveResult | undefined;
  ok: boolean;
}

/** The whole run; `write` gets the printed figures. */
export async function fuzz(o: FuzzOptions, write: (s: string) => void = (s) => process.stdout.write(s)): Promise<FuzzResult> {
  const log = (s: string): void => write(`${s}\n`);
  const inner = process.env[NETNS_ENV] !== undefined;
  if (!inner) {
    log(`dualsocks fuzz: seed ${o.seed} (reproduce with --seed ${o.seed}), ${o.inProcess} in-process inputs, ${o.live} live inputs${o.skip.size ? `, skipping ${[...o.skip].join(', ')}` : ''}`);
    for (const s of o.skip) log(`  skipped known defect ${s}: ${KNOWN[s]}`);
  }
  let inProcess: InProcessResult | undefined;
  if (o.inProcess > 0) {
    log('in process:');
    inProcess = runInProcess(o.inProcess, o.seed, { only: o.only, log });
    for (const f of inProcess.failures) log(`  FAILURE in ${f.target} (seed ${f.seed}, path ${f.path}): ${f.error}\n    counterexample: ${f.counterexample.slice(0, 2000)}`);
  }
  let live: LiveResult | undefined;
  if (o.live > 0) {
    if (o.netns && !inner) {
      if (process.getuid?.() !== 0) throw new Error('the live part runs in its own network namespace and needs root (or pass --no-netns to run it on this host, only if no mutated destination can leave it)');
      live = await liveInNetns(o, write);
    } else {
      log('live:');
      live = await runLive({ total: o.live, seed: o.seed, skip: o.skip, parallel: o.parallel, rssSlackMiB: o.rssSlackMiB, only: o.only, processes: o.processes, holdMs: o.holdMs, batch: o.batch, log });
      if (inner) {
        // the parent prints the figures
        write(`LIVE-RESULT ${JSON.stringify(live)}\n`);
        return { inProcess, live, ok: true };
      }
    }
  }
  const crashes = live?.findings.filter((f) => f.kind === 'crash') ?? [];
  const leaks = live?.findings.filter((f) => f.kind === 'leak' || f.kind === 'rss') ?? [];
  const unserved = live?.findings.filter((f) => f.kind === 'unserved') ?? [];
  const stderr = live?.findings.filter((f) => f.kind === 'stderr') ?? [];
  const metrics = live?.findings.filter((f) => f.kind === 'metrics') ?? [];
  log('');
  log('figures:');
  if (inProcess) log(`  in process: ${inProcess.inputs} inputs in ${(inProcess.ms / 1000).toFixed(1)} s, ${inProcess.failures.length} property failures`);
  if (live) {
    log(`  live: ${live.inputs} inputs in ${(live.ms / 1000).toFixed(1)} s (${Object.entries(live.perClass).map(([k, v]) => `${k} ${v}`).join(', ')})`);
    log(`  answers of valid CONNECTs with early data checked: ${live.answersChecked} (not owed: ${live.answersLate}, the pieces came slower than --handshake-timeout)`);
    log(`  crashes ${crashes.length}, leaks ${leaks.length}, valid requests unserved ${unserved.length}, warnings/stack traces on stderr ${stderr.length}, /metrics unparsed ${metrics.length}`);
    for (const p of live.processes) {
      log(`  ${p.name.padEnd(16)} ${p.alive ? 'alive' : 'DEAD '}  fd baseline ${p.fdBaseline} after ${p.fdAfter}  RSS before ${p.rssBeforeMiB} MiB after ${p.rssAfterMiB} MiB (max ${p.rssMaxMiB} MiB)`);
    }
    for (const f of live.findings) log(`  ${f.kind.toUpperCase()} ${f.process}, batch ${f.batch} [${f.classes}]: ${f.detail}`);
  }
  const ok = (inProcess?.failures.length ?? 0) === 0 && crashes.length + leaks.length + unserved.length + stderr.length + metrics.length === 0;
  log(ok ? 'fuzz: OK' : `fuzz: FAILED (seed ${o.seed})`);
  return { inProcess, live, ok };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  let o: FuzzOptions;
  try {
    o = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`fuzz: ${(e as Error).message}\n`);
    process.exit(2);
  }
  fuzz(o).then(
    (r) => process.exit(r.ok ? 0 : 1),
    (e) => {
      process.stderr.write(`fuzz: ${(e as Error).stack}\n`);
      process.exit(2);
    },
  );
}
