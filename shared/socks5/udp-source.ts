// Whose datagrams a UDP association relays (RFC 1928 §7): the control connection's peer IP, from
// the port its request announced; with none announced (port 0), the first accepted datagram
// fixes the port. Shared by the gateway's association and the bridge's relay; I/O-free.
import { canonicalHost } from '../net/address.js';

/** An address as the kernel reports it, as a key: scope (%eth0) dropped, canonical form. */
export const udpIpKey = (host: string): string => canonicalHost(host.replace(/%.*$/, ''));

export class UdpSourceFilter {
  private readonly peerIp: string;
  /** The client's port: announced, or fixed by its first datagram; undefined: not known yet. */
  port: number | undefined;

  constructor(controlPeer: string, announcedPort: number) {
    this.peerIp = udpIpKey(controlPeer);
    this.port = announcedPort !== 0 ? announcedPort : undefined;
  }

  /** Whether a datagram from address:port is the client's (the port is not fixed here). */
  matches(address: string, port: number): boolean {
    return udpIpKey(address) === this.peerIp && (this.port === undefined || port === this.port);
  }

  /** The first accepted datagram's port is the client's from now on. */
  fix(port: number): void {
    this.port ??= port;
  }
}
