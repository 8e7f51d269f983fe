// The fake-address table (issue 11, RFC 3089 §3): one fake address per name and family, handed out
// by the DNS responder and turned back into the name when a program connects to it.
//
// Per family three Maps are kept in step: name→entry, address→entry, and `idle` — the entries with
// no connection, in least-recently-used order (Map insertion order: delete + set moves an entry to
// the back). A pinned entry (acquire() without release()) is not in `idle`, so eviction takes the
// first key of `idle` and every operation is O(1) even when most entries are pinned.
//
// Names compare lower case without one trailing dot (as shared/rules does). Addresses come from
// one CIDR per family; offset 0 (the network address) and, for IPv4, the last address are never
// handed out, so a /24 gives 254 names.
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { cidrContains, formatIp, isV4, parseCidr, parseIp, type Cidr, type Family, type Ip } from '../../../shared/net/address.js';
import { ConfigError, RequestError } from '../../../shared/errors.js';

export const DEFAULT_FAKE_RANGE = '198.18.0.0/15';
export const DEFAULT_FAKE_RANGE6 = '2001:2::/48';
/** Entries per family at most; IPv6 ranges are far larger than any table should grow. */
export const DEFAULT_FAKE_LIMIT = 131_072;

export type FakeErrorCode = 'ERR_FAKE_RANGE_FULL' | 'ERR_FAKE_UNMAPPED';

/** A fake-address failure; its REP comes from ERRORS (0x04 unmapped, 0x01 range full). */
export class FakeAddressError extends RequestError {
  declare readonly code: FakeErrorCode;
  constructor(code: FakeErrorCode, detail: string) {
    super(code, detail);
  }
}

export interface FakeTableOptions {
  /** IPv4 CIDR for A answers (--fake-range). */
  range4?: string;
  /** IPv6 CIDR for AAAA answers (--fake-range6). */
  range6?: string;
  /** Most entries per family (default DEFAULT_FAKE_LIMIT, and never more than the range holds). */
  limit?: number;
}

export interface FakeEntry {
  readonly name: string;
  readonly family: Family;
  readonly ip: Ip;
  /** Open connections using this entry; > 0 means it cannot be evicted. */
  refs: number;
}

/** A pinned use of an entry; release() is idempotent. */
export interface FakeLease {
  readonly name: string;
  readonly ip: Ip;
  release(): void;
}

/** Lower case, one trailing dot removed. */
export function normalizeName(name: string): string {
  const n = name.endsWith('.') ? name.slice(0, -1) : name;
  return n.toLowerCase();
}

const ipKey = (ip: Ip): string => Buffer.from(ip.buffer, ip.byteOffset, 16).toString('hex');

/** base + offset (offset < 2^53), carrying from the last byte. */
function addOffset(base: Ip, offset: number): Ip {
  const out = new Uint8Array(base);
  let carry = offset;
  for (let i = 15; i >= 0 && carry > 0; i--) {
    const sum = out[i]! + (carry % 256);
    out[i] = sum & 0xff;
    carry = Math.floor(carry / 256) + (sum >> 8);
  }
  return out;
}

function networkOf(c: Cidr): Ip {
  const out = new Uint8Array(16);
  let bits = c.bits;
  for (let i = 0; i < 16 && bits > 0; i++, bits -= 8) {
    out[i] = c.ip[i]! & (bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff);
  }
  return out;
}

class Pool {
  readonly byName = new Map<string, FakeEntry>();
  readonly byAddr = new Map<string, FakeEntry>();
  /** Entries with refs === 0, least recently used first. */
  readonly idle = new Map<string, FakeEntry>();
  /** Addresses given back by eviction, reused before fresh ones. */
  private readonly free: Ip[] = [];
  private next = 1; // offset 0 is the network address
  readonly network: Ip;
  readonly capacity: number;

  constructor(
    readonly family: Family,
    readonly cidr: Cidr,
    limit: number,
  ) {
    this.network = networkOf(cidr);
    const hostBits = 128 - cidr.bits;
    // usable offsets: 1 .. size-1 (IPv4 also drops the broadcast address)
    const usable = hostBits >= 53 ? Number.MAX_SAFE_INTEGER : 2 ** hostBits - (family === 4 ? 2 : 1);
    this.capacity = Math.max(0, Math.min(usable, limit));
  }

