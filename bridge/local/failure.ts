// Why a tunnel could not be opened, in the words each inbound protocol needs: an HTTP status,
// reason phrase and sentence for HTTP clients, the reply code for SOCKS clients. The gateway's
// own REP survives, so a SOCKS client behind the bridge sees what the gateway said; a dualsocks
// gateway also names its exact error (METHOD.ERROR_CODES), which picks the words.
import { isDualsocksError, SocksReplyError, type ErrorCode } from '../../shared/errors.js';
import { REP, REP_TEXT, SOCKS4_CD } from '../../shared/socks5/constants.js';
import { errnoToError } from '../upstream/direct.js';

export interface Failure {
  /** 502, 504 when the destination (or the way to it) timed out, 403 when the bridge itself refused. */
  httpStatus: 403 | 502 | 504;
  /** Short title in plain words, safe as an HTTP reason phrase. */
  reason: string;
  /** One or two sentences for an error page. */
  text: string;
  /** Reply code for a SOCKS5 client. */
  socks5Rep: number;
  /** Reply code for a SOCKS4 client (it has only "rejected"). */
  socks4Code: number;
  /** The dualsocks error code (ERR_…). */
  code: string;
}

type Words = { reason: string; text: string };

const BY_REP: Record<number, Words> = {
  [REP.GENERAL_FAILURE]: {
    reason: 'Gateway Failure',
    text: 'The gateway reported a general failure (SOCKS5 reply 0x01) and gave no more specific reason.',
  },
  [REP.NOT_ALLOWED]: {
    reason: 'Not Allowed By Gateway Policy',
    text: "The gateway's policy does not allow this destination (SOCKS5 reply 0x02), for example a loopback or private address, or the bridge is not allowed to use the gateway.",
  },
  [REP.NETWORK_UNREACHABLE]: {
    reason: 'Network Unreachable From Gateway',
    text: "The gateway has no route to the destination's network or address family (SOCKS5 reply 0x03).",
  },
  [REP.HOST_UNREACHABLE]: {
    reason: 'Name Not Found Or Host Unreachable',
    text: 'The gateway could not resolve the name, found no address for it, or could not reach the host: SOCKS5 reply 0x04 ("host unreachable") covers all of these, and this gateway did not say which.',
  },
  [REP.CONNECTION_REFUSED]: {
    reason: 'Refused By Destination',
    text: 'The gateway reached the destination, which refused the connection (SOCKS5 reply 0x05): nothing listens on that port.',
  },
  [REP.TTL_EXPIRED]: {
    reason: 'Destination Timed Out',
    text: 'The destination did not answer the gateway in time (SOCKS5 reply 0x06).',
  },
  [REP.COMMAND_NOT_SUPPORTED]: {
    reason: 'Command Not Supported By Gateway',
    text: 'The gateway does not support this kind of connection (SOCKS5 reply 0x07).',
  },
  [REP.ADDRESS_TYPE_NOT_SUPPORTED]: {
    reason: 'Address Type Not Supported By Gateway',
    text: 'The gateway does not accept this kind of destination address (SOCKS5 reply 0x08).',
  },
};

