// FTP translation's I/O: feeds control lines to the translator, writes what it returns, and
// owns the data listeners and data relays. Only a CONNECT to an --ftp-port whose client and
// destination families differ comes here; everything else is a plain relay.
//
// A passive data connection reaches the gateway one of two ways: straight to the listener named
// in the 227/229, or, from a SOCKS client such as curl, as a CONNECT through the gateway to the
// control connection's host (or the 227 address) and the listener's port. Both claim the same
// one-shot slot; the CONNECT form is why pending slots are registered per gateway.
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { canonicalHost, familyOf, formatIp, parseIp, type Family, type Ip } from '../../shared/net/address.js';
import { relay } from '../relay.js';
import { connectTcp } from '../upstream/direct.js';
import type { GatewayConfig, HostPort } from './config.js';
import { FtpSession, type FtpCommand, type FtpSide } from './ftp-session.js';
import { encodeLine, type DataAddress } from './ftp-translate.js';
import type { ConnectContext } from './context.js';
import type { FtpDataSlots, PassiveSlot as Slot } from './ftp-slots.js';

/** How long a data listener waits for its one connection. */
export const FTP_DATA_WAIT_MS = 30_000;

const ipOf = (s: Socket, which: 'remote' | 'local'): Ip | null => parseIp(canonicalHost((which === 'remote' ? s.remoteAddress : s.localAddress) ?? ''));

/** Whether this CONNECT's control connection is translated. */
export function ftpTranslates(cfg: GatewayConfig, source: HostPort, destination: Ip, port: number): boolean {
  if (!cfg.ftpPorts.includes(port)) return false;
  const c = parseIp(source.host);
  return c !== null && familyOf(c) !== familyOf(destination);
}

interface DataListener {
  server: Server;
  timer: NodeJS.Timeout;
}

type PassiveSlot = Slot<ConnectContext>;

export async function serveFtp(ctx: ConnectContext, remote: Socket, early: Uint8Array[]): Promise<void> {
  const { client, gateway } = ctx;
  const clientIp = parseIp(ctx.source.host);
  const serverIp = ipOf(remote, 'remote');
  if (!clientIp || !serverIp) {
    client.destroy();
    remote.destroy();
    ctx.finish('ok', { end: 'closed', ftp: 'translated' });
    return;
  }
  return await new FtpControl(ctx, remote, gateway.ftpSlots, new FtpSession({ clientIp, serverIp })).run(early);
}

/**
 * The I/O of one translated control connection: one method per socket or listener event, each
 * handing the event to the FtpSession and carrying out the commands it returns.
 */
class FtpControl {
  private readonly client: Socket;
  private readonly cfg: GatewayConfig;
  private readonly slotOf = new Map<number, PassiveSlot>();
  private readonly controlHost: string;
  private readonly listeners = new Map<number, DataListener>();
  private readonly dataSockets = new Set<Socket>();
  private readonly transfers = new Set<Promise<unknown>>();
  private readonly stats = { ftpData: 0, ftpDataUp: 0, ftpDataDown: 0 };
  private end = 'closed';
  private done = false;
  private serverBlocked = false;
  private clientBlocked = false;
  private closedSockets = 0;

  constructor(
    private readonly ctx: ConnectContext,
    private readonly remote: Socket,
    /** The gateway's pending passive slots, which this session's client-facing listeners join. */
    private readonly slots: FtpDataSlots<ConnectContext>,
    private readonly session: FtpSession,
  ) {
    this.client = ctx.client;
    this.cfg = ctx.gateway.config;
    this.controlHost = ctx.request.host.toLowerCase();
  }

  /** Serves the session until both control sockets have closed and the transfers have reported. */
  run(early: Uint8Array[]): Promise<void> {
    const { client, remote, cfg } = this;
    return new Promise<void>((resolve) => {
      const onError = (e: NodeJS.ErrnoException): void => this.shutdown(e.code ?? 'error');
      client.on('error', onError);
      remote.on('error', onError);
      client.once('close', () => this.onControlClose(resolve));
      remote.once('close', () => this.onControlClose(resolve));
      client.on('end', () => this.apply(this.session.ended('client')));
      remote.on('end', () => this.apply(this.session.ended('server')));
      if (cfg.idleTimeoutMs > 0) {
        client.setTimeout(cfg.idleTimeoutMs);
        client.on('timeout', () => this.apply(this.session.idle(this.dataSockets.size > 0)));
      }
      client.on('data', (chunk: Buffer) => this.apply(this.session.fromClient(chunk)));
      remote.on('data', (chunk: Buffer) => this.apply(this.session.fromServer(chunk)));
      for (const chunk of early) this.apply(this.session.fromClient(Buffer.from(chunk)));
      // a FIN that came with the request (or with the server's greeting) fired 'end' already
      if (client.readableEnded) this.apply(this.session.ended('client'));
      if (remote.readableEnded) this.apply(this.session.ended('server'));
      this.flow();
    });
  }

