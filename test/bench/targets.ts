// What the benchmark compares: ways for the client to reach the origin. "direct" is plain TCP;
// every other target is a SOCKS5 server started for the run and spoken to with the project's
// own client (bridge/upstream/socks5.ts), so no SOCKS byte here is written by hand. Adding a
// peer (Dante, microsocks, …) is one more socks5Target() with a function that starts it.
import { connect, type Socket } from 'node:net';
import { dialSocks5 } from '../../bridge/upstream/socks5.js';
import { startCli } from '../helpers/process.js';

export interface HostPort {
  host: string;
  port: number;
}

/** A running SOCKS5 server: where it listens, its process (for CPU figures) and how to stop it. */
export interface Socks5Server extends HostPort {
  pid?: number | undefined;
  stop(): Promise<void>;
}

/** A started target: opens a connection to `dst` and hands it over paused, relay ready. */
export interface Route {
  name: string;
  /** The process doing the relaying, if any. */
  pid?: number | undefined;
  dial(dst: HostPort, timeoutMs: number): Promise<Socket>;
  stop(): Promise<void>;
}

export interface Target {
  name: string;
  start(): Promise<Route>;
}

export const DIRECT = 'direct';

export const directTarget: Target = {
  name: DIRECT,
  start: async () => ({
    name: DIRECT,
    dial: (dst, timeoutMs) =>
      new Promise((resolve, reject) => {
        const s = connect({ host: dst.host, port: dst.port, noDelay: true, allowHalfOpen: true });
        const timer = setTimeout(() => {
          s.destroy();
          reject(new Error(`direct connect to ${dst.host}:${dst.port} timed out`));
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
      }),
    stop: async () => {},
  }),
};

/** A target reached through a SOCKS5 server (CONNECT by IP, no auth). */
export function socks5Target(name: string, startServer: () => Promise<Socks5Server>): Target {
  return {
    name,
    async start() {
      const server = await startServer();
      const hop = { host: server.host, port: server.port };
      return {
        name,
        pid: server.pid,
        dial: async (dst, timeoutMs) => (await dialSocks5(hop, dst, { timeoutMs })).socket,
        stop: () => server.stop(),
      };
    },
  };
}

/** `dualsocks gateway` as an operator runs it, on loopback, logging nothing per connection. */
export const dualsocksGateway: Target = socks5Target('dualsocks gateway', async () => {
  const gw = await startCli(['gateway', '--listen', '127.0.0.1:0', '--allow-private', '--quiet']);
  const l = gw.listening[0]!;
  return { host: l.host, port: l.port, pid: gw.proc.pid, stop: () => gw.stop() };
});
