// Listening sockets for the gateway and the bridge: one server per address, IPv6 ones set
// ipv6Only so "[::]" and "0.0.0.0" can share a port number.
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { canonicalHost } from '../shared/net/address.js';

export interface HostPort {
  host: string;
  port: number;
}

export async function listenAll(addrs: HostPort[], onConnection: (s: Socket) => void): Promise<{ servers: Server[]; bound: HostPort[] }> {
  const servers: Server[] = [];
  const bound: HostPort[] = [];
  try {
    for (const addr of addrs) {
      const server = createServer({ allowHalfOpen: true, noDelay: true }, onConnection);
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: addr.host, port: addr.port, ipv6Only: addr.host.includes(':') }, () => {
          server.off('error', reject);
          resolve();
        });
      });
      const info = server.address() as AddressInfo;
      bound.push({ host: canonicalHost(info.address), port: info.port });
    }
  } catch (e) {
    for (const s of servers) s.close();
    throw e;
  }
  return { servers, bound };
}

/** Stops accepting, destroys the open sockets, resolves when every server is closed. */
export async function closeAll(servers: Server[], sockets: Iterable<Socket>): Promise<void> {
  const closed = Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  for (const s of sockets) s.destroy();
  await closed;
}