  private onControlClose(resolve: () => void): void {
    if (++this.closedSockets < 2) {
      this.shutdown();
      return;
    }
    for (const c of this.session.closed()) if (c.type === 'closeData') this.closeListener(c.id);
    this.done = true;
    // the control connection's end ends its transfers too
    for (const s of this.dataSockets) s.destroy();
    // a relay reports its byte counts when it ends, which may be just after this (the native one
    // reports from its own thread): the control connection's line waits for them
    void Promise.allSettled([...this.transfers]).then(() => {
      const { remote, end, stats } = this;
      this.ctx.finish('ok', { bytesUp: remote.bytesWritten, bytesDown: remote.bytesRead, end, ftp: 'translated', ...stats });
      resolve();
    });
  }

  private apply(commands: FtpCommand[]): void {
    if (this.done) return;
    for (const c of commands) {
      switch (c.type) {
        case 'toClient':
          this.send(this.client, c.line);
          break;
        case 'toServer':
          this.send(this.remote, c.line);
          break;
        case 'listen':
          this.openListener(c.id, c.side, c.family);
          break;
        case 'offerSlot':
          this.offerSlot(c.id, c.listen, c.peer);
          break;
        case 'closeData':
          this.closeListener(c.id);
          break;
        case 'end':
          this.passEnd(c.to === 'client' ? this.client : this.remote, c.rest);
          break;
        case 'shutdown':
          this.shutdown(c.why);
          return;
        case 'rearmIdle':
          this.client.setTimeout(this.cfg.idleTimeoutMs);
          break;
        case 'joinData':
        case 'refuseData':
          break; // only for a data connection at hand: see onDataConnection and claim
      }
    }
    this.flow();
  }

  private shutdown(why?: string): void {
    if (why && this.end === 'closed') this.end = why;
    this.client.destroy();
    this.remote.destroy();
  }

  /** A FIN passes on after any unterminated last line, as the plain relay would pass the bytes. */
  private passEnd(to: Socket, rest: string): void {
    if (rest !== '' && !to.destroyed) to.write(Buffer.from(rest, 'latin1'));
    to.end();
  }

  /** The client is read only while the session takes commands and the server keeps up. */
  private flow(): void {
    if (this.done) return;
    if (this.session.busy || this.serverBlocked) this.client.pause();
    else this.client.resume();
    if (this.clientBlocked) this.remote.pause();
    else this.remote.resume();
  }

  private send(to: Socket, line: string): void {
    if (to.destroyed || to.writableEnded) return;
    if (to.write(encodeLine(line))) return;
    const isServer = to === this.remote;
    if (isServer ? this.serverBlocked : this.clientBlocked) return;
    if (isServer) this.serverBlocked = true;
    else this.clientBlocked = true;
    to.once('drain', () => {
      if (isServer) this.serverBlocked = false;
      else this.clientBlocked = false;
      this.flow();
    });
  }

  private openListener(id: number, side: FtpSide, family: Family): void {
    const local = ipOf(side === 'client' ? this.client : this.remote, 'local');
    if (!local || familyOf(local) !== family) {
      // the socket is already gone (no address to listen on): refuse, never throw
      queueMicrotask(() => this.apply(this.session.listenFailed(id)));
      return;
    }
    const host = formatIp(local);
    const server = createServer({ allowHalfOpen: true, noDelay: true });
    const timer = setTimeout(() => this.apply(this.session.listenerGone(id)), FTP_DATA_WAIT_MS);
    this.listeners.set(id, { server, timer });
    server.on('connection', (s) => this.onDataConnection(id, s));
    server.once('error', () => {
      const listening = server.listening;
      this.closeListener(id);
      this.apply(listening ? this.session.listenerGone(id) : this.session.listenFailed(id));
    });
    server.listen({ host, port: 0, ipv6Only: host.includes(':') }, () => {
      if (this.done || !this.listeners.has(id)) return;
      this.apply(this.session.listening(id, { ip: local, port: (server.address() as AddressInfo).port }));
    });
  }

