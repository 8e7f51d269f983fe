// Loads the optional splice(2) relay (bridge/native/splice_relay.c, built by `npm ci` through
// node-gyp when a toolchain is there) and hands tunnels to it; also reads a redirected
// connection's original destination for the transparent port. Anything that stops it — no
// addon, not Linux, DUALSOCKS_NATIVE_RELAY=0, a socket that is not a plain connected TCP socket
// or has a write still pending in Node — leaves the tunnel to the JavaScript relay in bridge/relay.ts.
import { closeSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Socket as NetSocket, type Server, type Socket } from 'node:net';
import { say } from '../log.js';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface NativeResult {
  up: number;
  down: number;
  end: string;
  /** A tunnel the front dialed: the outbound socket's own address (BND), the dial's duration, and which of its addresses answered. */
  bound?: { host: string; port: number };
  dialMs?: number;
  address?: number;
}

interface Addon {
  init(onDone: (id: number, up: number, down: number, end: string, bound: string, boundPort: number, dialMs: number, address: number) => void): number;
  /** ended: bit 0 the client, bit 1 the remote already sent its FIN. */
  add(fdClient: number, fdRemote: number, idleMs: number, release: boolean, ended: number): number;
  cancel(id: number): void;
  /** The destination before nftables `redirect` (SO_ORIGINAL_DST); throws with the errno's name as code. */
  origDst(fd: number): OriginalDestination;
  // the front (splice_relay.c): accept and handshake in the relay's thread
  frontStart?(onFront: FrontCallback): void;
  frontListen(fd: number, lid: number, clients: Uint8Array | null, handshakeMs: number, budget: number): void;
  frontUnlisten(lid: number): void;
  frontHandshakes(lid: number): number;
  bindListen?(address: string, port: number, reusePort: boolean, listen: boolean): { fd: number; port: number };
  frontDial(fd: number, lid: number, addresses: string[], port: number, timeoutMs: number, idleMs: number, early: Uint8Array | null, eof: boolean): number;
}

type FrontCallback = (kind: number, lid: number, fd: number, peer: string, port: number, bytes: Buffer | null, a: number, b: number, flags: number, ms: number, text: string, id: number) => void;

export interface OriginalDestination {
  address: string;
  port: number;
  family: 4 | 6;
}

interface Handle {
  fd?: number;
  reading?: boolean;
  readStop?: () => number;
}

interface NativeTunnel {
  id: number;
  /** The sockets, while JavaScript keeps them open alongside the addon; null once released. */
  client: Socket | null;
  remote: Socket | null;
  /** Bytes JavaScript relayed or wrote before the hand-over (the SOCKS reply, early data). */
  up0: number;
  down0: number;
  cancelled: boolean;
  resolve: (r: NativeResult) => void;
}

/** Cancels tunnels whose sockets were released: nothing is left in JavaScript to destroy. */
export class NativeTunnels {
  private readonly ids = new Set<number>();
  add(id: number): void {
    this.ids.add(id);
  }
  delete(id: number): void {
    this.ids.delete(id);
  }
  get size(): number {
    return this.ids.size;
  }
  cancelAll(): void {
    for (const id of this.ids) cancel(id);
    this.ids.clear();
  }
}

const kTunnel = Symbol('native relay tunnel');
const kReleased = Symbol('handed to the native relay');
type NativeSocket = Socket & { [kTunnel]?: NativeTunnel; [kReleased]?: boolean; _handle?: Handle | null };

/** Whether this socket was closed because the addon took its connection over (its 'close' is not the end). */
export function releasedToNative(s: Socket): boolean {
  return (s as NativeSocket)[kReleased] === true;
}

const tunnels = new Map<number, NativeTunnel>();
const groups = new Map<number, NativeTunnels>();
let addon: Addon | null | undefined;
let loadError = '';
let pipeSize = 0;

/** Tunnels handed to the addon, and tunnels the addon could have taken but JavaScript kept (a write pending). */
export const nativeStats = { handedOver: 0, declined: 0 };

function candidates(): string[] {
  const here = dirname(fileURLToPath(import.meta.url));
  const rel = join('build', 'Release', 'splice_relay.node');
  // dist/bridge/native/loader.js -> bridge/native/build; or next to the source when run from it
  return [join(here, '..', '..', '..', 'bridge', 'native', rel), join(here, rel)];
}

