// RFC 1929 credentials. Passwords are stored as scrypt hashes ("user:scrypt$N$r$p$salt$hash",
// base64) and compared in constant time; an unknown user costs the same scrypt as a known one.
// Usernames and passwords are bytes (RFC 1929): the file's text stands for its UTF-8 bytes, and
// what a client sends is hashed and looked up as sent, never decoded.
import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ConfigError } from '../../shared/errors.js';

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
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (e) {
      throw new ConfigError('users', `${path}: ${(e as Error).message}`);
    }
    return Users.parse(text, path);
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
