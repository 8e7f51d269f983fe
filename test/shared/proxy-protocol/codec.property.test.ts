// Property tests (fast-check) for the PROXY protocol decoder, as for the SOCKS codec
// (test/shared/socks5/codec.property.test.ts): valid v1 and v2 headers from the specification's
// grammar (test/fuzz/grammar.ts, which `npm run fuzz` drives too), then mutated (bits flipped,
// bytes cut, lengths that lie) and pure noise. Any input gives need/ok/error, never a throw; any
// split across reads gives the one-piece answer; a valid header decodes whole, with the bytes
// after it left alone; an error stays an error however many bytes follow (the gateway closes at
// once, never waits on a header that cannot become valid).
import fc from 'fast-check';
import { test } from 'node:test';
import { decodeProxyHeader } from '../../../shared/proxy-protocol/codec.js';
import { concatBytes } from '../../../shared/socks5/codec.js';
import * as g from '../../fuzz/grammar.js';
import { checkDecoded, streamDecoderProperty } from '../../fuzz/inprocess.js';

const RUNS = 3000;
const SEED = 0x9209;

const header = g.proxyHeader();
const trailing = fc.uint8Array({ maxLength: 16 });

test('decodeProxyHeader: any (mutated) input gives need/ok/error, and any split gives the one-piece answer', () => {
  fc.assert(streamDecoderProperty(decodeProxyHeader, g.hostile(header)), { numRuns: RUNS, seed: SEED });
});

test('decodeProxyHeader: a valid header decodes whole, whatever follows it, and what follows is not read', () => {
  fc.assert(
    fc.property(header, trailing, (m, rest) => {
      const d = decodeProxyHeader(concatBytes(m.bytes, rest));
      if (d.status !== 'ok' || d.size !== m.bytes.length) throw new Error(`valid ${Buffer.from(m.bytes).toString('hex')} decoded as ${d.status}`);
    }),
    { numRuns: RUNS, seed: SEED },
  );
});

test('decodeProxyHeader: an error stays the same error whatever bytes follow', () => {
  fc.assert(
    fc.property(g.hostile(header), trailing, (b, rest) => {
      const d = decodeProxyHeader(b);
      checkDecoded(d, b.length);
      if (d.status !== 'error') return;
      const more = decodeProxyHeader(concatBytes(b, rest));
      if (more.status !== 'error' || more.error.code !== d.error.code) throw new Error(`${d.error.code} became ${more.status} with more bytes`);
    }),
    { numRuns: RUNS, seed: SEED },
  );
});
