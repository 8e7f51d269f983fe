// Byte helpers for the protocol tests: literals, hex for messages and comparisons, a seeded PRNG
// for reproducible fuzzing, and the ways of cutting an input that a stream reader may meet.

/** mulberry32: a fixed seed makes every fuzz failure reproducible. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const bytes = (...b: number[]): Uint8Array => Uint8Array.from(b);
export const ascii = (s: string): Uint8Array => new TextEncoder().encode(s);
export const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** The input one byte a chunk. */
export const trickle = (input: Uint8Array): Uint8Array[] => [...input].map((b) => Uint8Array.of(b));

/**
 * Every way of cutting `input` the tests check: whole, every two-way split, every three-way split
 * when the input is at most `threeWayUpTo` bytes long (none by default), and one byte at a time.
 */
export function* splits(input: Uint8Array, { threeWayUpTo = -1 }: { threeWayUpTo?: number } = {}): Generator<Uint8Array[]> {
  yield [input];
  for (let i = 0; i <= input.length; i++) yield [input.subarray(0, i), input.subarray(i)];
  if (input.length <= threeWayUpTo) {
    for (let i = 1; i < input.length; i++) {
      for (let j = i + 1; j < input.length; j++) yield [input.subarray(0, i), input.subarray(i, j), input.subarray(j)];
    }
  }
  yield trickle(input);
}
