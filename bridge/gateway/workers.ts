// `dualsocks gateway --workers N`: N gateway processes behind the same listening addresses, so the
// relaying of many connections spreads over N cores. One connection is still served by one
// worker: a single stream does not get faster, many streams do. Each worker is a whole gateway
// with its own limits (--max-connections counts per worker) and logs its own lines.
// Where the native front runs (splice_relay.c), each worker listens on the port itself
// (SO_REUSEPORT: the kernel spreads connections over the workers' sockets) and accepts in the
// addon; the primary only holds the port, bound and not listening. Otherwise node:cluster's
// primary accepts and hands each connection round-robin to a worker over IPC.
import cluster, { type Worker } from 'node:cluster';
import { canonicalHost, type HostPort } from '../../shared/net/address.js';
import { bindListen } from '../native/loader.js';

/** The addresses a worker listens on itself (SO_REUSEPORT), as JSON, from its primary. */
export const WORKER_LISTEN_ENV = 'DUALSOCKS_WORKER_LISTEN';
/** What a worker listening on its own sends its primary (there is no cluster 'listening' then). */
export const WORKER_LISTENING = 'dualsocks:listening';

// the primary's reservations: open as long as it runs
const reserved: number[] = [];

/**
 * Binds (without listening) each address with SO_REUSEPORT so the workers can listen there;
 * port 0 becomes the port the kernel chose. With `defaults`, a family this host lacks is skipped.
 */
export function reservePorts(addrs: HostPort[], defaults: boolean): HostPort[] {
  const out: HostPort[] = [];
  for (const a of addrs) {
    try {
      const r = bindListen(a.host, a.port, true, false);
      reserved.push(r.fd);
      out.push({ host: canonicalHost(a.host), port: r.port });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (defaults && (code === 'EADDRNOTAVAIL' || code === 'EAFNOSUPPORT')) continue;
      throw Object.assign(new Error(`listen ${code ?? 'failed'}: ${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`), { code });
    }
  }
  if (out.length === 0) throw Object.assign(new Error(`no address to listen on (${addrs.map((a) => a.host).join(', ')})`), { code: 'EADDRNOTAVAIL' });
  return out;
}

/**
 * In the primary with `workers` > 1: forks the workers (each runs the same command line and
 * returns false here, so it goes on to serve), stops them on SIGTERM/SIGINT, passes SIGHUP on,
 * and returns true.
 * With `workers` ≤ 1, or in a worker, returns false: serve in this process.
 */
export function startWorkers(workers: number, say: (line: string) => void, opts: { listen?: HostPort[] } = {}): boolean {
  if (workers <= 1 || !cluster.isPrimary) return false;
  const alive = new Set<Worker>();
  // a worker listens only once its own SIGHUP handler is in (cli.ts); one still starting would
  // die of a SIGHUP, and reads the files anyway
  const listening = new Set<Worker>();
  cluster.on('listening', (w) => listening.add(w));
  cluster.on('message', (w, msg) => {
    if (msg === WORKER_LISTENING) listening.add(w);
  });
  const env = opts.listen ? { [WORKER_LISTEN_ENV]: JSON.stringify(opts.listen) } : undefined;
  const fork = (): Worker => cluster.fork(env);
  let stopping = false;
  for (let i = 0; i < workers; i++) alive.add(fork());
  cluster.on('exit', (w, code, signal) => {
    alive.delete(w);
    listening.delete(w);
    if (stopping) {
      if (alive.size === 0) process.exit(0);
      return;
    }
    // a worker that dies takes only its own connections; a new one takes its place
    say(`dualsocks gateway worker ${w.process.pid} exited (${code ?? signal}); starting another`);
    alive.add(fork());
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