  private closeListener(id: number): void {
    const l = this.listeners.get(id);
    if (!l) return;
    this.listeners.delete(id);
    clearTimeout(l.timer);
    l.server.close();
    const slot = this.slotOf.get(id);
    if (slot) this.slots.delete(slot);
    this.slotOf.delete(id);
  }

  /** Listener `id` faces the client: a SOCKS CONNECT from it may be the data connection. */
  private offerSlot(id: number, listen: DataAddress, clientIp: Ip): void {
    const { user } = this.ctx.record; // only ever set to the session's username text
    const slot: PassiveSlot = {
      clientIp,
      user: typeof user === 'string' ? user : undefined,
      host: this.controlHost,
      listenIp: listen.ip,
      port: listen.port,
      ready: () => this.session.dataReady(id),
      claim: (dctx) => this.claim(id, dctx),
    };
    this.slots.add(slot);
    this.slotOf.set(id, slot);
  }

  private onDataConnection(id: number, s: Socket): void {
    for (const c of this.session.dataConnected(id, ipOf(s, 'remote'))) {
      if (c.type === 'joinData') this.bridgeData(s, c.side, c.target);
      else if (c.type === 'refuseData') s.destroy();
      else this.apply([c]);
    }
  }

  private claim(id: number, dctx: ConnectContext): Promise<void> {
    let serving: Promise<void> | undefined;
    for (const c of this.session.dataClaimed(id)) {
      if (c.type === 'joinData') serving = this.spliceData(dctx, c.target);
      else if (c.type !== 'refuseData') this.apply([c]);
    }
    if (serving) return serving;
    // not reachable: the registry claims only a ready slot
    dctx.client.destroy();
    return Promise.resolve();
  }

  private track(s: Socket): void {
    this.dataSockets.add(s);
    s.once('close', () => this.dataSockets.delete(s));
  }

  private async relayData(client: Socket, server: Socket): Promise<{ up: number; down: number; end: string }> {
    this.stats.ftpData++;
    const relaying = relay(client, server, { idleTimeoutMs: this.cfg.idleTimeoutMs });
    this.transfers.add(relaying);
    const r = await relaying;
    this.transfers.delete(relaying);
    this.stats.ftpDataUp += r.up;
    this.stats.ftpDataDown += r.down;
    return r;
  }

  /** A passive data connection that came as a SOCKS CONNECT: answer it, dial the server's data port, relay. */
  private async spliceData(dctx: ConnectContext, target: DataAddress): Promise<void> {
    this.track(dctx.client);
    const dialed = await connectTcp({ host: formatIp(target.ip), port: target.port }, this.cfg.connectTimeoutMs);
    if (this.done || dctx.client.destroyed) {
      dialed.destroy();
      dctx.client.destroy();
      return;
    }
    this.track(dialed);
    Object.assign(dctx.record, { address: formatIp(target.ip), family: familyOf(target.ip), ftp: 'data' });
    const early = dctx.succeed({ host: formatIp(ipOf(dialed, 'local') ?? target.ip), port: dialed.localPort ?? 0 });
    for (const chunk of early) dialed.write(chunk);
    const r = await this.relayData(dctx.client, dialed);
    dctx.finish('ok', { bytesUp: r.up, bytesDown: r.down, end: r.end });
  }

  private bridgeData(accepted: Socket, side: FtpSide, target: DataAddress): void {
    this.track(accepted);
    accepted.on('error', () => accepted.destroy());
    connectTcp({ host: formatIp(target.ip), port: target.port }, this.cfg.connectTimeoutMs).then(
      (dialed) => {
        if (this.done || accepted.destroyed) {
          dialed.destroy();
          return;
        }
        this.track(dialed);
        // relay()'s "client" is the FTP client's side either way, so up/down keep their meaning
        const [c, s] = side === 'client' ? [accepted, dialed] : [dialed, accepted];
        void this.relayData(c, s);
      },
      () => accepted.destroy(),
    );
  }
}
