// What every inbound protocol handler of the bridge gets: the way out (tunnels through the
// gateway pool), the state to report into, and the settings.
import type { Socket } from 'node:net';
import type { Settings } from '../../shared/rules/index.js';
import type { BridgeBindRecord, BridgeConnectRecord, BridgeSocksRecord } from '../log.js';
import type { RelayResult } from '../relay.js';
import type { Tunnel, UdpAssociation } from '../upstream/pool.js';
import { summary, type BridgeState, type EndFields, type Inbound, type Pending } from './state.js';
import type { HostPort } from '../../shared/net/address.js';
import type { ProxyAuth } from './auth.js';
import type { MetricsSource } from '../metrics.js';

export interface BridgeContext {
  state: BridgeState;
  /**
   * Opens a tunnel to host:port through a gateway; the name is never resolved here. `from` is the
   * client's address: only a client on this machine may be connected directly to a special address
   * (left out: treated as a client elsewhere).
   */
  open(host: string, port: number, via: Inbound, from?: string): Promise<Tunnel>;
  /** Opens a UDP association through a gateway (one at each hop of a chain); `signal`: the client left, give up. */
  associate?(signal?: AbortSignal): Promise<UdpAssociation>;
  /** Asks a gateway to BIND for host:port; the tunnel's first reply is where it listens. `signal`: the client left. */
  bind?(host: string, port: number, signal?: AbortSignal): Promise<Tunnel>;
  /**
   * Relays client <-> tunnel until both sides close, then releases the tunnel's place in its
   * gateway's count. The native relay may release both sockets at once: a caller keeps what it
   * needs for its log line, not the sockets.
   */
  relay(client: Socket, tunnel: Tunnel): Promise<RelayResult>;
  rules(): Settings;
  /** --idle-timeout: a UDP association with no datagram either way for this long ends (0: never). */
  idleTimeoutMs: number;
  /** The name a fake address stands for; null: a fake address mapped to nothing; undefined: not a fake address. */
  fakeName?(host: string): string | null | undefined;
  /** The port the bridge listens on (for PAC output when the Host header has none). */
  port: number;
  /** Proxy address written into the PAC; unset: the address the client fetched it from. */
  pacProxy?: HostPort | undefined;
  /** --users: who must log in, and the checks. */
  auth?: ProxyAuth | undefined;
  /** What GET /metrics answers (loopback clients only). */
  metrics?: MetricsSource | undefined;
}

/**
 * Relays to the end, then logs and leaves the open count. Not awaited, and the callback holds
 * only the log line and a summary of the tunnel: a tunnel the native relay took over keeps
 * neither socket alive in JavaScript while it idles.
 */
export function relayToEnd<R extends BridgeConnectRecord | BridgeSocksRecord | BridgeBindRecord>(ctx: BridgeContext, client: Socket, tunnel: Tunnel, line: Pending<R>, done: () => void, fields: Partial<R> = {}): void {
  const { state } = ctx;
  const t = summary(tunnel);
  void ctx.relay(client, tunnel).then((relayed) => {
    state.finish(line, { result: 'ok', ...fields }, { tunnel: t, relayed });
    done();
  });
}


const guards = new WeakMap<Socket, (e: unknown) => void>();

/**
 * One guard per accepted socket: an exception thrown by any of its event listeners (the SOCKS
 * and relay handlers run in them) or given to failInternally() ends that connection through
 * `internal`, never the process. No process-wide handler: the guard is the socket's emit.
 */
export function guardSocket(client: Socket, internal: (e: unknown) => void): void {
  guards.set(client, internal);
  const emit = client.emit;
  client.emit = function guardedEmit(this: Socket, event: string | symbol, ...args: unknown[]): boolean {
    try {
      return (emit as (event: string | symbol, ...args: unknown[]) => boolean).call(this, event, ...args);
    } catch (e) {
      internal(e);
      return false;
    }
  } as Socket['emit'];
}

/** A defect found outside the socket's own events (a handler's promise, an HTTP callback): ends that connection. */
export function failInternally(client: Socket, e: unknown): void {
  const internal = guards.get(client);
  if (internal) internal(e);
  else {
    // not an accepted socket (cannot happen): still only this connection
    process.stderr.write(`dualsocks bridge: internal error: ${e instanceof Error ? e.stack : String(e)}\n`);
    client.destroy();
  }
}
