// Starts dualsocks CLI commands as real processes (optionally inside a network namespace) and
// waits for their "listening on" lines, so tests use the program exactly as an operator would.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { splitHostPort } from '../../shared/net/address.js';

export const CLI = fileURLToPath(new URL('../../bridge/cli.js', import.meta.url));

export interface Running {
  proc: ChildProcess;
  /** Addresses from the "listening on" lines, in order. */
  listening: { host: string; port: number }[];
  /** Lines printed on stdout (one JSON log record per finished connection). */
  stdout: string[];
  stderr: string[];
  /** Parsed JSON log records seen so far. */
  records(): Record<string, unknown>[];
  /** Resolves when `count` records exist (the gateway logs after a connection ends). */
  waitRecords(count: number, timeoutMs?: number): Promise<Record<string, unknown>[]>;
  /** Resolves when a stderr line matches. */
  waitStderr(re: RegExp, timeoutMs?: number): Promise<string>;
  /** Resolves with the first record that satisfies `pred`. */
  waitRecord(pred: (r: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  stop(): Promise<void>;
}

/** Bound on a stop: the CLI's own grace period (5 s) and then some. */
const STOP_BOUND_MS = 15_000;

/** `uid`: run as that user (and group), through setpriv(1), as a service's own user would. */
export async function startCli(args: string[], opts: { netns?: string; expectListeners?: number; env?: NodeJS.ProcessEnv; uid?: number } = {}): Promise<Running> {
  const node = opts.uid === undefined ? [process.execPath] : ['setpriv', `--reuid=${opts.uid}`, `--regid=${opts.uid}`, '--clear-groups', process.execPath];
  const cmd = opts.netns ? 'ip' : node[0]!;
  const argv = opts.netns ? ['netns', 'exec', opts.netns, ...node, CLI, ...args] : [...node.slice(1), CLI, ...args];
  const proc = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
  // a test file that ends early (failure, runner timeout) must not leave its servers running
  const reap = (): void => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  };
  process.once('exit', reap);
  proc.once('exit', () => process.off('exit', reap));
  const stdout: string[] = [];
  const stderr: string[] = [];
  const listening: { host: string; port: number }[] = [];
  const want = opts.expectListeners ?? 1;
  const waiters: (() => void)[] = [];
  const wake = (): void => waiters.splice(0).forEach((w) => w());
  const lines = (stream: NodeJS.ReadableStream, into: string[], onLine?: (l: string) => void): void => {
    let pending = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      pending += chunk;
      let i: number;
      while ((i = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, i);
        pending = pending.slice(i + 1);
        into.push(line);
        onLine?.(line);
        wake();
      }
    });
  };
  lines(proc.stdout!, stdout);
  lines(proc.stderr!, stderr, (l) => {
    const m = / listening on (\S+)/.exec(l);
    if (m) {
      const hp = splitHostPort(m[1]!);
      if (hp) listening.push(hp);
    }
  });
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => { wake(); resolve(code); }));
  const records = (): Record<string, unknown>[] =>
    stdout.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
  const until = (pred: () => boolean, timeoutMs: number, what: string): Promise<void> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}; stderr:\n${stderr.join('\n')}`)), timeoutMs);
      const check = (): void => {
        if (pred()) {
          clearTimeout(timer);
          resolve();
        } else if (proc.exitCode !== null || proc.signalCode !== null) {
          clearTimeout(timer);
          reject(new Error(`dualsocks ${args[0]} exited (${proc.exitCode ?? proc.signalCode}) before ${what}; stderr:\n${stderr.join('\n')}`));
        } else waiters.push(check);
      };
      check();
    });
  await until(() => listening.length >= want, 15000, `${want} listener(s)`);
  return {
    proc,
    listening,
    stdout,
    stderr,
    records,
    async waitRecords(count, timeoutMs = 10000) {
      await until(() => records().length >= count, timeoutMs, `${count} log record(s)`);
      return records();
    },
    async waitStderr(re, timeoutMs = 10000) {
      await until(() => stderr.some((l) => re.test(l)), timeoutMs, `stderr matching ${re}`);
      return stderr.find((l) => re.test(l))!;
    },
    async waitRecord(pred, timeoutMs = 10000) {
      await until(() => records().some(pred), timeoutMs, 'a matching log record');
      return records().find(pred)!;
    },
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        // the CLI exits within its own grace period; a hang here is a defect to report, not to wait out
        const hung = setTimeout(() => proc.kill('SIGKILL'), STOP_BOUND_MS);
        await exited;
        clearTimeout(hung);
        if (proc.signalCode === 'SIGKILL') throw new Error(`dualsocks ${args.join(' ')}: still running ${STOP_BOUND_MS} ms after SIGTERM`);
      }
    },
  };
}

/** Runs a command to completion and returns its output (stdout as a Buffer). */
export function run(cmd: string, args: string[], opts: { netns?: string; input?: string | Buffer; timeoutMs?: number } = {}): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  const [c, a] = opts.netns ? ['ip', ['netns', 'exec', opts.netns, cmd, ...args]] : [cmd, args];
  return new Promise((resolve, reject) => {
    const p = spawn(c, a as string[], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 60000);
    p.stdout.on('data', (d: Buffer) => out.push(d));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr: err });
    });
    // a short-lived child may exit before reading: its closed stdin is not our failure
    p.stdin.on('error', () => {});
    if (opts.input !== undefined) p.stdin.end(opts.input);
    else p.stdin.end();
  });
}
