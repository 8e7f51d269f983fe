// RFC 1929 credentials. Passwords are stored as scrypt hashes ("user:scrypt$N$r$p$salt$hash",
// base64) and compared in constant time; an unknown user costs the same scrypt as a known one.
// Usernames and passwords are bytes (RFC 1929): the file's text stands for its UTF-8 bytes, and
// what a client sends is hashed and looked up as sent, never decoded.
import { createHmac, randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { ConfigError } from '../../shared/errors.js';
import { formatIp, isV4, parseIp } from '../../shared/net/address.js';
import { readConfigFile } from '../config-common.js';

const N = 16384;
const R = 8;
const P = 1;
const KEYLEN = 32;

interface Entry {
  salt: Buffer;
  hash: Buffer;
  opts: ScryptOptions;
}

function derive(password: Uint8Array, salt: Buffer, opts: ScryptOptions, keylen: number): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scrypt(password, salt, keylen, { ...opts, maxmem: 64 * 1024 * 1024 }, (err, key) => (err ? reject(err) : resolve(key))),
  );
}

/** The bytes a name or password stands for: text as UTF-8. */
function bytesOf(v: string | Uint8Array): Buffer {
  return typeof v === 'string' ? Buffer.from(v, 'utf8') : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
}

/** A Map key that is one-to-one with the bytes (latin1 maps each byte to one char). */
function keyOf(name: string | Uint8Array): string {
  return bytesOf(name).toString('latin1');
}

export async function hashPassword(password: string | Uint8Array): Promise<string> {
  const salt = randomBytes(16);
  const hash = await derive(bytesOf(password), salt, { N, r: R, p: P }, KEYLEN);
  return `scrypt$${N}$${R}$${P}$${salt.toString('base64')}$${hash.toString('base64')}`;
}

