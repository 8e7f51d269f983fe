// The transparent port (--transparent): connections that nftables `redirect` sent here from
// programs with no proxy support. The kernel keeps where each was going (conntrack); that
// destination is opened exactly as a SOCKS CONNECT to it would be (tunnelFor): a fake address
// goes to the gateway as its name, the routing rules decide the rest. Nothing is said to the
// client: on failure its connection is reset, as the destination itself would refuse it.
import type { Socket } from 'node:net';
import { RequestError } from '../../shared/errors.js';
import { canonicalHost, joinHostPort } from '../../shared/net/address.js';
import { originalDestination, releasedToNative } from '../native/loader.js';
import type { BridgeContext } from './context.js';
import { tunnelFor } from './socks.js';

/** Resets the connection: to the program it looks as if the destination refused. */
function reset(client: Socket): void {
  if (!client.destroyed) client.resetAndDestroy();
}

/**
 * Serves one accepted connection of the transparent listener. `own`: the bridge's listening
 * addresses (HOST:PORT); a connection that was going to one of them was not redirected (or
 * would loop) and is refused.
 */
export function serveTransparent(ctx: BridgeContext, client: Socket, own: () => string[]): void {
  client.pause();
  const done = ctx.state.opened('transparent');
  client.once('close', () => releasedToNative(client) || done());
  let host: string;
  let port: number;
  try {
    const d = originalDestination(client);
    host = canonicalHost(d.address);
    port = d.port;
  } catch (e) {
    const line = ctx.state.begin('transparent', client, '', 0);
    const err = new RequestError('ERR_CONNECT_FAILED', `no original destination (${(e as NodeJS.ErrnoException).code ?? String(e)}): was this connection redirected by nftables?`);
    ctx.state.finish(line, { result: err.code, rep: err.rep, error: err.message });
    reset(client);
    return;
  }
  const target = joinHostPort(host, port);
  const self = joinHostPort(canonicalHost(client.localAddress ?? ''), client.localPort ?? 0);
  if (target === self || own().includes(target)) {
    const line = ctx.state.begin('transparent', client, host, port);
    // ERR_POLICY_DESTINATION: the bridge's own port is never a destination
    const err = new RequestError('ERR_POLICY_DESTINATION', `${target} is this bridge's own port: a connection not redirected by nftables (or one that would loop) is refused`);
    ctx.state.record('transparent', host, port, { error: err });
    ctx.state.finish(line, { result: err.code, rep: err.rep, error: err.message });
    reset(client);
    return;
  }
  // no protocol reply: bytes the program sent meanwhile wait in the socket for the relay
  void tunnelFor(ctx, client, 'transparent', host, port, (r) => {
    if (r instanceof Error) reset(client);
    return [];
  }, done).catch(() => reset(client));
}
