// SOCKS5 and SOCKS4/4a from local programs. The bridge asks no credentials of them (it listens
// on loopback or for --clients only) and passes each request on to a gateway by name.
import type { Socket } from 'node:net';
import { DualsocksError, RequestError, SocksProtocolError } from '../../shared/errors.js';
import { isV4, joinHostPort, parseIp } from '../../shared/net/address.js';
import { concatBytes, decodeSocks4Request, encodeSocks4Reply } from '../../shared/socks5/codec.js';
import { CMD, REP, SOCKS4_CD } from '../../shared/socks5/constants.js';
import { Socks5ServerSession, type ServerCommand } from '../../shared/socks5/server.js';
import { releasedToNative } from '../native/loader.js';
import { holdWhile } from '../relay.js';
import type { Tunnel } from '../upstream/pool.js';
import { bindSecondReply, type Socks5Dial } from '../upstream/socks5.js';
import { relayToEnd, type BridgeContext } from './context.js';
import type { Inbound } from './state.js';
import { serveUdpAssociate } from './udp.js';

function asError(e: unknown): DualsocksError {
  return e instanceof DualsocksError ? e : new RequestError('ERR_CONNECT_FAILED', String(e));
}

/**
 * Opens the tunnel, records it, and relays. `answer` writes the protocol's reply to the client
 * (and closes it on failure); on success it returns early client bytes for the tunnel.
 */
async function tunnelFor(
  ctx: BridgeContext,
  client: Socket,
  via: Inbound,
  host: string,
  port: number,
  answer: (bound: { host: string; port: number } | DualsocksError) => Uint8Array[],
  done: () => void,
): Promise<void> {
  const line = ctx.state.begin(via, client, host, port);
  let tunnel;
  try {
    tunnel = await ctx.open(host, port, via);
  } catch (e) {
    const err = asError(e);
    ctx.state.record(via, host, port, { error: err });
    // rep: the gateway's own reply code when it refused
    ctx.state.finish(line, { result: err.code, rep: err.rep });
    if (!client.destroyed) answer(err);
    return;
  }
  ctx.state.record(via, host, port, { tunnel });
  if (client.destroyed) {
    tunnel.socket.destroy();
    ctx.state.finish(line, { result: 'ERR_CLIENT_CLOSED' });
    return;
  }
  for (const chunk of answer(tunnel.reply)) tunnel.socket.write(chunk);
  relayToEnd(ctx, client, tunnel, line, done);
}

/** How BIND's replies are written in the client's protocol. */
interface BindReplies {
  /** The gateway listens at `bound`; returns the client bytes that came with the request. */
  first(bound: { host: string; port: number }): Uint8Array[];
  /** The peer that connected. */
  second(peer: { host: string; port: number }): void;
  fail(err: DualsocksError): void;
}

/**
 * BIND through a gateway (FTP active mode and the like): the first reply is where the gateway
 * listens, the second names the peer that connected to it; then the bytes are relayed. What the
 * client sends while waiting is held and passed on. A gateway's refusal or timeout reaches the
 * client as its own reply code (SOCKS4: rejected).
 */
async function bindThrough(ctx: BridgeContext, client: Socket, via: Inbound, host: string, port: number, replies: BindReplies, done: () => void): Promise<void> {
  const line = ctx.state.begin(via, client, host, port, { cmd: 'bind' });
  let tunnel: Tunnel;
  try {
    tunnel = await ctx.bind!(host, port);
  } catch (e) {
    const err = asError(e);
    ctx.state.finish(line, { result: err.code, rep: err.rep });
    replies.fail(err);
    return;
  }
  let second: Socks5Dial | null;
  try {
    const held = replies.first(tunnel.reply);
    second = await holdWhile(client, held, bindSecondReply(tunnel.dial!));
    if (second !== null) {
      replies.second(second.reply);
      // counted from after the second reply
      tunnel.overhead = second.overhead;
      for (const chunk of held) tunnel.socket.write(chunk);
    }
  } catch (e) {
    const err = asError(e);
    tunnel.socket.destroy();
    ctx.state.finish(line, { gateway: tunnel.gateway, result: err.code, rep: err.rep });
    replies.fail(err);
    return;
  }
  if (second === null) {
    tunnel.socket.destroy();
    ctx.state.finish(line, { gateway: tunnel.gateway, result: 'ERR_CLIENT_CLOSED' });
    return;
  }
  relayToEnd(ctx, client, tunnel, line, done, { peer: joinHostPort(second.reply.host, second.reply.port) });
}

/** A SOCKS4 reply needs an IPv4 address; a gateway answering with IPv6 cannot be shown. */
function socks4Address(r: { host: string; port: number }): { host: string; port: number } {
  const ip = parseIp(r.host);
  if (!ip || !isV4(ip)) throw new RequestError('ERR_CONNECT_FAILED', `${r.host} cannot be written in a SOCKS4 reply`);
  return r;
}

