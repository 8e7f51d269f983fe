// What a command handler (connect, bind, udp, ftp, chain) depends on: its request's context and a
// narrow view of the gateway's services. server.ts builds both; handlers never import server.ts,
// which imports them.
import type { Socket } from 'node:net';
import type { DualsocksError } from '../../shared/errors.js';
import type { Ip } from '../../shared/net/address.js';
import type { Request } from '../../shared/socks5/codec.js';
import type { Rep } from '../../shared/socks5/constants.js';
import type { GatewayBindRecord, GatewayConnectRecord, GatewayRequestRecord, GatewayUdpRecord } from '../log.js';
import { holdWhile, relay, type RelayGroup } from '../relay.js';
import type { PipeliningCache } from '../upstream/pipelining.js';
import type { GatewayConfig, HostPort } from './config.js';
import type { FtpDataSlots } from './ftp-slots.js';

/** The gateway as a handler sees it (implemented by Gateway). */
export interface GatewayServices {
  readonly config: GatewayConfig;
  /** Tunnels being relayed; closing the gateway ends them. */
  readonly relays: RelayGroup;
  /** Which --upstream first hops take a pipelined handshake. */
  readonly pipelining: PipeliningCache;
  /** FTP passive data connections a CONNECT may claim. */
  readonly ftpSlots: FtpDataSlots<ConnectContext>;
  /** Why the destination address is refused, or null. */
  denyDestination(ip: Ip): string | null;
  /** Addresses resolved for a request, IP literals (also inside DOMAINNAME) taken as they are. */
  addressesFor(host: string): Promise<Ip[]>;
}

/**
 * What a command handler gets: the request, the client socket, its log record (typed by the
 * command: `R`), and ways to answer.
 */
export interface RequestContext<R extends GatewayRequestRecord = GatewayRequestRecord> {
  readonly gateway: GatewayServices;
  readonly client: Socket;
  /**
   * The client's address: the socket's peer, or the client a --proxy-protocol balancer's header
   * names. Client checks (FTP slots, UDP pinning) use this, never client.remoteAddress.
   */
  readonly source: HostPort;
  readonly request: Request;
  readonly record: R;
  readonly signal: AbortSignal;
  /** Sends the success reply; returns relay data the client sent early. */
  succeed(bound: HostPort): Uint8Array[];
  fail(error: DualsocksError): void;
  /** A further reply after succeed() (BIND's second reply). */
  reply(rep: Rep, bound: HostPort): void;
  /** Logs the end of a granted request (once), with the fields known only at its end. */
  finish(result: string, extra?: Partial<R>): void;
  /**
   * Wraps a callback the handler registers (socket events, timers) in the connection's guard:
   * an unexpected exception ends this connection with ERR_INTERNAL, never the process.
   */
  guard<A extends unknown[]>(fn: (...args: A) => void): (...args: A) => void;
}

export type ConnectContext = RequestContext<GatewayConnectRecord>;
export type BindContext = RequestContext<GatewayBindRecord>;
export type UdpContext = RequestContext<GatewayUdpRecord>;

/**
 * Relays client and `remote` to the end, then finishes the request (its log line), without the
 * handler waiting: what the relay's end needs is only `finish`, so an idle tunnel keeps neither
 * the request context nor the sockets alive. `overhead`: bytes on `remote` that were SOCKS talk
 * with upstream hops, left out of the counts.
 */
export function relayAndFinish(ctx: ConnectContext | BindContext, remote: Socket, overhead = { up: 0, down: 0 }): void {
  const { finish } = ctx;
  void relay(ctx.client, remote, { idleTimeoutMs: ctx.gateway.config.idleTimeoutMs, group: ctx.gateway.relays }).then((r) =>
    finish('ok', { bytesUp: r.up - overhead.up, bytesDown: r.down - overhead.down, end: r.end }),
  );
}

/** holdWhile() for a request's client, also ended by the client's close. */
export function whileHoldingClient<T>(ctx: RequestContext, held: Uint8Array[], wait: Promise<T>): Promise<T | null> {
  return holdWhile(ctx.client, held, wait, ctx.signal);
}
