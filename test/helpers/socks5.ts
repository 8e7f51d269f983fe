// SOCKS5 client drivers for the tests, built on the project's own codec: the bytes a client sends
// (whole, pipelined, or for a raw socket to cut as it likes) and a client that completes a
// CONNECT with Socks5ClientSession, so every test speaks the protocol the same way.
import { connect, type Socket } from 'node:net';
import { concatBytes, decodeMethodSelection, decodeReply, encodeAuthRequest, encodeGreeting, encodeRequest, type Reply } from '../../shared/socks5/codec.js';
import { CMD, METHOD } from '../../shared/socks5/constants.js';
import { readAll } from './origin.js';
import { run } from './process.js';
import { Socks5ClientSession, type ClientRequest } from '../../shared/socks5/client.js';

/** How long a driver waits for an answer before it fails (a hang bound, not a speed claim). */
const ANSWER_LIMIT_MS = 15_000;

/** Greeting offering no authentication and the request, pipelined in one buffer. */
export const socks5Request = (cmd: number, host: string, port: number): Uint8Array =>
  concatBytes(encodeGreeting({ methods: [METHOD.NO_AUTH] }), encodeRequest({ cmd, host, port }));

/** A CONNECT request with its greeting (no authentication), pipelined. */
export const socks5Connect = (host: string, port: number): Uint8Array => socks5Request(CMD.CONNECT, host, port);

/** Greeting offering only username/password, and the credentials, pipelined. */
export const socks5Credentials = (username: string | Uint8Array, password: string | Uint8Array): Uint8Array =>
  concatBytes(encodeGreeting({ methods: [METHOD.USERPASS] }), encodeAuthRequest({ username, password }));

/** Length of a SOCKS5 method selection plus one reply at the start of `b`, or null while incomplete. */
export function socks5Head(b: Uint8Array): number | null {
  const m = decodeMethodSelection(b);
  if (m.status !== 'ok') return null;
  const r = decodeReply(b.subarray(m.size));
  return r.status === 'ok' ? m.size + r.size : null;
}

/**
 * Writes `bytes` (each element a write of its own) and collects what comes back until `until`
 * says it is enough, or the server ends the connection. Fails when neither happens in time.
 */
export function exchangeUntil(port: number, bytes: Uint8Array | Uint8Array[], until: (got: Buffer) => boolean, host = '127.0.0.1'): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port }, () => {
      for (const b of Array.isArray(bytes) ? bytes : [bytes]) s.write(b);
    });
    let got = Buffer.alloc(0);
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no full answer, got ${got.toString('hex')}`));
    }, ANSWER_LIMIT_MS);
    const finish = (): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(got);
    };
    s.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (until(got)) finish();
    });
    s.once('end', finish);
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/**
 * Sends `bytes` (and FIN with them when `end`) and resolves with everything that came back once the
 * server ended the connection; a reset reads as nothing received.
 */
export function exchangeAll(port: number, bytes: Uint8Array, { end = false }: { end?: boolean } = {}): Promise<Buffer> {
  const s = connect({ host: '127.0.0.1', port }, () => (end ? s.end(bytes) : s.write(bytes)));
  s.on('error', () => {});
  return readAll(s).catch(() => Buffer.alloc(0));
}

/**
 * A client that leaves: connects (half-open allowed), lets `leave` write and send its FIN, and
 * resolves true when the server ends its side within `limitMs`, false when it still holds it.
 */
export function leaveAndSeeClosed(port: number, leave: (s: Socket) => void, limitMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    const timer = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, limitMs);
    s.on('error', () => {}); // a reset is also the server letting go; 'close' below is what counts
    s.on('data', () => {});
    s.on('end', () => {
      clearTimeout(timer);
      s.destroy();
      resolve(true);
    });
    s.once('connect', () => leave(s));
  });
}

/** Sends argv[2] (hex) and its FIN in one TCP segment, prints what comes back until the server closes. */
const CORKED_CLIENT = `
import socket, sys
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
s.sendall(bytes.fromhex(sys.argv[2]))
s.shutdown(socket.SHUT_WR)
while True:
    d = s.recv(65536)
    if not d: break
    sys.stdout.buffer.write(d)
`;

/**
 * A client (python3) whose bytes and FIN arrive in one TCP segment, the request and the end of
 * the connection read together; its output is everything the server sent until it closed.
 */
export function corkedExchange(port: number, bytes: Uint8Array, timeoutMs: number): ReturnType<typeof run> {
  return run('python3', ['-c', CORKED_CLIENT, String(port), Buffer.from(bytes).toString('hex')], { timeoutMs });
}

export interface Tunnel {
  socket: Socket;
  reply: Reply;
  /** Relay data that came with the success reply. */
  rest: Uint8Array;
}

/**
 * A SOCKS5 client through `proxyPort` to host:port (CONNECT unless `req.cmd` says otherwise;
 * `req.pipeline` sends greeting and request at once), the
 * messages made and read by Socks5ClientSession. Rejects with the session's typed error on a
 * failure reply (its `rep` kept), or when the proxy closes during the handshake.
 */
export function socks5Open(proxyPort: number, req: ClientRequest, opts: { proxyHost?: string } = {}): Promise<Tunnel> {
  const s = connect({ host: opts.proxyHost ?? '127.0.0.1', port: proxyPort });
  s.setNoDelay(true);
  const session = new Socks5ClientSession(req, 'test proxy');
  return new Promise<Tunnel>((resolve, reject) => {
    const fail = (e: Error): void => {
      cleanup();
      s.destroy();
      reject(e);
    };
    const onClose = (): void => fail(new Error('closed during the handshake'));
    const onData = (d: Buffer): void => {
      for (const c of session.feed(d)) {
        if (c.type === 'send') s.write(c.data);
        else if (c.type === 'failed') return fail(c.error);
        else {
          // the first success reply: for BIND, the second is the caller's to read (in a later chunk)
          cleanup();
          return resolve({ socket: s, reply: c.reply, rest: c.rest });
        }
      }
    };
    const cleanup = (): void => {
      s.off('data', onData);
      s.off('error', fail);
      s.off('close', onClose);
    };
    s.on('data', onData);
    s.on('error', fail);
    s.on('close', onClose);
    s.once('connect', () => {
      for (const c of session.start()) if (c.type === 'send') s.write(c.data);
    });
  });
}
