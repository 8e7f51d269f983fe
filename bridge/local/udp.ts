// UDP ASSOCIATE for the bridge's SOCKS5 clients: one association at a gateway per local one,
// datagrams passed on with their SOCKS header untouched, so a DOMAINNAME in it is resolved by
// the gateway, never here. Either TCP control connection closing ends both associations.
import { createSocket, type RemoteInfo, type Socket as UdpSocket } from 'node:dgram';
import type { Socket } from 'node:net';
import { DualsocksError, RequestError, SocksProtocolError } from '../../shared/errors.js';
import { canonicalHost, familyOf, formatIp, joinHostPort, parseIp } from '../../shared/net/address.js';
import { decodeUdpHeader, type Request } from '../../shared/socks5/codec.js';
import type { Tunnel } from '../upstream/pool.js';
import type { BridgeContext } from './context.js';

const stripScope = (host: string): string => host.replace(/%.*$/, '');
const ipKey = (host: string): string => canonicalHost(stripScope(host));

function bindUdp(v6: boolean, host: string): Promise<UdpSocket> {
  return new Promise((resolve, reject) => {
    const s = createSocket({ type: v6 ? 'udp6' : 'udp4', ipv6Only: v6 });
    s.once('error', reject);
    s.bind({ address: host, port: 0, exclusive: true }, () => {
      s.off('error', reject);
      resolve(s);
    });
  });
}

/** Where to send to the gateway's relay: its BND, or the gateway's own address when BND is unspecified. */
function relayAddress(tunnel: Tunnel): { host: string; port: number } {
  const ip = parseIp(tunnel.reply.host);
  if (ip && (formatIp(ip) === '0.0.0.0' || formatIp(ip) === '::')) {
    return { host: canonicalHost(tunnel.socket.remoteAddress ?? tunnel.reply.host), port: tunnel.reply.port };
  }
  return { host: tunnel.reply.host, port: tunnel.reply.port };
}

export async function serveUdpAssociate(
  ctx: BridgeContext,
  client: Socket,
  request: Pick<Request, 'host' | 'port'>,
  answer: (bound: { host: string; port: number } | DualsocksError) => void,
): Promise<void> {
  const line = ctx.state.begin('socks5', client, request.host, request.port, { cmd: 'udp' });
  const localRaw = client.localAddress ?? '127.0.0.1';
  const local = parseIp(ipKey(localRaw));
  const peerIp = ipKey(client.remoteAddress ?? '');
  let tunnel: Tunnel | undefined;
  let toClient: UdpSocket | undefined;
  let toGateway: UdpSocket | undefined;
  try {
    if (!ctx.associate) throw new SocksProtocolError('ERR_SOCKS_COMMAND', 'UDP ASSOCIATE without a gateway pool');
    tunnel = await ctx.associate();
    const relay = relayAddress(tunnel);
    const relayIp = parseIp(relay.host);
    if (!relayIp || !local) throw new RequestError('ERR_CONNECT_FAILED', `gateway relay ${relay.host}`);
    toGateway = await bindUdp(familyOf(relayIp) === 6, familyOf(relayIp) === 6 ? '::' : '0.0.0.0');
    // connected: the kernel drops datagrams from anyone but the gateway's relay
    await new Promise<void>((r) => toGateway!.connect(relay.port, formatIp(relayIp), r));
    toClient = await bindUdp(familyOf(local) === 6, familyOf(local) === 6 ? localRaw : formatIp(local));
  } catch (e) {
    tunnel?.socket.destroy();
    toGateway?.close();
    const err = e instanceof DualsocksError ? e : new RequestError('ERR_CONNECT_FAILED', String(e));
    ctx.state.finish(line, { result: err.code, rep: err.rep });
    if (!client.destroyed) answer(err);
    return;
  }
  const gw = tunnel.socket;
  const [up, down] = [toGateway, toClient];
  let clientPort: number | undefined = request.port !== 0 ? request.port : undefined;
  let clientHost = peerIp;
  let ended = false;
  const n = { datagramsUp: 0, datagramsDown: 0, bytesUp: 0, bytesDown: 0 };
  const end = (): void => {
    if (ended) return;
    ended = true;
    const relayed = relayAddress(tunnel);
    ctx.state.finish(line, { gateway: tunnel.gateway, bound: joinHostPort(relayed.host, relayed.port), result: 'ok', ...n });
    for (const s of [up, down]) {
      try {
        s.close();
      } catch {
        /* already closed */
      }
    }
    gw.destroy();
    client.destroy();
  };

  down.on('message', (msg: Buffer, rinfo: RemoteInfo) => {
    // the same source rule as the gateway: the control peer's IP, its announced (or first) port
    if (ipKey(rinfo.address) !== peerIp || (clientPort !== undefined && rinfo.port !== clientPort)) return;
    const d = decodeUdpHeader(msg);
    if (d.status !== 'ok' || d.msg.frag !== 0) return;
    clientPort ??= rinfo.port;
    clientHost = rinfo.address;
    n.datagramsUp++;
    n.bytesUp += msg.length;
    up.send(msg);
  });
  up.on('message', (msg: Buffer) => {
    if (clientPort === undefined) return;
    n.datagramsDown++;
    n.bytesDown += msg.length;
    down.send(msg, clientPort, clientHost);
  });
  for (const s of [up, down]) s.on('error', () => {});
  gw.on('data', () => {});
  gw.on('error', () => {});
  client.on('data', () => {});
  for (const s of [gw, client]) {
    s.once('end', end);
    s.once('close', end);
  }
  const bound = down.address();
  answer({ host: canonicalHost(bound.address), port: bound.port });
  gw.resume();
  client.resume();
}
