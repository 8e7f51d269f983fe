// Property tests (fast-check) for every decoder in shared/socks5/codec.ts, inputs built from the
// RFC grammars by the fuzz harness (test/fuzz/grammar.ts): any input gives need/ok/error, never
// a throw; any split of an input across reads gives the one-piece answer; a valid message
// decodes whole. `npm run fuzz` runs the same properties with a million inputs.
import fc from 'fast-check';
import { test } from 'node:test';
import {
  decodeAuthReply,
  decodeAuthRequest,
  decodeGreeting,
  decodeMethodSelection,
  decodeReply,
  decodeRequest,
  decodeSocks4Reply,
  decodeSocks4Request,
  decodeUdpHeader,
  type Decoded,
} from '../../../shared/socks5/codec.js';
import * as g from '../../fuzz/grammar.js';
import { checkDecoded, streamDecoderProperty } from '../../fuzz/inprocess.js';

const RUNS = 3000;
const SEED = 0x5eed;

const streamDecoders: [string, (b: Uint8Array) => Decoded<unknown>, fc.Arbitrary<g.Msg>][] = [
  ['decodeGreeting', decodeGreeting, g.greeting()],
  ['decodeMethodSelection', decodeMethodSelection, g.methodSelection()],
  ['decodeAuthRequest', decodeAuthRequest, g.authRequest()],
  ['decodeAuthReply', decodeAuthReply, g.authReply()],
  ['decodeRequest', decodeRequest, g.request()],
  ['decodeReply', decodeReply, g.reply()],
  ['decodeSocks4Request', decodeSocks4Request, g.socks4Request()],
  ['decodeSocks4Reply', decodeSocks4Reply, g.socks4Reply()],
];

for (const [name, decode, valid] of streamDecoders) {
  test(`${name}: any (mutated) input gives need/ok/error, and any split gives the one-piece answer`, () => {
    fc.assert(streamDecoderProperty(decode, g.hostile(valid)), { numRuns: RUNS, seed: SEED });
  });
}

test('decodeRequest: a valid request (CONNECT, BIND, UDP ASSOCIATE; IPv4, IPv6, name) decodes whole', () => {
  fc.assert(
    fc.property(g.request(undefined, fc.constantFrom(1, 2, 3)), (m) => {
      const d = decodeRequest(m.bytes);
      if (d.status !== 'ok' || d.size !== m.bytes.length) throw new Error(`decoded as ${d.status}`);
    }),
    { numRuns: RUNS, seed: SEED },
  );
});

test('decodeUdpHeader: any datagram gives ok or error (never need), the payload offset inside it', () => {
  fc.assert(
    fc.property(g.hostile(g.udpDatagram()), (b) => {
      const d = decodeUdpHeader(b);
      if (d.status === 'need') throw new Error('need for a whole datagram');
      checkDecoded(d, Math.max(b.length, 1));
      if (d.status === 'ok' && d.msg.dataOffset > b.length) throw new Error('dataOffset past the end');
    }),
    { numRuns: RUNS, seed: SEED },
  );
});
