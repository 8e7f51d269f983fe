// Dialing through SOCKS5 hops (bridge → gateway, gateway → next gateway). The sans-IO client
// session does the protocol; the final hop's reply code reaches the caller unchanged.
import { connect, type Socket } from 'node:net';
import { DualsocksError, RequestError } from '../../shared/errors.js';
import type { Reply } from '../../shared/socks5/codec.js';
import { CMD } from '../../shared/socks5/constants.js';
import { Socks5ClientSession, type ClientCommand } from '../../shared/socks5/client.js';
import { connectTcp, errnoToError } from './direct.js';
import { hopLabel, type Hop } from './hops.js';

export interface Socks5Dial {
  socket: Socket;
  reply: Reply;
  /** Bytes of the SOCKS exchange itself on this socket (every hop's), so that a relay's counts can leave them out. */
  overhead: { up: number; down: number };
  /** BIND only: the session still waiting for the second reply, and commands it already gave. */
  bind?: { session: Socks5ClientSession; pending: ClientCommand[]; label: string };
}

/** Runs one SOCKS5 request over an already connected socket. */
export function socks5Handshake(
  socket: Socket,
  hop: Hop,
  req: { cmd?: number; host: string; port: number },
  opts: { timeoutMs: number; pipeline?: boolean; greeted?: boolean },
): Promise<Socks5Dial> {
  return new Promise((resolve, reject) => {
    const auth = hop.username !== undefined ? { username: hop.username, password: hop.password ?? '' } : undefined;
    const session = new Socks5ClientSession({ cmd: req.cmd ?? CMD.CONNECT, host: req.host, port: req.port, auth, pipeline: opts.pipeline, greeted: opts.greeted, errorCodes: true }, hopLabel(hop));
    const timer = setTimeout(() => done(new RequestError('ERR_CONNECT_TIMEOUT', `${hopLabel(hop)} did not answer`)), opts.timeoutMs);
    const done = (err: DualsocksError | null, ok?: Socks5Dial): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
      if (err) {
        socket.destroy();
        reject(err);
      } else resolve(ok!);
    };
    const run = (cmds: ClientCommand[]): void => {
      for (const [i, c] of cmds.entries()) {
        if (c.type === 'send') socket.write(c.data);
        else if (c.type === 'failed') return done(c.error);
        else {
          socket.pause();
          // relay bytes that came with the reply are read again by whoever takes the socket
          if (c.rest.length > 0) socket.unshift(c.rest);
          const overhead = { up: socket.bytesWritten, down: socket.bytesRead - c.rest.length };
          const bind = req.cmd === CMD.BIND ? { session, pending: cmds.slice(i + 1), label: hopLabel(hop) } : undefined;
          return done(null, bind ? { socket, reply: c.reply, overhead, bind } : { socket, reply: c.reply, overhead });
        }
      }
    };
    const onData = (chunk: Buffer): void => run(session.feed(chunk));
    const onError = (e: NodeJS.ErrnoException): void => done(errnoToError(e, hopLabel(hop)));
    const onClose = (): void => done(new RequestError('ERR_CONNECT_FAILED', `${hopLabel(hop)} closed the connection`));
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
    socket.resume();
    run(session.start());
  });
}

/** Connects to the hop and asks it for host:port (CONNECT by default). */
export function dialSocks5(hop: Hop, req: { cmd?: number; host: string; port: number }, opts: { timeoutMs: number }): Promise<Socks5Dial> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: hop.host, port: hop.port, noDelay: true, allowHalfOpen: true });
    const onError = (e: NodeJS.ErrnoException): void => reject(errnoToError(e, hopLabel(hop)));
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.off('error', onError);
      socks5Handshake(socket, hop, req, opts).then(resolve, reject);
    });
  });
}

/**
 * BIND's second reply (the peer has connected to the bound address), read by the same session
 * that read the first. A failure keeps the server's REP (0x06 when its wait timed out).
 */
export function bindSecondReply(dial: Socks5Dial, opts: { signal?: AbortSignal } = {}): Promise<Socks5Dial> {
  const { socket, bind } = dial;
  if (!bind) return Promise.reject(new RequestError('ERR_CONNECT_FAILED', 'not a BIND request'));
  return new Promise((resolve, reject) => {
    const done = (err: DualsocksError | null, ok?: Socks5Dial): void => {
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
      opts.signal?.removeEventListener('abort', onAbort);
      if (err) {
        socket.destroy();
        reject(err);
      } else resolve(ok!);
    };
    const run = (cmds: ClientCommand[]): boolean => {
      for (const c of cmds) {
        if (c.type === 'failed') {
          done(c.error);
          return true;
        }
        if (c.type === 'reply') {
          socket.pause();
          if (c.rest.length > 0) socket.unshift(c.rest);
          done(null, { socket, reply: c.reply, overhead: { up: socket.bytesWritten, down: socket.bytesRead - c.rest.length } });
          return true;
        }
      }
      return false;
    };
    const onData = (chunk: Buffer): void => void run(bind.session.feed(chunk));
    const onError = (e: NodeJS.ErrnoException): void => done(errnoToError(e, bind.label));
    const onClose = (): void => done(new RequestError('ERR_CONNECT_FAILED', `${bind.label} closed the connection`));
    const onAbort = (): void => done(new RequestError('ERR_CONNECT_FAILED', 'cancelled'));
    if (run(bind.pending)) return;
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
    opts.signal?.addEventListener('abort', onAbort);
    socket.resume();
  });
}

/** The error of a dial given up because the client it was for went away. */
export const clientGone = (): RequestError => new RequestError('ERR_CONNECT_FAILED', 'client went away');

/**
 * Opens host:port through a chain: TCP to the first hop, then CONNECT to each next hop. `signal`
 * (the client went away) ends the dial at once: its socket is closed, so the gateway frees what
 * it held for the request.
 */
export async function dialChain(
  hops: Hop[],
  req: { cmd?: number; host: string; port: number },
  timeoutMs: number,
  opts: { pipelineFirst?: boolean; signal?: AbortSignal | undefined; warm?: Socket | undefined } = {},
): Promise<Socks5Dial> {
  const { signal, warm } = opts;
  if (signal?.aborted) {
    warm?.destroy();
    throw clientGone();
  }
  // a warm connection (warm.ts) is the first hop's, its greeting answered
  const socket = warm ?? (await connectTcp(hops[0]!, timeoutMs));
  const onAbort = (): void => void socket.destroy();
  if (signal?.aborted) onAbort();
  signal?.addEventListener('abort', onAbort);
  try {
    for (let i = 0; i < hops.length - 1; i++) {
      try {
        await socks5Handshake(socket, hops[i]!, { cmd: CMD.CONNECT, host: hops[i + 1]!.host, port: hops[i + 1]!.port }, { timeoutMs, pipeline: i === 0 && opts.pipelineFirst, greeted: i === 0 && warm !== undefined });
      } catch (e) {
        if (signal?.aborted) throw clientGone();
        // a refusal on the way is a broken chain, not the destination's answer
        throw new RequestError('ERR_CONNECT_FAILED', `${hopLabel(hops[i]!)} → ${hopLabel(hops[i + 1]!)}: ${(e as Error).message}`);
      }
    }
    return await socks5Handshake(socket, hops[hops.length - 1]!, req, { timeoutMs, pipeline: hops.length === 1 && opts.pipelineFirst, greeted: hops.length === 1 && warm !== undefined }).catch((e: unknown) => {
      throw signal?.aborted ? clientGone() : e;
    });
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}
