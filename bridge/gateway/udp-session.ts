// The decisions of a UDP association (bridge/gateway/udp.ts), I/O-free in the manner of
// shared/socks5/server.ts: each event (a datagram from the client, a reply, a name resolved, the
// control connection's end, an idle tick) goes in, commands for the I/O layer come out. The
// client side (source filter, header checks, replies toward the client, counters, idle time) is
// ../udp-client-side.ts, shared with the bridge's relay; here: the name → addresses and policy
// cache, the size limits per destination family, which peers may answer. Sockets, timers and
// the chain are the I/O layer's; it reports back what they did (sent, failed) so the counters
// stay here.
import { DualsocksError, RequestError } from '../../shared/errors.js';
import { familyOf, formatIp, parseIp, type Family, type Ip } from '../../shared/net/address.js';
import { encodeUdpHeader } from '../../shared/socks5/codec.js';
import { udpIpKey } from '../../shared/socks5/udp-source.js';
import { interleave } from '../upstream/direct.js';
import { MAX_UDP_PAYLOAD } from '../udp-socket.js';
import { UdpClientSide, type UdpClientCommand, type UdpClientSideOptions } from '../udp-client-side.js';

export type { DropReason, UdpCounters } from '../udp-client-side.js';

/** Bounds per association, so one client cannot grow the gateway's memory without limit. */
export const MAX_PENDING = 256;
export const MAX_NAMES = 1024;
export const MAX_PEERS = 4096;
/** Send errors after which the next address of the name is tried. */
const UNREACHABLE = new Set(['ENETUNREACH', 'EHOSTUNREACH', 'EADDRNOTAVAIL', 'EAFNOSUPPORT']);

export type UdpCommand =
  | UdpClientCommand
  /** Resolve `host` (a name or a literal) and answer with resolved(id, …). */
  | { type: 'resolve'; id: number; host: string }
  /** Send the payload to host:port from the association's socket of `family`; report sent/destinationFailed. */
  | { type: 'send'; family: Family; host: string; port: number; payload: Buffer };

export interface UdpSessionOptions extends UdpClientSideOptions {
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

/** The gateway's association: the client side (source, headers, replies, counters, idle, end) plus destinations. */
export class UdpSession extends UdpClientSide {
  /** Names (not literals: policy may change with the interfaces) → their lookup, kept. */
  private readonly names = new Map<string, Lookup>();
  /** Lookups still waiting for resolved(). */
  private readonly lookups = new Map<number, Lookup>();
  private nextId = 1;
  private pending = 0;
  private readonly unreachable = new Set<string>();
  /** host|port pairs this association sent to: the only ones whose replies are taken. */
  private readonly sentTo = new Set<string>();

  constructor(private readonly opts: UdpSessionOptions) {
    super(opts);
  }

  /** A datagram on the relay socket from address:port. */
  clientDatagram(msg: Buffer, address: string, port: number, now: number): UdpCommand[] {
    const h = this.admit(msg, address, port, now);
    if (!h) return [];
    // what --upstream carries goes there, header and name untouched, or nowhere
    if (this.opts.goesUpstream(h.host, h.port)) {
      return [{ type: 'upstream', datagram: msg, bytes: msg.length - h.dataOffset }];
    }
    if (this.pending >= MAX_PENDING) return this.drop('error');
    const waiting = { payload: msg.subarray(h.dataOffset), port: h.port };
    return this.lookup(h.host, waiting);
  }

  /** The answer to a 'resolve' command. */
  resolved(id: number, outcome: Outcome): UdpCommand[] {
    const l = this.lookups.get(id);
    if (!l) return [];
    this.lookups.delete(id);
    l.outcome = 'ips' in outcome ? this.allowed(l.host, outcome.ips) : outcome;
    this.pending -= l.waiting.length;
    const out: UdpCommand[] = [];
    for (const w of l.waiting.splice(0)) out.push(...(this.ended ? this.drop('error') : this.decide(l.outcome, w)));
    return out;
  }

  /** A datagram on one of the outbound sockets, from address:port. */
  remoteDatagram(msg: Buffer, address: string, port: number, now: number): UdpCommand[] {
    const host = udpIpKey(address);
    if (!this.sentTo.has(`${host}|${port}`)) return this.drop('sender');
    return this.toClient([encodeUdpHeader({ host, port }), msg], msg.length, now);
  }

  /** Sending to a destination failed; an unreachable address makes the next one of its name be tried. */
  destinationFailed(host: string, err: NodeJS.ErrnoException): UdpCommand[] {
    this.counters.droppedError++;
    const code = err.code ?? '';
    if (UNREACHABLE.has(code)) this.unreachable.add(host);
    return [{ type: 'error', code: code || err.message }];
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
