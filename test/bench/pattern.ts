// The bulk payload: an AES-128-CTR keystream under a fixed key, so both ends can produce the
// same bytes without sending a seed, and no two chunks inside one period are alike (a relay
// that repeats or drops a buffer changes the checksum). Byte i of a stream is pattern[i % period].
import { createCipheriv, createHash } from 'node:crypto';

const MiB = 1024 * 1024;
/** The pattern is at most this long; longer streams repeat it. */
export const MAX_PERIOD = 256 * MiB;

export function patternBytes(length: number): Buffer {
  const cipher = createCipheriv('aes-128-ctr', Buffer.alloc(16, 0x5a), Buffer.alloc(16, 0));
  const out = Buffer.allocUnsafe(length);
  const zeros = Buffer.alloc(Math.min(length, MiB));
  for (let off = 0; off < length; off += zeros.length) {
    const n = Math.min(zeros.length, length - off);
    cipher.update(zeros.subarray(0, n)).copy(out, off);
  }
  return out;
}

export function periodFor(size: number): number {
  return Math.max(1, Math.min(size, MAX_PERIOD));
}

/** Consecutive slices of the stream of `size` bytes, each at most `chunk` long. */
export function* slices(pattern: Buffer, size: number, chunk: number): Generator<Buffer> {
  for (let sent = 0; sent < size; ) {
    const off = sent % pattern.length;
    const n = Math.min(chunk, pattern.length - off, size - sent);
    yield pattern.subarray(off, off + n);
    sent += n;
  }
}

/** sha256 (hex) of the stream of `size` bytes built from `pattern`. */
export function streamDigest(pattern: Buffer, size: number): string {
  const h = createHash('sha256');
  for (const s of slices(pattern, size, 4 * MiB)) h.update(s);
  return h.digest('hex');
}