  contains(ip: Ip): boolean {
    return cidrContains(this.cidr, ip);
  }

  touch(e: FakeEntry): void {
    if (e.refs === 0) {
      this.idle.delete(e.name);
      this.idle.set(e.name, e);
    }
  }

  insert(e: FakeEntry): void {
    this.byName.set(e.name, e);
    this.byAddr.set(ipKey(e.ip), e);
    if (e.refs === 0) this.idle.set(e.name, e);
    // a loaded address is never handed out fresh again
    const off = this.offsetOf(e.ip);
    if (off >= this.next) this.next = off + 1;
  }

  /** After a load: addresses below the fresh cursor that no entry holds are free again. */
  collectGaps(): void {
    for (let off = this.next - 1; off >= 1; off--) {
      const ip = addOffset(this.network, off);
      if (!this.byAddr.has(ipKey(ip))) this.free.push(ip);
    }
  }

  /** Offset of ip in the range when it is below 2^53, else -1. */
  offsetOf(ip: Ip): number {
    let off = 0;
    for (let i = 0; i < 16; i++) {
      const d = ip[i]! - this.network[i]!;
      off = off * 256 + d;
      if (off > Number.MAX_SAFE_INTEGER) return -1;
    }
    return off;
  }

  /** An address for a new entry, evicting the least recently used idle entry when full. */
  take(forName: string): Ip {
    const reused = this.free.pop();
    if (reused) return reused;
    // (free addresses exist only after a load with gaps; eviction's address is reused at once)
    if (this.byName.size < this.capacity && this.next <= this.capacity) return addOffset(this.network, this.next++);
    const oldest = this.idle.values().next();
    if (oldest.done) {
      throw new FakeAddressError(
        'ERR_FAKE_RANGE_FULL',
        `no fake IPv${this.family} address left for ${forName}: all ${this.capacity} addresses of ${this.cidr.text} are in use by open connections`,
      );
    }
    this.remove(oldest.value);
    return this.free.pop()!;
  }

  remove(e: FakeEntry): void {
    this.byName.delete(e.name);
    this.byAddr.delete(ipKey(e.ip));
    this.idle.delete(e.name);
    this.free.push(e.ip);
  }
}

interface SavedFile {
  format: string;
  version: number;
  range4: string;
  range6: string;
  /** [family, address, name], least recently used first. */
  entries: [number, string, string][];
}

const FORMAT = 'dualsocks-fake-table';

export class FakeTable {
  private readonly pools: { 4: Pool; 6: Pool };
  /** Bumped on every change, so a caller can save only when something changed. */
  version = 0;

