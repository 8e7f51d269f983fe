// Listening sockets for the gateway and the bridge: one server per address, IPv6 ones set
// ipv6Only so "[::]" and "0.0.0.0" can share a port number.
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { canonicalHost, type HostPort } from '../shared/net/address.js';

/**
 * Listens on every address. With `defaults`, an address whose family this host lacks (IPv6
 * disabled: EADDRNOTAVAIL/EAFNOSUPPORT) is skipped rather than fatal, as long as one remains.
 */
export async function listenAll(addrs: HostPort[], onConnection: (s: Socket) => void, opts: { defaults?: boolean } = {}): Promise<{ servers: Server[]; bound: HostPort[] }> {
  const servers: Server[] = [];
  const bound: HostPort[] = [];
  try {
    for (const addr of addrs) {
      const server = createServer({ allowHalfOpen: true, noDelay: true }, onConnection);
      try {
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen({ host: addr.host, port: addr.port, ipv6Only: addr.host.includes(':') }, () => {
            server.off('error', reject);
            resolve();
          });
        });
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (opts.defaults && (code === 'EADDRNOTAVAIL' || code === 'EAFNOSUPPORT')) continue;
        throw e;
      }
      servers.push(server);
      const info = server.address() as AddressInfo;
      bound.push({ host: canonicalHost(info.address), port: info.port });
    }
  } catch (e) {
    for (const s of servers) s.close();
    throw e;
  }
  if (bound.length === 0) throw Object.assign(new Error(`no address to listen on (${addrs.map((a) => a.host).join(', ')})`), { code: 'EADDRNOTAVAIL' });
  return { servers, bound };
}

/** Stops accepting, destroys the open sockets, resolves when every server is closed. */
export async function closeAll(servers: Server[], sockets: Iterable<Socket>): Promise<void> {
  const closed = Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  for (const s of sockets) s.destroy();
  await closed;
}
