// Property test (fast-check) for the sans-IO client session in shared/socks5/client.ts: any
// server answer stream, valid or mutated, cut into any chunks, gives the same commands as in
// one piece, and never throws.
import fc from 'fast-check';
import { test } from 'node:test';
import { TARGETS } from '../../fuzz/inprocess.js';

test('Socks5ClientSession: any split of any server answer gives the one-piece commands, never a throw', () => {
  const target = TARGETS.find((t) => t.name === 'Socks5ClientSession')!;
  fc.assert(target.property(), { numRuns: 5000, seed: 0x5eed });
});
