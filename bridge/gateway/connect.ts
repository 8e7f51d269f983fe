// CONNECT: resolve at the gateway, check policy on every address, Happy Eyeballs, then relay.
// BND.ADDR in the reply is the outbound socket's own address, so the client learns which
// family reached the destination.
import type { Socket } from 'node:net';
import { canonicalHost, familyOf, formatIp } from '../../shared/net/address.js';
import { relay } from '../relay.js';
import { dialDirect } from '../upstream/direct.js';
import { goesUpstream, serveUpstream } from './chain.js';
import { claimFtpData, ftpTranslates, serveFtp } from './ftp.js';
import type { RequestContext } from './server.js';

export async function serveConnect(ctx: RequestContext): Promise<void> {
  const { gateway, request, record } = ctx;
  const cfg = gateway.config;
  const ftpData = claimFtpData(ctx);
  if (ftpData) return ftpData;
  if (goesUpstream(cfg, request.host, request.port)) return serveUpstream(ctx);
  const ips = await gateway.addressesFor(request.host);
  const { socket: remote, address } = await dialDirect(ips, request.port, {
    prefer: cfg.prefer,
    timeoutMs: cfg.connectTimeoutMs,
    deny: (ip) => gateway.denyDestination(ip),
    signal: ctx.signal,
  });
  record.address = formatIp(address);
  record.family = familyOf(address);
  if (ctx.signal.aborted) {
    remote.destroy();
    return;
  }
  const early = ctx.succeed({ host: canonicalHost(remote.localAddress ?? '0.0.0.0'), port: remote.localPort ?? 0 });
  if (ftpTranslates(cfg, ctx.client, address, request.port)) return serveFtp(ctx, remote, early);
  for (const chunk of early) remote.write(chunk);
  relayToEnd(ctx, remote);
}

/**
 * Relays to the end and logs it, without the handler waiting: what the relay's end needs is
 * only `finish`, so an idle tunnel keeps neither the request context nor the sockets alive.
 * `overhead`: bytes on `remote` that were SOCKS talk with upstream hops, left out of the counts.
 */
export function relayToEnd(ctx: RequestContext, remote: Socket, overhead = { up: 0, down: 0 }): void {
  const { finish } = ctx;
  void relay(ctx.client, remote, { idleTimeoutMs: ctx.gateway.config.idleTimeoutMs, group: ctx.gateway.relays }).then((r) =>
    finish('ok', { bytesUp: r.up - overhead.up, bytesDown: r.down - overhead.down, end: r.end }),
  );
}