let rawAddon: Addon | null | undefined;
let moduleError = '';

/** The addon itself, not started (origDst needs no relay thread; DUALSOCKS_NATIVE_RELAY does not apply). */
function loadModule(): Addon | null {
  if (rawAddon !== undefined) return rawAddon;
  rawAddon = null;
  if (process.platform !== 'linux') moduleError = 'not Linux';
  else {
    const path = candidates().find((p) => existsSync(p));
    if (!path) moduleError = 'addon not built (node-gyp rebuild -C bridge/native)';
    else {
      try {
        rawAddon = createRequire(import.meta.url)(path) as Addon;
      } catch (e) {
        moduleError = `addon failed to load: ${(e as Error).message}`;
      }
    }
  }
  return rawAddon;
}

function load(): Addon | null {
  if (addon !== undefined) return addon;
  addon = null;
  if (process.env.DUALSOCKS_NATIVE_RELAY === '0') loadError = 'disabled by DUALSOCKS_NATIVE_RELAY=0';
  else {
    const a = loadModule();
    if (!a) loadError = moduleError;
    else {
      try {
        pipeSize = a.init(onDone);
        addon = a;
      } catch (e) {
        loadError = `addon failed to load: ${(e as Error).message}`;
      }
    }
  }
  return addon;
}

/** Why the original destination of a redirected connection cannot be read here; undefined: it can. */
export function originalDestinationUnavailable(): string | undefined {
  const a = loadModule();
  if (!a) return moduleError;
  return typeof a.origDst === 'function' ? undefined : 'the native addon is older than this version (npm run build:native)';
}

/**
 * Where an accepted connection was going before nftables `redirect` sent it to us. Throws (the
 * errno's name as code) when the kernel knows none, e.g. ENOENT without conntrack.
 */
export function originalDestination(s: Socket): OriginalDestination {
  const a = loadModule();
  const fd = (s as NativeSocket)._handle?.fd;
  if (!a || typeof fd !== 'number' || fd < 0) throw Object.assign(new Error(`original destination unavailable: ${a ? 'no descriptor' : moduleError}`), { code: 'ENOTSUP' });
  return a.origDst(fd);
}

/** Whether tunnels can go native, and if not why. */
export function nativeRelayStatus(): { available: boolean; reason: string; pipeSize: number } {
  const a = load();
  return { available: a !== null, reason: a ? 'ok' : loadError, pipeSize };
}

function cancel(id: number): void {
  const t = tunnels.get(id);
  if (t && !t.cancelled) {
    t.cancelled = true;
    addon!.cancel(id);
  }
}

function onDone(id: number, up: number, down: number, end: string, bound: string, boundPort: number, dialMs: number, address: number): void {
  const t = tunnels.get(id);
  if (!t) return;
  tunnels.delete(id);
  dials.delete(id);
  groups.get(id)?.delete(id);
  groups.delete(id);
  const result: NativeResult = { up: t.up0 + up, down: t.down0 + down, end };
  if (bound !== '') {
    result.bound = { host: bound, port: boundPort };
    result.dialMs = dialMs;
    result.address = address;
  }
  if (!t.client || !t.remote) {
    t.resolve(result);
    return;
  }
  let closed = 0;
  const onClose = (): void => {
    if (++closed === 2) t.resolve(result);
  };
  for (const s of [t.client, t.remote] as NativeSocket[]) {
    delete s[kTunnel];
    // own property set at hand-over: the prototype's destroy() is back
    delete (s as { destroy?: unknown }).destroy;
    if (s.closed) onClose();
    else s.once('close', onClose);
    s.destroy();
  }
}

/** Stands in for socket.destroy() while the addon owns the descriptor: closing it under the loop would be unsafe. */
function destroyWhileNative(this: NativeSocket): NativeSocket {
  const t = this[kTunnel];
  if (t) cancel(t.id);
  return this;
}

/**
 * A connected TCP socket, open for writing, with no write pending in Node. Its reading side may
 * have ended: a FIN that came with the first bytes is handed over too (see readEnded).
 */
