// What the benchmark compares: ways for the client to reach the origin. "direct" is plain TCP;
// the others are relays started for the run: our gateway, our bridge→gateway chain (spoken to
// with SOCKS5 or HTTP CONNECT), and the peers from Debian (Dante, microsocks, Privoxy→Dante,
// see peers.ts). SOCKS5 is spoken with the project's own client (bridge/upstream/socks5.ts).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { dialSocks5 } from '../../bridge/upstream/socks5.js';
import { startCli, type Running } from '../helpers/process.js';
import type { Proxy } from './iperf.js';
import { processTree, raiseNofile, startDante, startMicrosocks, startPrivoxy, type Daemon } from './peers.js';

export interface HostPort {
  host: string;
  port: number;
}

/** A started target: opens a connection to `dst` and hands it over paused, relay ready. */
export interface Route {
  name: string;
  /** The processes doing the relaying (their descendants count too). */
  pids: number[];
  dial(dst: HostPort, timeoutMs: number): Promise<Socket>;
  /** The same route as proxychains reaches it (iperf3), or null for direct. */
  proxy: Proxy | null;
  stop(): Promise<void>;
}

/** What a started target needs from the bench. */
export interface StartOptions {
  /** File descriptor limit for relay processes (applied with prlimit where allowed). */
  nofile: number;
}

export interface Target {
  name: string;
  /** Starts it, or returns a reason it is not available on this machine. */
  start(opts: StartOptions): Promise<Route | string>;
}

export const DIRECT = 'direct';
export const GATEWAY = 'dualsocks gateway';
export const GATEWAY_W2 = 'dualsocks gateway ×2 workers';
/** The third point of the workers scaling: one worker per core, but at least 4 (on 2 cores: more workers than cores). */
export const WORKERS_N = Math.max(4, cpus().length);
export const GATEWAY_WN = `dualsocks gateway ×${WORKERS_N} workers`;
export const DANTE = 'Dante';
export const MICROSOCKS = 'microsocks';
export const BRIDGE_SOCKS = 'dualsocks bridge→gateway, SOCKS5';
export const BRIDGE_HTTP = 'dualsocks bridge→gateway, HTTP CONNECT';
export const PRIVOXY = 'Privoxy→Dante, HTTP CONNECT';

/** A TCP connection with Nagle off, paused, or an error after `timeoutMs`. */
export function tcp(dst: HostPort, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: dst.host, port: dst.port, noDelay: true, allowHalfOpen: true });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`connect to ${dst.host}:${dst.port} timed out`));
    }, timeoutMs);
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      s.pause();
      resolve(s);
    });
  });
}

const HEAD_END = Buffer.from('\r\n\r\n');

/** An HTTP CONNECT tunnel through `proxy`; bytes after the response head are given back. */
export async function dialHttpConnect(proxy: HostPort, dst: HostPort, timeoutMs: number): Promise<Socket> {
  const s = await tcp(proxy, timeoutMs);
  const authority = `${dst.host.includes(':') ? `[${dst.host}]` : dst.host}:${dst.port}`;
  return new Promise((resolve, reject) => {
    let head: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => fail(new Error(`CONNECT via ${proxy.host}:${proxy.port} timed out`)), timeoutMs);
    const fail = (e: Error): void => {
      clearTimeout(timer);
      s.destroy();
      reject(e);
    };
    const onData = (c: Buffer): void => {
      head = head.length ? Buffer.concat([head, c]) : c;
      const end = head.indexOf(HEAD_END);
      if (end < 0) {
        if (head.length > 8192) fail(new Error('CONNECT response head too long'));
        return;
      }
      s.off('data', onData);
      s.off('error', fail);
      s.off('end', onEnd);
      clearTimeout(timer);
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(head.subarray(0, end).toString('latin1'));
      if (status?.[1] !== '200') return fail(new Error(`CONNECT ${authority}: ${head.subarray(0, Math.min(end, 80)).toString('latin1')}`));
      s.pause();
      const rest = head.subarray(end + 4);
      if (rest.length) s.unshift(rest);
      resolve(s);
    };
    const onEnd = (): void => fail(new Error(`CONNECT ${authority}: proxy closed`));
    s.on('data', onData);
    s.on('error', fail);
    s.on('end', onEnd);
    s.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
    s.resume();
  });
}

export const directTarget: Target = {
  name: DIRECT,
  start: async () => ({ name: DIRECT, pids: [], dial: tcp, proxy: null, stop: async () => {} }),
};

function socks5Route(name: string, hop: HostPort, pids: number[], stop: () => Promise<void>): Route {
  return { name, pids, dial: async (dst, timeoutMs) => (await dialSocks5(hop, dst, { timeoutMs })).socket, proxy: { scheme: 'socks5', ...hop }, stop };
}

