// The decisions of the bridge's UDP relay (./udp.ts), I/O-free: events in, commands out, as the
// gateway's association (../gateway/udp-session.ts), whose client side it shares
// (../udp-client-side.ts: source filter and pinning, header checks, replies toward the client,
// counters by drop reason, idle time, end). Every datagram goes up the gateway's chain with its
// header as the client wrote it, so a name in it is the last gateway's to resolve; only a fake
// address becomes the name it stands for, and one mapped to nothing goes nowhere.
import { encodeUdpHeader } from '../../shared/socks5/codec.js';
import { UdpClientSide, type UdpClientCommand, type UdpClientSideOptions } from '../udp-client-side.js';

export interface UdpRelayOptions extends UdpClientSideOptions {
  /** The most a datagram for the chain may carry, header and all (UdpChain.room). */
  upstreamRoom: number;
  /** The name a fake address stands for; null: a fake address mapped to nothing; undefined: not a fake address. */
  fakeName(host: string): string | null | undefined;
}

export class UdpRelaySession extends UdpClientSide {
  constructor(private readonly opts: UdpRelayOptions) {
    super(opts);
  }

  /** A datagram on the client-side socket from address:port. */
  clientDatagram(msg: Buffer, address: string, port: number, now: number): UdpClientCommand[] {
    const h = this.admit(msg, address, port, now);
    if (!h) return [];
    const payload = msg.subarray(h.dataOffset);
    const name = this.opts.fakeName(h.host);
    if (name === null) {
      this.drop('name');
      return [{ type: 'error', code: 'ERR_FAKE_UNMAPPED' }];
    }
    // a fake address goes on as its name (not pinned: a datagram is gone at once)
    const datagram = name === undefined ? msg : Buffer.concat([encodeUdpHeader({ host: name, port: h.port }), payload]);
    // with a chain's headers in front, too big for the first relay
    if (datagram.length > this.opts.upstreamRoom) return this.drop('size');
    return [{ type: 'upstream', datagram, bytes: payload.length }];
  }
}
