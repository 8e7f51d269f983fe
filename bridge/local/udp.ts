// UDP ASSOCIATE for the bridge's SOCKS5 clients: one association at a gateway per local one (at
// each hop, when the gateway is a chain), datagrams passed on with their SOCKS header untouched,
// so a DOMAINNAME in it is resolved by the last gateway, never here. The client's TCP control
// connection closing, or any of the gateway's, ends both sides.
import type { RemoteInfo, Socket as UdpSocket } from 'node:dgram';
import type { Socket } from 'node:net';
import { DualsocksError, RequestError, SocksProtocolError } from '../../shared/errors.js';
import { canonicalHost, familyOf, formatIp, joinHostPort, parseIp, type HostPort } from '../../shared/net/address.js';
import { decodeUdpHeader, encodeUdpHeader, type Request } from '../../shared/socks5/codec.js';
import { UdpSourceFilter, udpIpKey } from '../../shared/socks5/udp-source.js';
import type { UdpAssociation } from '../upstream/pool.js';
import { bindUdp } from '../udp-socket.js';
import type { BridgeContext } from './context.js';

export async function serveUdpAssociate(
  ctx: BridgeContext,
  client: Socket,
  request: Pick<Request, 'host' | 'port'>,
  answer: (bound: HostPort | DualsocksError) => void,
): Promise<void> {
  const line = ctx.state.begin('socks5', client, request.host, request.port, { cmd: 'udp' });
  const localRaw = client.localAddress ?? '127.0.0.1';
  const local = parseIp(udpIpKey(localRaw));
  const peerIp = udpIpKey(client.remoteAddress ?? '');
  // The control connection carries nothing after the request, and its end (FIN or close) is the
  // association's end, also while the gateway is still being asked: watched from now on.
  const gone = new AbortController();
  const leave = (): void => gone.abort();
  client.on('data', () => {});
  client.on('error', () => {}); // 'close' follows: leave() ends the association, whose log line says how
  client.once('end', leave);
  client.once('close', leave);
  if (client.readableEnded || client.destroyed) leave();
  client.resume();
  const left = (): void => {
    ctx.state.finish(line, { result: 'ERR_CLIENT_CLOSED' });
    client.destroy();
  };
  let assoc: UdpAssociation | undefined;
  let toClient: UdpSocket | undefined;
  try {
    if (!ctx.associate) throw new SocksProtocolError('ERR_SOCKS_COMMAND', 'UDP ASSOCIATE without a gateway pool');
    if (!local) throw new RequestError('ERR_CONNECT_FAILED', `no local address for the relay (${localRaw})`);
    assoc = await ctx.associate(gone.signal);
    if (!gone.signal.aborted) toClient = await bindUdp(familyOf(local), familyOf(local) === 6 ? localRaw : formatIp(local));
  } catch (e) {
    assoc?.chain.close();
    if (gone.signal.aborted) return left();
    const err = e instanceof DualsocksError ? e : new RequestError('ERR_CONNECT_FAILED', String(e));
    ctx.state.finish(line, { result: err.code, rep: err.rep });
    if (!client.destroyed) answer(err);
    return;
  }
  if (gone.signal.aborted || !toClient) {
    assoc.chain.close();
    toClient?.close();
    return left();
  }
  relayDatagrams(ctx, line, client, assoc, toClient, new UdpSourceFilter(peerIp, request.port), gone.signal);
  const bound = toClient.address();
  answer({ host: canonicalHost(bound.address), port: bound.port });
}

/** Datagrams both ways until the control connection (`gone`) or the gateway's chain ends. */
function relayDatagrams(
  ctx: BridgeContext,
  line: ReturnType<BridgeContext['state']['begin']>,
  client: Socket,
  assoc: UdpAssociation,
  down: UdpSocket,
  source: UdpSourceFilter,
  gone: AbortSignal,
): void {
  const { chain } = assoc;
  const relay = chain.relays[0]!;
  const up = chain.socket;
  let clientHost = udpIpKey(client.remoteAddress ?? '');
  let ended = false;
  const n = { datagramsUp: 0, datagramsDown: 0, bytesUp: 0, bytesDown: 0, dropped: 0 };
  const end = (): void => {
    if (ended) return;
    ended = true;
    const hops = chain.relays.length > 1 ? { hops: chain.relays.length } : {};
    ctx.state.finish(line, { gateway: assoc.gateway, bound: joinHostPort(relay.host, relay.port), ...hops, result: 'ok', ...n });
    try {
      down.close();
    } catch {
      /* already closed */
    }
    chain.close();
    client.destroy();
  };

  down.on('message', (raw: Buffer, rinfo: RemoteInfo) => {
    let msg = raw;
    // the same source rule as the gateway: the control peer's IP, its announced (or first) port
    if (!source.matches(rinfo.address, rinfo.port)) return;
    const d = decodeUdpHeader(msg);
    if (d.status !== 'ok' || d.msg.frag !== 0) return;
    source.fix(rinfo.port);
    clientHost = rinfo.address;
    // a fake address goes on as its name; one mapped to nothing goes nowhere
    const name = ctx.fakeName?.(d.msg.host);
    if (name === null) {
      n.dropped++;
      return;
    }
    if (name !== undefined) msg = Buffer.concat([encodeUdpHeader({ host: name, port: d.msg.port }), raw.subarray(d.msg.dataOffset)]);
    // with a chain's headers in front, too big for the first relay is dropped
    if (!chain.send(msg)) {
      n.dropped++;
      return;
    }
    n.datagramsUp++;
    n.bytesUp += msg.length;
  });
  up.on('message', (raw: Buffer) => {
    const msg = chain.unwrap(raw);
    const clientPort = source.port;
    if (clientPort === undefined || !msg) {
      n.dropped++;
      return;
    }
    n.datagramsDown++;
    n.bytesDown += msg.length;
    down.send(msg, clientPort, clientHost);
  });
  down.on('error', () => {}); // ICMP errors toward the client: a lost datagram, as on the wire
  gone.addEventListener('abort', end);
  void chain.ended.then(end);
}
