// Proxy authentication on the bridge (--users): the gateway's users file, scrypt limits and
// per-source back-off (../gateway/users.ts), for SOCKS5 (RFC 1929) and HTTP
// (Proxy-Authorization: Basic). A login that passed is remembered for a while under a keyed
// hash of its bytes, so a browser's many connections, each with the same header, cost one
// scrypt and not one each; a source in back-off is refused before that memory is looked at.
import { createHmac, randomBytes } from 'node:crypto';
import { canonicalHost } from '../../shared/net/address.js';
import { displayName } from '../../shared/socks5/server.js';
import { PasswordChecks, sourceKey, Users, type CheckResult } from '../gateway/users.js';
import { isLocalPeer } from '../host-addresses.js';

/** How long a passed login is taken again without scrypt, and how many are kept. */
const REMEMBER_MS = 5 * 60_000;
const REMEMBER_MAX = 4096;

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
  private readonly key = randomBytes(32);
  /** Keyed hash of user and password → when it stops counting; the oldest first. */
  private readonly passed = new Map<string, number>();

  constructor(
    readonly file: string,
    /** Programs on this machine need no login. */
    readonly exemptLocal: boolean,
    checks = new PasswordChecks(),
    private readonly now: () => number = Date.now,
  ) {
    this.users = Users.fromFile(file);
    this.checks = checks;
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
    this.passed.clear();
    return `users reloaded from ${this.file} (${this.users.size})`;
  }

  private remembered(c: Credentials): string {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(c.username.length);
    return createHmac('sha256', this.key).update(len).update(c.username).update(c.password).digest('base64');
  }

  /**
   * Checks `c` from a client at `address`; `done` is called once, never synchronously, unless
   * the returned cancel() came first (the client left).
   */
  check(address: string | undefined, c: Credentials, done: (r: CheckResult) => void): () => boolean {
    const source = sourceKey(canonicalHost(address ?? ''));
    const key = this.remembered(c);
    const until = this.passed.get(key);
    if (until !== undefined && until > this.now() && this.checks.backoff(source) === 0) {
      let cancelled = false;
      queueMicrotask(() => cancelled || done({ result: 'ok' }));
      return () => {
        cancelled = true;
        return true;
      };
    }
    const users = this.users;
    return this.checks.check(users, source, c.username, c.password, (r) => {
      // a login checked against users replaced meanwhile is not remembered
      if (r.result === 'ok' && users === this.users) {
        this.passed.delete(key);
        this.passed.set(key, this.now() + REMEMBER_MS);
        if (this.passed.size > REMEMBER_MAX) this.passed.delete(this.passed.keys().next().value!);
      }
      done(r);
    });
  }
}

/** A username for the log: its UTF-8 text, or 0x… hex. */
export const userText = (c: Credentials): string => displayName(c.username);
