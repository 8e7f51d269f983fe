// UDP through a chain of SOCKS5 gateways (RFC 1928 §7 at every hop, RFC 3089 §4 chains). A hop
// takes datagrams only from the host its control connection came from, so each hop gets an
// association of its own, asked for over a control connection that reaches it through the hops
// before it (CONNECT). A datagram for the last hop goes to the first hop's relay inside one SOCKS
// UDP header per further hop, each naming that hop's relay: every hop takes one header off and
// sends the rest on. Replies come back with a header per further hop added; unwrap() drops them.
import type { Socket as UdpSocket } from 'node:dgram';
import { RequestError } from '../../shared/errors.js';
import { canonicalHost, familyOf, formatIp, parseIp, type HostPort } from '../../shared/net/address.js';
import { decodeUdpLayers, encodeUdpLayers } from '../../shared/socks5/codec.js';
import { CMD } from '../../shared/socks5/constants.js';
import type { Hop } from './hops.js';
import { dialChain, type Socks5Dial } from './socks5.js';
import { bindUdp, MAX_UDP_PAYLOAD } from '../udp-socket.js';

export interface UdpChain {
  /** Connected to the first hop's relay: the kernel drops datagrams from anyone else. */
  readonly socket: UdpSocket;
  /** One control connection per hop, first hop first. */
  readonly controls: Socks5Dial[];
  /** Each hop's relay as the hop before it (or we, for the first) reaches it. */
  readonly relays: HostPort[];
  /** Headers naming the relays of hops 2..n: what goes before a datagram meant for the last hop. */
  readonly prefix: Uint8Array;
  /** The most a client datagram (header and all) may carry: one datagram to the first relay, less the prefix. */
  readonly room: number;
  /**
   * Sends a client datagram (header and all) toward the last hop, behind the further hops' headers;
   * false, and nothing sent, when the whole would not fit one datagram to the first relay.
   */
  send(msg: Uint8Array, cb?: (err: Error | null) => void): boolean;
  /** A datagram from the first relay without the headers the further hops added; null if they do not parse. */
  unwrap(msg: Buffer): Buffer | null;
  /** Resolves when the chain ends: a control connection closed, or close() was called. */
  readonly ended: Promise<void>;
  close(): void;
}

const UNSPECIFIED = new Set(['0.0.0.0', '::']);

/**
 * Where hop `i`'s relay is: its BND, or where its control connection went when BND is unspecified
 * (for the first hop the address we reached; for the others the hop's address as the URL names it,
 * which the hop before it reaches and, if a name, resolves).
 */
function relayOf(dial: Socks5Dial, hops: Hop[], i: number): HostPort {
  const ip = parseIp(dial.reply.host);
  if (ip && !UNSPECIFIED.has(formatIp(ip))) return { host: formatIp(ip), port: dial.reply.port };
  if (!ip && dial.reply.host) return { host: dial.reply.host, port: dial.reply.port };
  const host = i === 0 ? canonicalHost(dial.socket.remoteAddress ?? '') : hops[i]!.host;
  return { host, port: dial.reply.port };
}

async function bindConnected(to: HostPort): Promise<UdpSocket> {
  const ip = parseIp(to.host);
  if (!ip) throw new RequestError('ERR_CONNECT_FAILED', `first hop relay ${to.host} is not an address`);
  const s = await bindUdp(familyOf(ip), familyOf(ip) === 6 ? '::' : '0.0.0.0');
  await new Promise<void>((resolve) => s.connect(to.port, formatIp(ip), () => resolve()));
  return s;
}

/**
 * Opens an association at every hop of `hops` (one hop is the plain case: no headers added).
 * `signal` (the client went away) gives up and closes every control connection opened so far.
 */
export async function openUdpChain(hops: Hop[], timeoutMs: number, signal?: AbortSignal): Promise<UdpChain> {
  if (hops.length === 0) throw new RequestError('ERR_CONNECT_FAILED', 'no hops');
  const asked = await Promise.allSettled(hops.map((_, i) => dialChain(hops.slice(0, i + 1), { cmd: CMD.UDP_ASSOCIATE, host: '0.0.0.0', port: 0 }, timeoutMs, { signal })));
  const controls = asked.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const failed = asked.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed || signal?.aborted) {
    for (const c of controls) c.socket.destroy();
    throw failed ? failed.reason : new RequestError('ERR_CONNECT_FAILED', 'client went away');
  }
  const relays = controls.map((c, i) => relayOf(c, hops, i));
  let socket: UdpSocket;
  try {
    socket = await bindConnected(relays[0]!);
  } catch (e) {
    for (const c of controls) c.socket.destroy();
    throw e instanceof RequestError ? e : new RequestError('ERR_CONNECT_FAILED', `UDP socket toward ${relays[0]!.host}: ${(e as Error).message}`);
  }
  const prefix = encodeUdpLayers(relays.slice(1));
  const further = hops.length - 1;
  let closed = false;
  let resolveEnded!: () => void;
  const ended = new Promise<void>((r) => (resolveEnded = r));
  const close = (): void => {
    if (closed) return;
    closed = true;
    try {
      socket.close();
    } catch {
      /* already closed */
    }
    for (const c of controls) c.socket.destroy();
    resolveEnded();
  };
  // ICMP errors toward the first relay: UDP is best effort, the datagram is lost as on the wire;
  // the association itself ends with its control connections below
  socket.on('error', () => {});
  // an association lives as long as its control connection: the chain as long as every one
  for (const c of controls) {
    c.socket.on('data', () => {});
    c.socket.on('error', () => {}); // 'close' follows and ends the chain; its log line says how

    // half-open sockets: the hop's FIN is the end, not only the close
    c.socket.once('end', close);
    c.socket.once('close', close);
    c.socket.resume();
    // one may have gone while the others were being set up
    if (c.socket.destroyed || c.socket.readableEnded) close();
  }
  const room = MAX_UDP_PAYLOAD[familyOf(parseIp(relays[0]!.host)!)] - prefix.length;
  return {
    socket,
    controls,
    relays,
    prefix,
    room,
    ended,
    close,
    send(msg, cb) {
      if (msg.length > room) return false;
      socket.send(prefix.length > 0 ? [prefix, msg] : msg, cb);
      return true;
    },
    unwrap(msg) {
      const d = decodeUdpLayers(msg, further);
      return d.status === 'ok' ? msg.subarray(msg.length - d.msg.length) : null;
    },
  };
}
