// SOCKS5 and SOCKS4/4a from local programs. The bridge asks no credentials of them (it listens
// on loopback or for --clients only) and passes each request on to a gateway by name.
import type { Socket } from 'node:net';
import { DualsocksError, RequestError, SocksProtocolError } from '../../shared/errors.js';
import { isV4, joinHostPort, parseIp, type HostPort } from '../../shared/net/address.js';
import { concatBytes, decodeGreeting, decodeSocks4Request, encodeSocks4Reply, type Decoded, type Greeting } from '../../shared/socks5/codec.js';
import { CMD, METHOD, REP, SOCKS4_CD } from '../../shared/socks5/constants.js';
import { Socks5ServerSession, type ServerCommand } from '../../shared/socks5/server.js';
import { releasedToNative } from '../native/loader.js';
import { holdWhile } from '../relay.js';
import type { Tunnel } from '../upstream/pool.js';
import { bindSecondReply, type Socks5Dial } from '../upstream/socks5.js';
import type { CheckResult } from '../gateway/users.js';
import type { Credentials, ProxyAuth } from './auth.js';
import { failInternally, relayToEnd, type BridgeContext } from './context.js';
import type { BridgeSocksRecord } from '../log.js';
import { serveUdpAssociate } from './udp.js';

type SocksInbound = BridgeSocksRecord['inbound'];

function asError(e: unknown): DualsocksError {
  return e instanceof DualsocksError ? e : new RequestError('ERR_CONNECT_FAILED', String(e));
}

/**
 * Opens the tunnel, records it, and relays. `answer` writes the protocol's reply to the client
 * (and closes it on failure); on success it returns early client bytes for the tunnel. Also the
 * transparent port's way out (transparent.ts), which answers nothing.
 */
