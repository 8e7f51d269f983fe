// One error hierarchy for every part of dualsocks. Each code is stable, documented in the
// README's error table (a test checks that), and carries the SOCKS5 reply code it maps to,
// so a failure keeps its meaning across every hop to the client.
import { REP } from './socks5/constants.js';

export const ERRORS = {
  ERR_SOCKS_VERSION: { rep: REP.GENERAL_FAILURE, text: 'unsupported SOCKS version' },
  ERR_SOCKS_METHODS: { rep: REP.GENERAL_FAILURE, text: 'malformed method list' },
  ERR_SOCKS_NO_METHOD: { rep: REP.GENERAL_FAILURE, text: 'no acceptable authentication method' },
  ERR_SOCKS_AUTH_VERSION: { rep: REP.GENERAL_FAILURE, text: 'unsupported username/password auth version' },
  ERR_SOCKS_AUTH_MALFORMED: { rep: REP.GENERAL_FAILURE, text: 'malformed username/password request' },
  ERR_SOCKS_AUTH_FAILED: { rep: REP.NOT_ALLOWED, text: 'authentication failed' },
  ERR_SOCKS_COMMAND: { rep: REP.COMMAND_NOT_SUPPORTED, text: 'command not supported' },
  ERR_SOCKS_ATYP: { rep: REP.ADDRESS_TYPE_NOT_SUPPORTED, text: 'address type not supported' },
  ERR_SOCKS_NAME: { rep: REP.GENERAL_FAILURE, text: 'malformed destination name' },
  ERR_SOCKS_RESERVED: { rep: REP.GENERAL_FAILURE, text: 'reserved field not zero' },
  ERR_SOCKS_TRUNCATED: { rep: REP.GENERAL_FAILURE, text: 'truncated message' },
  ERR_SOCKS_REPLY: { rep: REP.GENERAL_FAILURE, text: 'upstream SOCKS server refused the request' },
  ERR_SOCKS4_USERID: { rep: REP.GENERAL_FAILURE, text: 'SOCKS4 user id or host name too long' },
  ERR_NAME_NOT_FOUND: { rep: REP.HOST_UNREACHABLE, text: 'name not found' },
  ERR_NO_ADDRESS: { rep: REP.HOST_UNREACHABLE, text: 'name has no address' },
  ERR_DNS_FAILED: { rep: REP.HOST_UNREACHABLE, text: 'name resolution failed' },
  ERR_POLICY_DESTINATION: { rep: REP.NOT_ALLOWED, text: 'destination not allowed by policy' },
  ERR_POLICY_CLIENT: { rep: REP.NOT_ALLOWED, text: 'client not allowed' },
  ERR_CONNECTION_REFUSED: { rep: REP.CONNECTION_REFUSED, text: 'connection refused by destination' },
  ERR_NETWORK_UNREACHABLE: { rep: REP.NETWORK_UNREACHABLE, text: 'network unreachable' },
  ERR_HOST_UNREACHABLE: { rep: REP.HOST_UNREACHABLE, text: 'host unreachable' },
  ERR_CONNECT_TIMEOUT: { rep: REP.TTL_EXPIRED, text: 'connection timed out' },
  ERR_CONNECT_FAILED: { rep: REP.GENERAL_FAILURE, text: 'connection failed' },
  ERR_CONNECTION_CAP: { rep: REP.GENERAL_FAILURE, text: 'too many connections' },
  ERR_HANDSHAKE_TIMEOUT: { rep: REP.GENERAL_FAILURE, text: 'handshake timed out' },
  ERR_NO_GATEWAY: { rep: REP.GENERAL_FAILURE, text: 'no gateway reachable' },
  ERR_FAKE_UNMAPPED: { rep: REP.HOST_UNREACHABLE, text: 'fake address not mapped to a name' },
  ERR_FAKE_RANGE_FULL: { rep: REP.GENERAL_FAILURE, text: 'fake address range full' },
  ERR_PROXY_MISSING: { rep: REP.GENERAL_FAILURE, text: 'no PROXY protocol header' },
  ERR_PROXY_MALFORMED: { rep: REP.GENERAL_FAILURE, text: 'malformed PROXY protocol header' },
  ERR_PROXY_UNTRUSTED: { rep: REP.GENERAL_FAILURE, text: 'PROXY protocol header from a source not in --proxy-protocol' },
  ERR_INTERNAL: { rep: REP.GENERAL_FAILURE, text: 'internal error' },
  ERR_CONFIG: { rep: REP.GENERAL_FAILURE, text: 'invalid configuration' },
} as const;

export type ErrorCode = keyof typeof ERRORS;

export class DualsocksError extends Error {
  readonly code: ErrorCode;
  /** SOCKS5 reply code this failure is reported as. */
  readonly rep: number;

  constructor(code: ErrorCode, detail?: string, options?: { rep?: number; cause?: unknown }) {
    const base = ERRORS[code].text;
    super(detail ? `${base}: ${detail}` : base, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.rep = options?.rep ?? ERRORS[code].rep;
  }

  override get name(): string {
    return this.constructor.name;
  }
}

/** A malformed or unacceptable SOCKS message (from the codec). */
export class SocksProtocolError extends DualsocksError {}

/** A missing, malformed or untrusted PROXY protocol header (shared/proxy-protocol/codec.ts). */
export class ProxyProtocolError extends DualsocksError {}

/** Name resolution, policy or connection failure while serving a request. */
export class RequestError extends DualsocksError {}

/**
 * A SOCKS server's failure reply. Its REP, and its exact code when the server told us (method
 * ERROR_CODES); ERR_SOCKS_REPLY when it did not. Either way it is the server's answer, final.
 */
export class SocksReplyError extends DualsocksError {}

/** A bad configuration value; `key` names the offending flag or JSON key. */
export class ConfigError extends DualsocksError {
  readonly key: string;
  constructor(key: string, detail: string) {
    super('ERR_CONFIG', `${key}: ${detail}`);
    this.key = key;
  }
}

export function isDualsocksError(e: unknown): e is DualsocksError {
  return e instanceof DualsocksError;
}
