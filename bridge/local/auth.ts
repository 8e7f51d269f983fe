// Proxy authentication on the bridge (--users): the gateway's users file, scrypt limits and
// per-source back-off (../gateway/users.ts), for SOCKS5 (RFC 1929) and HTTP
// (Proxy-Authorization: Basic). A login that passed is remembered for a while (PassedLogins),
// so a browser's many connections, each with the same header, cost one scrypt and not one each;
// a source in back-off is refused before that memory is looked at.
import { canonicalHost } from '../../shared/net/address.js';
import { displayName } from '../../shared/socks5/server.js';
import { checkRemembered, PassedLogins, PasswordChecks, sourceKey, Users, type CheckResult } from '../gateway/users.js';
import { isLocalPeer } from '../host-addresses.js';

export const REALM = 'dualsocks';

export interface Credentials {
  username: Uint8Array;
  password: Uint8Array;
}

/**
 * The credentials of a `Proxy-Authorization: Basic …` header (RFC 7617: base64 of
 * "user:password", the user without a colon), as bytes; null when absent or another scheme.
 */
export function basicCredentials(header: string | undefined): Credentials | null {
  const m = header === undefined ? null : /^basic[ \t]+([A-Za-z0-9+/]+={0,2})[ \t]*$/i.exec(header);
  if (!m) return null;
  const raw = Buffer.from(m[1]!, 'base64');
  const colon = raw.indexOf(0x3a);
  if (colon < 0) return null;
  return { username: raw.subarray(0, colon), password: raw.subarray(colon + 1) };
}

export class ProxyAuth {
  users: Users;
  readonly checks: PasswordChecks;
  private readonly logins: PassedLogins;

  constructor(
    readonly file: string,
    /** Programs on this machine need no login. */
    readonly exemptLocal: boolean,
    checks = new PasswordChecks(),
    now: () => number = Date.now,
  ) {
    this.users = Users.fromFile(file);
    this.checks = checks;
    this.logins = new PassedLogins(now);
  }

  /** Whether a client at `address` must log in. */
  required(address: string | undefined): boolean {
    return !(this.exemptLocal && isLocalPeer(address));
  }

  /** SIGHUP: re-reads the file (a bad one keeps the previous users); forgets passed logins. */
  reload(): string {
    try {
      this.users = Users.fromFile(this.file);
    } catch (e) {
      return `--users not reloaded, the previous users stay: ${(e as Error).message}`;
    }
    this.logins.clear();
    return `users reloaded from ${this.file} (${this.users.size})`;
  }

  /**
   * Checks `c` from a client at `address`; `done` is called once, never synchronously, unless
   * the returned cancel() came first (the client left).
   */
  check(address: string | undefined, c: Credentials, done: (r: CheckResult) => void): () => boolean {
    return checkRemembered(this.checks, this.logins, this.users, sourceKey(canonicalHost(address ?? '')), c.username, c.password, done);
  }
}

/** A username for the log: its UTF-8 text, or 0x… hex. */
export const userText = (c: Credentials): string => displayName(c.username);
