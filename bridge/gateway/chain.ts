// Chained relays (RFC 3089 §4, types E–L): with --upstream the gateway reaches destinations
// through SOCKS5 hops. Names travel on unresolved (ATYP DOMAINNAME), so the LAST gateway
// resolves them — the draft's "Gateway includes Socks Lib functions". The last hop's REP and
// BND reach our client unchanged, and so does its error code when it sent one (METHOD.ERROR_CODES).
//
// Policy: a request sent upstream is not checked against our destination policy. We resolve no
// name for it, and an IP literal is reached from the last gateway's network, not ours, so its
// policy is the one that applies (our loopback/LAN/own addresses are not what it reaches). The
// hops themselves are the operator's choice and bypass policy. Requests that --upstream-rules
// send DIRECT are resolved and checked here as usual.
import { DualsocksError, RequestError, SocksReplyError } from '../../shared/errors.js';
import { decide } from '../../shared/rules/index.js';
import { CMD, REP } from '../../shared/socks5/constants.js';
import { redactedUrl } from '../upstream/hops.js';
import { bindSecondReply, type Socks5Dial } from '../upstream/socks5.js';
import type { GatewayConfig } from './config.js';
import { relayAndFinish, whileHoldingClient, type BindContext, type ConnectContext } from './context.js';

/** Whether this destination goes through the upstream hops (default: everything, when set). */
export function goesUpstream(cfg: GatewayConfig, host: string, port: number): boolean {
  if (!cfg.upstream || cfg.upstream.length === 0) return false;
  if (!cfg.upstreamRules) return true;
  return decide(cfg.upstreamRules, { host, port }).type === 'PROXY';
}

// The far gateway's answer and a slow destination keep their meaning; anything else is a broken
// chain on our side, which is no statement about the destination.
function chainError(e: unknown, via: string): DualsocksError {
  if (e instanceof SocksReplyError || (e instanceof DualsocksError && e.code === 'ERR_CONNECT_TIMEOUT')) return e;
  return new RequestError('ERR_CONNECT_FAILED', `upstream ${via}: ${e instanceof Error ? e.message : String(e)}`);
}

/** CONNECT or BIND through the upstream hops. */
export async function serveUpstream(ctx: ConnectContext | BindContext): Promise<void> {
  const { gateway, request, record } = ctx;
  const cfg = gateway.config;
  const hops = cfg.upstream!;
  const via = redactedUrl(hops);
  record.upstream = via;
  let dial: Socks5Dial;
  try {
    dial = await gateway.pipelining.dial(hops, { cmd: request.cmd, host: request.host, port: request.port }, cfg.connectTimeoutMs);
  } catch (e) {
    throw chainError(e, via);
  }
  if (ctx.signal.aborted) {
    dial.socket.destroy();
    return;
  }
  const early = ctx.succeed({ host: dial.reply.host, port: dial.reply.port });
  if (request.cmd === CMD.BIND) {
    // the far gateway's bind timeout bounds this wait; its REP (0x06) is passed on
    let second: Socks5Dial | null;
    try {
      second = await whileHoldingClient(ctx, early, bindSecondReply(dial, { signal: ctx.signal }));
    } catch (e) {
      throw chainError(e, via);
    }
    if (second === null) {
      dial.socket.destroy();
      ctx.client.destroy();
      return ctx.finish('ERR_CLIENT_CLOSED');
    }
    if (record.cmd === 'bind') record.peer = second.reply.host;
    ctx.reply(REP.SUCCEEDED, { host: second.reply.host, port: second.reply.port });
    dial = second;
  }
  for (const chunk of early) dial.socket.write(chunk);
  // the log counts what the client and the destination exchanged, not our talk with the hops
  relayAndFinish(ctx, dial.socket, dial.overhead);
}
