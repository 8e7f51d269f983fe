// Connections to a gateway's first hop opened and greeted ahead of need (the bridge's --warm), so
// that a request costs the gateway round trip of the request alone, not also a TCP handshake and
// the greeting (and credentials) first. A gateway counts such a connection in its handshake budget
// and ends it at its handshake timeout, so they are kept few and short: at most `size` per hop,
// each closed after `idleMs` unused, new ones opened only when a request takes one (an idle bridge
// holds none after `idleMs`), none after close(). A hop whose greeting fails is not warmed for a
// while (wrong credentials must not become a failed login per request).
import type { Socket } from 'node:net';
import { RequestError } from '../../shared/errors.js';
import { concatBytes, decodeAuthReply, decodeMethodSelection, encodeAuthRequest, encodeGreeting } from '../../shared/socks5/codec.js';
import { AUTH_STATUS_OK, METHOD } from '../../shared/socks5/constants.js';
import { connectTcp } from './direct.js';
import { hopLabel, type Hop } from './hops.js';

/** How long a hop whose warm greeting failed is dialled cold only. */
const COLD_AFTER_FAILURE_MS = 30_000;

/** Connects to `hop` and completes its greeting (and credentials); the socket is left paused, waiting for a request. */
export async function greetAhead(hop: Hop, timeoutMs: number): Promise<Socket> {
  const s = await connectTcp(hop, timeoutMs);
  const auth = hop.username !== undefined ? { username: hop.username, password: hop.password ?? '' } : undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      const label = hopLabel(hop);
      const timer = setTimeout(() => fail(new RequestError('ERR_CONNECT_TIMEOUT', `${label} did not answer the greeting`)), timeoutMs);
      let buf: Uint8Array = new Uint8Array(0);
      let state: 'method' | 'auth' = 'method';
      const done = (): void => {
        clearTimeout(timer);
        s.off('data', onData);
        s.off('error', fail);
        s.off('end', onEnd);
        s.pause();
      };
      const fail = (e: Error): void => {
        done();
        reject(e);
      };
      const onEnd = (): void => fail(new RequestError('ERR_CONNECT_FAILED', `${label} closed without answering`));
      const onData = (chunk: Buffer): void => {
        buf = concatBytes(buf, chunk);
        if (state === 'method') {
          const d = decodeMethodSelection(buf);
          if (d.status === 'need') return;
          if (d.status === 'error') return fail(d.error);
          buf = buf.subarray(d.size);
          if (d.msg.method !== (auth ? METHOD.USERPASS : METHOD.NO_AUTH)) return fail(new RequestError('ERR_CONNECT_FAILED', `${label} accepts none of our auth methods`));
          if (!auth) return buf.length ? fail(new RequestError('ERR_CONNECT_FAILED', `${label} sent more than its method`)) : (done(), resolve());
          state = 'auth';
          s.write(encodeAuthRequest(auth));
        }
        const d = decodeAuthReply(buf);
        if (d.status === 'need') return;
        if (d.status === 'error') return fail(d.error);
        if (d.msg.status !== AUTH_STATUS_OK || d.size !== buf.length) return fail(new RequestError('ERR_CONNECT_FAILED', `${label} refused our credentials`));
        done();
        resolve();
      };
      s.on('data', onData);
      s.once('error', fail);
      s.once('end', onEnd);
      s.resume();
      // 0xD5 too: the request sent later on this connection gets the gateway's exact error
      s.write(encodeGreeting({ methods: [auth ? METHOD.USERPASS : METHOD.NO_AUTH, METHOD.ERROR_CODES] }));
    });
  } catch (e) {
    s.destroy();
    throw e;
  }
  return s;
}

interface Spare {
  socket: Socket;
  timer: NodeJS.Timeout;
  /** Takes it off the list and closes it (the gateway left, or it idled out). */
  drop: () => void;
}

interface HopSpares {
  ready: Spare[];
  opening: number;
  /** No warming before this time (a greeting failed). */
  coldUntil: number;
}

export class WarmConnections {
  private readonly hops = new Map<string, HopSpares>();
  private closed = false;

  constructor(private readonly opts: { size: number; idleMs: number; timeoutMs: number }) {}

  private static key(hop: Hop): string {
    return JSON.stringify([hop.host, hop.port, hop.username ?? null, hop.password ?? null]);
  }

  /** Connections ready now, over every hop. */
  get ready(): number {
    let n = 0;
    for (const h of this.hops.values()) n += h.ready.length;
    return n;
  }

  /** A ready connection to `hop` (yours to use or destroy), or undefined; either way new ones are opened behind it. */
  take(hop: Hop): Socket | undefined {
    if (this.closed || this.opts.size <= 0) return undefined;
    const key = WarmConnections.key(hop);
    let h = this.hops.get(key);
    if (!h) this.hops.set(key, (h = { ready: [], opening: 0, coldUntil: 0 }));
    let found: Socket | undefined;
    while (!found && h.ready.length > 0) {
      const sp = h.ready.shift()!;
      clearTimeout(sp.timer);
      sp.socket.off('end', sp.drop).off('close', sp.drop).off('error', sp.drop);
      if (sp.socket.destroyed || sp.socket.readableEnded) sp.socket.destroy();
      else found = sp.socket;
    }
    this.refill(hop, h);
    return found;
  }

  private refill(hop: Hop, h: HopSpares): void {
    if (Date.now() < h.coldUntil) return;
    while (!this.closed && h.ready.length + h.opening < this.opts.size) {
      h.opening++;
      greetAhead(hop, this.opts.timeoutMs).then(
        (socket) => {
          h.opening--;
          if (this.closed) socket.destroy();
          else this.keep(h, socket);
        },
        () => {
          // the request itself dials cold and reports what is wrong
          h.opening--;
          h.coldUntil = Date.now() + COLD_AFTER_FAILURE_MS;
        },
      );
    }
  }

  private keep(h: HopSpares, socket: Socket): void {
    const sp: Spare = {
      socket,
      timer: setTimeout(() => sp.drop(), this.opts.idleMs).unref(),
      drop: () => {
        clearTimeout(sp.timer);
        const i = h.ready.indexOf(sp);
        if (i >= 0) h.ready.splice(i, 1);
        socket.destroy();
      },
    };
    // the gateway ending it (its handshake timeout, eviction) is seen while it waits
    socket.once('end', sp.drop).once('close', sp.drop).once('error', sp.drop);
    h.ready.push(sp);
  }

  /** Closes every ready connection; ones still opening are closed as they come. */
  close(): void {
    this.closed = true;
    for (const h of this.hops.values()) for (const sp of [...h.ready]) sp.drop();
  }
}
