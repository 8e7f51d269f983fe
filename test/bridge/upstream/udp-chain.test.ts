// openUdpChain against real gateways on loopback: the wrapping a datagram gets for the further
// hops, what unwrap() leaves of a reply, and the chain's end when a hop's control connection goes.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { openUdpChain } from '../../../bridge/upstream/udp-chain.js';
import { decodeUdpHeader, encodeUdpHeader } from '../../../shared/socks5/codec.js';
import { startCli, type Running } from '../../helpers/process.js';
import { startUdpEcho, type UdpEcho } from '../../helpers/udp.js';

const dir = mkdtempSync(join(tmpdir(), 'dualsocks-udp-chain-'));
const hostsFile = join(dir, 'hosts');
writeFileSync(hostsFile, '127.0.0.1 echo.test\n');

describe('openUdpChain', () => {
  let near: Running;
  let far: Running;
  let echo: UdpEcho;
  const hop = (g: Running): { host: string; port: number } => ({ host: '127.0.0.1', port: g.listening[0]!.port });

  before(async () => {
    echo = await startUdpEcho('127.0.0.1');
    far = await startCli(['gateway', '--listen', '127.0.0.1:0', '--hosts', hostsFile, '--dns', 'none', '--allow', '127.0.0.1']);
    near = await startCli(['gateway', '--listen', '127.0.0.1:0', '--dns', 'none', '--allow', '127.0.0.1']);
  });
  after(async () => {
    await near.stop();
    await far.stop();
    await echo.close();
  });

  const roundTrip = async (chain: Awaited<ReturnType<typeof openUdpChain>>, text: string): Promise<Buffer> => {
    const reply = new Promise<Buffer>((resolve) => chain.socket.once('message', resolve));
    chain.socket.send([chain.prefix, encodeUdpHeader({ host: 'echo.test', port: echo.port }), Buffer.from(text)]);
    return reply;
  };

  test('two hops: one header per further hop goes out, unwrap() leaves the last hop\'s header and the data', async () => {
    const chain = await openUdpChain([hop(near), hop(far)], 5000);
    try {
      assert.equal(chain.controls.length, 2);
      assert.equal(chain.relays.length, 2);
      const inner = decodeUdpHeader(chain.prefix);
      assert.equal(inner.status, 'ok');
      if (inner.status === 'ok') {
        assert.deepEqual([inner.msg.host, inner.msg.port], [chain.relays[1]!.host, chain.relays[1]!.port], "the prefix names the far hop's relay");
        assert.equal(inner.msg.dataOffset, chain.prefix.length, 'one header only');
      }
      const raw = await roundTrip(chain, 'through two');
      const msg = chain.unwrap(raw);
      assert.ok(msg, 'the reply unwraps');
      const d = decodeUdpHeader(msg);
      assert.equal(d.status, 'ok');
      if (d.status === 'ok') {
        assert.deepEqual([d.msg.host, d.msg.port], ['127.0.0.1', echo.port], 'the far hop names the sender');
        assert.equal(msg.subarray(d.msg.dataOffset).toString(), 'through two');
      }
      assert.equal(echo.seen.at(-1)!.data.toString(), 'through two', 'the echo got the data alone, every header gone');
      assert.equal(chain.unwrap(Buffer.from([0, 0, 0])), null, 'a truncated reply does not unwrap');
    } finally {
      chain.close();
    }
    await chain.ended;
  });

  test('one hop is the plain association: no prefix, unwrap() takes nothing off', async () => {
    const chain = await openUdpChain([hop(far)], 5000);
    try {
      assert.equal(chain.prefix.length, 0);
      const raw = await roundTrip(chain, 'one hop');
      assert.deepEqual(chain.unwrap(raw), raw);
    } finally {
      chain.close();
    }
  });

  test("a hop's control connection closing ends the chain", async () => {
    const extra = await startCli(['gateway', '--listen', '127.0.0.1:0', '--dns', 'none', '--allow', '127.0.0.1']);
    const chain = await openUdpChain([hop(extra), hop(far)], 5000);
    await extra.stop();
    await chain.ended;
    assert.throws(() => chain.socket.send(Buffer.from('late')), /Not running|ERR_SOCKET_DGRAM_NOT_RUNNING/);
  });

  test('a hop that cannot be reached fails the whole chain, leaving nothing open', async () => {
    const before = far.records().length;
    await assert.rejects(openUdpChain([{ host: '127.0.0.1', port: 9 }, hop(far)], 5000), (e: { code: string }) => typeof e.code === 'string');
    assert.equal(far.records().length, before, 'the far hop was never reached');
  });
});
