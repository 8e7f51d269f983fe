// `dualsocks gateway --workers N`: N gateway processes behind the same listening addresses
// (node:cluster; the primary accepts and hands connections round-robin to the workers), so the
// relaying of many connections spreads over N cores. One connection is still served by one
// worker: a single stream does not get faster, many streams do. Each worker is a whole gateway
// with its own limits (--max-connections counts per worker) and logs its own lines.
import cluster, { type Worker } from 'node:cluster';

/**
 * In the primary with `workers` > 1: forks the workers (each runs the same command line and
 * returns false here, so it goes on to serve), stops them on SIGTERM/SIGINT, passes SIGHUP on,
 * and returns true.
 * With `workers` ≤ 1, or in a worker, returns false: serve in this process.
 */
export function startWorkers(workers: number, say: (line: string) => void): boolean {
  if (workers <= 1 || !cluster.isPrimary) return false;
  const alive = new Set<Worker>();
  // a worker listens only once its own SIGHUP handler is in (cli.ts); one still starting would
  // die of a SIGHUP, and reads the files anyway
  const listening = new Set<Worker>();
  cluster.on('listening', (w) => listening.add(w));
  let stopping = false;
  for (let i = 0; i < workers; i++) alive.add(cluster.fork());
  cluster.on('exit', (w, code, signal) => {
    alive.delete(w);
    listening.delete(w);
    if (stopping) {
      if (alive.size === 0) process.exit(0);
      return;
    }
    // a worker that dies takes only its own connections; a new one takes its place
    say(`dualsocks gateway worker ${w.process.pid} exited (${code ?? signal}); starting another`);
    alive.add(cluster.fork());
  });
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    if (alive.size === 0) process.exit(0);
    for (const w of alive) w.process.kill('SIGTERM');
    setTimeout(() => process.exit(0), 5000).unref();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  // each worker re-reads its files
  process.on('SIGHUP', () => {
    for (const w of listening) w.process.kill('SIGHUP');
  });
  return true;
}
