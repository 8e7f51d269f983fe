// UDP ASSOCIATE (RFC 1928 §7, RFC 3089 §5.7): the client's datagrams reach the relay socket in
// the client's family, and leave from a socket in the destination's family, so a v4 client can
// talk to a v6 server by name. Names are resolved here, with the same policy as CONNECT.
//
// Safer than Dante's default: replies are taken only from addresses this association sent to,
// and datagrams only from the control connection's peer IP (and the port it announced; with
// none announced, the first datagram fixes the port). Anything that does not fit is dropped
// and counted, never thrown. Destinations that --upstream would carry go through associations of
// our own along the chain (bridge/upstream/udp-chain.ts: one at each hop, since a hop takes
// datagrams only from the hop before it), with the SOCKS header, name and all, passed on
// untouched; with no such association possible they are dropped, never sent from here, which
// would bypass the route.
//
// The decisions are UdpSession's (./udp-session.ts, I/O-free, unit-tested without sockets); this
// file binds the sockets, runs the timer and the chain, and carries out its commands.
import type { RemoteInfo, Socket as UdpSocket } from 'node:dgram';
import { DualsocksError, RequestError } from '../../shared/errors.js';
import { canonicalHost, familyOf, formatIp, parseIp, type Family, type Ip } from '../../shared/net/address.js';
import { udpIpKey } from '../../shared/socks5/udp-source.js';
import { redactedUrl } from '../upstream/hops.js';
import { hostAddresses } from '../host-addresses.js';
import { bindUdp } from '../udp-socket.js';
import { localAddressToward } from './bind.js';
import { openUdpChain, type UdpChain } from '../upstream/udp-chain.js';
import { UdpSession, type UdpCommand, type UdpCounters } from './udp-session.js';
import { goesUpstream } from './chain.js';
import type { UdpContext } from './context.js';

/** The addresses outbound sockets bind to, per family (the kernel picks the port). */
const ANY: Record<Family, string> = { 4: '0.0.0.0', 6: '::' };

export async function serveUdp(ctx: UdpContext): Promise<void> {
  const relay = await openRelay(ctx);
  if (!relay) return;
  const why = await new UdpAssociation(ctx, relay.socket, relay.family).run();
  ctx.finish('ok', why);
}

/**
 * Where the client-side relay socket binds, in the client's family: the address the client
 * reached us on; behind a balancer (--proxy-protocol) that is the balancer's side, so the
 * --udp-advertise address when it is this host's (any address when it is not: a NAT's), else
 * the address this host sends to the client from.
 */
async function relayAddress(ctx: UdpContext): Promise<{ family: Family; host: string }> {
  const localRaw = ctx.client.localAddress ?? '';
  const localIp = parseIp(udpIpKey(localRaw));
  if (!localIp) throw new RequestError('ERR_CONNECT_FAILED', `no local address for the relay (${localRaw})`);
  const clientIp = parseIp(ctx.source.host);
  const family = clientIp ? familyOf(clientIp) : familyOf(localIp);
  const advertised = ctx.gateway.config.udpAdvertise[family];
  if (advertised) return { family, host: hostAddresses().has(advertised) ? formatIp(advertised) : ANY[family] };
  // a v6 link-local address needs its scope to bind
  if (familyOf(localIp) === family) return { family, host: family === 4 ? formatIp(localIp) : localRaw };
  return { family, host: await localAddressToward(clientIp!) };
}

/** The client-side relay socket (see relayAddress); null if the request is gone. */
async function openRelay(ctx: UdpContext): Promise<{ socket: UdpSocket; family: Family } | null> {
  let socket: UdpSocket;
  let family: Family;
  try {
    const at = await relayAddress(ctx);
    family = at.family;
    socket = await bindUdp(family, at.host);
  } catch (e) {
    if (e instanceof DualsocksError) throw e;
    throw new RequestError('ERR_CONNECT_FAILED', `UDP relay socket: ${(e as Error).message}`);
  }
  if (ctx.signal.aborted) {
    socket.close();
    return null;
  }
  return { socket, family };
}

/** The I/O of one association: sockets, timer, chain; every decision is the UdpSession's. */
class UdpAssociation {
  private readonly session: UdpSession;
  private readonly out: Partial<Record<Family, Promise<UdpSocket | null>>> = {};
  /** Our association at the upstream gateway, opened with the first datagram for it; null: none possible. */
  private upstream: Promise<UdpChain | null> | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private finished!: (why: string) => void;

  constructor(
    private readonly ctx: UdpContext,
    private readonly relay: UdpSocket,
    private readonly family: Family,
  ) {
    const cfg = ctx.gateway.config;
    // behind a balancer the datagrams come from the client itself, named by the PROXY header
    const peer = ctx.source.host === canonicalHost(ctx.client.remoteAddress ?? '') ? ctx.client.remoteAddress ?? '' : ctx.source.host;
    this.session = new UdpSession({
      peer,
      // RFC 1928: DST.ADDR/DST.PORT announce where the client will send from; 0 means "not known yet"
      announcedPort: ctx.request.port,
      family,
      idleTimeoutMs: cfg.idleTimeoutMs,
      prefer: cfg.prefer,
      goesUpstream: (host, port) => goesUpstream(cfg, host, port),
      denyDestination: (ip) => ctx.gateway.denyDestination(ip),
    });
  }

