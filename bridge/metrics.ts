// Prometheus metrics (text exposition format, by prom-client): the scrape endpoint the gateway's
// --metrics listens on, and the one the bridge answers on its own port. Each server keeps its
// metrics in a registry of its own (bridge/gateway/metrics.ts, bridge/local/metrics.ts), so two
// in one process (`start`, tests) never mix. Only the clients a scrape may come from are checked
// here: metrics name no client or destination, but they do tell who uses the proxy how much.
//
// With --workers N each worker counts its own connections; the primary serves the sum, asking the
// workers over the cluster channel at each scrape (prom-client's AggregatorRegistry).
import cluster from 'node:cluster';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { AggregatorRegistry, collectDefaultMetrics, type Registry } from 'prom-client';
import { canonicalHost, CidrSet, joinHostPort, parseIp, type HostPort } from '../shared/net/address.js';

/** Who may scrape when nothing else is said: this machine. */
export const LOOPBACK_CLIENTS = new CidrSet(['127.0.0.0/8', '::1/128']);

/** Latency buckets in seconds: a LAN handshake (1 ms) to a slow chain or a connect timeout (10 s+). */
export const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export const METRICS_PATH = '/metrics';

const MS_PER_SECOND = 1000;
export const seconds = (ms: number): number => ms / MS_PER_SECOND;

/** What a scrape returns: the text and its Content-Type. */
export interface MetricsSource {
  metrics(): Promise<string>;
  readonly contentType: string;
}

/** The process's own metrics (CPU, memory, descriptors, event loop) in `registry`: once per registry, by the command line. */
export function withProcessMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry });
}

function sendText(req: IncomingMessage, res: ServerResponse, status: number, text: string, headers: Record<string, string> = {}): void {
  const body = Buffer.from(`${text}\n`);
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': String(body.length), 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff', ...headers });
  res.end(req.method === 'HEAD' ? undefined : body);
}

/** Whether the request's peer is in `clients`. */
export function scrapeAllowed(req: IncomingMessage, clients: CidrSet): boolean {
  const ip = parseIp(canonicalHost(req.socket.remoteAddress ?? ''));
  return ip !== null && clients.has(ip);
}

/**
 * Answers a request for /metrics: 403 in words for a client outside `clients`, 405 for a method
 * other than GET or HEAD, else the metrics. `who` says in the refusal which option widens it.
 */
export function answerScrape(req: IncomingMessage, res: ServerResponse, source: MetricsSource, clients: CidrSet, who: string): void {
  if (!scrapeAllowed(req, clients)) {
    const from = canonicalHost(req.socket.remoteAddress ?? '');
    return sendText(req, res, 403, `Forbidden. Metrics are served only to ${who}; ${from} is not one of them.`);
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') return sendText(req, res, 405, `${req.method} is not supported here; use GET.`, { Allow: 'GET, HEAD' });
  source.metrics().then(
    (text) => {
      const body = Buffer.from(text);
      res.writeHead(200, { 'Content-Type': source.contentType, 'Content-Length': String(body.length), 'Cache-Control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
    },
    (e: unknown) => sendText(req, res, 500, `The metrics could not be collected: ${e instanceof Error ? e.message : String(e)}`),
  );
}

/** The time a scraper has to send its request (the server is for Prometheus, not for people). */
const SCRAPE_REQUEST_TIMEOUT_MS = 10_000;

/** `dualsocks gateway --metrics HOST:PORT`: an HTTP server with /metrics only. */
export async function serveMetrics(listen: HostPort, clients: CidrSet | undefined, source: MetricsSource): Promise<{ server: Server; bound: HostPort }> {
  const allowed = clients ?? LOOPBACK_CLIENTS;
  const who = clients ? 'the --metrics-clients ranges' : 'loopback clients (widen with --metrics-clients CIDR)';
  const server = createServer((req, res) => {
    const path = (req.url ?? '').replace(/[?#].*$/s, '');
    if (path !== METRICS_PATH) return sendText(req, res, 404, `Not found. Metrics are at ${METRICS_PATH}.`);
    answerScrape(req, res, source, allowed, who);
  });
  server.requestTimeout = SCRAPE_REQUEST_TIMEOUT_MS;
  server.headersTimeout = SCRAPE_REQUEST_TIMEOUT_MS;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: listen.host, port: listen.port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const a = server.address();
  const bound = a && typeof a === 'object' ? { host: canonicalHost(a.address), port: a.port } : listen;
  return { server, bound };
}

/** The line the gateway prints for its metrics server. */
export function metricsLine(bound: HostPort): string {
  return `metrics on http://${joinHostPort(bound.host, bound.port)}${METRICS_PATH}`;
}

/**
 * --workers: in a worker, answers the primary's requests with `registry`'s metrics; in the
 * primary, a source that sums every worker's. Counters of a worker that died and was replaced
 * start again from zero in the sum (Prometheus's rate() takes that as a reset).
 */
export function workerMetrics(registry: Registry): void {
  AggregatorRegistry.setRegistries([registry]);
  // its constructor installs the worker's answering listener
  new AggregatorRegistry();
}

export function clusterMetrics(): MetricsSource {
  if (!cluster.isPrimary) throw new Error('clusterMetrics() in a worker');
  const aggregator = new AggregatorRegistry();
  return { metrics: () => aggregator.clusterMetrics(), contentType: aggregator.contentType };
}
