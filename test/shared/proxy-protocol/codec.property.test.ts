// Property tests (fast-check) for the PROXY protocol decoder, as for the SOCKS codec
// (test/shared/socks5/codec.property.test.ts): valid v1 and v2 headers from the specification's
// grammar, then mutated (bits flipped, bytes cut, lengths that lie) and pure noise. Any input
// gives need/ok/error, never a throw; any split across reads gives the one-piece answer; a valid
// header decodes whole, with the bytes after it left alone; an error stays an error however many
// bytes follow (the gateway closes at once, never waits on a header that cannot become valid).
import fc from 'fast-check';
import { test } from 'node:test';
import { formatIp, ipFromV4Bytes } from '../../../shared/net/address.js';
import { decodeProxyHeader, encodeProxyV1, encodeProxyV2, V1_MAX_LINE } from '../../../shared/proxy-protocol/codec.js';
import { concatBytes } from '../../../shared/socks5/codec.js';
import * as g from '../../fuzz/grammar.js';
import { checkDecoded, streamDecoderProperty } from '../../fuzz/inprocess.js';

const RUNS = 3000;
const SEED = 0x9209;

const port = fc.integer({ min: 0, max: 65535 });
const v4 = fc.uint8Array({ minLength: 4, maxLength: 4 }).map((b) => formatIp(ipFromV4Bytes(b)));
// not v4-mapped: those are written back as IPv4 text
const v6 = fc.uint8Array({ minLength: 16, maxLength: 16 }).filter((b) => !(b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff)).map((b) => formatIp(b));
const endpoints = fc.oneof(
  fc.tuple(v4, v4, port, port),
  fc.tuple(v6, v6, port, port),
).map(([s, d, sp, dp]) => ({ source: { host: s, port: sp }, destination: { host: d, port: dp } }));

const v1: fc.Arbitrary<g.Msg> = fc.oneof(
  endpoints.map((e) => encodeProxyV1(e.source, e.destination)),
  fc.constant(encodeProxyV1(null, null)),
  // UNKNOWN with anything printable after it, up to the line limit
  fc.uint8Array({ maxLength: V1_MAX_LINE - 16 }).map((b) => concatBytes(Uint8Array.from('PROXY UNKNOWN ', (c) => c.charCodeAt(0)), b.map((x) => 0x20 + (x % 95)), Uint8Array.of(13, 10))),
).map((bytes) => ({ bytes, lens: [] }));

const tlv = fc.record({ type: fc.integer({ min: 0, max: 255 }), value: fc.uint8Array({ maxLength: 40 }) });
const v2: fc.Arbitrary<g.Msg> = fc
  .record({ command: fc.constantFrom('local' as const, 'proxy' as const), ends: fc.option(endpoints, { nil: undefined }), tlvs: fc.array(tlv, { maxLength: 4 }) })
  .map(({ command, ends, tlvs }) => {
    const bytes = encodeProxyV2({ command, source: ends?.source, destination: ends?.destination, tlvs });
    // the version/command, family and length bytes, and each TLV's length, are what a liar changes
    const lens = [12, 13, 14, 15];
    let off = 16 + (ends ? (ends.source.host.includes(':') ? 36 : 12) : 0);
    for (const t of tlvs) {
      lens.push(off + 1, off + 2);
      off += 3 + t.value.length;
    }
    return { bytes, lens };
  });

const header = fc.oneof(v1, v2);
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
