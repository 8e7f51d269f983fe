// UDP ASSOCIATE (RFC 1928 §7, RFC 3089 §5.7): the client's datagrams reach the relay socket in
// the client's family, and leave from a socket in the destination's family, so a v4 client can
// talk to a v6 server by name. Names are resolved here, with the same policy as CONNECT.
//
// Safer than Dante's default: replies are taken only from addresses this association sent to,
// and datagrams only from the control connection's peer IP (and the port it announced; with
// none announced, the first datagram fixes the port). Anything that does not fit is dropped
// and counted, never thrown. Destinations that --upstream would carry go through associations of
// our own along the chain (bridge/upstream/udp-chain.ts: one at each hop, since a hop takes
// datagrams only from the hop before it), with the SOCKS header, name and all, passed on
// untouched; with no such association possible they are dropped, never sent from here, which
// would bypass the route.
import type { RemoteInfo, Socket as UdpSocket } from 'node:dgram';
import { DualsocksError, RequestError } from '../../shared/errors.js';
import { canonicalHost, familyOf, formatIp, parseIp, type Family, type Ip } from '../../shared/net/address.js';
import { decodeUdpHeader, encodeUdpHeader } from '../../shared/socks5/codec.js';
import { interleave } from '../upstream/direct.js';
import { redactedUrl } from '../upstream/hops.js';
import { bindUdp, MAX_UDP_PAYLOAD } from '../udp-socket.js';
import { openUdpChain, type UdpChain } from '../upstream/udp-chain.js';
import { goesUpstream } from './chain.js';
import type { RequestContext } from './context.js';

/** Bounds per association, so one client cannot grow the gateway's memory without limit. */
const MAX_PENDING = 256;
const MAX_NAMES = 1024;
const MAX_PEERS = 4096;
/** Send errors after which the next address of the name is tried. */
const UNREACHABLE = new Set(['ENETUNREACH', 'EHOSTUNREACH', 'EADDRNOTAVAIL', 'EAFNOSUPPORT']);

const stripScope = (host: string): string => host.replace(/%.*$/, '');
const ipKey = (host: string): string => canonicalHost(stripScope(host));

