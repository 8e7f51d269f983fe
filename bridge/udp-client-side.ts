// The client side of a UDP association, I/O-free in the manner of shared/socks5/server.ts: shared
// by the gateway's association (gateway/udp-session.ts) and the bridge's relay
// (local/udp-session.ts), so both take the same datagrams and count the same way. Here: whose
// datagrams are taken (RFC 1928 §7, shared/socks5/udp-source.ts), which headers go on (not
// malformed, no port 0, no fragment), replies toward the client (once its port is known, within
// its family's size), the counters with drops by reason, idle time and the end.
import type { Family } from '../shared/net/address.js';
import { decodeUdpHeader, type UdpHeader } from '../shared/socks5/codec.js';
import { UdpSourceFilter, udpIpKey } from '../shared/socks5/udp-source.js';
import { MAX_UDP_PAYLOAD } from './udp-socket.js';

export type DropReason = 'source' | 'malformed' | 'frag' | 'name' | 'policy' | 'size' | 'sender' | 'error' | 'upstream';

/** An association's counters, in the order the log line shows them. */
export type UdpCounters = {
  datagramsUp: number;
  bytesUp: number;
  datagramsDown: number;
  bytesDown: number;
  droppedSource: number;
  droppedMalformed: number;
  droppedFrag: number;
  droppedName: number;
  droppedPolicy: number;
  droppedSize: number;
  droppedSender: number;
  droppedError: number;
  droppedUpstream: number;
};

const DROP_COUNTER: Record<DropReason, keyof UdpCounters> = {
  source: 'droppedSource', malformed: 'droppedMalformed', frag: 'droppedFrag', name: 'droppedName',
  policy: 'droppedPolicy', size: 'droppedSize', sender: 'droppedSender', error: 'droppedError', upstream: 'droppedUpstream',
};

export type UdpClientCommand =
  /** Send the datagram, SOCKS header untouched, up the chain; report sentUp/upstreamFailed (or drop('size') if it did not fit). */
  | { type: 'upstream'; datagram: Buffer; bytes: number }
  /** Send to the client at `port` (its host is replyHost); report sentDown or drop('error'). */
  | { type: 'toClient'; data: Uint8Array[]; port: number; bytes: number }
  /** The association's last error, for the log line. */
  | { type: 'error'; code: string }
  /** Call idleTick() in `ms`. */
  | { type: 'timer'; ms: number }
  /** The association is over: close everything. */
  | { type: 'end'; why: string };

export interface UdpClientSideOptions {
  /** The control connection's peer address, and the port its request announced (0: none). */
  peer: string;
  announcedPort: number;
  /** The family of the client-side relay socket (the family replies are sent in). */
  family: Family;
  /** 0: never. */
  idleTimeoutMs: number;
}

export class UdpClientSide {
  readonly counters: UdpCounters = {
    datagramsUp: 0, bytesUp: 0, datagramsDown: 0, bytesDown: 0,
    droppedSource: 0, droppedMalformed: 0, droppedFrag: 0, droppedName: 0, droppedPolicy: 0,
    droppedSize: 0, droppedSender: 0, droppedError: 0, droppedUpstream: 0,
  };
  /** Where replies go: the control peer, with its scope when it is v6 link-local. */
  readonly replyHost: string;
  private readonly source: UdpSourceFilter;
  private lastActivity = 0;
  private over = false;

  constructor(private readonly side: UdpClientSideOptions) {
    this.source = new UdpSourceFilter(side.peer, side.announcedPort);
    this.replyHost = side.family === 6 && side.peer.includes('%') ? side.peer : udpIpKey(side.peer);
  }

  get ended(): boolean {
    return this.over;
  }

  /** The client's port, once announced or fixed by its first datagram. */
  get clientPort(): number | undefined {
    return this.source.port;
  }

  /** Datagrams dropped, all reasons together. */
  get dropped(): number {
    return (Object.keys(DROP_COUNTER) as DropReason[]).reduce((n, r) => n + this.counters[DROP_COUNTER[r]], 0);
  }

  /** The association is answered and open from `now`. */
  start(now: number): UdpClientCommand[] {
    this.lastActivity = now;
    return this.side.idleTimeoutMs > 0 && !this.over ? [{ type: 'timer', ms: this.side.idleTimeoutMs }] : [];
  }

  /** A reply through the upstream chain, unwrapped (null: not from the chain's last hop): passed on as it is. */
  upstreamReply(msg: Buffer | null, now: number): UdpClientCommand[] {
    const d = msg && decodeUdpHeader(msg);
    if (!msg || !d || d.status !== 'ok') return this.drop('sender');
    return this.toClient([msg], msg.length - d.msg.dataOffset, now);
  }

  /** The idle timer fired. */
  idleTick(now: number): UdpClientCommand[] {
    if (this.over) return [];
    const left = this.lastActivity + this.side.idleTimeoutMs - now;
    return left <= 0 ? this.end('idle') : [{ type: 'timer', ms: left }];
  }

  /** The control connection (or the chain's) ended, or the server is stopping. */
  end(why: string): UdpClientCommand[] {
    if (this.over) return [];
    this.over = true;
    return [{ type: 'end', why }];
  }

  /** A datagram went out to a destination or up the chain. */
  sentUp(bytes: number): void {
    this.counters.datagramsUp++;
    this.counters.bytesUp += bytes;
  }

  /** A datagram went out to the client. */
  sentDown(bytes: number): void {
    this.counters.datagramsDown++;
    this.counters.bytesDown += bytes;
  }

  /** Sending up the chain failed. */
  upstreamFailed(err: NodeJS.ErrnoException): UdpClientCommand[] {
    this.counters.droppedUpstream++;
    return [{ type: 'error', code: err.code ?? err.message }];
  }

  /** A datagram dropped for `reason` (also by the I/O layer: a socket error, no chain). */
  drop(reason: DropReason): UdpClientCommand[] {
    this.counters[DROP_COUNTER[reason]]++;
    return [];
  }

  /**
   * A datagram on the relay socket from address:port: its header when it is the client's and may
   * go on (activity from `now`), null when dropped. The first datagram from the peer IP fixes the
   * client's port even when it is dropped for its header.
   */
  protected admit(msg: Buffer, address: string, port: number, now: number): UdpHeader | null {
    if (!this.source.matches(address, port)) return this.refuse('source');
    this.source.fix(port);
    const d = decodeUdpHeader(msg);
    if (d.status !== 'ok' || d.msg.port === 0) return this.refuse('malformed');
    // no reassembly, as most servers: a fragment is dropped (RFC 1928 makes it optional)
    if (d.msg.frag !== 0) return this.refuse('frag');
    this.lastActivity = now;
    return d.msg;
  }

  /** `data` (header and payload) for the client, once its port is known and while the association lasts. */
  protected toClient(data: Uint8Array[], bytes: number, now: number): UdpClientCommand[] {
    const port = this.source.port;
    if (port === undefined || this.over) return this.drop('sender');
    if (data.reduce((n, b) => n + b.length, 0) > MAX_UDP_PAYLOAD[this.side.family]) return this.drop('size');
    this.lastActivity = now;
    return [{ type: 'toClient', data, port, bytes }];
  }

  private refuse(reason: DropReason): null {
    this.drop(reason);
    return null;
  }
}
