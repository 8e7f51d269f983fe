// The bridge's own pages on its mixed port: the PAC file (also as WPAD), the status API for the
// extension and local tools, and a small status page for people.
//
// The status shows recent destinations, i.e. browsing history, so no web page may read it:
// requests from web origins or cross-site contexts are refused, no permissive CORS header is ever
// sent, and the Host header must name loopback so a DNS-rebound name cannot make a page
// same-origin with the bridge; with --users, only programs on the bridge's machine may read it.
// The PAC is not secret and is served to every admitted client without a login: browsers fetch
// it before they use any proxy, and answer no 407 for it.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { formatIp, joinHostPort, parseIp, splitHostPort, type HostPort } from '../../shared/net/address.js';
import { toPac } from '../../shared/rules/index.js';
import { checkProxyHost } from '../../shared/rules/settings.js';
import { isLocalPeer } from '../host-addresses.js';
import { answerScrape, LOOPBACK_CLIENTS, METRICS_PATH, scrapeAllowed, type MetricsSource } from '../metrics.js';
import type { BridgeContext } from './context.js';
import type { StatusSnapshot } from './state.js';

export const PAC_PATHS = ['/proxy.pac', '/wpad.dat'];
const EXTENSION_ORIGIN = /^(chrome-extension|moz-extension|safari-web-extension):\/\/[a-z0-9._-]+$/i;

export function isExtensionOrigin(origin: string | undefined): boolean {
  return origin !== undefined && EXTENSION_ORIGIN.test(origin);
}

