// The bridge's HTTP proxy side: CONNECT tunnels, absolute-URI requests forwarded over pooled
// keep-alive tunnels, and the bridge's own pages for origin-form requests. The server never
// listens: the mixed-port listener hands it sockets whose first byte was not SOCKS.
//
// Every tunnel is opened by ctx.open with the host as the client wrote it, so a name is resolved
// only at the gateway. A failure becomes a plain-words 502/504 (403: the bridge refused) from describeFailure().
import { Agent, createServer, request as httpRequest, type ClientRequest, type ClientRequestArgs, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import { formatIp, joinHostPort, parseIp, splitHostPort } from '../../shared/net/address.js';
import { isDualsocksError, RequestError } from '../../shared/errors.js';
import { isLocalPeer } from '../host-addresses.js';
import type { Tunnel } from '../upstream/pool.js';
import { failInternally, relayToEnd, type BridgeContext } from './context.js';
import type { Inbound } from './state.js';
import { describeFailure, type Failure } from './failure.js';
import { basicCredentials, REALM, userText } from './auth.js';
import { handlePage } from './pages.js';

const VIA = '1.1 dualsocks';

// RFC 9110 §7.6.1, plus Proxy-Connection (pre-standard, still sent by clients).
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'proxy-authenticate', 'te', 'trailer', 'transfer-encoding', 'upgrade']);
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);

/** `fn` inside the connection's guard: what it throws ends that connection (ERR_INTERNAL), not the process. */
function guarded<A extends unknown[]>(socket: Duplex, fn: (...args: A) => void): (...args: A) => void {
  return (...args: A): void => {
    try {
      fn(...args);
    } catch (e) {
      failInternally(socket as Socket, e);
    }
  };
}

export interface Target {
  host: string;
  port: number;
}

/** Host as a SOCKS5 DOMAINNAME may carry it: an IP literal, or an ASCII host name. */
function validHost(host: string): boolean {
  if (parseIp(host)) return true;
  return host.length <= 253 && /^[a-z0-9_]([a-z0-9_-]*)(\.[a-z0-9_-]+)*\.?$/i.test(host);
}

/** Parses CONNECT's authority form ("host:port", "[v6]:port"); null when malformed. */
export function parseAuthority(text: string, defaultPort?: number): Target | null {
  const hp = splitHostPort(text, defaultPort);
  if (!hp || hp.port < 1 || !validHost(hp.host)) return null;
  return hp;
}

export type AbsoluteUri =
  | { ok: true; target: Target; authority: string; path: string }
  | { ok: false; status: number; text: string };

/** Splits an absolute-form request target; only http:// is forwarded. */
export function parseAbsoluteUri(url: string): AbsoluteUri {
  const m = /^([a-z][a-z0-9+.-]*):\/\/([^/?#]*)([^#]*)/i.exec(url);
  if (!m) return { ok: false, status: 400, text: `The request target ${JSON.stringify(url)} is not an absolute http:// URL.` };
  const scheme = m[1]!.toLowerCase();
  if (scheme === 'https') {
    return { ok: false, status: 501, text: 'https:// URLs must be tunnelled with CONNECT; the bridge does not make TLS connections itself. Configure this proxy for HTTPS too (curl does so with -x).' };
  }
  if (scheme !== 'http') {
    return { ok: false, status: 501, text: `${scheme}:// URLs are not forwarded by the HTTP proxy; only http:// (and https:// through CONNECT). Use the SOCKS5 side of the same port for other protocols.` };
  }
  // userinfo in an http URL is not for the origin's eyes
  const authority = m[2]!.slice(m[2]!.lastIndexOf('@') + 1);
  const target = parseAuthority(authority, 80);
  if (!target) return { ok: false, status: 400, text: `${JSON.stringify(authority)} is not a valid host and port (names must be ASCII, e.g. punycode; IPv6 addresses in brackets; ports 1-65535).` };
  let path = m[3]!;
  if (path === '' || path.startsWith('?')) path = `/${path}`;
  return { ok: true, target, authority, path };
}

/** Whether host:port is this bridge, so the request must not be sent out again (a loop). */
function isSelf(ctx: BridgeContext, t: Target): boolean {
  const ip = parseIp(t.host);
  const canonical = ip ? formatIp(ip) : t.host.toLowerCase().replace(/\.$/, '');
  if (ctx.state.listen.includes(joinHostPort(canonical, t.port))) return true;
  if (t.port !== ctx.port) return false;
  return canonical === 'localhost' || canonical === '::1' || canonical.startsWith('127.');
}

/** Raw header pairs without the hop-by-hop ones (and those Connection lists). */
export function endToEndHeaders(raw: string[]): string[] {
  const listed = new Set<string>();
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.toLowerCase() === 'connection') {
      for (const token of raw[i + 1]!.split(',')) listed.add(token.trim().toLowerCase());
    }
  }
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (!HOP_BY_HOP.has(name) && !listed.has(name)) out.push(raw[i]!, raw[i + 1]!);
  }
  return out;
}

