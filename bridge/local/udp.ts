// UDP ASSOCIATE for the bridge's SOCKS5 clients: one association at a gateway per local one (at
// each hop, when the gateway is a chain), datagrams passed on with their SOCKS header untouched,
// so a DOMAINNAME in it is resolved by the last gateway, never here. The client's TCP control
// connection closing, any of the gateway's, or --idle-timeout without a datagram either way, ends
// both sides.
//
// The decisions are UdpRelaySession's (./udp-session.ts, I/O-free, unit-tested without sockets);
// this file opens the association and the client-side socket and carries out its commands.
import type { RemoteInfo, Socket as UdpSocket } from 'node:dgram';
import type { Socket } from 'node:net';
import { DualsocksError, RequestError, SocksProtocolError } from '../../shared/errors.js';
import { canonicalHost, familyOf, formatIp, joinHostPort, parseIp, type Family, type HostPort } from '../../shared/net/address.js';
import type { Request } from '../../shared/socks5/codec.js';
import { udpIpKey } from '../../shared/socks5/udp-source.js';
import type { UdpAssociation } from '../upstream/pool.js';
import type { UdpClientCommand } from '../udp-client-side.js';
import { bindUdp } from '../udp-socket.js';
import type { BridgeContext } from './context.js';
import { UdpRelaySession } from './udp-session.js';

export async function serveUdpAssociate(
  ctx: BridgeContext,
  client: Socket,
  request: Pick<Request, 'host' | 'port'>,
  answer: (bound: HostPort | DualsocksError) => void,
): Promise<void> {
  const line = ctx.state.begin('socks5', client, request.host, request.port, { cmd: 'udp' });
  const localRaw = client.localAddress ?? '127.0.0.1';
  const local = parseIp(udpIpKey(localRaw));
  // The control connection carries nothing after the request, and its end (FIN or close) is the
  // association's end, also while the gateway is still being asked: watched from now on.
  const gone = new AbortController();
  const leave = (): void => gone.abort();
  client.on('data', () => {});
  client.on('error', () => {}); // 'close' follows: leave() ends the association, whose log line says how
  client.once('end', leave);
  client.once('close', leave);
  if (client.readableEnded || client.destroyed) leave();
  client.resume();
  const left = (): void => {
    ctx.state.finish(line, { result: 'ERR_CLIENT_CLOSED' });
    client.destroy();
  };
  let assoc: UdpAssociation | undefined;
  let toClient: UdpSocket | undefined;
  try {
    if (!ctx.associate) throw new SocksProtocolError('ERR_SOCKS_COMMAND', 'UDP ASSOCIATE without a gateway pool');
    if (!local) throw new RequestError('ERR_CONNECT_FAILED', `no local address for the relay (${localRaw})`);
    assoc = await ctx.associate(gone.signal);
    if (!gone.signal.aborted) toClient = await bindUdp(familyOf(local), familyOf(local) === 6 ? localRaw : formatIp(local));
  } catch (e) {
    assoc?.chain.close();
    if (gone.signal.aborted) return left();
    const err = e instanceof DualsocksError ? e : new RequestError('ERR_CONNECT_FAILED', String(e));
    ctx.state.finish(line, { result: err.code, rep: err.rep });
    if (!client.destroyed) answer(err);
    return;
  }
  if (gone.signal.aborted || !toClient) {
    assoc.chain.close();
    toClient?.close();
    return left();
  }
  new UdpRelay(ctx, line, client, assoc, toClient, request.port, familyOf(local)).start(gone.signal);
  const bound = toClient.address();
  answer({ host: canonicalHost(bound.address), port: bound.port });
}

/** The I/O of one relay: its client-side socket, the chain, the log line; every decision is the UdpRelaySession's. */
class UdpRelay {
  private readonly session: UdpRelaySession;
  private idleTimer: NodeJS.Timeout | undefined;
  private lastError: string | undefined;

  constructor(
    private readonly ctx: BridgeContext,
    private readonly line: ReturnType<BridgeContext['state']['begin']>,
    private readonly client: Socket,
    private readonly assoc: UdpAssociation,
    private readonly down: UdpSocket,
    announcedPort: number,
    family: Family,
  ) {
    this.session = new UdpRelaySession({
      peer: client.remoteAddress ?? '',
      // RFC 1928: DST.ADDR/DST.PORT announce where the client will send from; 0 means "not known yet"
      announcedPort,
      family,
      // a timer of our own, as at the gateway: one with a longer timeout (or none) would otherwise keep
      // this association's sockets and its place there open
      idleTimeoutMs: ctx.idleTimeoutMs,
      upstreamRoom: assoc.chain.room,
      fakeName: (host) => ctx.fakeName?.(host),
    });
  }

  /** Datagrams both ways until the control connection (`gone`) or the gateway's chain ends. */
  start(gone: AbortSignal): void {
    const { chain } = this.assoc;
    this.down.on('message', (msg: Buffer, rinfo: RemoteInfo) => this.onClientDatagram(msg, rinfo));
    // ICMP errors toward the client or the first relay: a lost datagram, as on the wire
    this.down.on('error', () => this.session.drop('error'));
    chain.socket.on('error', () => this.session.drop('error'));
    chain.socket.on('message', (raw: Buffer) => this.onUpstreamDatagram(raw));
    gone.addEventListener('abort', () => this.onEnd('closed'));
    void chain.ended.then(() => this.onEnd('gateway'));
    this.apply(this.session.start(Date.now()));
  }

  private onClientDatagram(msg: Buffer, rinfo: RemoteInfo): void {
    this.apply(this.session.clientDatagram(msg, rinfo.address, rinfo.port, Date.now()));
  }

  private onUpstreamDatagram(raw: Buffer): void {
    this.apply(this.session.upstreamReply(this.assoc.chain.unwrap(raw), Date.now()));
  }

  private onEnd(why: string): void {
    this.apply(this.session.end(why));
  }

  private onIdleTick(): void {
    this.apply(this.session.idleTick(Date.now()));
  }

  private apply(commands: UdpClientCommand[]): void {
    for (const c of commands) {
      switch (c.type) {
        case 'upstream': {
          const sent = this.assoc.chain.send(c.datagram, (err) => {
            if (err) this.apply(this.session.upstreamFailed(err));
            else this.session.sentUp(c.bytes);
          });
          if (!sent) this.session.drop('size');
          break;
        }
        case 'toClient':
          this.down.send(c.data, c.port, this.session.replyHost, (err) => (err ? this.session.drop('error') : this.session.sentDown(c.bytes)));
          break;
        case 'error':
          this.lastError = c.code;
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

  private teardown(why: string): void {
    const { chain, gateway } = this.assoc;
    const relay = chain.relays[0]!;
    const { counters, dropped } = this.session;
    const hops = chain.relays.length > 1 ? { hops: chain.relays.length } : {};
    const lastError = this.lastError !== undefined ? { lastError: this.lastError } : {};
    this.ctx.state.finish(this.line, { gateway, bound: joinHostPort(relay.host, relay.port), ...hops, result: 'ok', end: why, ...counters, dropped, ...lastError });
    clearTimeout(this.idleTimer);
    try {
      this.down.close();
    } catch {
      /* already closed */
    }
    chain.close();
    this.client.destroy();
  }
}