// Codes that say more than their REP does (when the failure happened in this process, e.g. an
// in-process gateway or a direct dial, the exact cause is still known).
const BY_CODE: Partial<Record<ErrorCode, Words>> = {
  ERR_NO_GATEWAY: {
    reason: 'No Gateway Reachable',
    text: 'The bridge could not connect to any of its gateways. Check that a gateway is running and that the --gateway addresses are right.',
  },
  ERR_NAME_NOT_FOUND: {
    reason: 'Name Not Found',
    text: 'The gateway could not find this name (it does not exist, or is not in its hosts file).',
  },
  ERR_NO_ADDRESS: {
    reason: 'Name Has No Address',
    text: 'The name exists but the gateway found no IPv4 or IPv6 address for it.',
  },
  ERR_DNS_FAILED: {
    reason: 'Name Resolution Failed',
    text: "The gateway's resolver failed or did not answer in time.",
  },
  ERR_HOST_UNREACHABLE: {
    reason: 'Host Unreachable',
    text: 'The name was found, but the destination host is unreachable: no answer to the connection attempt at any of its addresses.',
  },
  ERR_CONNECTION_REFUSED: {
    reason: 'Refused By Destination',
    text: 'The destination refused the connection: nothing listens on that port.',
  },
  ERR_NETWORK_UNREACHABLE: {
    reason: 'Network Unreachable',
    text: "There is no route to the destination's network or address family.",
  },
  ERR_CONNECT_TIMEOUT: {
    reason: 'Destination Timed Out',
    text: 'The destination did not answer in time.',
  },
  // the gateway's refusals arrive as its REP (ERR_SOCKS_REPLY): this one is the bridge's own
  ERR_POLICY_DESTINATION: {
    reason: 'Not Allowed By Bridge Policy',
    text: 'The bridge connects directly only for programs on its own machine. For other clients it refuses loopback, private, link-local and the other special-purpose addresses, and its own addresses: reach them without the proxy.',
  },
  ERR_POLICY_CLIENT: {
    reason: 'Not Allowed By Gateway Policy',
    text: 'The gateway does not accept connections from this bridge.',
  },
  ERR_SOCKS_AUTH_FAILED: {
    reason: 'Gateway Refused Credentials',
    text: 'The gateway did not accept the username and password the bridge sent.',
  },
  ERR_SOCKS_NO_METHOD: {
    reason: 'Gateway Refused Credentials',
    text: 'The gateway accepts none of the authentication methods the bridge offered (does it need a username and password?).',
  },
  ERR_FAKE_UNMAPPED: {
    reason: 'Fake Address Not Mapped',
    text: "The destination is a fake address from the bridge's DNS that is not (or no longer) mapped to a name, for example one handed out before the bridge restarted: it was sent nowhere. Look the name up again through the bridge's DNS (--dns-listen), or start the bridge with --fake-state FILE so its table survives restarts.",
  },
  ERR_FAKE_RANGE_FULL: {
    reason: 'Fake Address Range Full',
    text: 'Every address of the fake range is in use by an open connection, so the bridge has none for another name. Give a larger --fake-range or --fake-range6.',
  },
  ERR_CONNECTION_CAP: {
    reason: 'Gateway Busy',
    text: 'The gateway has reached its connection limit.',
  },
};

// The same codes said by a gateway (SocksReplyError) rather than by this bridge.
const BY_GATEWAY_CODE: Partial<Record<ErrorCode, Words>> = {
  ERR_POLICY_DESTINATION: {
    reason: 'Not Allowed By Gateway Policy',
    text: "The gateway's policy does not allow this destination, for example a loopback or private address, or one of the gateway's own.",
  },
};

function unknownRep(rep: number): Words {
  const hex = `0x${rep.toString(16).padStart(2, '0')}`;
  return { reason: 'Gateway Failure', text: `The gateway refused with SOCKS5 reply ${hex}${REP_TEXT[rep] ? ` ("${REP_TEXT[rep]}")` : ', a code SOCKS5 does not define'}.` };
}

export function describeFailure(err: unknown): Failure {
  let e = err;
  // a raw socket error (ECONNREFUSED…) gets the same code a dial would give it
  if (!isDualsocksError(e) && e instanceof Error && typeof (e as NodeJS.ErrnoException).code === 'string') {
    e = errnoToError(e as NodeJS.ErrnoException, 'destination');
  }
  if (!isDualsocksError(e)) {
    return {
      httpStatus: 502,
      reason: 'Bridge Error',
      text: `The bridge failed to open the connection: ${e instanceof Error ? e.message : String(e)}.`,
      socks5Rep: REP.GENERAL_FAILURE,
      socks4Code: SOCKS4_CD.REJECTED,
      code: 'ERR_CONNECT_FAILED',
    };
  }
  const rep = e.rep;
  const fromGateway = e instanceof SocksReplyError;
  // the gateway's REP is the whole story of an ERR_SOCKS_REPLY; other codes may say more
  const words = (e.code !== 'ERR_SOCKS_REPLY' ? (fromGateway ? BY_GATEWAY_CODE[e.code] : undefined) ?? BY_CODE[e.code] : undefined) ?? BY_REP[rep] ?? unknownRep(rep);
  const timeout = e.code === 'ERR_CONNECT_TIMEOUT' || rep === REP.TTL_EXPIRED;
  return {
    httpStatus: e.code === 'ERR_POLICY_DESTINATION' && !fromGateway ? 403 : timeout ? 504 : 502,
    reason: words.reason,
    text: words.text,
    // 0x00 would tell a SOCKS client it succeeded
    socks5Rep: rep === REP.SUCCEEDED ? REP.GENERAL_FAILURE : rep,
    socks4Code: SOCKS4_CD.REJECTED,
    code: e.code,
  };
}