function handOverable(s: NativeSocket): boolean {
  const h = s._handle;
  if (!h || typeof h.fd !== 'number' || h.fd < 0 || typeof h.readStop !== 'function') return false;
  return !s.destroyed && !s.connecting && !s.writableEnded && s.writableLength === 0;
}

/** Whether Node has read the peer's FIN ('end' emitted, or queued behind buffered bytes). */
function readEnded(s: Socket): boolean {
  const rs = (s as unknown as { _readableState?: { ended?: boolean } })._readableState;
  return s.readableEnded || rs?.ended === true;
}

/** Bytes Node has already read from `from` (a server's banner, a client's early data) go to `to` first. */
function flushRead(from: Socket, to: Socket): void {
  while (from.readableLength > 0) {
    const chunk = from.read() as Buffer | null;
    if (chunk === null) break;
    to.write(chunk);
  }
}

// Nothing can land in the readable buffer between handOverable() and this: reads are delivered
// by the event loop, and both run in one synchronous turn.
function stopReading(s: NativeSocket): number {
  const h = s._handle!;
  s.pause();
  if (h.reading !== false) {
    h.reading = false;
    h.readStop!();
  }
  return h.fd!;
}

/**
 * Relays client <-> remote in the addon, or returns undefined (sockets untouched) when it cannot.
 * With `release`, both sockets are destroyed once the addon holds its own descriptors, so an idle
 * tunnel keeps nothing alive in JavaScript; `release` is then how the owner cancels it.
 * Without, the sockets stay open (paused) until the end and destroy() on either cancels it.
 */
export function nativeRelay(client: Socket, remote: Socket, idleTimeoutMs: number, release?: NativeTunnels): Promise<NativeResult> | undefined {
  const a = load();
  if (!a) return undefined;
  const c = client as NativeSocket;
  const r = remote as NativeSocket;
  if (!handOverable(c) || !handOverable(r)) {
    nativeStats.declined++;
    return undefined;
  }
  flushRead(c, r);
  flushRead(r, c);
  // what was flushed is normally written at once; if not, JavaScript relays the rest
  if (c.writableLength > 0 || r.writableLength > 0 || c.readableLength > 0 || r.readableLength > 0) {
    nativeStats.declined++;
    return undefined;
  }
  // a FIN Node already read (it came with the request) is passed on after the flushed bytes
  const ended = (readEnded(c) ? 1 : 0) | (readEnded(r) ? 2 : 0);
  let id: number;
  try {
    id = a.add(c._handle!.fd!, r._handle!.fd!, idleTimeoutMs > 0 ? idleTimeoutMs : 0, release !== undefined, ended);
  } catch {
    // no descriptors left for the duplicates: JavaScript relays this one
    nativeStats.declined++;
    return undefined;
  }
  stopReading(c);
  stopReading(r);
  nativeStats.handedOver++;
  return new Promise((resolve) => {
    const t: NativeTunnel = { id, client, remote, up0: remote.bytesWritten, down0: remote.bytesRead, cancelled: false, resolve };
    tunnels.set(id, t);
    if (release) {
      t.client = t.remote = null;
      release.add(id);
      groups.set(id, release);
      for (const s of [c, r]) {
        s[kReleased] = true;
        s.destroy();
      }
      return;
    }
    for (const s of [c, r]) {
      s[kTunnel] = t;
      s.destroy = destroyWhileNative as Socket['destroy'];
    }
  });
}

// ---- the front: the gateway's listening sockets accepted and handshaken in the addon ----

/** A client the front accepted, as JavaScript gets it: its descriptor (JavaScript's now) and what it sent. */
export interface FrontClient {
  fd: number;
  peer: string;
  port: number;
  /** Every byte read from it so far. */
  bytes: Uint8Array;
  /** How long it has been connected. */
  ms: number;
}

/** A greeting and CONNECT request read whole, the greeting answered with NO_AUTH. */
export interface FrontRequest extends FrontClient {
  greetingLength: number;
  requestLength: number;
  /** It offered METHOD.ERROR_CODES. */
  errorCodes: boolean;
  /** It sent its FIN behind the request. */
  eof: boolean;
}

/** Not the plain case: the session takes it from `bytes` (the greeting already answered if `methodSent`). */
export interface FrontAdopt extends FrontClient {
  methodSent: boolean;
}