  /** Answers the request, relays until the association ends; the log line's extra fields. */
  async run(): Promise<UdpCounters & { end: string }> {
    const { ctx, relay } = this;
    const { client } = ctx;
    const done = new Promise<string>((r) => (this.finished = r));
    relay.on('message', (msg, rinfo) => this.onClientDatagram(msg, rinfo));
    relay.on('error', () => this.session.drop('error'));
    const bound = relay.address();
    const advertised = ctx.gateway.config.udpAdvertise[this.family];
    ctx.succeed({ host: advertised ? formatIp(advertised) : canonicalHost(bound.address), port: bound.port });
    // the control connection carries nothing after the reply; its end is the association's end
    client.on('data', () => {});
    client.once('end', () => this.onControlEnd('closed'));
    client.once('close', () => this.onControlEnd('closed'));
    client.once('error', (e: NodeJS.ErrnoException) => this.onControlEnd(e.code ?? 'error'));
    ctx.signal.addEventListener('abort', () => this.onControlEnd('closed'), { once: true });
    // a FIN read while the request was being served (it came with the request, or while the
    // credentials were checked) was emitted before these listeners: the association is over
    if (client.readableEnded || client.destroyed) this.onControlEnd('closed');
    client.resume();
    this.apply(this.session.start(Date.now()));
    const why = await done;
    return { ...this.session.counters, end: why };
  }

  private onClientDatagram(msg: Buffer, rinfo: RemoteInfo): void {
    this.apply(this.session.clientDatagram(msg, rinfo.address, rinfo.port, Date.now()));
  }

  private onRemoteDatagram(msg: Buffer, rinfo: RemoteInfo): void {
    this.apply(this.session.remoteDatagram(msg, rinfo.address, rinfo.port, Date.now()));
  }

  private onUpstreamDatagram(chain: UdpChain, raw: Buffer): void {
    this.apply(this.session.upstreamReply(chain.unwrap(raw), Date.now()));
  }

  private onResolved(id: number, outcome: { ips: Ip[] } | { error: unknown }): void {
    this.apply(this.session.resolved(id, outcome));
  }

  private onControlEnd(why: string): void {
    this.apply(this.session.end(why));
  }

  private onIdleTick(): void {
    this.apply(this.session.idleTick(Date.now()));
  }

  private apply(commands: UdpCommand[]): void {
    for (const c of commands) {
      switch (c.type) {
        case 'resolve':
          this.ctx.gateway.addressesFor(c.host).then(
            (ips) => this.onResolved(c.id, { ips }),
            (error: unknown) => this.onResolved(c.id, { error }),
          );
          break;
        case 'send':
          this.toDestination(c).catch(() => this.session.drop('error'));
          break;
        case 'upstream':
          this.toUpstream(c.datagram, c.bytes).catch(() => this.session.drop('error'));
          break;
        case 'toClient':
          this.relay.send(c.data, c.port, this.session.replyHost, (err) => (err ? this.session.drop('error') : this.session.sentDown(c.bytes)));
          break;
        case 'error':
          this.ctx.record.lastError = c.code;
          break;
        case 'timer':
          this.idleTimer = setTimeout(() => this.onIdleTick(), c.ms);
          break;
        case 'end':
          this.teardown(c.why);
          break;
      }
    }
  }

  private async toDestination(c: { family: Family; host: string; port: number; payload: Buffer }): Promise<void> {
    const s = await this.outbound(c.family);
    if (!s || this.session.ended) {
      this.session.drop('error');
      return;
    }
    s.send(c.payload, c.port, c.host, (err) => {
      if (err) this.apply(this.session.destinationFailed(c.host, err));
      else this.session.sentUp(c.payload.length);
    });
  }

  private async toUpstream(datagram: Buffer, bytes: number): Promise<void> {
    const u = await (this.upstream ??= this.openUpstream());
    if (!u || this.session.ended) {
      this.session.drop('upstream');
      return;
    }
    const sent = u.send(datagram, (err) => {
      if (err) this.apply(this.session.upstreamFailed(err));
      else this.session.sentUp(bytes);
    });
    if (!sent) this.session.drop('size');
  }

  /** The socket datagrams of family `f` leave from, bound with the first of them; null: none possible. */
  private outbound(f: Family): Promise<UdpSocket | null> {
    return (this.out[f] ??= bindUdp(f, ANY[f]).then(
      (s) => {
        if (this.session.ended) {
          safeClose(s);
          return null;
        }
        s.on('message', (msg, rinfo) => this.onRemoteDatagram(msg, rinfo));
        s.on('error', () => this.session.drop('error'));
        return s;
      },
      () => null,
    ));
  }

  /** Our association through the --upstream chain (one at each hop), replies read from it. */
  private async openUpstream(): Promise<UdpChain | null> {
    const { config: cfg } = this.ctx.gateway;
    this.ctx.record.upstream = redactedUrl(cfg.upstream!);
    let chain: UdpChain;
    try {
      chain = await openUdpChain(cfg.upstream!, cfg.connectTimeoutMs);
    } catch (e) {
      this.ctx.record.lastError = e instanceof DualsocksError ? e.code : String(e);
      return null;
    }
    if (this.session.ended) {
      chain.close();
      return null;
    }
    chain.socket.on('message', (m) => this.onUpstreamDatagram(chain, m));
    chain.socket.on('error', () => this.session.drop('error'));
    // the association lives as long as the chain's control connections; then nothing more goes there
    void chain.ended.then(() => {
      this.upstream = Promise.resolve(null);
    });
    return chain;
  }

  private teardown(why: string): void {
    clearTimeout(this.idleTimer);
    for (const s of [this.relay, ...Object.values(this.out)]) {
      if (s instanceof Promise) void s.then((x) => x && safeClose(x));
      else if (s) safeClose(s);
    }
    void this.upstream?.then((u) => u?.close());
    this.ctx.client.destroy();
    this.finished(why);
  }
}

function safeClose(s: UdpSocket): void {
  try {
    s.close();
  } catch {
    /* already closed: nothing to release */
  }
}