/** Appends our Via entry to the message's own. */
function withVia(headers: string[]): string[] {
  const out: string[] = [];
  const vias: string[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i]!.toLowerCase() === 'via') vias.push(headers[i + 1]!);
    else out.push(headers[i]!, headers[i + 1]!);
  }
  out.push('Via', [...vias, VIA].join(', '));
  return out;
}

function failureBody(f: Failure, target: string, err: unknown): string {
  const detail = err instanceof Error ? err.message : String(err);
  return `${f.reason}\n\nThe bridge could not open a connection to ${target}.\n${f.text}\n\nDetail: ${detail}\nError code: ${f.code}\n`;
}

function failureHeaders(f: Failure): Record<string, string> {
  return { 'X-Dualsocks-Error': f.code, 'X-Dualsocks-Rep': `0x${f.socks5Rep.toString(16).padStart(2, '0')}` };
}

/** A complete response on a raw socket, then close: for CONNECT and parser errors. */
function rawResponse(socket: Duplex, status: number, reason: string, body: string, headers: Record<string, string> = {}): void {
  const bytes = Buffer.from(body);
  const head = [`HTTP/1.1 ${status} ${reason}`, 'Content-Type: text/plain; charset=utf-8', `Content-Length: ${bytes.length}`, 'Connection: close', ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  socket.end(Buffer.concat([Buffer.from(`${head.join('\r\n')}\r\n\r\n`), bytes]));
  // drain whatever the client still sends so the close does not turn into a reset, but not forever
  socket.resume();
  socket.once('end', () => socket.destroy());
  setTimeout(() => socket.destroy(), 10_000).unref();
}

function textResponse(res: ServerResponse, status: number, text: string, headers: Record<string, string> = {}, reason?: string): void {
  const body = Buffer.from(text.endsWith('\n') ? text : `${text}\n`);
  const all = { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': String(body.length), 'X-Content-Type-Options': 'nosniff', ...headers };
  if (reason) res.writeHead(status, reason, all);
  else res.writeHead(status, all);
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

function notAPage(ctx: BridgeContext, path: string): string {
  const base = `http://127.0.0.1:${ctx.port}`;
  return (
    `This is dualsocks, a proxy (HTTP and SOCKS on one port), and ${JSON.stringify(path)} is not one of its pages.\n` +
    `To use it, configure it as your HTTP or SOCKS5 proxy (e.g. curl -x ${base} http://example.com/), ` +
    `or point your browser or system at its proxy auto-config file ${base}/proxy.pac. Its status page is ${base}/.`
  );
}

/** The answer to a proxy request's login: go on, or this refusal. */
type Login = { ok: true } | { ok: false; status: number; reason: string; text: string; headers: Record<string, string> };

const LOGGED_IN: Login = Object.freeze({ ok: true });
const HOW_TO_LOG_IN =
  'Browsers ask for a username and password; curl takes --proxy-user USER:PASSWORD; a proxy URL may carry them (http://USER:PASSWORD@HOST:PORT). ' +
  'SOCKS5 clients log in with the same username and password; SOCKS4 cannot.';

function challenge(text: string): Login {
  return { ok: false, status: 407, reason: 'Proxy Authentication Required', text: `${text}\n\n${HOW_TO_LOG_IN}`, headers: { 'Proxy-Authenticate': `Basic realm="${REALM}"` } };
}

/**
 * The login a proxy request needs with --users (Proxy-Authorization: Basic). `then` gets the
 * answer, at once when no login is needed or none was sent; returns what cancels a check the
 * client no longer waits for.
 */
function login(ctx: BridgeContext, via: Inbound, socket: Socket, header: string | undefined, then: (l: Login) => void): (() => boolean) | undefined {
  const auth = ctx.auth;
  if (!auth || !auth.required(socket.remoteAddress)) {
    then(LOGGED_IN);
    return undefined;
  }
  const c = basicCredentials(header);
  if (!c) {
    // a line per request, as for any other: a browser sends only its first requests without
    // credentials (Chromium: a handful at start), the later ones with the header the 407 made it ask for
    ctx.state.refused(via, socket, { auth: 'none', result: 'ERR_SOCKS_AUTH_FAILED', error: header === undefined ? 'no Proxy-Authorization' : 'Proxy-Authorization not Basic' });
    then(challenge(header === undefined ? 'Proxy Authentication Required. This proxy serves only its users: send a username and password.' : 'Proxy Authentication Required. Only the Basic scheme is understood here: send a username and password.'));
    return undefined;
  }
  const user = userText(c);
  return auth.check(socket.remoteAddress, c, guarded(socket, (r) => {
    if (r.result === 'error') throw r.error;
    if (r.result === 'ok') {
      ctx.state.loggedIn(socket, user);
      then(LOGGED_IN);
      return;
    }
    ctx.state.refused(via, socket, { user, auth: r.result, result: r.result === 'busy' ? 'ERR_CONNECTION_CAP' : 'ERR_SOCKS_AUTH_FAILED' });
    if (r.result === 'busy') then({ ok: false, status: 503, reason: 'Service Unavailable', text: 'Too many password checks are waiting; try again in a moment.', headers: { 'Retry-After': '1' } });
    else if (r.result === 'backoff') then(challenge(`Too many failed logins from your address: refused without a check for ${Math.ceil(r.retryMs / 1000)} s.`));
    else then(challenge(`The username ${JSON.stringify(user)} or its password was not accepted.`));
  }));
}

type OnCreate = (err: Error | null, socket: Duplex) => void;

/** Calls back with the error alone: on failure there is no socket, and Node's own agent does the same. */
function failedToCreate(cb: OnCreate | undefined, err: Error): void {
  (cb as ((err: Error) => void) | undefined)?.(err);
}

/** Agent whose connections are tunnels through the gateways, pooled per destination host:port. */
class TunnelAgent extends Agent {
  constructor(private readonly ctx: BridgeContext) {
    // the pool is bounded; idle tunnels are closed after `timeout`
    super({ keepAlive: true, keepAliveMsecs: 30_000, maxSockets: 128, maxFreeSockets: 16, maxTotalSockets: 2048, timeout: 30_000, scheduling: 'lifo' });
  }

  // a direct tunnel opened for a program on this machine must never serve another client
  override getName(options?: ClientRequestArgs & { from?: string }): string {
    return `${super.getName(options)}:${isLocalPeer(options?.from) ? 'local' : 'remote'}`;
  }

  override createConnection(options: ClientRequestArgs & { from?: string }, cb?: OnCreate): undefined {
    const host = String(options.host);
    const port = Number(options.port);
    this.ctx.open(host, port, 'http', options.from).then(
      (tunnel) => {
        this.ctx.state.record('http', host, port, { tunnel });
        const s = tunnel.socket;
        // HTTP needs no half-close toward the origin; without this an idle tunnel whose origin
        // closed would stay in the pool half-open and fail the next request
        s.allowHalfOpen = false;
        s.setNoDelay(true);
        // the pool hands the tunnel over paused: let it flow once the HTTP client reads it
        s.on('newListener', function flow(event: string) {
          if (event === 'data') {
            s.off('newListener', flow);
            process.nextTick(() => s.resume());
          }
        });
        cb?.(null, s);
      },
      (err: unknown) => {
        this.ctx.state.record('http', host, port, { error: { code: describeFailure(err).code } });
        failedToCreate(cb, err instanceof Error ? err : new Error(String(err)));
      },
    );
    return undefined;
  }
}

/** Largest request head (request line and headers) the bridge reads; more gets a 431. */
export const MAX_HEAD_BYTES = 16 * 1024;

export function createHttpFrontend(ctx: BridgeContext, opts: { handshakeTimeoutMs?: number } = {}): Server {
  const agent = new TunnelAgent(ctx);
  const headersTimeout = opts.handshakeTimeoutMs ?? 10_000;
  const server = createServer({
    // CONNECT tunnels and long uploads live longer than any request timeout would allow
    requestTimeout: 0,
    // a request head (from its first byte) not complete in time gets a 408 and the connection closes
    headersTimeout,
    connectionsCheckingInterval: Math.min(1000, headersTimeout),
    keepAliveTimeout: 60_000,
    maxHeaderSize: MAX_HEAD_BYTES,
  });
  // Node checks headersTimeout only for servers that listen (it starts its checks on 'listening');
  // this one is handed sockets by the mixed port, so start them here (slow-loris heads)
  server.emit('listening');

  // A client that half-closes after its request (`printf 'GET …' | ncat`, HTTP/1.0 tools) still
  // reads: its FIN marks the response in progress as the last one instead of ending our side at
  // once (Node's default, which lost the response). Node's own switch, undocumented but public.
  (server as Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;

  // the listener may hand over a socket it paused while sniffing the first byte
  server.on('connection', (s: Socket) => s.resume());

  server.on('request', (req: IncomingMessage, res: ServerResponse) => guarded(req.socket, serve)(req, res));
  const serve = (req: IncomingMessage, res: ServerResponse): void => {
    const url = req.url ?? '';
    if (url.startsWith('/') || url === '*') {
      if (!handlePage(ctx, req, res)) textResponse(res, 400, notAPage(ctx, url), {}, 'Not A Proxy Request');
      return;
    }
    const parsed = parseAbsoluteUri(url);
    if (!parsed.ok) return textResponse(res, parsed.status, parsed.text);
    if (isSelf(ctx, parsed.target)) {
      req.url = parsed.path;
      if (!handlePage(ctx, req, res)) textResponse(res, 400, notAPage(ctx, parsed.path), {}, 'Not A Proxy Request');
      return;
    }
    const cancel = login(ctx, 'http', req.socket, req.headers['proxy-authorization'], (l) => {
      if (l.ok) return forward(ctx, agent, req, res, parsed.target, parsed.authority, parsed.path);
      if (res.destroyed) return;
      // a request body not read would be taken for the next request
      const hasBody = req.headers['content-length'] !== undefined ? req.headers['content-length'] !== '0' : req.headers['transfer-encoding'] !== undefined;
      const close: Record<string, string> = hasBody && !req.complete ? { Connection: 'close' } : {};
      textResponse(res, l.status, l.text, { ...l.headers, ...close }, l.reason);
      req.resume();
    });
    if (cancel) res.once('close', cancel);
  };

  server.on('connect', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    guarded(socket, () => {
      const s = socket as Socket;
      const cancel = login(ctx, 'connect', s, req.headers['proxy-authorization'], (l) => {
        if (!l.ok) return rawResponse(s, l.status, l.reason, `${l.text}\n`, l.headers);
        if (s.destroyed) return;
        void tunnelConnect(ctx, req, s, head).catch((e: unknown) => failInternally(s, e));
      });
      if (cancel) s.once('close', cancel);
    })();
  });

  // No 'upgrade' listener on purpose: Node then serves Upgrade requests as plain ones, and
  // forward() drops Upgrade as hop-by-hop. Browsers send WebSockets through CONNECT.

  server.on('clientError', (err: NodeJS.ErrnoException & { rawPacket?: Buffer }, socket: Duplex) => guarded(socket, clientError)(err, socket));
  const clientError = (err: NodeJS.ErrnoException & { rawPacket?: Buffer }, socket: Duplex): void => {
    const busy = (socket as Socket & { _httpMessage?: ServerResponse })._httpMessage?.headersSent;
    if (err.code === 'ECONNRESET' || !socket.writable || busy) {
      socket.destroy();
      return;
    }
    const [status, reason, text] = clientErrorWords(err);
    rawResponse(socket, status, reason, `${text}\n\n(${err.code ?? 'error'}: ${err.message})\n`);
  };

  server.on('close', () => agent.destroy());
  return server;
}

function clientErrorWords(err: NodeJS.ErrnoException & { rawPacket?: Buffer }): [number, string, string] {
  if (err.code === 'HPE_HEADER_OVERFLOW') return [431, 'Request Header Fields Too Large', `The request line and headers are larger than the bridge accepts (${MAX_HEAD_BYTES / 1024} KiB).`];
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'ERR_HTTP_HEADERS_TIMEOUT') return [408, 'Request Timeout', 'The request headers did not arrive in time.'];
  if (err.rawPacket?.[0] === 0x16) {
    return [400, 'Bad Request', 'This port speaks plain HTTP proxy and SOCKS, not TLS: use http:// (not https://) as the proxy URL.'];
  }
  return [400, 'Bad Request', 'This is not an HTTP request the bridge understands. The port speaks HTTP proxy (absolute-URI requests and CONNECT), SOCKS4/4a and SOCKS5.'];
}

function forward(ctx: BridgeContext, agent: Agent, req: IncomingMessage, res: ServerResponse, target: Target, authority: string, path: string): void {
  const done = ctx.state.opened('http');
  const line = ctx.state.begin('http', req.socket, target.host, target.port, { method: req.method });
  // set where a failure page is sent; otherwise the origin's status decides
  let failed: string | undefined;
  res.once('close', () => {
    done();
    ctx.state.finish(line, { status: res.statusCode, result: failed ?? (res.writableFinished ? 'ok' : 'ERR_CLIENT_CLOSED') });
  });
  const hasBody = req.headers['content-length'] !== undefined ? req.headers['content-length'] !== '0' : req.headers['transfer-encoding'] !== undefined;
  // RFC 9112 §3.2.2: a proxy ignores the Host a client sent with an absolute-form target and
  // sends the target's own authority, so the origin serves the site the URI names
  const headers = withVia(endToEndHeaders(req.rawHeaders).filter((_, i, all) => all[i - (i % 2)]!.toLowerCase() !== 'host'));
  // a fake address stands for a name: the origin is asked for the site by that name
  const name = ctx.fakeName?.(target.host);
  const host = typeof name === 'string' ? (target.port === 80 ? name : `${name}:${target.port}`) : target.port === 80 ? authority.replace(/:80$/, '') : authority;
  headers.unshift('Host', host);
  // the client's chunked framing was removed with Transfer-Encoding; Node re-chunks only when told
  if (hasBody && req.headers['content-length'] === undefined) headers.push('Transfer-Encoding', 'chunked');
  const label = joinHostPort(target.host, target.port);

  const send = (attempt: number): void => {
    let proxyReq: ClientRequest;
    try {
      proxyReq = httpRequest({ agent, host: target.host, port: target.port, method: req.method, path, headers, setHost: false, from: req.socket.remoteAddress } as ClientRequestArgs);
    } catch (e) {
      // a path Node refuses to send (control characters…)
      textResponse(res, 400, `The request cannot be forwarded: ${(e as Error).message}`);
      req.resume();
      return;
    }
    proxyReq.on('response', guarded(req.socket, (pres: IncomingMessage) => {
      if (res.destroyed) {
        pres.destroy();
        return;
      }
      try {
        res.writeHead(pres.statusCode ?? 502, pres.statusMessage, withVia(endToEndHeaders(pres.rawHeaders)));
      } catch (e) {
        // a status line or header Node will not send on
        pres.destroy();
        const f = forwardFailure(Object.assign(new Error((e as Error).message), { code: 'HPE_INVALID_RESPONSE' }));
        failed = f.code;
        textResponse(res, f.httpStatus, failureBody(f, label, e), failureHeaders(f), f.reason);
        return;
      }
      pres.pipe(res);
      pres.once('error', () => res.destroy());
      pres.once('aborted', () => res.destroy());
    }));
    proxyReq.on('error', guarded(req.socket, (err: NodeJS.ErrnoException) => {
      if (res.destroyed || res.writableEnded) return;
      if (res.headersSent) {
        res.destroy();
        return;
      }
      // a pooled tunnel that the origin closed meanwhile: retry once on a fresh one
      if (attempt === 0 && proxyReq.reusedSocket && !hasBody && IDEMPOTENT.has(req.method ?? '') && !res.destroyed) {
        send(1);
        return;
      }
      const f = forwardFailure(err);
      failed = f.code;
      if (!req.complete) {
        // the rest of the request body would be read as the next request
        res.setHeader('Connection', 'close');
        req.resume();
      }
      textResponse(res, f.httpStatus, failureBody(f, label, err), failureHeaders(f), f.reason);
    }));
    res.once('close', () => {
      if (!res.writableFinished) proxyReq.destroy();
    });
    if (hasBody) req.pipe(proxyReq);
    else proxyReq.end();
  };
  send(0);
}

/** Why a forwarded request failed: opening the tunnel (a typed error) or the origin's answer. */
function forwardFailure(err: NodeJS.ErrnoException): Failure {
  if (isDualsocksError(err)) return describeFailure(err);
  const f = describeFailure(new RequestError('ERR_CONNECT_FAILED', err.message));
  if (err.code?.startsWith('HPE_')) return { ...f, reason: 'Bad Response From Destination', text: 'The destination answered with something that is not a valid HTTP response.' };
  return { ...f, reason: 'Destination Closed Connection', text: 'The connection to the destination closed before a complete response arrived.' };
}

async function tunnelConnect(ctx: BridgeContext, req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
  socket.on('error', () => socket.destroy());
  const target = parseAuthority(req.url ?? '');
  if (!target) {
    rawResponse(socket, 400, 'Bad Request', `CONNECT needs host:port with a port from 1 to 65535 (IPv6 in brackets, names in ASCII), not ${JSON.stringify(req.url)}.\n`);
    return;
  }
  if (isSelf(ctx, target)) {
    rawResponse(socket, 400, 'Bad Request', `${joinHostPort(target.host, target.port)} is this bridge itself; a CONNECT there would loop.\n`);
    return;
  }
  const done = ctx.state.opened('connect');
  const line = ctx.state.begin('connect', socket, target.host, target.port);
  let tunnel: Tunnel;
  try {
    tunnel = await ctx.open(target.host, target.port, 'connect', socket.remoteAddress);
  } catch (err) {
    const f = describeFailure(err);
    ctx.state.record('connect', target.host, target.port, { error: { code: f.code } });
    ctx.state.finish(line, { result: f.code, status: f.httpStatus });
    rawResponse(socket, f.httpStatus, f.reason, failureBody(f, joinHostPort(target.host, target.port), err), failureHeaders(f));
    done();
    return;
  }
  ctx.state.record('connect', target.host, target.port, { tunnel });
  if (socket.destroyed) {
    tunnel.socket.destroy();
    ctx.state.finish(line, { result: 'ERR_CLIENT_CLOSED' });
    done();
    return;
  }
  socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
  if (head.length > 0) tunnel.socket.write(head);
  relayToEnd(ctx, socket, tunnel, line, done);
}
