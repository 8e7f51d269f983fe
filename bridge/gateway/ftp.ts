// FTP translation's I/O: feeds control lines to the translator, writes what it returns, and
// owns the data listeners and data relays. Only a CONNECT to an --ftp-port whose client and
// destination families differ comes here; everything else is a plain relay.
//
// A passive data connection reaches the gateway one of two ways: straight to the listener named
// in the 227/229, or, from a SOCKS client such as curl, as a CONNECT through the gateway to the
// control connection's host (or the 227 address) and the listener's port. Both claim the same
// one-shot slot; the CONNECT form is why pending slots are registered per gateway.
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { canonicalHost, familyOf, formatIp, parseIp, type Ip } from '../../shared/net/address.js';
import { relay } from '../relay.js';
import { connectTcp } from '../upstream/direct.js';
import type { GatewayConfig } from './config.js';
import { FtpTranslator, LineReader, encodeLine, type DataAddress, type FtpAction } from './ftp-translate.js';
import type { RequestContext } from './context.js';
import type { PassiveSlot as Slot } from './ftp-slots.js';

/** How long a data listener waits for its one connection. */
export const FTP_DATA_WAIT_MS = 30_000;

const ipOf = (s: Socket, which: 'remote' | 'local'): Ip | null => parseIp(canonicalHost((which === 'remote' ? s.remoteAddress : s.localAddress) ?? ''));
const sameIp = (a: Ip, b: Ip): boolean => a.every((v, i) => v === b[i]);

/** Whether this CONNECT's control connection is translated. */
export function ftpTranslates(cfg: GatewayConfig, client: Socket, destination: Ip, port: number): boolean {
  if (!cfg.ftpPorts.includes(port)) return false;
  const c = ipOf(client, 'remote');
  return c !== null && familyOf(c) !== familyOf(destination);
}

interface DataListener {
  server: Server;
  side: 'client' | 'server';
  target?: DataAddress;
  timer: NodeJS.Timeout;
}

type PassiveSlot = Slot<RequestContext>;

