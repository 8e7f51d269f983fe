// BIND (RFC 1928 §4): the gateway listens for one inbound connection from the expected peer and
// relays it to the client. It listens in the peer's family, which need not be the client's: an
// IPv4-only client can take a connection from an IPv6-only peer (FTP active mode, RFC 3089 §5.7).
// First reply: the listening address; second reply: the peer's address once it has connected.
import { createSocket } from 'node:dgram';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { networkInterfaces } from 'node:os';
import { RequestError } from '../../shared/errors.js';
import { canonicalHost, familyOf, formatIp, parseIp, sameIp, type Family, type Ip } from '../../shared/net/address.js';
import { specialClass } from '../../shared/net/policy.js';
import { REP } from '../../shared/socks5/constants.js';
import { relay } from '../relay.js';
import { errnoToError, interleave } from '../upstream/direct.js';
import { goesUpstream, serveUpstream } from './chain.js';
import { whileHoldingClient, type BindContext } from './context.js';

// Client bytes held while no peer is there yet; beyond this the client is paused.

/** The source address the host would use toward `ip` (a UDP connect sends nothing). */
export function localAddressToward(ip: Ip): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = createSocket(familyOf(ip) === 4 ? 'udp4' : 'udp6');
    sock.once('error', (e: NodeJS.ErrnoException) => {
      sock.close();
      reject(errnoToError(e, formatIp(ip)));
    });
    sock.connect(9, formatIp(ip), () => {
      const local = sock.address().address;
      sock.close();
      resolve(canonicalHost(local));
    });
  });
}

/** For "any peer": the client's own path when it is the same family, else a global address. */
function anyLocal(family: Family, client: Socket): string {
  const mine = parseIp(client.localAddress ?? '');
  if (mine && familyOf(mine) === family) return formatIp(mine);
  for (const list of Object.values(networkInterfaces())) {
    for (const i of list ?? []) {
      const ip = parseIp(i.address);
      if (ip && !i.internal && familyOf(ip) === family && specialClass(ip) !== 'link-local') return formatIp(ip);
    }
  }
  return family === 4 ? '0.0.0.0' : '::';
}

function listenOn(host: string): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true });
    server.once('error', (e: NodeJS.ErrnoException) => reject(errnoToError(e, host)));
    server.listen({ host, port: 0, ipv6Only: host.includes(':') }, () => {
      server.removeAllListeners('error');
      resolve(server);
    });
  });
}

export async function serveBind(ctx: BindContext): Promise<void> {
  const { gateway, request, record, client } = ctx;
  const cfg = gateway.config;
  if (goesUpstream(cfg, request.host, request.port)) return serveUpstream(ctx);

  // Expected peers: an unspecified DST.ADDR (0.0.0.0, ::) means any peer of that family.
  const literal = parseIp(request.host);
  let family: Family;
  let peers: Ip[] = [];
  if (literal && (formatIp(literal) === '0.0.0.0' || formatIp(literal) === '::')) {
    family = familyOf(literal);
  } else {
    const denied: string[] = [];
    const allowed = (await gateway.addressesFor(request.host)).filter((ip) => {
      const why = gateway.denyDestination(ip);
      if (why) denied.push(`${formatIp(ip)}: ${why}`);
      return !why;
    });
    if (allowed.length === 0) throw new RequestError('ERR_POLICY_DESTINATION', denied.join('; '));
    family = familyOf(interleave(allowed, cfg.prefer)[0]!);
    peers = allowed.filter((ip) => familyOf(ip) === family);
  }
  record.family = family;
  const host = peers.length > 0 ? await localAddressToward(peers[0]!) : anyLocal(family, client);
  if (ctx.signal.aborted) return;
  const server = await listenOn(host);
  try {
    const port = (server.address() as AddressInfo).port;
    const held = ctx.succeed({ host, port });
    let timer: NodeJS.Timeout | undefined;
    let refused = 0;
    let settled = false;
    const arrival = new Promise<Socket>((resolve, reject) => {
      timer = setTimeout(() => reject(new RequestError('ERR_CONNECT_TIMEOUT', `no peer connected within ${cfg.bindTimeoutMs} ms`)), cfg.bindTimeoutMs);
      server.on('connection', (s: Socket) => {
        if (settled) return void s.destroy();
        const from = parseIp(s.remoteAddress ?? '');
        if (peers.length > 0 && !(from && peers.some((p) => sameIp(p, from)))) {
          refused++;
          s.destroy();
          return;
        }
        settled = true;
        resolve(s);
      });
    });
    const peer = await whileHoldingClient(ctx, held, arrival).finally(() => {
      settled = true;
      clearTimeout(timer);
      if (refused > 0) record.refusedPeers = refused;
    });
    if (peer === null) {
      // nobody waits for the peer any more: a late one is closed, a failure is moot (the request already failed)
      arrival.then((s) => s.destroy(), () => {});
      client.destroy();
      // the listener is gone before the log line says so
      await new Promise<void>((resolve) => server.close(() => resolve()));
      ctx.finish('ERR_CLIENT_CLOSED');
      return;
    }
    server.close();
    const peerHost = canonicalHost(peer.remoteAddress ?? '');
    record.peer = peerHost;
    record.address = peerHost;
    ctx.reply(REP.SUCCEEDED, { host: peerHost, port: peer.remotePort ?? 0 });
    for (const chunk of held) peer.write(chunk);
    const r = await relay(client, peer, { idleTimeoutMs: cfg.idleTimeoutMs, group: ctx.gateway.relays });
    ctx.finish('ok', { bytesUp: r.up, bytesDown: r.down, end: r.end });
  } finally {
    server.close();
  }
}