/** A Host header naming this machine by loopback address or `localhost` (any port). */
export function isLoopbackHost(host: string | undefined): boolean {
  if (!host) return false;
  const hp = splitHostPort(host, 80);
  if (!hp) return false;
  const name = hp.host.toLowerCase().replace(/\.$/, '');
  if (name === 'localhost') return true;
  const ip = parseIp(name);
  if (!ip) return false;
  const text = formatIp(ip);
  return text === '::1' || text.startsWith('127.');
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

export type Access = { ok: true; extensionOrigin: string | null } | { ok: false; why: string };

/**
 * Whether a request may read the status. `navigation` lets a top-level page load from anywhere
 * through (the page that linked cannot read it) but never a fetch, frame or subresource.
 */
export function checkAccess(req: IncomingMessage, opts: { navigation?: boolean } = {}): Access {
  const host = header(req, 'host');
  if (!isLoopbackHost(host)) {
    return {
      ok: false,
      why: `The Host header ${JSON.stringify(host ?? '')} is not a loopback address or localhost. The status is only served to http://127.0.0.1, http://[::1] or http://localhost, so that a web site whose name resolves to this machine (DNS rebinding) cannot read it.`,
    };
  }
  const origin = header(req, 'origin');
  if (origin !== undefined) {
    if (isExtensionOrigin(origin)) return { ok: true, extensionOrigin: origin };
    if (origin !== `http://${host!.toLowerCase()}`) {
      return { ok: false, why: `Requests from the web origin ${JSON.stringify(origin)} are refused: web pages may not read the bridge's status (it lists the sites you visited). Only the dualsocks extension and tools on this machine may.` };
    }
  }
  const site = header(req, 'sec-fetch-site');
  const navigation = opts.navigation === true && header(req, 'sec-fetch-mode') === 'navigate' && header(req, 'sec-fetch-dest') === 'document';
  if ((site === 'cross-site' || site === 'same-site') && !navigation) {
    return { ok: false, why: `A ${site} request is refused: web pages may not read the bridge's status (it lists the sites you visited). Only the dualsocks extension and tools on this machine may.` };
  }
  return { ok: true, extensionOrigin: null };
}

const PRIVATE_HEADERS = {
  'Cache-Control': 'no-store',
  'X-Content-Type-Options': 'nosniff',
  'Cross-Origin-Resource-Policy': 'same-origin',
  'Referrer-Policy': 'no-referrer',
};

function send(req: IncomingMessage, res: ServerResponse, status: number, type: string, body: string, headers: Record<string, string> = {}): void {
  const bytes = Buffer.from(body);
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': String(bytes.length), ...headers });
  res.end(req.method === 'HEAD' ? undefined : bytes);
}

function sendText(req: IncomingMessage, res: ServerResponse, status: number, text: string, headers: Record<string, string> = {}): void {
  send(req, res, status, 'text/plain; charset=utf-8', `${text}\n`, { 'X-Content-Type-Options': 'nosniff', ...headers });
}

function methodNotAllowed(req: IncomingMessage, res: ServerResponse, allow: string): void {
  sendText(req, res, 405, `${req.method} is not supported here; use ${allow}.`, { Allow: allow });
}

/** The proxy address for the PAC: the host and port the client fetched it from. */
export function pacProxyAddress(ctx: BridgeContext, req: IncomingMessage): HostPort {
  if (ctx.pacProxy) return ctx.pacProxy;
  const fallback = { host: '127.0.0.1', port: ctx.port };
  const host = header(req, 'host');
  if (!host) return fallback;
  // no port in Host means the client used port 80
  const hp = splitHostPort(host, 80);
  if (!hp || hp.port === 0) return fallback;
  try {
    return { host: checkProxyHost('Host', hp.host), port: hp.port };
  } catch {
    return fallback; // a Host header that is no proxy host: the PAC names the listen address instead
  }
}

function servePac(ctx: BridgeContext, req: IncomingMessage, res: ServerResponse): void {
  if (req.method !== 'GET' && req.method !== 'HEAD') return methodNotAllowed(req, res, 'GET');
  // browsers and operating systems fetch a PAC with no Sec-Fetch-* headers; a web page that
  // loads it as a script could call FindProxyForURL and learn the user's routing rules
  const site = header(req, 'sec-fetch-site');
  if (site === 'cross-site' || site === 'same-site') {
    return sendText(req, res, 403, `Forbidden. A ${site} request for the PAC file is refused: web pages may not read your routing rules.`, { 'Cross-Origin-Resource-Policy': 'same-origin' });
  }
  const proxy = pacProxyAddress(ctx, req);
  let pac: string;
  try {
    pac = toPac(ctx.rules(), { proxyHost: proxy.host, proxyPort: proxy.port });
  } catch (e) {
    return sendText(req, res, 500, `The routing settings cannot be compiled into a PAC file: ${(e as Error).message}`);
  }
  send(req, res, 200, 'application/x-ns-proxy-autoconfig', pac, { 'Cache-Control': 'no-cache', 'Cross-Origin-Resource-Policy': 'same-origin', 'X-Content-Type-Options': 'nosniff' });
}

function refuse(req: IncomingMessage, res: ServerResponse, why: string): void {
  sendText(req, res, 403, `Forbidden. ${why}`, { ...PRIVATE_HEADERS, Vary: 'Origin' });
}

/**
 * The status lists every client's destinations, so it is for this machine alone, whoever else
 * --clients or --users admits as a proxy client (the Host check below a LAN client could forge).
 */
function statusRefusedToOthers(req: IncomingMessage): string | null {
  if (isLocalPeer(req.socket.remoteAddress)) return null;
  return "The status lists every client's destinations: it is served only to programs on the bridge's own machine.";
}

function serveStatusApi(ctx: BridgeContext, req: IncomingMessage, res: ServerResponse): void {
  const local = statusRefusedToOthers(req);
  if (local) return refuse(req, res, local);
  const access = checkAccess(req);
  if (!access.ok) return refuse(req, res, access.why);
  // only an extension gets CORS headers, and only its own origin echoed back
  const cors: Record<string, string> = access.extensionOrigin ? { 'Access-Control-Allow-Origin': access.extensionOrigin, Vary: 'Origin' } : { Vary: 'Origin' };
  if (req.method === 'OPTIONS') {
    if (!access.extensionOrigin) return refuse(req, res, 'Cross-origin requests are only answered for the dualsocks extension.');
    res.writeHead(204, {
      ...PRIVATE_HEADERS,
      ...cors,
      'Access-Control-Allow-Methods': 'GET, HEAD',
      'Access-Control-Max-Age': '600',
    });
    res.end();
    return;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') return methodNotAllowed(req, res, 'GET');
  send(req, res, 200, 'application/json; charset=utf-8', `${JSON.stringify(ctx.state.snapshot(), null, 2)}\n`, { ...PRIVATE_HEADERS, ...cors });
}

const escapeHtml = (t: string): string => t.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

export function statusHtml(s: StatusSnapshot, pacBase: string): string {
  const e = escapeHtml;
  const gateways = s.gateways
    .map((g) => `<tr><td>${e(g.url)}</td><td>${g.up ? 'up' : 'down'}</td><td>${g.latencyMs ?? '–'}</td><td>${g.active}</td><td>${g.opened}</td><td>${g.failed}</td><td>${e(g.lastError ?? '')}</td></tr>`)
    .join('');
  const recent = s.recent
    .slice(0, 50)
    .map((r) => `<tr><td>${e(r.time)}</td><td>${e(joinHostPort(r.host, r.port))}</td><td>${r.via}</td><td>${r.family ? `IPv${r.family}` : '–'}</td><td>${e(r.result)}</td></tr>`)
    .join('');
  const c = s.connections;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dualsocks bridge</title>
<style>body{font:14px sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}</style>
</head><body>
<h1>dualsocks bridge ${e(s.version)}</h1>
<p>Listening on ${e(s.listen.join(', ') || '–')} since ${e(s.startedAt)}. HTTP proxy and SOCKS4/5 on the same port.</p>
<p>Proxy auto-config: <a href="${e(pacBase)}/proxy.pac">${e(pacBase)}/proxy.pac</a> (also <a href="${e(pacBase)}/wpad.dat">/wpad.dat</a>). Status as JSON: <a href="/api/status">/api/status</a>.</p>
<p>Connections: ${c.open} open, ${c.total} total, ${c.failed} failed (HTTP ${c.byInbound.http}, CONNECT ${c.byInbound.connect}, SOCKS5 ${c.byInbound.socks5}, SOCKS4 ${c.byInbound.socks4}, transparent ${c.byInbound.transparent}).</p>
<h2>Gateways</h2>
<table><tr><th>gateway</th><th>state</th><th>latency ms</th><th>active</th><th>opened</th><th>failed</th><th>last error</th></tr>${gateways}</table>
<h2>Recent destinations</h2>
<table><tr><th>time</th><th>destination</th><th>via</th><th>reached over</th><th>result</th></tr>${recent}</table>
</body></html>
`;
}

function serveStatusPage(ctx: BridgeContext, req: IncomingMessage, res: ServerResponse): void {
  const local = statusRefusedToOthers(req);
  if (local) return refuse(req, res, local);
  const access = checkAccess(req, { navigation: true });
  if (!access.ok) return refuse(req, res, access.why);
  if (req.method !== 'GET' && req.method !== 'HEAD') return methodNotAllowed(req, res, 'GET');
  const proxy = pacProxyAddress(ctx, req);
  send(req, res, 200, 'text/html; charset=utf-8', statusHtml(ctx.state.snapshot(), `http://${joinHostPort(proxy.host, proxy.port)}`), {
    ...PRIVATE_HEADERS,
    Vary: 'Origin',
    'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'none'",
    'X-Frame-Options': 'DENY',
  });
}

/**
 * GET /metrics: for this machine only (a --clients client is refused, however the bridge
 * listens), and, as the status, not for web pages (Host must name loopback, no web origin).
 */
function serveMetricsPage(source: MetricsSource, req: IncomingMessage, res: ServerResponse): void {
  if (scrapeAllowed(req, LOOPBACK_CLIENTS)) {
    const access = checkAccess(req);
    if (!access.ok) return refuse(req, res, access.why);
  }
  answerScrape(req, res, source, LOOPBACK_CLIENTS, 'clients on the bridge\'s own machine (loopback)');
}

/** Serves one of the bridge's pages; false when req.url is none of them. */
export function handlePage(ctx: BridgeContext, req: IncomingMessage, res: ServerResponse): boolean {
  const path = (req.url ?? '').replace(/[?#].*$/s, '');
  if (PAC_PATHS.includes(path)) servePac(ctx, req, res);
  else if (path === '/api/status') serveStatusApi(ctx, req, res);
  else if (path === '/') serveStatusPage(ctx, req, res);
  else if (path === METRICS_PATH && ctx.metrics) serveMetricsPage(ctx.metrics, req, res);
  else return false;
  return true;
}
