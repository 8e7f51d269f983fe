// The decisions of a UDP association (bridge/gateway/udp.ts), I/O-free in the manner of
// shared/socks5/server.ts: each event (a datagram from the client, a reply, a name resolved, the
// control connection's end, an idle tick) goes in, commands for the I/O layer come out. Here:
// the source filter, the name → addresses and policy cache, the size limits per family, which
// peers may answer, and the drop accounting by reason. Sockets, timers and the chain are the
// I/O layer's; it reports back what they did (sent, failed) so the counters stay here.
import { DualsocksError, RequestError } from '../../shared/errors.js';
import { familyOf, formatIp, parseIp, type Family, type Ip } from '../../shared/net/address.js';
import { decodeUdpHeader, encodeUdpHeader } from '../../shared/socks5/codec.js';
import { UdpSourceFilter, udpIpKey } from '../../shared/socks5/udp-source.js';
import { interleave } from '../upstream/direct.js';
import { MAX_UDP_PAYLOAD } from '../udp-socket.js';

/** Bounds per association, so one client cannot grow the gateway's memory without limit. */
export const MAX_PENDING = 256;
export const MAX_NAMES = 1024;
export const MAX_PEERS = 4096;
/** Send errors after which the next address of the name is tried. */
const UNREACHABLE = new Set(['ENETUNREACH', 'EHOSTUNREACH', 'EADDRNOTAVAIL', 'EAFNOSUPPORT']);

export type DropReason = 'source' | 'malformed' | 'frag' | 'name' | 'policy' | 'size' | 'sender' | 'error' | 'upstream';

/** The association's counters, in the order the log line shows them. */
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

export type UdpCommand =
  /** Resolve `host` (a name or a literal) and answer with resolved(id, …). */
  | { type: 'resolve'; id: number; host: string }
  /** Send the payload to host:port from the association's socket of `family`; report sent/destinationFailed. */
  | { type: 'send'; family: Family; host: string; port: number; payload: Buffer }
  /** Send the datagram, SOCKS header untouched, up the --upstream chain; report sentUp/upstreamFailed. */
  | { type: 'upstream'; datagram: Buffer; bytes: number }
  /** Send to the client at `port` (its host is the control peer's); report sentDown or drop('error'). */
  | { type: 'toClient'; data: Uint8Array[]; port: number; bytes: number }
  /** The request's last error, for the log line. */
  | { type: 'error'; code: string }
  /** Call idleTick() in `ms`. */
  | { type: 'timer'; ms: number }
  /** The association is over: close everything. */
  | { type: 'end'; why: string };

export interface UdpSessionOptions {
  /** The control connection's peer address, and the port its request announced (0: none). */
  peer: string;
  announcedPort: number;
  /** The family of the client-side relay socket (the family replies are sent in). */
  family: Family;
  idleTimeoutMs: number;
  prefer: 'ipv6' | 'ipv4';
  /** Whether --upstream carries host:port. */
  goesUpstream(host: string, port: number): boolean;
  /** Why a destination address is refused; null when allowed. */
  denyDestination(ip: Ip): unknown;
}

type Waiting = { payload: Buffer; port: number };
type Outcome = { ips: Ip[] } | { error: unknown };
interface Lookup {
  host: string;
  outcome?: Outcome;
  waiting: Waiting[];
}

export class UdpSession {
  readonly counters: UdpCounters = {
    datagramsUp: 0, bytesUp: 0, datagramsDown: 0, bytesDown: 0,
    droppedSource: 0, droppedMalformed: 0, droppedFrag: 0, droppedName: 0, droppedPolicy: 0,
    droppedSize: 0, droppedSender: 0, droppedError: 0, droppedUpstream: 0,
  };
  private readonly source: UdpSourceFilter;
  /** Names (not literals: policy may change with the interfaces) → their lookup, kept. */
  private readonly names = new Map<string, Lookup>();
  /** Lookups still waiting for resolved(). */
  private readonly lookups = new Map<number, Lookup>();
  private nextId = 1;
  private pending = 0;
  private readonly unreachable = new Set<string>();
  /** host|port pairs this association sent to: the only ones whose replies are taken. */
  private readonly sentTo = new Set<string>();
  private lastActivity = 0;
  private over = false;

  constructor(private readonly opts: UdpSessionOptions) {
    this.source = new UdpSourceFilter(opts.peer, opts.announcedPort);
  }

  get ended(): boolean {
    return this.over;
  }

  /** The client's port, once announced or fixed by its first datagram. */
  get clientPort(): number | undefined {
    return this.source.port;
  }

  /** The association is answered and open from `now`. */
  start(now: number): UdpCommand[] {
    this.lastActivity = now;
    return this.opts.idleTimeoutMs > 0 && !this.over ? [{ type: 'timer', ms: this.opts.idleTimeoutMs }] : [];
  }

  /** A datagram on the relay socket from address:port. */
  clientDatagram(msg: Buffer, address: string, port: number, now: number): UdpCommand[] {
    if (!this.source.matches(address, port)) return this.drop('source');
    this.source.fix(port);
    const d = decodeUdpHeader(msg);
    if (d.status !== 'ok' || d.msg.port === 0) return this.drop('malformed');
    // no reassembly, as most servers: a fragment is dropped (RFC 1928 makes it optional)
    if (d.msg.frag !== 0) return this.drop('frag');
    this.lastActivity = now;
    // what --upstream carries goes there, header and name untouched, or nowhere
    if (this.opts.goesUpstream(d.msg.host, d.msg.port)) {
      return [{ type: 'upstream', datagram: msg, bytes: msg.length - d.msg.dataOffset }];
    }
    if (this.pending >= MAX_PENDING) return this.drop('error');
    const waiting = { payload: msg.subarray(d.msg.dataOffset), port: d.msg.port };
    return this.lookup(d.msg.host, waiting);
  }