/** A handshake the front ended itself (descriptor closed): a result code or the read's errno name. */
export interface FrontEnded {
  peer: string;
  port: number;
  result: string;
  phase: 'greeting' | 'request';
  ms: number;
}

export interface FrontHandlers {
  request(m: FrontRequest): void;
  adopt(m: FrontAdopt): void;
  ended(m: FrontEnded): void;
  /** A handler threw: the front closes that connection and goes on. */
  internal(e: unknown): void;
}

/** A dial that failed. */
export interface FrontDialFailed {
  /** An errno name, or ERR_CLIENT_CLOSED. */
  error: string;
  /** Which address the error is from; FRONT_DEADLINE: the dial's deadline passed. */
  address: number;
  /** The client's descriptor, given back for the failure reply; -1 when it is closed. */
  fd: number;
}

/** FrontDialFailed.address when the deadline ended the dial (IDX_DEADLINE in the addon). */
export const FRONT_DEADLINE = 0xffff;
const M_REQUEST = 1;
const M_ADOPT = 2;
const M_ENDED = 3;
const M_DIALED = 4;

const frontListeners = new Map<number, FrontHandlers>();
const dials = new Map<number, { failed: (d: FrontDialFailed) => void; group: NativeTunnels }>();
let nextLid = 1;
/** Set when a handler gave the descriptor an owner (a dial, a Node socket): a throw after that must not close it. */
let claimed = false;
let frontOn: boolean | undefined;

/**
 * What the front did with the connections it accepted, since the process started: dialed itself,
 * given to the session (counted by the gateway when it adopts one), ended in their handshake. For
 * tests and diagnostics.
 */
export const frontStats = { dialed: 0, adopted: 0, ended: 0 };

function closeFd(fd: number): void {
  if (fd < 0) return;
  try {
    closeSync(fd);
  } catch {
    // already closed: nothing holds it
  }
}

// Called by the addon's queue: a throw here would end the process, so every handler runs guarded.
function onFront(kind: number, lid: number, fd: number, peer: string, port: number, bytes: Buffer | null, a: number, b: number, flags: number, ms: number, text: string, id: number): void {
  if (kind === M_DIALED) {
    // a failed dial: no DONE follows
    const d = dials.get(id);
    dials.delete(id);
    tunnels.delete(id);
    d?.group.delete(id);
    groups.delete(id);
    if (!d) return closeFd(fd);
    try {
      d.failed({ error: text, fd, address: a });
    } catch (e) {
      closeFd(fd);
      say(`dualsocks: internal error after a native dial: ${e instanceof Error ? e.stack : String(e)}`);
    }
    return;
  }
  const h = frontListeners.get(lid);
  if (!h) return closeFd(fd);
  const client = { fd, peer, port, bytes: bytes ?? new Uint8Array(0), ms };
  claimed = false;
  try {
    if (kind === M_REQUEST) h.request({ ...client, greetingLength: a, requestLength: b & 0xffff, errorCodes: (b >>> 16) % 2 === 1, eof: (flags & 1) === 1 });
    else if (kind === M_ADOPT) h.adopt({ ...client, methodSent: (flags & 2) === 2 });
    else if (kind === M_ENDED) {
      frontStats.ended++;
      h.ended({ peer, port, result: text, phase: a ? 'request' : 'greeting', ms });
    }
  } catch (e) {
    if (!claimed) closeFd(fd);
    h.internal(e);
  }
}

/** Whether this process could run the front, without starting the relay (for a --workers primary). */
export function nativeFrontBuilt(): boolean {
  if (process.env.DUALSOCKS_NATIVE_FRONT === '0' || process.env.DUALSOCKS_NATIVE_RELAY === '0') return false;
  const a = loadModule();
  return typeof a?.frontStart === 'function' && typeof a.bindListen === 'function';
}

/** Whether the front can run here, and if not why. */
export function nativeFrontStatus(): { available: boolean; reason: string } {
  if (process.env.DUALSOCKS_NATIVE_FRONT === '0') return { available: false, reason: 'disabled by DUALSOCKS_NATIVE_FRONT=0' };
  const a = load();
  if (!a) return { available: false, reason: loadError };
  if (typeof a.frontStart !== 'function') return { available: false, reason: 'the native addon is older than this version (npm run build:native)' };
  if (frontOn === undefined) {
    try {
      a.frontStart(onFront);
      frontOn = true;
    } catch (e) {
      frontOn = false;
      loadError = `front failed to start: ${(e as Error).message}`;
    }
  }
  return frontOn ? { available: true, reason: 'ok' } : { available: false, reason: loadError };
}

