// One JSON line per finished connection on stdout; operator messages on stderr.
//
// Each line is one of the typed records below, keyed on the command (gateway: `cmd`, absent before
// a request) or the inbound protocol (bridge: `inbound`, then `cmd` for SOCKS BIND and UDP), with
// exactly the fields that line may carry: a misspelt or missing field is a compile error. A
// record is filled in while the connection is served (`…Record`, every field known so far) and
// becomes its line (`…Line`) when the result and duration are added at its end.
import type { Family } from '../shared/net/address.js';
import type { Inbound } from '../shared/status.js';

/** What every line ends with. */
export type Ended = {
  result: string;
  durationMs: number;
};

/** Bytes each way and how a relayed tunnel ended. */
export type RelayedFields = {
  bytesUp?: number;
  bytesDown?: number;
  /** 'closed', 'idle', an errno code: see bridge/relay.ts. */
  end?: string;
};

// ---- gateway ----

/** How the password check went: users.ts's results, or the client left while it waited ('dropped') or ran ('abandoned'). */
export type AuthOutcome = 'ok' | 'fail' | 'busy' | 'backoff' | 'dropped' | 'abandoned';

/** What the gateway knows of every connection, whatever it asked. */
export type GatewayClientFields = {
  /** Not a bridge line. */
  inbound?: undefined;
  client: string;
  clientPort: number | undefined;
  clientError?: string;
  /** The RFC 1929 username offered, and how its check went. */
  user?: string;
  auth?: AuthOutcome;
  /** Behind a balancer (--proxy-protocol): its address:port, and the header's version (`v2`, `v1`, `v2 local`, `v1 unknown`). */
  via?: string;
  proxy?: string;
  /** The SOCKS5 REP sent with a failure, and its message. */
  rep?: number;
  error?: string;
};

/** A connection that ended before its request (refused client, login failure, timeout, probe). */
export type GatewayHandshakeRecord = GatewayClientFields & {
  cmd?: undefined;
  /** The session's phase when the handshake timed out or was evicted. */
  phase?: string;
  /** A command the gateway does not serve (the codec refuses those first). */
  host?: string;
  port?: number;
};

type GatewayRequestFields = GatewayClientFields & RelayedFields & {
  host: string;
  port: number;
  /** BND.ADDR:BND.PORT of the success reply. */
  bound?: string;
};

/** FTP translation (bridge/gateway/ftp.ts): on the control connection's line, and on a data connection claimed by CONNECT. */
export type FtpFields = {
  ftp?: 'translated' | 'data';
  /** Data connections of a translated control connection, and their bytes. */
  ftpData?: number;
  ftpDataUp?: number;
  ftpDataDown?: number;
};

export type GatewayConnectRecord = GatewayRequestFields & FtpFields & {
  cmd: 'connect';
  /** The destination address reached, and its family. */
  address?: string;
  family?: Family;
  /** The --upstream chain (credentials redacted) that carried it. */
  upstream?: string;
};

export type GatewayBindRecord = GatewayRequestFields & {
  cmd: 'bind';
  family?: Family;
  /** The peer that connected (also as `address`). */
  peer?: string;
  address?: string;
  /** Connections from other addresses closed while waiting. */
  refusedPeers?: number;
  upstream?: string;
};

/** The association's counters (bridge/gateway/udp-session.ts UdpCounters), in the log's order. */
export type UdpCountFields = {
  datagramsUp?: number;
  bytesUp?: number;
  datagramsDown?: number;
  bytesDown?: number;
  droppedSource?: number;
  droppedMalformed?: number;
  droppedFrag?: number;
  droppedName?: number;
  droppedPolicy?: number;
  droppedSize?: number;
  droppedSender?: number;
  droppedError?: number;
  droppedUpstream?: number;
};

export type GatewayUdpRecord = GatewayRequestFields & UdpCountFields & {
  cmd: 'udp';
  upstream?: string;
  /** The last error a datagram met (an errno code or an error code). */
  lastError?: string;
};

