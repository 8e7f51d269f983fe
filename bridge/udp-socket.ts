// UDP sockets as both servers (the gateway's UDP ASSOCIATE, the bridge's) and the chain dialer bind them.
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import type { Family } from '../shared/net/address.js';

/** Largest UDP payload per family (65535 minus IP and UDP headers, no jumbograms). */
export const MAX_UDP_PAYLOAD: Record<Family, number> = { 4: 65507, 6: 65527 };

/** A UDP socket of `family` bound to host, port chosen by the kernel. */
export function bindUdp(family: Family, host: string): Promise<UdpSocket> {
  return new Promise((resolve, reject) => {
    const s = createSocket({ type: family === 4 ? 'udp4' : 'udp6', ipv6Only: family === 6 });
    s.once('error', reject);
    s.bind({ address: host, port: 0, exclusive: true }, () => {
      s.off('error', reject);
      resolve(s);
    });
  });
}
