// What every inbound protocol handler of the bridge gets: the way out (tunnels through the
// gateway pool), the state to report into, and the settings.
import type { Socket } from 'node:net';
import type { Settings } from '../../shared/rules/index.js';
import type { RelayResult } from '../relay.js';
import type { Tunnel } from '../upstream/pool.js';
import type { BridgeState, Inbound } from './state.js';

export interface BridgeContext {
  state: BridgeState;
  /** Opens a tunnel to host:port through a gateway; the name is never resolved here. */
  open(host: string, port: number, via: Inbound): Promise<Tunnel>;
  /** Opens a UDP ASSOCIATE control connection at a gateway; its reply names the gateway's relay. */
  associate?(): Promise<Tunnel>;
  /** Asks a gateway to BIND for host:port; the tunnel's first reply is where it listens. */
  bind?(host: string, port: number): Promise<Tunnel>;
  /** Relays until both sides close; counts nothing itself. */
  relay(client: Socket, remote: Socket): Promise<RelayResult>;
  rules(): Settings;
  /** The port the bridge listens on (for PAC output when the Host header has none). */
  port: number;
  /** Proxy address written into the PAC; unset: the address the client fetched it from. */
  pacProxy?: { host: string; port: number } | undefined;
}
