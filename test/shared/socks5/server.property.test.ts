// Property test (fast-check) for the sans-IO server session in shared/socks5/server.ts: any
// greeting/auth/request stream, valid or mutated, cut into any chunks, gives the same commands
// (sends, authenticate, request, relay data, close) as in one piece, and never throws.
import fc from 'fast-check';
import { test } from 'node:test';
import * as g from '../../fuzz/grammar.js';
import { driveServer, serverInput } from '../../fuzz/inprocess.js';

test('Socks5ServerSession: any split of any input gives the one-piece commands, never a throw', () => {
  fc.assert(
    fc.property(fc.boolean(), serverInput(), g.cuts, (requireAuth, b, at) => {
      const whole = driveServer(requireAuth, [b]).join(' | ');
      const split = driveServer(requireAuth, g.split(b, at)).join(' | ');
      if (whole !== split) throw new Error(`split: ${split}\nwhole: ${whole}`);
    }),
    { numRuns: 5000, seed: 0x5eed },
  );
});