  constructor(opts: FakeTableOptions = {}) {
    const limit = opts.limit ?? DEFAULT_FAKE_LIMIT;
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`limit ${limit}: must be a positive integer`);
    const range = (key: string, text: string, family: Family): Cidr => {
      const c = parseCidr(text);
      if (!c || !text.includes('/')) throw new ConfigError(key, `${JSON.stringify(text)}: not a CIDR (ADDRESS/PREFIX)`);
      if ((family === 4) !== (isV4(c.ip) && !text.includes(':'))) throw new ConfigError(key, `${text}: must be an IPv${family} range`);
      if (128 - c.bits < 2) throw new ConfigError(key, `${text}: too small for fake addresses`);
      return c;
    };
    this.pools = {
      4: new Pool(4, range('fakeRange', opts.range4 ?? DEFAULT_FAKE_RANGE, 4), limit),
      6: new Pool(6, range('fakeRange6', opts.range6 ?? DEFAULT_FAKE_RANGE6, 6), limit),
    };
  }

  get range4(): string {
    return this.pools[4].cidr.text;
  }
  get range6(): string {
    return this.pools[6].cidr.text;
  }

  /** Entries per family. */
  get size(): { 4: number; 6: number } {
    return { 4: this.pools[4].byName.size, 6: this.pools[6].byName.size };
  }

  /** True when ip lies in a fake range, mapped or not: such an address is never a destination. */
  isFake(ip: Ip): boolean {
    return this.pools[4].contains(ip) || this.pools[6].contains(ip);
  }

  /** The fake address for name, allocating (and evicting) when needed; refreshes its LRU place. */
  assign(name: string, family: Family): Ip {
    const pool = this.pools[family];
    const key = normalizeName(name);
    if (key === '') throw new TypeError('empty name');
    const found = pool.byName.get(key);
    if (found) {
      pool.touch(found);
      return found.ip;
    }
    const ip = pool.take(key);
    pool.insert({ name: key, family, ip, refs: 0 });
    this.version++;
    return ip;
  }

  /** The fake address already mapped to name, without allocating or touching. */
  lookupName(name: string, family: Family): Ip | undefined {
    return this.pools[family].byName.get(normalizeName(name))?.ip;
  }

  /** The name a fake address stands for, without touching; undefined when unmapped. */
  nameOf(ip: Ip): string | undefined {
    return this.poolFor(ip)?.byAddr.get(ipKey(ip))?.name;
  }

  /**
   * Pins the entry of a fake address for a connection: it cannot be evicted until release().
   * Throws ERR_FAKE_UNMAPPED for a fake address that maps to nothing; returns undefined for an
   * address outside the fake ranges (an ordinary destination).
   */
  acquire(ip: Ip): FakeLease | undefined {
    const pool = this.poolFor(ip);
    if (!pool) return undefined;
    const e = pool.byAddr.get(ipKey(ip));
    if (!e) {
      throw new FakeAddressError(
        'ERR_FAKE_UNMAPPED',
        `${formatIp(ip)} is a fake address that is not (or no longer) mapped to a name: look the name up again through the bridge's DNS (--dns-listen), or keep the table across restarts with --fake-state`,
      );
    }
    if (e.refs === 0) pool.idle.delete(e.name);
    e.refs++;
    let released = false;
    return {
      name: e.name,
      ip: e.ip,
      release: () => {
        if (released) return;
        released = true;
        e.refs--;
        // back into the LRU order as the most recently used, if it is still in the table
        if (e.refs === 0 && pool.byName.get(e.name) === e) pool.idle.set(e.name, e);
      },
    };
  }

  /** The most recently used entries first, at most n (for /api/status). */
  recent(n: number): { name: string; address: string; refs: number }[] {
    const out: { name: string; address: string; refs: number }[] = [];
    for (const family of [4, 6] as const) {
      const pool = this.pools[family];
      // pinned entries are in use right now: list them first
      for (const e of pool.byName.values()) if (e.refs > 0 && out.length < n) out.push({ name: e.name, address: formatIp(e.ip), refs: e.refs });
      const idle = [...pool.idle.values()];
      for (let i = idle.length - 1; i >= 0 && out.length < n; i--) out.push({ name: idle[i]!.name, address: formatIp(idle[i]!.ip), refs: 0 });
    }
    return out.slice(0, n);
  }

  private poolFor(ip: Ip): Pool | undefined {
    if (ip.length !== 16) return undefined;
    if (this.pools[4].contains(ip)) return this.pools[4];
    if (this.pools[6].contains(ip)) return this.pools[6];
    return undefined;
  }

  private serialize(): SavedFile {
    const entries: [number, string, string][] = [];
    for (const family of [4, 6] as const) {
      const pool = this.pools[family];
      // pinned first (they are in use), then idle in LRU order, so a load keeps the order
      for (const e of pool.byName.values()) if (e.refs > 0) entries.push([family, formatIp(e.ip), e.name]);
      for (const e of pool.idle.values()) entries.push([family, formatIp(e.ip), e.name]);
    }
    return { format: FORMAT, version: 1, range4: this.range4, range6: this.range6, entries };
  }

  /** Writes the table atomically: a temporary file, fsync, rename over file, fsync the directory. */
  save(file: string): void {
    const tmp = `${file}.${process.pid}.tmp`;
    const data = JSON.stringify(this.serialize());
    let fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, data);
      fsyncSync(fd);
    } catch (e) {
      closeSync(fd);
      try {
        unlinkSync(tmp);
      } catch {
        /* already gone */
      }
      throw e;
    }
    closeSync(fd);
    renameSync(tmp, file);
    fd = openSync(dirname(file), 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }

  /**
   * Reads a table written by save() into this (empty) table. A missing file is a first start and
   * loads nothing. Anything else that is not a valid table for these ranges is an error naming the
   * file: starting empty would silently break the answers programs cached, and a file from other
   * ranges would map addresses the programs never got.
   */
  load(file: string): number {
    if (this.pools[4].byName.size + this.pools[6].byName.size > 0) throw new Error('FakeTable.load: the table is not empty');
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 0;
      throw new ConfigError('fakeState', `${file}: cannot read: ${(e as Error).message}`);
    }
    const bad = (why: string): ConfigError =>
      new ConfigError('fakeState', `${file}: ${why} (not a dualsocks fake-address table for these ranges; move it away to start with an empty table)`);
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch {
      throw bad('not JSON');
    }
    const f = raw as Partial<SavedFile>;
    if (typeof f !== 'object' || f === null || f.format !== FORMAT) throw bad('not a fake-address table');
    if (f.version !== 1) throw bad(`unknown version ${JSON.stringify(f.version)}`);
    if (!Array.isArray(f.entries)) throw bad('no entries list');
    const loaded: FakeEntry[] = [];
    const names = { 4: new Set<string>(), 6: new Set<string>() };
    const addrs = new Set<string>();
    for (const [i, item] of f.entries.entries()) {
      if (!Array.isArray(item) || item.length !== 3) throw bad(`entry ${i} is not [family, address, name]`);
      const [family, address, name] = item as unknown[];
      if (family !== 4 && family !== 6) throw bad(`entry ${i}: family ${JSON.stringify(family)}`);
      if (typeof address !== 'string' || typeof name !== 'string') throw bad(`entry ${i}: address and name must be strings`);
      const ip = parseIp(address);
      const pool = this.pools[family];
      if (!ip || !pool.contains(ip)) throw bad(`entry ${i}: ${address} is outside ${family === 4 ? '--fake-range' : '--fake-range6'} ${pool.cidr.text}`);
      const off = pool.offsetOf(ip);
      if (off < 1 || off > pool.capacity) throw bad(`entry ${i}: ${address} is not a usable address of ${pool.cidr.text}`);
      const key = normalizeName(name);
      if (key === '' || key.length > 253 || key !== name) throw bad(`entry ${i}: bad name ${JSON.stringify(name)}`);
      if (names[family].has(key) || addrs.has(ipKey(ip))) throw bad(`entry ${i}: ${name} or ${address} appears twice`);
      names[family].add(key);
      addrs.add(ipKey(ip));
      loaded.push({ name: key, family, ip, refs: 0 });
    }
    if (loaded.length > this.pools[4].capacity + this.pools[6].capacity) throw bad('more entries than the table holds');
    for (const family of [4, 6] as const) {
      if (names[family].size > this.pools[family].capacity) throw bad(`more IPv${family} entries than the limit`);
    }
    for (const e of loaded) this.pools[e.family].insert(e);
    for (const family of [4, 6] as const) this.pools[family].collectGaps();
    if (loaded.length > 0) this.version++;
    return loaded.length;
  }
}

export interface Autosave {
  /** Saves now if anything changed since the last save. */
  flush(): void;
  /** Stops the timer and flushes (call on shutdown). */
  stop(): void;
}

/**
 * Saves the table to file every intervalMs when a name was added (--fake-state). The timer does not
 * keep the process alive; a failed save is reported and retried at the next tick.
 */
export function autosave(table: FakeTable, file: string, opts: { intervalMs?: number; onError?: (e: unknown) => void } = {}): Autosave {
  let saved = table.version;
  const flush = (): void => {
    if (table.version === saved) return;
    const v = table.version;
    try {
      table.save(file);
      saved = v;
    } catch (e) {
      (opts.onError ?? ((err: unknown) => process.stderr.write(`dualsocks: --fake-state ${file}: ${(err as Error).message}\n`)))(e);
    }
  };
  const timer = setInterval(flush, opts.intervalMs ?? 5000);
  timer.unref();
  return {
    flush,
    stop: () => {
      clearInterval(timer);
      flush();
    },
  };
}
