// The FTP passive data slots a CONNECT may claim: matched on the client's address, its user, the
// port and the host (the control connection's name or the announced address); one registry per
// gateway, so a second gateway in the same process never hands out the first one's slots.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { canonicalHost, parseIp } from '../../../shared/net/address.js';
import { FtpDataSlots, type PassiveSlot, type SlotClaim } from '../../../bridge/gateway/ftp-slots.js';

interface Claim extends SlotClaim {
  readonly name: string;
}

const claim = (name: string, from: string, host: string, port: number, user?: string): Claim => ({
  name,
  source: { host: canonicalHost(from) },
  request: { host, port },
  record: { user },
});

function slot(opts: { user?: string; ready?: boolean } = {}): PassiveSlot<Claim> & { claimed: string[] } {
  const claimed: string[] = [];
  return {
    claimed,
    clientIp: parseIp('192.0.2.10')!,
    user: opts.user,
    host: 'ftp.example',
    listenIp: parseIp('2001:db8::1')!,
    port: 40000,
    ready: () => opts.ready ?? true,
    claim: async (ctx) => void claimed.push(ctx.name),
  };
}

test('a CONNECT from the same client to the control host or the announced address claims the slot', async () => {
  const slots = new FtpDataSlots<Claim>();
  const s = slot();
  slots.add(s);
  await slots.claim(claim('by-name', '192.0.2.10', 'FTP.example', 40000));
  await slots.claim(claim('by-address', '::ffff:192.0.2.10', '2001:db8::1', 40000));
  assert.deepEqual(s.claimed, ['by-name', 'by-address']);
});

test('another client, user, port or host, or a slot not ready yet, is not a data connection', () => {
  const slots = new FtpDataSlots<Claim>();
  slots.add(slot({ user: 'alice' }));
  slots.add(slot({ ready: false }));
  assert.equal(slots.claim(claim('other client', '192.0.2.11', 'ftp.example', 40000, 'alice')), undefined);
  assert.equal(slots.claim(claim('other user', '192.0.2.10', 'ftp.example', 40000, 'bob')), undefined);
  assert.equal(slots.claim(claim('other port', '192.0.2.10', 'ftp.example', 40001, 'alice')), undefined);
  assert.equal(slots.claim(claim('other host', '192.0.2.10', 'www.example', 40000, 'alice')), undefined);
  assert.equal(slots.claim(claim('not ready', '192.0.2.10', 'ftp.example', 40000)), undefined);
  assert.notEqual(slots.claim(claim('alice', '192.0.2.10', 'ftp.example', 40000, 'alice')), undefined);
});

test('slots belong to one registry (one gateway); a deleted slot is gone', () => {
  const mine = new FtpDataSlots<Claim>();
  const theirs = new FtpDataSlots<Claim>();
  const s = slot();
  mine.add(s);
  const c = claim('c', '192.0.2.10', 'ftp.example', 40000);
  assert.equal(theirs.claim(c), undefined);
  assert.equal(mine.size, 1);
  mine.delete(s);
  assert.equal(mine.size, 0);
  assert.equal(mine.claim(c), undefined);
});