export async function tunnelFor(
  ctx: BridgeContext,
  client: Socket,
  via: SocksInbound,
  host: string,
  port: number,
  answer: (bound: HostPort | DualsocksError) => Uint8Array[],
  done: () => void,
): Promise<void> {
  const line = ctx.state.begin(via, client, host, port);
  let tunnel;
  try {
    tunnel = await ctx.open(host, port, via, client.remoteAddress);
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
  first(bound: HostPort): Uint8Array[];
  /** The peer that connected. */
  second(peer: HostPort): void;
  fail(err: DualsocksError): void;
}

/**
 * BIND through a gateway (FTP active mode and the like): the first reply is where the gateway
 * listens, the second names the peer that connected to it; then the bytes are relayed. What the
 * client sends while waiting is held and passed on. A gateway's refusal or timeout reaches the
 * client as its own reply code (SOCKS4: rejected). A client that ends while waiting (FIN or
 * close, before either reply) ends the BIND at once: the gateway's connection is closed, so its
 * listener goes too. After the second reply a FIN is the relay's.
 */
async function bindThrough(ctx: BridgeContext, client: Socket, via: SocksInbound, host: string, port: number, replies: BindReplies, done: () => void): Promise<void> {
  const line = ctx.state.begin(via, client, host, port, { cmd: 'bind' });
  const gone = new AbortController();
  const leave = (): void => gone.abort();
  client.once('end', leave);
  client.once('close', leave);
  if (client.readableEnded || client.destroyed) leave();
  const held: Uint8Array[] = [];
  let tunnel: Tunnel | undefined;
  const waiting = (async (): Promise<Socks5Dial> => {
    const t = await ctx.bind!(host, port, gone.signal);
    if (gone.signal.aborted) {
      t.socket.destroy();
      throw new RequestError('ERR_CONNECT_FAILED', 'client went away');
    }
    tunnel = t;
    // bytes that came with the request go before any read while waiting
    held.unshift(...replies.first(t.reply));
    return bindSecondReply(t.dial!, { signal: gone.signal });
  })();
  let second: Socks5Dial | null;
  try {
    second = await holdWhile(client, held, waiting, gone.signal);
  } catch (e) {
    const err = asError(e);
    tunnel?.socket.destroy();
    ctx.state.finish(line, { ...(tunnel ? { gateway: tunnel.gateway } : {}), result: err.code, rep: err.rep });
    replies.fail(err);
    return;
  } finally {
    client.off('end', leave);
    client.off('close', leave);
  }
  if (second === null || gone.signal.aborted || !tunnel) {
    // a dial or a wait still in flight gives up; a tunnel already there is closed
    gone.abort();
    tunnel?.socket.destroy();
    ctx.state.finish(line, { ...(tunnel ? { gateway: tunnel.gateway } : {}), result: 'ERR_CLIENT_CLOSED' });
    client.destroy();
    return;
  }
  replies.second(second.reply);
  // counted from after the second reply
  tunnel.overhead = second.overhead;
  for (const chunk of held) tunnel.socket.write(chunk);
  relayToEnd(ctx, client, tunnel, line, done, { peer: joinHostPort(second.reply.host, second.reply.port) });
}

/** A SOCKS4 reply needs an IPv4 address; a gateway answering with IPv6 cannot be shown. */
function socks4Address(r: HostPort): HostPort {
  const ip = parseIp(r.host);
  if (!ip || !isV4(ip)) throw new RequestError('ERR_CONNECT_FAILED', `${r.host} cannot be written in a SOCKS4 reply`);
  return r;
}

/**
 * Which session a greeting gets. With --users (and the client not exempted): USERPASS, checked;
 * a greeting without it gets 0xFF. Otherwise NO_AUTH when offered; a client that offers only
 * USERPASS (Firefox with a proxy username, any client configured with credentials that does not
 * also offer NO_AUTH) has its credentials accepted, whatever they are, rather than refused with 0xFF.
 */
function sessionFor(greeting: Decoded<Greeting>, mustLogIn: boolean): Socks5ServerSession {
  if (mustLogIn) return new Socks5ServerSession({ requireAuth: true });
  const methods = greeting.status === 'ok' ? greeting.msg.methods : [];
  return new Socks5ServerSession({ requireAuth: !methods.includes(METHOD.NO_AUTH) && methods.includes(METHOD.USERPASS) });
}

/** SOCKS4 carries no password (its user id is a name anyone can send): with --users it is refused. */
const SOCKS4_NO_LOGIN = 'SOCKS4 cannot send a password: use SOCKS5 with a username and password';

/**
 * --users: checks a SOCKS5 login on the thread pool while the socket waits paused (what follows
 * stays in it); `run` carries out the session's answer.
 */
function checkLogin(ctx: BridgeContext, client: Socket, session: Socks5ServerSession, auth: ProxyAuth, c: Credentials, run: (cmds: ServerCommand[]) => unknown): void {
  client.pause();
  const user = session.username;
  const answered = (r: CheckResult): void => {
    if (r.result === 'error') throw r.error;
    if (r.result === 'ok') {
      ctx.state.loggedIn(client, user!);
      client.resume();
      run(session.authResult(true));
      return;
    }
    const why =
      r.result === 'busy'
        ? new RequestError('ERR_CONNECTION_CAP', 'too many password checks waiting')
        : new SocksProtocolError('ERR_SOCKS_AUTH_FAILED', r.result === 'backoff' ? `too many failed logins from this address, refused without a check for ${Math.ceil(r.retryMs / 1000)} s` : `user ${JSON.stringify(user)}`);
    ctx.state.refused('socks5', client, { user, auth: r.result, result: why.code, error: why.message });
    run(session.authResult(false, why));
  };
  // called from the checks' own turn: its failure is this connection's
  const cancel = auth.check(client.remoteAddress, c, (r) => {
    try {
      answered(r);
    } catch (e) {
      failInternally(client, e);
    }
  });
  // a client gone during its check: the check is dropped if it has not started
  client.once('close', cancel);
}

export function serveSocks5(ctx: BridgeContext, client: Socket, handshakeTimer: NodeJS.Timeout): void {
  // made once the greeting is read (sessionFor)
  let session!: Socks5ServerSession;
  let greeting: Uint8Array | null = new Uint8Array(0);
  const internal = (e: unknown): void => failInternally(client, e);
  const done = ctx.state.opened('socks5');
  const auth = ctx.auth?.required(client.remoteAddress) ? ctx.auth : undefined;
  // a socket the native relay took over closes at once: the relay's end closes the count then
  client.once('close', () => releasedToNative(client) || done());
  // gone before its request: closed now, not at the handshake timeout
  const leftEarly = (): void => {
    clearTimeout(handshakeTimer);
    client.destroy();
  };
  client.once('end', leftEarly);
  const run = (cmds: ServerCommand[]): Uint8Array[] => {
    const early: Uint8Array[] = [];
    for (const c of cmds) {
      if (c.type === 'send') client.write(c.data);
      else if (c.type === 'data') early.push(c.data);
      else if (c.type === 'authenticate') {
        // without --users any credentials will do (sessionFor)
        if (!auth) early.push(...run(session.authResult(true)));
        else checkLogin(ctx, client, session, auth, c, run);
      }
      else if (c.type === 'close') {
        clearTimeout(handshakeTimer);
        if (!client.destroyed) client.end(() => client.destroy());
      } else if (c.type === 'request') {
        clearTimeout(handshakeTimer);
        client.off('end', leftEarly);
        client.pause();
        client.off('data', onData);
        const { cmd, host, port } = c.request;
        if (cmd === CMD.UDP_ASSOCIATE) {
          serveUdpAssociate(ctx, client, c.request, (r) => void run(r instanceof DualsocksError ? session.fail(r) : session.succeed(r))).catch(internal);
          continue;
        }
        if (cmd === CMD.BIND && ctx.bind) {
          bindThrough(ctx, client, 'socks5', host, port, {
            first: (bound) => run(session.succeed(bound)),
            second: (peer) => void run(session.reply(REP.SUCCEEDED, peer)),
            fail: (err) => void run(session.fail(err)),
          }, done).catch(internal);
          continue;
        }
        if (cmd !== CMD.CONNECT) {
          run(session.fail(new SocksProtocolError('ERR_SOCKS_COMMAND', `command ${cmd} through the bridge`)));
          continue;
        }
        tunnelFor(ctx, client, 'socks5', host, port, (r) => {
          if (r instanceof DualsocksError) return run(session.fail(r));
          // BND.ADDR is the gateway's outbound address: the client sees which family it used
          return run(session.succeed(r));
        }, done).catch(internal);
      }
    }
    return early;
  };
  const onData = (chunk: Buffer): void => {
    if (greeting) {
      const buf = greeting.length === 0 ? chunk : concatBytes(greeting, chunk);
      const g = decodeGreeting(buf);
      if (g.status === 'need') {
        greeting = buf;
        return;
      }
      greeting = null;
      session = sessionFor(g, auth !== undefined);
      run(session.feed(buf));
      return;
    }
    run(session.feed(chunk));
  };
  client.on('data', onData);
}

export function serveSocks4(ctx: BridgeContext, client: Socket, handshakeTimer: NodeJS.Timeout): void {
  const done = ctx.state.opened('socks4');
  const internal = (e: unknown): void => failInternally(client, e);
  client.once('close', () => releasedToNative(client) || done());
  const leftEarly = (): void => {
    clearTimeout(handshakeTimer);
    client.destroy();
  };
  client.once('end', leftEarly);
  let buf: Uint8Array = new Uint8Array(0);
  const onData = (chunk: Buffer): void => {
    buf = buf.length === 0 ? chunk : concatBytes(buf, chunk);
    const d = decodeSocks4Request(buf);
    if (d.status === 'need') return;
    clearTimeout(handshakeTimer);
    client.off('end', leftEarly);
    client.off('data', onData);
    client.pause();
    const reject = (): void => {
      if (!client.destroyed) client.end(encodeSocks4Reply({ cd: SOCKS4_CD.REJECTED }), () => client.destroy());
    };
    if (d.status === 'error' || (d.msg.cmd !== CMD.CONNECT && !(d.msg.cmd === CMD.BIND && ctx.bind))) {
      reject();
      return;
    }
    if (ctx.auth?.required(client.remoteAddress)) {
      ctx.state.refused('socks4', client, { host: d.msg.host, port: d.msg.port, auth: 'none', result: 'ERR_SOCKS_AUTH_FAILED', error: SOCKS4_NO_LOGIN });
      reject();
      return;
    }
    const rest = buf.subarray(d.size);
    if (rest.length > 0) client.unshift(rest);
    const { host, port } = d.msg;
    if (d.msg.cmd === CMD.BIND) {
      bindThrough(ctx, client, 'socks4', host, port, {
        first: (bound) => {
          client.write(encodeSocks4Reply({ cd: SOCKS4_CD.GRANTED, ...socks4Address(bound) }));
          return [];
        },
        second: (peer) => void client.write(encodeSocks4Reply({ cd: SOCKS4_CD.GRANTED, ...socks4Address(peer) })),
        fail: reject,
      }, done).catch(internal);
      return;
    }
    tunnelFor(ctx, client, 'socks4', host, port, (r) => {
      if (r instanceof DualsocksError) {
        client.end(encodeSocks4Reply({ cd: SOCKS4_CD.REJECTED }), () => client.destroy());
        return [];
      }
      const ip = parseIp(r.host);
      // SOCKS4 can only show an IPv4 bound address
      client.write(encodeSocks4Reply({ cd: SOCKS4_CD.GRANTED, ...(ip && isV4(ip) ? r : {}) }));
      return [];
    }, done).catch(internal);
  };
  client.on('data', onData);
}