export interface FrontListenOptions {
  /** --clients as 17 bytes per CIDR (16 of address, the prefix length), or null for everyone. */
  clients: Uint8Array | null;
  handshakeMs: number;
  budget: number;
}

/**
 * Hands a listening socket's accepting to the front; returns its id (for frontUnlisten), or
 * undefined when the front cannot take it (then the caller keeps accepting in Node). The addon
 * accepts on a duplicate: the caller closes its own server at once.
 */
export function frontListen(server: Server, handlers: FrontHandlers, opts: FrontListenOptions): number | undefined {
  // a cluster worker's server has no descriptor of its own: the primary accepts
  const fd = (server as unknown as { _handle?: Handle | null })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return undefined;
  return frontListenFd(fd, handlers, opts);
}

/** frontListen() for a listening descriptor (the addon takes a duplicate; the caller closes its own). */
export function frontListenFd(fd: number, handlers: FrontHandlers, opts: FrontListenOptions): number | undefined {
  if (!nativeFrontStatus().available) return undefined;
  const lid = nextLid++;
  addon!.frontListen(fd, lid, opts.clients, opts.handshakeMs, opts.budget);
  frontListeners.set(lid, handlers);
  return lid;
}

/**
 * A TCP socket bound to an IP literal's port, listening if asked; with `reusePort` several
 * processes share the port (SO_REUSEPORT). Throws with the errno's name as code.
 */
export function bindListen(host: string, port: number, reusePort: boolean, listen: boolean): { fd: number; port: number } {
  const a = loadModule();
  if (typeof a?.bindListen !== 'function') throw Object.assign(new Error('the native addon cannot bind'), { code: 'ENOTSUP' });
  return a.bindListen(host, port, reusePort, listen);
}

/** Handshakes the front holds on that listener now. */
export function frontHandshakes(lid: number): number {
  return frontListeners.has(lid) ? addon!.frontHandshakes(lid) : 0;
}

export function frontUnlisten(lid: number): void {
  if (!frontListeners.delete(lid)) return;
  addon?.frontUnlisten(lid);
}

export interface FrontDialOptions {
  timeoutMs: number;
  idleTimeoutMs: number;
  /** Client bytes after the request, for the remote. */
  early: Uint8Array;
  eof: boolean;
  group: NativeTunnels;
  failed: (d: FrontDialFailed) => void;
  /** The tunnel's end, after a dial that succeeded (with its BND and the dial's duration). */
  done: (r: NativeResult) => void;
}

/**
 * The front dials `addresses` (IP literals, in the order to try them; RFC 8305 attempts) for a
 * client from a FrontRequest: its descriptor is the addon's again.
 */
export function frontDial(fd: number, lid: number, addresses: string[], port: number, o: FrontDialOptions): void {
  const id = addon!.frontDial(fd, lid, addresses, port, o.timeoutMs, o.idleTimeoutMs > 0 ? o.idleTimeoutMs : 0, o.early.length ? o.early : null, o.eof);
  claimed = true;
  frontStats.dialed++;
  tunnels.set(id, { id, client: null, remote: null, up0: 0, down0: 0, cancelled: false, resolve: o.done });
  dials.set(id, { failed: o.failed, group: o.group });
  o.group.add(id);
  groups.set(id, o.group);
}

/**
 * Runs `step` with descriptor `fd` from the front, outside onFront (after a lookup): if it throws
 * before a dial or a Node socket took the descriptor, the descriptor is closed. Returns what it
 * threw, if it did.
 */
export function frontStep(fd: number, step: () => void): { error: unknown } | undefined {
  claimed = false;
  try {
    step();
    return undefined;
  } catch (error) {
    if (!claimed) closeFd(fd);
    return { error };
  }
}

/** A Node socket for a descriptor the front gave back. */
export function adoptDescriptor(fd: number): Socket {
  const s = new NetSocket({ fd, readable: true, writable: true, allowHalfOpen: true });
  claimed = true;
  return s;
}