export async function serveFtp(ctx: RequestContext, remote: Socket, early: Uint8Array[]): Promise<void> {
  const { client, gateway } = ctx;
  const cfg = gateway.config;
  const clientIp = ipOf(client, 'remote');
  const serverIp = ipOf(remote, 'remote');
  if (!clientIp || !serverIp) {
    client.destroy();
    remote.destroy();
    ctx.finish('ok', { end: 'closed', ftp: 'translated' });
    return;
  }
  const t = new FtpTranslator({ clientIp, serverIp });
  const clientLines = new LineReader();
  const serverLines = new LineReader();
  const listeners = new Map<number, DataListener>();
  const dataSockets = new Set<Socket>();
  const stats = { ftpData: 0, ftpDataUp: 0, ftpDataDown: 0 };
  const transfers = new Set<Promise<unknown>>();
  let end = 'closed';
  let done = false;
  let serverBlocked = false;
  let clientBlocked = false;

  const slots = gateway.ftpSlots;
  const slotOf = new Map<number, PassiveSlot>();
  const controlHost = ctx.request.host.toLowerCase();

  const closeListener = (id: number): void => {
    const l = listeners.get(id);
    if (!l) return;
    listeners.delete(id);
    clearTimeout(l.timer);
    l.server.close();
    const slot = slotOf.get(id);
    if (slot) slots.delete(slot);
    slotOf.delete(id);
  };
  const shutdown = (why?: string): void => {
    if (why && end === 'closed') end = why;
    client.destroy();
    remote.destroy();
  };

  // The client is read only while the translator takes commands and the server keeps up.
  const flow = (): void => {
    if (done) return;
    if (t.busy || serverBlocked) client.pause();
    else client.resume();
    if (clientBlocked) remote.pause();
    else remote.resume();
  };
  const send = (to: Socket, line: string): void => {
    if (to.destroyed || to.writableEnded) return;
    if (to.write(encodeLine(line))) return;
    const isServer = to === remote;
    if (isServer ? serverBlocked : clientBlocked) return;
    if (isServer) serverBlocked = true;
    else clientBlocked = true;
    to.once('drain', () => {
      if (isServer) serverBlocked = false;
      else clientBlocked = false;
      flow();
    });
  };

  const apply = (actions: FtpAction[]): void => {
    if (done) return;
    for (const a of actions) {
      switch (a.type) {
        case 'toClient':
          send(client, a.line);
          break;
        case 'toServer':
          send(remote, a.line);
          break;
        case 'listen':
          openListener(a.id, a.side);
          break;
        case 'dataTarget': {
          const l = listeners.get(a.id);
          if (l) l.target = a.target;
          break;
        }
        case 'closeData':
          closeListener(a.id);
          break;
      }
    }
    flow();
  };

  const openListener = (id: number, side: 'client' | 'server'): void => {
    // one data connection pending at a time, as with a real server: a new PASV/PORT replaces it
    for (const old of listeners.keys()) closeListener(old);
    const local = ipOf(side === 'client' ? client : remote, 'local');
    if (!local) {
      // the socket is already gone (no address to listen on): refuse, never throw
      queueMicrotask(() => apply(t.listenFailed(id)));
      return;
    }
    const host = formatIp(local);
    const peer = side === 'client' ? clientIp : serverIp;
    const server = createServer({ allowHalfOpen: true, noDelay: true });
    const l: DataListener = { server, side, timer: setTimeout(() => closeListener(id), FTP_DATA_WAIT_MS) };
    listeners.set(id, l);
    server.on('connection', (s) => {
      const from = ipOf(s, 'remote');
      // only the control connection's peer may use it, and only once the target is known
      if (!from || !sameIp(from, peer) || !l.target || !listeners.has(id)) {
        s.destroy();
        return;
      }
      closeListener(id);
      bridgeData(s, l.side, l.target);
    });
    server.once('error', () => {
      const listening = server.listening;
      closeListener(id);
      if (!listening) apply(t.listenFailed(id));
    });
    server.listen({ host, port: 0, ipv6Only: host.includes(':') }, () => {
      if (done || !listeners.has(id)) return;
      const port = (server.address() as AddressInfo).port;
      if (side === 'client') {
        const slot: PassiveSlot = {
          clientIp,
          user: ctx.record.user,
          host: controlHost,
          listenIp: parseIp(host)!,
          port,
          ready: () => l.target !== undefined,
          claim: (dctx) => {
            closeListener(id);
            return spliceData(dctx, l.target!);
          },
        };
        slots.add(slot);
        slotOf.set(id, slot);
      }
      apply(t.listening(id, { ip: parseIp(host)!, port }));
    });
  };

  const track = (s: Socket): void => {
    dataSockets.add(s);
    s.once('close', () => dataSockets.delete(s));
  };

  /** A passive data connection that came as a SOCKS CONNECT: answer it, dial the server's data port, relay. */
  const spliceData = async (dctx: RequestContext, target: DataAddress): Promise<void> => {
    track(dctx.client);
    const dialed = await connectTcp({ host: formatIp(target.ip), port: target.port }, cfg.connectTimeoutMs);
    if (done || dctx.client.destroyed) {
      dialed.destroy();
      dctx.client.destroy();
      return;
    }
    track(dialed);
    Object.assign(dctx.record, { address: formatIp(target.ip), family: familyOf(target.ip), ftp: 'data' });
    const early = dctx.succeed({ host: formatIp(ipOf(dialed, 'local') ?? target.ip), port: dialed.localPort ?? 0 });
    for (const chunk of early) dialed.write(chunk);
    stats.ftpData++;
    const relaying = relay(dctx.client, dialed, { idleTimeoutMs: cfg.idleTimeoutMs });
    transfers.add(relaying);
    const r = await relaying;
    transfers.delete(relaying);
    stats.ftpDataUp += r.up;
    stats.ftpDataDown += r.down;
    dctx.finish('ok', { bytesUp: r.up, bytesDown: r.down, end: r.end });
  };

  const bridgeData = (accepted: Socket, side: 'client' | 'server', target: DataAddress): void => {
    track(accepted);
    accepted.on('error', () => accepted.destroy());
    connectTcp({ host: formatIp(target.ip), port: target.port }, cfg.connectTimeoutMs).then(
      (dialed) => {
        if (done || accepted.destroyed) {
          dialed.destroy();
          return;
        }
        track(dialed);
        stats.ftpData++;
        // relay()'s "client" is the FTP client's side either way, so up/down keep their meaning
        const [c, s] = side === 'client' ? [accepted, dialed] : [dialed, accepted];
        const relaying = relay(c, s, { idleTimeoutMs: cfg.idleTimeoutMs });
        transfers.add(relaying);
        void relaying.then((r) => {
          stats.ftpDataUp += r.up;
          stats.ftpDataDown += r.down;
          transfers.delete(relaying);
        });
      },
      () => accepted.destroy(),
    );
  };

  const feed = (from: 'client' | 'server', chunk: Buffer): void => {
    const lines = (from === 'client' ? clientLines : serverLines).feed(chunk);
    if (lines === null) {
      shutdown(`ftp-line-too-long-from-${from}`);
      return;
    }
    for (const line of lines) {
      if (done) return;
      apply(from === 'client' ? t.fromClient(line) : t.fromServer(line));
    }
  };

  return await new Promise<void>((resolve) => {
    let closed = 0;
    const onClose = (): void => {
      if (++closed < 2) {
        shutdown();
        return;
      }
      done = true;
      for (const id of [...listeners.keys()]) closeListener(id);
      // the control connection's end ends its transfers too
      for (const s of dataSockets) s.destroy();
      // a relay reports its byte counts when it ends, which may be just after this (the native one
      // reports from its own thread): the control connection's line waits for them
      void Promise.allSettled([...transfers]).then(() => {
        ctx.finish('ok', { bytesUp: remote.bytesWritten, bytesDown: remote.bytesRead, end, ftp: 'translated', ...stats });
        resolve();
      });
    };
    const onError = (e: NodeJS.ErrnoException): void => shutdown(e.code ?? 'error');
    client.on('error', onError);
    remote.on('error', onError);
    client.once('close', onClose);
    remote.once('close', onClose);
    // a FIN passes on after any unterminated last line, as the plain relay would pass the bytes
    const clientEnd = (): void => {
      const rest = clientLines.rest();
      if (rest !== '' && !remote.destroyed) remote.write(Buffer.from(rest, 'latin1'));
      remote.end();
    };
    const remoteEnd = (): void => {
      const rest = serverLines.rest();
      if (rest !== '' && !client.destroyed) client.write(Buffer.from(rest, 'latin1'));
      client.end();
    };
    client.on('end', clientEnd);
    remote.on('end', remoteEnd);
    if (cfg.idleTimeoutMs > 0) {
      client.setTimeout(cfg.idleTimeoutMs);
      client.on('timeout', () => {
        // a long transfer leaves the control connection quiet: only idle everywhere is idle
        if (dataSockets.size > 0) client.setTimeout(cfg.idleTimeoutMs);
        else shutdown('idle');
      });
    }
    client.on('data', (chunk: Buffer) => feed('client', chunk));
    remote.on('data', (chunk: Buffer) => feed('server', chunk));
    for (const chunk of early) feed('client', Buffer.from(chunk));
    // a FIN that came with the request (or with the server's greeting) fired 'end' already
    if (client.readableEnded) clientEnd();
    if (remote.readableEnded) remoteEnd();
    flow();
  });
}