function daemonRoute(name: string, d: Daemon, dial: 'socks5' | 'http'): Route {
  const hop = { host: d.host, port: d.port };
  if (dial === 'socks5') return socks5Route(name, hop, d.pids, d.stop);
  return { name, pids: d.pids, dial: (dst, timeoutMs) => dialHttpConnect(hop, dst, timeoutMs), proxy: { scheme: 'http', ...hop }, stop: d.stop };
}

/** Our CLI, its descriptor limit then raised with `prlimit`, so it may hold 10,000 tunnels. */
async function startOurs(args: string[], nofile: number): Promise<Running> {
  const r = await startCli(args);
  if (nofile > 0) await raiseNofile(processTree([r.proc.pid!]), nofile);
  return r;
}

function gatewayTarget(name: string, workers: number): Target {
  return {
    name,
    async start(opts) {
      const args = ['gateway', '--listen', '127.0.0.1:0', '--allow-private', '--quiet', '--max-connections', '100000'];
      if (workers > 1) args.push('--workers', String(workers));
      const gw = await startOurs(args, opts.nofile);
      const l = gw.listening[0]!;
      return socks5Route(name, l, [gw.proc.pid!], () => gw.stop());
    },
  };
}

/** `dualsocks gateway` as an operator runs it, on loopback, logging nothing per connection. */
export const dualsocksGateway = gatewayTarget(GATEWAY, 1);
export const dualsocksGatewayWorkers = gatewayTarget(GATEWAY_W2, 2);
export const dualsocksGatewayWorkersN = gatewayTarget(GATEWAY_WN, WORKERS_N);

/** `dualsocks bridge` in front of `dualsocks gateway`; every destination goes to the gateway. */
function bridgeTarget(name: string, dial: 'socks5' | 'http'): Target {
  return {
    name,
    async start(opts) {
      const gw = await startOurs(['gateway', '--listen', '127.0.0.1:0', '--allow-private', '--quiet', '--max-connections', '100000'], opts.nofile);
      const g = gw.listening[0]!;
      // the default rules send loopback direct; here everything must cross the chain
      const dir = mkdtempSync(join(tmpdir(), 'dualsocks-bench-'));
      const rules = join(dir, 'rules.json');
      writeFileSync(rules, JSON.stringify({ mode: 'all', bypass: [] }));
      let br: Running;
      try {
        br = await startOurs(['bridge', '--listen', '127.0.0.1:0', '--gateway', `socks5://${g.host}:${g.port}`, '--rules', rules, '--health-interval', '3600', '--quiet'], opts.nofile);
      } catch (e) {
        await gw.stop();
        throw e;
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
      const b = br.listening[0]!;
      const stop = async (): Promise<void> => {
        await br.stop();
        await gw.stop();
      };
      const pids = [br.proc.pid!, gw.proc.pid!];
      if (dial === 'socks5') return socks5Route(name, b, pids, stop);
      return { name, pids, dial: (dst, timeoutMs) => dialHttpConnect(b, dst, timeoutMs), proxy: { scheme: 'http', host: b.host, port: b.port }, stop };
    },
  };
}

export const bridgeSocks = bridgeTarget(BRIDGE_SOCKS, 'socks5');
export const bridgeHttp = bridgeTarget(BRIDGE_HTTP, 'http');

export const danteTarget: Target = {
  name: DANTE,
  async start(opts) {
    const d = await startDante(opts.nofile);
    return typeof d === 'string' ? d : daemonRoute(DANTE, d, 'socks5');
  },
};

export const microsocksTarget: Target = {
  name: MICROSOCKS,
  async start(opts) {
    const d = await startMicrosocks(opts.nofile);
    return typeof d === 'string' ? d : daemonRoute(MICROSOCKS, d, 'socks5');
  },
};

/** Privoxy as the HTTP proxy in front of its own Dante: the usual HTTP-to-SOCKS pair. */
export const privoxyTarget: Target = {
  name: PRIVOXY,
  async start(opts) {
    const dante = await startDante(opts.nofile);
    if (typeof dante === 'string') return dante;
    const p = await startPrivoxy({ host: dante.host, port: dante.port }, opts.nofile);
    if (typeof p === 'string') {
      await dante.stop();
      return p;
    }
    return {
      name: PRIVOXY,
      pids: [...p.pids, ...dante.pids],
      dial: (dst, timeoutMs) => dialHttpConnect(p, dst, timeoutMs),
      proxy: { scheme: 'http', host: p.host, port: p.port },
      stop: async () => {
        await p.stop();
        await dante.stop();
      },
    };
  },
};
