// CONNECT: resolve at the gateway, check policy on every address, Happy Eyeballs, then relay.
// BND.ADDR in the reply is the outbound socket's own address, so the client learns which
// family reached the destination.
import { canonicalHost, familyOf, formatIp } from '../../shared/net/address.js';
import { dialDirect } from '../upstream/direct.js';
import { goesUpstream, serveUpstream } from './chain.js';
import { relayAndFinish, type ConnectContext } from './context.js';
import { ftpTranslates, serveFtp } from './ftp.js';

export async function serveConnect(ctx: ConnectContext): Promise<void> {
  const { gateway, request, record } = ctx;
  const cfg = gateway.config;
  const ftpData = gateway.ftpSlots.claim(ctx);
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
  if (ftpTranslates(cfg, ctx.source, address, request.port)) return serveFtp(ctx, remote, early);
  for (const chunk of early) remote.write(chunk);
  relayAndFinish(ctx, remote);
}