/** A granted request's record, by command. */
export type GatewayRequestRecord = GatewayConnectRecord | GatewayBindRecord | GatewayUdpRecord;
export type GatewayRecord = GatewayHandshakeRecord | GatewayRequestRecord;

export type GatewayHandshakeLine = GatewayHandshakeRecord & Ended;
export type GatewayConnectLine = GatewayConnectRecord & Ended;
export type GatewayBindLine = GatewayBindRecord & Ended;
export type GatewayUdpLine = GatewayUdpRecord & Ended;
export type GatewayLine = GatewayHandshakeLine | GatewayConnectLine | GatewayBindLine | GatewayUdpLine;

// ---- bridge ----

type BridgeFields = {
  inbound: Inbound;
  client: string;
  clientPort: number | undefined;
  host: string;
  port: number;
  /** The fake address the client asked for, `host` being its name (--dns-listen). */
  fakeAddress?: string;
  /** Who logged in (--users). */
  user?: string;
  /** The SOCKS REP sent with a failure (the gateway's own when it refused). */
  rep?: number;
  error?: string;
};

/** Which gateway carried a tunnel, its BND, bytes and end. */
type TunnelFields = RelayedFields & {
  gateway?: string;
  bound?: string;
};

/** A request forwarded by the HTTP proxy. */
export type BridgeHttpRecord = BridgeFields & {
  inbound: 'http';
  cmd?: undefined;
  method: string | undefined;
  status?: number;
};

/** An HTTP CONNECT tunnel. */
export type BridgeConnectRecord = BridgeFields & TunnelFields & {
  inbound: 'connect';
  cmd?: undefined;
  /** The HTTP status of a refusal. */
  status?: number;
};

/** A SOCKS5 or SOCKS4 CONNECT. */
export type BridgeSocksRecord = BridgeFields & TunnelFields & {
  /** transparent: a redirected connection, opened as a SOCKS CONNECT would be. */
  inbound: 'socks5' | 'socks4' | 'transparent';
  cmd?: undefined;
};

export type BridgeBindRecord = BridgeFields & TunnelFields & {
  inbound: 'socks5' | 'socks4';
  cmd: 'bind';
  /** The peer that connected to the gateway's listener. */
  peer?: string;
};

export type BridgeUdpRecord = BridgeFields & UdpCountFields & {
  inbound: 'socks5';
  cmd: 'udp';
  gateway?: string;
  /** The first relay's address (the gateway's, or the first hop's). */
  bound?: string;
  /** Hops of a chained association (left out for one). */
  hops?: number;
  /** Every drop, whatever its reason. */
  dropped?: number;
  /** closed: the client's control connection ended; gateway: the gateway's did; idle: no datagram either way for --idle-timeout. */
  end?: string;
  lastError?: string;
};

/** A login the bridge refused (--users): never the password. */
export type BridgeLoginLine = {
  inbound: Inbound;
  cmd?: undefined;
  client: string;
  clientPort: number | undefined;
  user?: string;
  auth: AuthOutcome | 'none';
  host?: string;
  port?: number;
  result: string;
  error?: string;
  durationMs: number;
};

/** A defect while serving a connection whose protocol is not known yet. */
export type BridgeInternalLine = {
  inbound?: undefined;
  cmd?: undefined;
  client: string;
  clientPort: number | undefined;
  result: 'ERR_INTERNAL';
  rep: number;
  error: string;
};

export type BridgeRecord = BridgeHttpRecord | BridgeConnectRecord | BridgeSocksRecord | BridgeBindRecord | BridgeUdpRecord;
export type BridgeLine = (BridgeRecord & Ended) | BridgeInternalLine | BridgeLoginLine;

export type LogLine = GatewayLine | BridgeLine;
export type Logger<L extends LogLine = LogLine> = (rec: L) => void;

export const jsonLines: Logger = (rec) => {
  process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), ...rec })}\n`);
};

export const silent: Logger = () => {};

export function say(message: string): void {
  process.stderr.write(`${message}\n`);
}