function parseEntry(text: string): Entry | null {
  const m = /^scrypt\$(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/.exec(text);
  if (!m) return null;
  const [n, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (n < 2 || (n & (n - 1)) !== 0 || r < 1 || p < 1) return null;
  return { opts: { N: n, r, p }, salt: Buffer.from(m[4]!, 'base64'), hash: Buffer.from(m[5]!, 'base64') };
}

export class Users {
  private readonly entries = new Map<string, Entry>();
  private readonly dummy: Entry = { opts: { N, r: R, p: P }, salt: randomBytes(16), hash: randomBytes(KEYLEN) };

  static fromFile(path: string): Users {
    return Users.parse(readConfigFile('users', path), path);
  }

  static parse(text: string, source = 'users'): Users {
    const users = new Users();
    text.split('\n').forEach((raw, i) => {
      const line = raw.trim();
      if (line === '' || line.startsWith('#')) return;
      const colon = line.indexOf(':');
      const name = line.slice(0, colon);
      const entry = colon > 0 ? parseEntry(line.slice(colon + 1)) : null;
      if (!entry) throw new ConfigError('users', `${source} line ${i + 1}: expected "user:scrypt$…" as printed by \`dualsocks passwd USER\``);
      users.entries.set(keyOf(name), entry);
    });
    if (users.entries.size === 0) throw new ConfigError('users', `${source} holds no users`);
    return users;
  }

  get size(): number {
    return this.entries.size;
  }

  async verify(username: string | Uint8Array, password: string | Uint8Array): Promise<boolean> {
    const entry = this.entries.get(keyOf(username));
    const e = entry ?? this.dummy;
    const key = await derive(bytesOf(password), e.salt, e.opts, e.hash.length);
    return timingSafeEqual(key, e.hash) && entry !== undefined;
  }
}

// ---- Password checks under load ----
// scrypt runs on libuv's thread pool (4 threads, shared with dns.lookup and the file system).
// Without a limit, a client that sends wrong passwords and hangs up, thousands of times a second,
// queues hashing work nobody waits for and every real login waits behind it. So: a check whose
// client left is dropped before it starts, a few run at once, the waiting ones are served one
// source at a time in turn, and a source that keeps failing is refused for a while without
// hashing at all.

export interface CheckLimits {
  /** scrypt computations at once (leaves thread-pool room for name lookups). */
  concurrency: number;
  /** Checks waiting from one source; more are refused as busy. */
  perSource: number;
  /** Checks waiting in all. */
  queue: number;
  /** Failed logins from one source before it is refused without a check. */
  freeFailures: number;
  /** First refusal period after those; each further failure doubles it. */
  backoffMs: number;
  maxBackoffMs: number;
  /** Sources whose failures are remembered (the oldest is forgotten first). */
  sources: number;
}

export const DEFAULT_CHECK_LIMITS: CheckLimits = {
  concurrency: 2,
  perSource: 64,
  queue: 1024,
  freeFailures: 5,
  backoffMs: 1000,
  maxBackoffMs: 60_000,
  sources: 10_000,
};

/**
 * 'busy': too many checks waiting; 'backoff': this source failed too often, retry later;
 * 'error': the check itself broke (a defect, or a hash scrypt refuses): not the client's failure.
 */
export type CheckResult = { result: 'ok' | 'fail' | 'busy' } | { result: 'backoff'; retryMs: number } | { result: 'error'; error: unknown };

export interface CheckStats {
  /** scrypt computations begun. */
  started: number;
  /** Checks dropped before they began because the client left. */
  dropped: number;
  refusedBusy: number;
  refusedBackoff: number;
  /** Now waiting, and now computing. */
  waiting: number;
  running: number;
}

interface Job {
  users: Users;
  source: string;
  username: Uint8Array | string;
  password: Uint8Array | string;
  done: (r: CheckResult) => void;
  state: 'waiting' | 'running' | 'over';
}

interface Failures {
  count: number;
  /** Refused without a check until then. */
  until: number;
  last: number;
}

/** One source: an IPv4 address, or an IPv6 /64 (one host usually holds a whole /64). */
export function sourceKey(host: string): string {
  const ip = parseIp(host);
  if (!ip) return host;
  if (isV4(ip)) return formatIp(ip);
  const net = new Uint8Array(16);
  net.set(ip.subarray(0, 8));
  return `${formatIp(net)}/64`;
}

export class PasswordChecks {
  readonly stats: CheckStats = { started: 0, dropped: 0, refusedBusy: 0, refusedBackoff: 0, waiting: 0, running: 0 };
  /** Waiting jobs by source, in the order sources take turns. */
  private readonly waiting = new Map<string, Job[]>();
  private readonly failures = new Map<string, Failures>();
  readonly limits: CheckLimits;

  constructor(limits: Partial<CheckLimits> = {}, private readonly now: () => number = Date.now) {
    this.limits = { ...DEFAULT_CHECK_LIMITS, ...limits };
  }

  /**
   * Checks credentials from `source` (see sourceKey) against `users`. `done` is called once,
   * never synchronously, unless the returned cancel() came first (the client left): a check not
   * begun then is dropped (cancel() says true), one computing has its result ignored (it still
   * counts as a failure).
   */
  check(users: Users, source: string, username: Uint8Array | string, password: Uint8Array | string, done: (r: CheckResult) => void): () => boolean {
    const job: Job = { users, source, username, password, done, state: 'waiting' };
    const cancel = (): boolean => {
      const dropped = job.state === 'waiting';
      if (dropped) {
        this.unqueue(job);
        this.stats.dropped++;
      }
      job.state = 'over';
      return dropped;
    };
    const backoff = this.backoff(source);
    if (backoff > 0) {
      this.stats.refusedBackoff++;
      this.answerLater(job, { result: 'backoff', retryMs: backoff });
      return cancel;
    }
    const mine = this.waiting.get(source);
    if (this.stats.waiting >= this.limits.queue || (mine && mine.length >= this.limits.perSource)) {
      this.stats.refusedBusy++;
      this.answerLater(job, { result: 'busy' });
      return cancel;
    }
    if (mine) mine.push(job);
    else this.waiting.set(source, [job]);
    this.stats.waiting++;
    // begin in a later turn: a client whose FIN or RST came with its credentials leaves first
    setImmediate(() => this.pump());
    return cancel;
  }

  /** How long `source` is still refused, 0 if not. */
  backoff(source: string): number {
    const f = this.failures.get(source);
    if (!f) return 0;
    const now = this.now();
    if (now - f.last > this.limits.maxBackoffMs) {
      this.failures.delete(source);
      return 0;
    }
    return Math.max(0, f.until - now);
  }

  private answerLater(job: Job, r: CheckResult): void {
    job.state = 'running';
    queueMicrotask(() => this.answer(job, r));
  }

  private answer(job: Job, r: CheckResult): void {
    if (job.state === 'over') return;
    job.state = 'over';
    job.done(r);
  }

  private unqueue(job: Job): void {
    const list = this.waiting.get(job.source);
    const i = list ? list.indexOf(job) : -1;
    if (!list || i < 0) return;
    list.splice(i, 1);
    if (list.length === 0) this.waiting.delete(job.source);
    this.stats.waiting--;
  }

  /** Next waiting job, sources taking turns. */
  private next(): Job | undefined {
    for (const [source, list] of this.waiting) {
      const job = list.shift()!;
      this.waiting.delete(source);
      if (list.length > 0) this.waiting.set(source, list);
      this.stats.waiting--;
      return job;
    }
    return undefined;
  }

  private pump(): void {
    while (this.stats.running < this.limits.concurrency) {
      const job = this.next();
      if (!job) return;
      // its source may have failed meanwhile: refuse it without hashing
      const backoff = this.backoff(job.source);
      if (backoff > 0) {
        this.stats.refusedBackoff++;
        this.answerLater(job, { result: 'backoff', retryMs: backoff });
        continue;
      }
      job.state = 'running';
      this.stats.started++;
      this.stats.running++;
      const settle = (r: CheckResult): void => {
        this.stats.running--;
        if (r.result === 'ok' || r.result === 'fail') this.record(job.source, r.result === 'ok');
        this.answer(job, r);
        this.pump();
      };
      let verified: Promise<boolean>;
      try {
        verified = job.users.verify(job.username, job.password);
      } catch (error) {
        verified = Promise.reject(error);
      }
      verified.then(
        (ok) => settle({ result: ok ? 'ok' : 'fail' }),
        (error: unknown) => settle({ result: 'error', error }),
      );
    }
  }

  private record(source: string, ok: boolean): void {
    if (ok) {
      this.failures.delete(source);
      return;
    }
    const now = this.now();
    let f = this.failures.get(source);
    if (!f || now - f.last > this.limits.maxBackoffMs) f = { count: 0, until: 0, last: now };
    f.count++;
    f.last = now;
    const over = f.count - this.limits.freeFailures;
    if (over >= 0) f.until = now + Math.min(this.limits.backoffMs * 2 ** Math.min(over, 30), this.limits.maxBackoffMs);
    // most recently failed last: the oldest are forgotten first
    this.failures.delete(source);
    this.failures.set(source, f);
    if (this.failures.size > this.limits.sources) this.failures.delete(this.failures.keys().next().value!);
  }
}

/** How long a passed login is taken again without scrypt, and how many are kept. */
const REMEMBER_MS = 5 * 60_000;
const REMEMBER_MAX = 4096;

/**
 * Logins that passed, remembered for a while under a keyed hash of their bytes (the key is
 * random per process, nothing is written anywhere): a client that opens many connections with
 * the same credentials — a bridge, a browser — costs one scrypt, not one per connection. Each
 * entry belongs to the Users it was checked against; a reload starts afresh.
 */
export class PassedLogins {
  private readonly key = randomBytes(32);
  /** Keyed hash of user and password → when it stops counting; the oldest first. */
  private readonly passed = new Map<string, number>();
  private users: Users | undefined;

  constructor(private readonly now: () => number = Date.now) {}

  private digest(username: Uint8Array, password: Uint8Array): string {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(username.length);
    return createHmac('sha256', this.key).update(len).update(username).update(password).digest('base64');
  }

  /** Whether these credentials passed against `users` lately. */
  has(users: Users, username: Uint8Array, password: Uint8Array): boolean {
    if (users !== this.users) return false;
    const until = this.passed.get(this.digest(username, password));
    return until !== undefined && until > this.now();
  }

  /** Remembers credentials that just passed against `users` (forgetting those of other users). */
  add(users: Users, username: Uint8Array, password: Uint8Array): void {
    if (users !== this.users) {
      this.passed.clear();
      this.users = users;
    }
    const key = this.digest(username, password);
    this.passed.delete(key);
    this.passed.set(key, this.now() + REMEMBER_MS);
    if (this.passed.size > REMEMBER_MAX) this.passed.delete(this.passed.keys().next().value!);
  }

  clear(): void {
    this.passed.clear();
    this.users = undefined;
  }
}

/**
 * A check of `username`/`password` from `source`: a login that passed lately is taken again
 * without scrypt (unless the source is in back-off), else `checks` runs it and a pass is
 * remembered. Same contract as PasswordChecks.check.
 */
export function checkRemembered(checks: PasswordChecks, logins: PassedLogins, users: Users, source: string, username: Uint8Array, password: Uint8Array, done: (r: CheckResult) => void): () => boolean {
  if (logins.has(users, username, password) && checks.backoff(source) === 0) {
    let cancelled = false;
    queueMicrotask(() => cancelled || done({ result: 'ok' }));
    return () => {
      cancelled = true;
      return true;
    };
  }
  return checks.check(users, source, username, password, (r) => {
    if (r.result === 'ok') logins.add(users, username, password);
    done(r);
  });
}