export async function serveUdp(ctx: RequestContext): Promise<void> {
  const { gateway, client, request, record } = ctx;
  const cfg = gateway.config;
  const localRaw = client.localAddress ?? '';
  const localIp = parseIp(stripScope(canonicalHost(localRaw)));
  const peerIp = ipKey(client.remoteAddress ?? '');
  if (!localIp) throw new RequestError('ERR_CONNECT_FAILED', `no local address for the relay (${localRaw})`);
  const family = familyOf(localIp);
  // a v6 link-local address needs its scope to bind and to send
  const peerHost = family === 6 && client.remoteAddress?.includes('%') ? client.remoteAddress : peerIp;
  let relay: UdpSocket;
  try {
    relay = await bindUdp(family, family === 4 ? formatIp(localIp) : localRaw);
  } catch (e) {
    throw new RequestError('ERR_CONNECT_FAILED', `UDP relay socket: ${(e as Error).message}`);
  }
  if (ctx.signal.aborted) {
    relay.close();
    return;
  }

  const n = {
    datagramsUp: 0, bytesUp: 0, datagramsDown: 0, bytesDown: 0,
    droppedSource: 0, droppedMalformed: 0, droppedFrag: 0, droppedName: 0, droppedPolicy: 0,
    droppedSize: 0, droppedSender: 0, droppedError: 0, droppedUpstream: 0,
  };
  // RFC 1928: DST.ADDR/DST.PORT announce where the client will send from; 0 means "not known yet"
  let clientPort: number | undefined = request.port !== 0 ? request.port : undefined;
  const out: Partial<Record<Family, Promise<UdpSocket | null>>> = {};
  const names = new Map<string, Promise<Ip[]>>();
  const unreachable = new Set<string>();
  const sentTo = new Set<string>();
  let pending = 0;
  /** Our association at the upstream gateway, opened with the first datagram for it; null: none possible. */
  let upstream: Promise<UdpChain | null> | undefined;
  let lastActivity = Date.now();
  let ended = false;
  let idleTimer: NodeJS.Timeout | undefined;
  let resolveDone!: (end: string) => void;
  const done = new Promise<string>((r) => (resolveDone = r));

  const end = (why: string): void => {
    if (ended) return;
    ended = true;
    clearTimeout(idleTimer);
    for (const s of [relay, ...Object.values(out)]) {
      if (s instanceof Promise) void s.then((x) => x && safeClose(x));
      else if (s) safeClose(s);
    }
    void upstream?.then((u) => u?.close());
    client.destroy();
    resolveDone(why);
  };
  const safeClose = (s: UdpSocket): void => {
    try {
      s.close();
    } catch {
      /* already closed */
    }
  };

  const outbound = (f: Family): Promise<UdpSocket | null> =>
    (out[f] ??= bindUdp(f, f === 4 ? '0.0.0.0' : '::').then(
      (s) => {
        if (ended) {
          safeClose(s);
          return null;
        }
        s.on('message', (msg, rinfo) => fromDestination(msg, rinfo));
        s.on('error', () => n.droppedError++);
        return s;
      },
      () => null,
    ));

  /** Allowed addresses for a destination, best first; a DualsocksError for names that fail. */
  const addresses = (host: string): Promise<Ip[]> => {
    const key = host.toLowerCase();
    let p = names.get(key);
    if (!p) {
      if (names.size >= MAX_NAMES) names.clear();
      p = gateway.addressesFor(host).then((ips) => {
        const allowed = ips.filter((ip) => gateway.denyDestination(ip) === null);
        if (allowed.length === 0) throw new RequestError('ERR_POLICY_DESTINATION', host);
        return interleave(allowed, cfg.prefer);
      });
      p.catch(() => {});
      // literals are cheap and policy may change with the interfaces: only names are kept
      if (!parseIp(host)) names.set(key, p);
    }
    return p;
  };

  /** Our association through the --upstream chain (one at each hop), replies read from it. */
  const openUpstream = async (): Promise<UdpChain | null> => {
    record.upstream = redactedUrl(cfg.upstream!);
    let chain: UdpChain;
    try {
      chain = await openUdpChain(cfg.upstream!, cfg.connectTimeoutMs);
    } catch (e) {
      record.lastError = e instanceof DualsocksError ? e.code : String(e);
      return null;
    }
    if (ended) {
      chain.close();
      return null;
    }
    chain.socket.on('message', (m) => fromUpstream(chain, m));
    chain.socket.on('error', () => n.droppedError++);
    // the association lives as long as the chain's control connections; then nothing more goes there
    void chain.ended.then(() => {
      upstream = Promise.resolve(null);
    });
    return chain;
  };

  /** A reply through the upstream chain: the last hop's header names the sender; passed on as it is. */
  const fromUpstream = (chain: UdpChain, raw: Buffer): void => {
    const msg = chain.unwrap(raw);
    const d = msg && decodeUdpHeader(msg);
    if (!msg || !d || d.status !== 'ok' || clientPort === undefined || ended) {
      n.droppedSender++;
      return;
    }
    if (msg.length > MAX_UDP_PAYLOAD[family]) {
      n.droppedSize++;
      return;
    }
    lastActivity = Date.now();
    relay.send(msg, clientPort, peerHost, (err) => {
      if (err) {
        n.droppedError++;
        return;
      }
      n.datagramsDown++;
      n.bytesDown += msg.length - d.msg.dataOffset;
    });
  };

  const fromClient = async (msg: Buffer, rinfo: RemoteInfo): Promise<void> => {
    if (ipKey(rinfo.address) !== peerIp || (clientPort !== undefined && rinfo.port !== clientPort)) {
      n.droppedSource++;
      return;
    }
    clientPort ??= rinfo.port;
    const d = decodeUdpHeader(msg);
    if (d.status !== 'ok' || d.msg.port === 0) {
      n.droppedMalformed++;
      return;
    }
    // no reassembly, as most servers: a fragment is dropped (RFC 1928 makes it optional)
    if (d.msg.frag !== 0) {
      n.droppedFrag++;
      return;
    }
    // what --upstream carries goes there, header and name untouched, or nowhere
    if (goesUpstream(cfg, d.msg.host, d.msg.port)) {
      lastActivity = Date.now();
      const u = await (upstream ??= openUpstream());
      if (!u || ended) {
        n.droppedUpstream++;
        return;
      }
      const sent = u.send(msg, (err) => {
        if (err) {
          n.droppedUpstream++;
          record.lastError = (err as NodeJS.ErrnoException).code ?? err.message;
          return;
        }
        n.datagramsUp++;
        n.bytesUp += msg.length - d.msg.dataOffset;
      });
      if (!sent) n.droppedSize++;
      return;
    }
    lastActivity = Date.now();
    const payload = msg.subarray(d.msg.dataOffset);
    if (pending >= MAX_PENDING) {
      n.droppedError++;
      return;
    }
    pending++;
    let ips: Ip[];
    try {
      ips = await addresses(d.msg.host);
    } catch (e) {
      if (e instanceof DualsocksError && e.code === 'ERR_POLICY_DESTINATION') n.droppedPolicy++;
      else n.droppedName++;
      record.lastError = e instanceof DualsocksError ? e.code : String(e);
      return;
    } finally {
      pending--;
    }
    const ip = ips.find((x) => !unreachable.has(formatIp(x))) ?? ips[0]!;
    const f = familyOf(ip);
    if (payload.length > MAX_UDP_PAYLOAD[f]) {
      n.droppedSize++;
      return;
    }
    const s = await outbound(f);
    if (!s || ended) {
      n.droppedError++;
      return;
    }
    const host = formatIp(ip);
    if (sentTo.size >= MAX_PEERS) sentTo.clear();
    sentTo.add(`${host}|${d.msg.port}`);
    s.send(payload, d.msg.port, host, (err) => {
      if (err) {
        n.droppedError++;
        const code = (err as NodeJS.ErrnoException).code ?? '';
        if (UNREACHABLE.has(code)) unreachable.add(host);
        record.lastError = code || err.message;
        return;
      }
      n.datagramsUp++;
      n.bytesUp += payload.length;
    });
  };

  const fromDestination = (msg: Buffer, rinfo: RemoteInfo): void => {
    const host = ipKey(rinfo.address);
    if (!sentTo.has(`${host}|${rinfo.port}`) || clientPort === undefined || ended) {
      n.droppedSender++;
      return;
    }
    const header = encodeUdpHeader({ host, port: rinfo.port });
    if (header.length + msg.length > MAX_UDP_PAYLOAD[family]) {
      n.droppedSize++;
      return;
    }
    lastActivity = Date.now();
    relay.send([header, msg], clientPort, peerHost, (err) => {
      if (err) {
        n.droppedError++;
        return;
      }
      n.datagramsDown++;
      n.bytesDown += msg.length;
    });
  };

  relay.on('message', (msg, rinfo) => {
    fromClient(msg, rinfo).catch(() => n.droppedError++);
  });
  relay.on('error', () => n.droppedError++);

  const bound = relay.address();
  ctx.succeed({ host: canonicalHost(bound.address), port: bound.port });
  // the control connection carries nothing after the reply; its end is the association's end
  client.on('data', () => {});
  client.once('end', () => end('closed'));
  client.once('close', () => end('closed'));
  client.once('error', (e: NodeJS.ErrnoException) => end(e.code ?? 'error'));
  ctx.signal.addEventListener('abort', () => end('closed'), { once: true });
  // a FIN read while the request was being served (it came with the request, or while the
  // credentials were checked) was emitted before these listeners: the association is over
  if (client.readableEnded || client.destroyed) end('closed');
  client.resume();
  if (cfg.idleTimeoutMs > 0) {
    const check = (): void => {
      const left = lastActivity + cfg.idleTimeoutMs - Date.now();
      if (left <= 0) end('idle');
      else idleTimer = setTimeout(check, left);
    };
    idleTimer = setTimeout(check, cfg.idleTimeoutMs);
  }

  const why = await done;
  ctx.finish('ok', { ...n, end: why });
}