/**
 * A client whose FIN comes before its request is complete has left: close it now instead of
 * holding it in CLOSE-WAIT until the handshake timeout. Returns the listener, to be removed once
 * the request is there (then a FIN is the tunnel's half-close).
 */
function leftMidHandshake(client: Socket, handshakeTimer: NodeJS.Timeout): () => void {
  const gone = (): void => {
    clearTimeout(handshakeTimer);
    client.destroy();
  };
  client.once('end', gone);
  return gone;
}

export function serveSocks5(ctx: BridgeContext, client: Socket, handshakeTimer: NodeJS.Timeout): void {
  const session = new Socks5ServerSession({ requireAuth: false });
  const done = ctx.state.opened('socks5');
  const gone = leftMidHandshake(client, handshakeTimer);
  // a socket the native relay took over closes at once: the relay's end closes the count then
  client.once('close', () => releasedToNative(client) || done());
  const run = (cmds: ServerCommand[]): Uint8Array[] => {
    const early: Uint8Array[] = [];
    for (const c of cmds) {
      if (c.type === 'send') client.write(c.data);
      else if (c.type === 'data') early.push(c.data);
      else if (c.type === 'close') {
        clearTimeout(handshakeTimer);
        if (!client.destroyed) client.end(() => client.destroy());
      } else if (c.type === 'request') {
        clearTimeout(handshakeTimer);
        client.pause();
        client.off('data', onData);
        // from here a FIN is the tunnel's half-close
        client.off('end', gone);
        const { cmd, host, port } = c.request;
        if (cmd === CMD.UDP_ASSOCIATE) {
          void serveUdpAssociate(ctx, client, c.request, (r) => void run(r instanceof DualsocksError ? session.fail(r) : session.succeed(r)));
          continue;
        }
        if (cmd === CMD.BIND && ctx.bind) {
          void bindThrough(ctx, client, 'socks5', host, port, {
            first: (bound) => run(session.succeed(bound)),
            second: (peer) => void run(session.reply(REP.SUCCEEDED, peer)),
            fail: (err) => void run(session.fail(err)),
          }, done);
          continue;
        }
        if (cmd !== CMD.CONNECT) {
          run(session.fail(new SocksProtocolError('ERR_SOCKS_COMMAND', `command ${cmd} through the bridge`)));
          continue;
        }
        void tunnelFor(ctx, client, 'socks5', host, port, (r) => {
          if (r instanceof DualsocksError) return run(session.fail(r));
          // BND.ADDR is the gateway's outbound address: the client sees which family it used
          return run(session.succeed(r));
        }, done);
      }
    }
    return early;
  };
  const onData = (chunk: Buffer): void => void run(session.feed(chunk));
  client.on('data', onData);
}

export function serveSocks4(ctx: BridgeContext, client: Socket, handshakeTimer: NodeJS.Timeout): void {
  const done = ctx.state.opened('socks4');
  client.once('close', () => releasedToNative(client) || done());
  const gone = leftMidHandshake(client, handshakeTimer);
  let buf: Uint8Array = new Uint8Array(0);
  const onData = (chunk: Buffer): void => {
    buf = buf.length === 0 ? chunk : concatBytes(buf, chunk);
    const d = decodeSocks4Request(buf);
    if (d.status === 'need') return;
    clearTimeout(handshakeTimer);
    client.off('data', onData);
    client.off('end', gone);
    client.pause();
    const reject = (): void => {
      if (!client.destroyed) client.end(encodeSocks4Reply({ cd: SOCKS4_CD.REJECTED }), () => client.destroy());
    };
    if (d.status === 'error' || (d.msg.cmd !== CMD.CONNECT && !(d.msg.cmd === CMD.BIND && ctx.bind))) {
      reject();
      return;
    }
    const rest = buf.subarray(d.size);
    if (rest.length > 0) client.unshift(rest);
    const { host, port } = d.msg;
    if (d.msg.cmd === CMD.BIND) {
      void bindThrough(ctx, client, 'socks4', host, port, {
        first: (bound) => {
          client.write(encodeSocks4Reply({ cd: SOCKS4_CD.GRANTED, ...socks4Address(bound) }));
          return [];
        },
        second: (peer) => void client.write(encodeSocks4Reply({ cd: SOCKS4_CD.GRANTED, ...socks4Address(peer) })),
        fail: reject,
      }, done);
      return;
    }
    void tunnelFor(ctx, client, 'socks4', host, port, (r) => {
      if (r instanceof DualsocksError) {
        client.end(encodeSocks4Reply({ cd: SOCKS4_CD.REJECTED }), () => client.destroy());
        return [];
      }
      const ip = parseIp(r.host);
      // SOCKS4 can only show an IPv4 bound address
      client.write(encodeSocks4Reply({ cd: SOCKS4_CD.GRANTED, ...(ip && isV4(ip) ? r : {}) }));
      return [];
    }, done);
  };
  client.on('data', onData);
}
