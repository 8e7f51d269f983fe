// Byte relay between two connected sockets. Each direction forwards every chunk as it comes
// (no copy, no concatenation), pauses the reader while the writer's buffer is full and resumes
// it on 'drain', so a slow reader never makes us buffer without bound, and passes a FIN on as
// end() while the other direction keeps flowing (both sockets are allowHalfOpen). A FIN that
// arrived before the relay began (a client that sends request, data and FIN at once) is passed
// on too, after the bytes that came before it.
// The listeners are module-level functions that find their tunnel through the socket, not
// closures made per tunnel: with thousands of idle tunnels open, what each one costs is the
// two sockets and one small state object (pipe() made about a dozen closures and its own state
// per direction).
// Where the addon in bridge/native/ is built and loads (Linux), the tunnel is handed to it
// instead: its splice(2) loop moves the bytes in the kernel, with the same half-close,
// backpressure and idle-timeout behaviour; JavaScript stays the fallback. Given a RelayGroup, the
// addon's tunnel releases both sockets at once (see nativeRelay), which is what keeps 10,000 idle
// tunnels small; the group is then the way to end them.
import type { Socket } from 'node:net';
import { nativeRelay, NativeTunnels } from './native/loader.js';

/** The tunnels one server relays, so that closing the server ends them all. */
export class RelayGroup {
  readonly native = new NativeTunnels();
  private readonly js = new Set<Socket>();

  /** Tunnels in progress. */
  get size(): number {
    return this.native.size + this.js.size;
  }

  track(client: Socket): void {
    this.js.add(client);
    client.once('close', () => this.js.delete(client));
  }

  closeAll(): void {
    this.native.cancelAll();
    // destroying one side of a JavaScript tunnel ends both
    for (const s of this.js) s.destroy();
  }
}

export interface RelayResult {
  /** Bytes from the client side to the remote side, and back. */
  up: number;
  down: number;
  /** Why it ended: 'closed' for a normal close, 'idle' or an error code. */
  end: string;
}

interface Tunnel {
  client: Socket;
  remote: Socket;
  end: string;
  closed: number;
  resolve: (r: RelayResult) => void;
}

const kPeer = Symbol('relay peer');
const kTunnel = Symbol('relay tunnel');

interface RelaySocket extends Socket {
  [kPeer]: Socket;
  [kTunnel]: Tunnel;
}

function onData(this: RelaySocket, chunk: Buffer): void {
  if (!this[kPeer].write(chunk)) this.pause();
}

function onDrain(this: RelaySocket): void {
  // the peer is the reader this socket's full buffer paused
  const reader = this[kPeer];
  if (reader.isPaused() && !reader.destroyed) reader.resume();
}

function onEnd(this: RelaySocket): void {
  this[kPeer].end();
}

function destroyBoth(t: Tunnel): void {
  t.client.destroy();
  t.remote.destroy();
}

function onError(this: RelaySocket, e: NodeJS.ErrnoException): void {
  const t = this[kTunnel];
  if (t.end === 'closed') t.end = e.code ?? 'error';
  destroyBoth(t);
}

function onClose(this: RelaySocket): void {
  const t = this[kTunnel];
  if (++t.closed < 2) {
    // one side is gone for good: nothing more can flow either way
    destroyBoth(t);
    return;
  }
  t.resolve({ up: t.remote.bytesWritten, down: t.remote.bytesRead, end: t.end });
}

function onIdle(this: RelaySocket): void {
  const t = this[kTunnel];
  t.end = 'idle';
  destroyBoth(t);
}

function wire(s: RelaySocket, peer: Socket, t: Tunnel): void {
  s[kPeer] = peer;
  s[kTunnel] = t;
  s.on('error', onError);
  s.once('close', onClose);
  s.on('data', onData);
  s.on('drain', onDrain);
  s.once('end', onEnd);
}

export interface RelayOptions {
  idleTimeoutMs: number;
  /** false: JavaScript even where the addon is there. */
  native?: boolean;
  /** Lets the addon release the sockets; the owner ends the tunnels with group.closeAll(). */
  group?: RelayGroup;
}

/** Never rejects: every end, errors included, resolves with the byte counts and the reason. */
export function relay(client: Socket, remote: Socket, opts: RelayOptions): Promise<RelayResult> {
  if (opts.native !== false) {
    const n = nativeRelay(client, remote, opts.idleTimeoutMs, opts.group?.native);
    if (n) return n;
  }
  opts.group?.track(client);
  return relayJs(client, remote, opts);
}

/** The JavaScript relay, whatever the addon's state. */
export function relayJs(client: Socket, remote: Socket, opts: { idleTimeoutMs: number }): Promise<RelayResult> {
  return new Promise((resolve) => {
    const t: Tunnel = { client, remote, end: 'closed', closed: 0, resolve };
    const c = client as RelaySocket;
    const r = remote as RelaySocket;
    wire(c, remote, t);
    wire(r, client, t);
    // any byte relayed either way is a read or write on the client socket, so its idle timer is the tunnel's
    if (opts.idleTimeoutMs > 0) c.setTimeout(opts.idleTimeoutMs, onIdle);
    // a side that closed before the relay began would never emit 'close' again
    if (client.destroyed || remote.destroyed) destroyBoth(t);
    if (client.closed) onClose.call(c);
    if (remote.closed) onClose.call(r);
    // a FIN that came before the relay (with the request, or with the reply) fired 'end' already:
    // pass it on now, after what the caller wrote (the early bytes)
    if (!client.destroyed && !remote.destroyed) {
      if (client.readableEnded) onEnd.call(c);
      if (remote.readableEnded) onEnd.call(r);
    }
    // 'data' listeners start a socket flowing, paused ones included
    c.resume();
    r.resume();
  });
}

/** Client bytes held while a BIND waits for its peer; beyond this the client is paused. */
const HOLD_LIMIT = 64 * 1024;

/**
 * Waits for `wait` while reading and holding what the client sends meanwhile (so a client that
 * leaves is noticed at once); null when the client left first (its end, or `signal`). `held`
 * gets the client's bytes, to be sent on once the tunnel is there.
 * A FIN here is the client leaving (BIND: there is no peer yet to pass it to, and its listener
 * must not outlive the client), also one that came with the request, before this began.
 */
export async function holdWhile<T>(client: Socket, held: Uint8Array[], wait: Promise<T>, signal?: AbortSignal): Promise<T | null> {
  let heldBytes = held.reduce((n, c) => n + c.length, 0);
  const onData = (chunk: Buffer): void => {
    held.push(chunk);
    heldBytes += chunk.length;
    if (heldBytes > HOLD_LIMIT) client.pause();
  };
  let onGone = (): void => {};
  const gone = new Promise<null>((resolve) => (onGone = () => resolve(null)));
  wait.catch(() => {}); // observed by the race; a late rejection after the client left is moot
  client.on('data', onData);
  client.once('end', onGone);
  client.once('close', onGone);
  signal?.addEventListener('abort', onGone);
  // 'end' or 'close' may have fired already, before the reply this waits behind
  if (client.readableEnded || client.destroyed) onGone();
  client.resume();
  try {
    return await Promise.race([wait, gone]);
  } finally {
    client.off('data', onData);
    client.off('end', onGone);
    client.off('close', onGone);
    signal?.removeEventListener('abort', onGone);
    client.pause();
  }
}