  /** The answer to a 'resolve' command. */
  resolved(id: number, outcome: Outcome): UdpCommand[] {
    const l = this.lookups.get(id);
    if (!l) return [];
    this.lookups.delete(id);
    l.outcome = 'ips' in outcome ? this.allowed(l.host, outcome.ips) : outcome;
    this.pending -= l.waiting.length;
    const out: UdpCommand[] = [];
    for (const w of l.waiting.splice(0)) out.push(...(this.over ? this.drop('error') : this.decide(l.outcome, w)));
    return out;
  }

  /** A datagram on one of the outbound sockets, from address:port. */
  remoteDatagram(msg: Buffer, address: string, port: number, now: number): UdpCommand[] {
    const host = udpIpKey(address);
    const clientPort = this.source.port;
    if (!this.sentTo.has(`${host}|${port}`) || clientPort === undefined || this.over) return this.drop('sender');
    const header = encodeUdpHeader({ host, port });
    if (header.length + msg.length > MAX_UDP_PAYLOAD[this.opts.family]) return this.drop('size');
    this.lastActivity = now;
    return [{ type: 'toClient', data: [header, msg], port: clientPort, bytes: msg.length }];
  }

  /** A reply through the upstream chain, unwrapped (null: not from the chain's last hop): passed on as it is. */
  upstreamReply(msg: Buffer | null, now: number): UdpCommand[] {
    const d = msg && decodeUdpHeader(msg);
    const clientPort = this.source.port;
    if (!msg || !d || d.status !== 'ok' || clientPort === undefined || this.over) return this.drop('sender');
    if (msg.length > MAX_UDP_PAYLOAD[this.opts.family]) return this.drop('size');
    this.lastActivity = now;
    return [{ type: 'toClient', data: [msg], port: clientPort, bytes: msg.length - d.msg.dataOffset }];
  }

  /** The idle timer fired. */
  idleTick(now: number): UdpCommand[] {
    if (this.over) return [];
    const left = this.lastActivity + this.opts.idleTimeoutMs - now;
    return left <= 0 ? this.end('idle') : [{ type: 'timer', ms: left }];
  }

  /** The control connection ended (or the gateway is stopping). */
  end(why: string): UdpCommand[] {
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

  /** Sending to a destination failed; an unreachable address makes the next one of its name be tried. */
  destinationFailed(host: string, err: NodeJS.ErrnoException): UdpCommand[] {
    this.counters.droppedError++;
    const code = err.code ?? '';
    if (UNREACHABLE.has(code)) this.unreachable.add(host);
    return [{ type: 'error', code: code || err.message }];
  }

  /** Sending up the chain failed. */
  upstreamFailed(err: NodeJS.ErrnoException): UdpCommand[] {
    this.counters.droppedUpstream++;
    return [{ type: 'error', code: err.code ?? err.message }];
  }

  /** A datagram dropped for `reason` (also by the I/O layer: a socket error, no chain). */
  drop(reason: DropReason): UdpCommand[] {
    this.counters[DROP_COUNTER[reason]]++;
    return [];
  }

  private lookup(host: string, w: Waiting): UdpCommand[] {
    const key = host.toLowerCase();
    let l = this.names.get(key);
    if (l?.outcome) return this.decide(l.outcome, w);
    this.pending++;
    if (l) {
      l.waiting.push(w);
      return [];
    }
    if (this.names.size >= MAX_NAMES) this.names.clear();
    l = { host, waiting: [w] };
    if (!parseIp(host)) this.names.set(key, l);
    const id = this.nextId++;
    this.lookups.set(id, l);
    return [{ type: 'resolve', id, host }];
  }

  /** Allowed addresses, best first, or the policy's refusal. */
  private allowed(host: string, ips: Ip[]): Outcome {
    const allowed = ips.filter((ip) => this.opts.denyDestination(ip) === null);
    if (allowed.length === 0) return { error: new RequestError('ERR_POLICY_DESTINATION', host) };
    return { ips: interleave(allowed, this.opts.prefer) };
  }

  private decide(outcome: Outcome, w: Waiting): UdpCommand[] {
    if ('error' in outcome) {
      const e = outcome.error;
      this.drop(e instanceof DualsocksError && e.code === 'ERR_POLICY_DESTINATION' ? 'policy' : 'name');
      return [{ type: 'error', code: e instanceof DualsocksError ? e.code : String(e) }];
    }
    const ip = outcome.ips.find((x) => !this.unreachable.has(formatIp(x))) ?? outcome.ips[0]!;
    const family = familyOf(ip);
    if (w.payload.length > MAX_UDP_PAYLOAD[family]) return this.drop('size');
    const host = formatIp(ip);
    if (this.sentTo.size >= MAX_PEERS) this.sentTo.clear();
    this.sentTo.add(`${host}|${w.port}`);
    return [{ type: 'send', family, host, port: w.port, payload: w.payload }];
  }
}
