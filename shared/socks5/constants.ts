// Wire constants of SOCKS5 (RFC 1928), its username/password auth (RFC 1929) and SOCKS4/4a.

export const SOCKS5_VERSION = 0x05;
export const SOCKS4_VERSION = 0x04;
export const AUTH_USERPASS_VERSION = 0x01;

export const METHOD = {
  NO_AUTH: 0x00,
  GSSAPI: 0x01,
  USERPASS: 0x02,
  /**
   * dualsocks' own, from the private range (0x80–0xFE, RFC 1928 §3): offered beside 0x00 or 0x02,
   * never selected. It asks a dualsocks server to put its error code (ERR_…) in a failure reply's
   * BND as ATYP DOMAINNAME; other servers ignore a method they do not know.
   */
  ERROR_CODES: 0xd5,
  NO_ACCEPTABLE: 0xff,
} as const;

export const CMD = {
  CONNECT: 0x01,
  BIND: 0x02,
  UDP_ASSOCIATE: 0x03,
} as const;
export type Command = (typeof CMD)[keyof typeof CMD];

export const ATYP = {
  IPV4: 0x01,
  DOMAIN: 0x03,
  IPV6: 0x04,
} as const;

export const REP = {
  SUCCEEDED: 0x00,
  GENERAL_FAILURE: 0x01,
  NOT_ALLOWED: 0x02,
  NETWORK_UNREACHABLE: 0x03,
  HOST_UNREACHABLE: 0x04,
  CONNECTION_REFUSED: 0x05,
  TTL_EXPIRED: 0x06,
  COMMAND_NOT_SUPPORTED: 0x07,
  ADDRESS_TYPE_NOT_SUPPORTED: 0x08,
} as const;
/** A reply code we send (RFC 1928 §6). Codes read off the wire stay `number`: a peer may send any byte. */
export type Rep = (typeof REP)[keyof typeof REP];

/** RFC 1928 wording, used in logs and in the bridge's error pages. */
export const REP_TEXT: Record<number, string> = {
  0x00: 'succeeded',
  0x01: 'general SOCKS server failure',
  0x02: 'connection not allowed by ruleset',
  0x03: 'network unreachable',
  0x04: 'host unreachable',
  0x05: 'connection refused',
  0x06: 'TTL expired',
  0x07: 'command not supported',
  0x08: 'address type not supported',
};

export const SOCKS4_CD = {
  CONNECT: 0x01,
  BIND: 0x02,
  GRANTED: 0x5a,
  REJECTED: 0x5b,
} as const;

export const AUTH_STATUS_OK = 0x00;
export const AUTH_STATUS_FAIL = 0x01;
