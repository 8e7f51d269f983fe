// RFC 1929 credentials are bytes: the users table hashes and compares bytes, never decoded text.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { hashPassword, PasswordChecks, sourceKey, Users } from '../../../bridge/gateway/users.js';
import { bytes } from '../../helpers/bytes.js';

// "pässwör" in Latin-1, and another Latin-1 word; as UTF-8 both decode to "p\uFFFDssw\uFFFDr"
const LATIN1_A = bytes(0x70, 0xe4, 0x73, 0x73, 0x77, 0xf6, 0x72);
const LATIN1_B = bytes(0x70, 0xfc, 0x73, 0x73, 0x77, 0xff, 0x72);

describe('Users', () => {
  test('two invalid-UTF-8 passwords that decode to the same text are different passwords', async () => {
    const users = Users.parse(`bob:${await hashPassword(LATIN1_A)}\n`);
    assert.equal(await users.verify('bob', LATIN1_A), true);
    assert.equal(await users.verify('bob', LATIN1_B), false);
    assert.equal(await users.verify('bob', 'p\uFFFDssw\uFFFDr'), false);
  });

  test('a password written in the file as text is its UTF-8 bytes', async () => {
    const users = Users.parse(`alice:${await hashPassword('pässwör')}\n`);
    assert.equal(await users.verify('alice', 'pässwör'), true);
    assert.equal(await users.verify(Buffer.from('alice'), Buffer.from('pässwör', 'utf8')), true);
    // the same word in Latin-1 is other bytes
    assert.equal(await users.verify('alice', LATIN1_A), false);
  });

  test('usernames are bytes too: an invalid-UTF-8 name is not the name it decodes to', async () => {
    const hash = await hashPassword('pw');
    const users = Users.parse(`jürgen:${hash}\n`);
    assert.equal(await users.verify(Buffer.from('jürgen', 'utf8'), 'pw'), true);
    assert.equal(await users.verify(Buffer.from('jürgen', 'latin1'), 'pw'), false);
    assert.equal(await users.verify(bytes(0x6a, 0xff, 0x72), 'pw'), false);
  });
});

/** A users table whose checks the test settles by hand, counting them. */
function manualUsers(): { users: Users; calls: { user: string; settle(ok: boolean): void }[] } {
  const calls: { user: string; settle(ok: boolean): void }[] = [];
  const users = {
    verify: (u: string | Uint8Array) =>
      new Promise<boolean>((resolve) => calls.push({ user: typeof u === 'string' ? u : Buffer.from(u).toString(), settle: resolve })),
  } as unknown as Users;
  return { users, calls };
}

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('PasswordChecks', () => {
  test('a few checks at once; a check whose client left before its turn never starts', async () => {
    const { users, calls } = manualUsers();
    const checks = new PasswordChecks({ concurrency: 2 });
    const results: string[] = [];
    const cancels = ['a', 'b', 'c', 'd', 'e'].map((u) => checks.check(users, '192.0.2.1', u, 'pw', (r) => results.push(`${u}:${r.result}`)));
    await turn();
    assert.deepEqual(calls.map((c) => c.user), ['a', 'b']);
    assert.equal(checks.stats.waiting, 3);
    assert.equal(cancels[2]!(), true, 'c dropped before it began');
    assert.equal(cancels[3]!(), true, 'd too');
    assert.equal(checks.stats.waiting, 1);
    assert.equal(cancels[0]!(), false, 'a was computing: its result is ignored');
    calls[0]!.settle(false);
    calls[1]!.settle(true);
    await turn();
    assert.deepEqual(calls.map((c) => c.user), ['a', 'b', 'e']);
    calls[2]!.settle(true);
    await turn();
    assert.deepEqual(results, ['b:ok', 'e:ok']);
    assert.deepEqual({ ...checks.stats }, { started: 3, dropped: 2, refusedBusy: 0, refusedBackoff: 0, waiting: 0, running: 0 });
  });

  test('sources take turns: one that queued many does not hold back another', async () => {
    const { users, calls } = manualUsers();
    const checks = new PasswordChecks({ concurrency: 1 });
    for (let i = 0; i < 10; i++) checks.check(users, 'flooder', `f${i}`, 'x', () => {});
    checks.check(users, 'other', 'legit', 'pw', () => {});
    await turn();
    calls[0]!.settle(true);
    await turn();
    assert.deepEqual(calls.map((c) => c.user), ['f0', 'legit']);
  });

  test('past the queue bounds a check is refused as busy, without hashing', async () => {
    const { users, calls } = manualUsers();
    const checks = new PasswordChecks({ concurrency: 1, perSource: 2, queue: 3 });
    const got: string[] = [];
    for (let i = 0; i < 4; i++) checks.check(users, 'a', `a${i}`, 'x', (r) => got.push(`a${i}:${r.result}`));
    checks.check(users, 'b', 'b0', 'x', (r) => got.push(`b0:${r.result}`));
    checks.check(users, 'c', 'c0', 'x', (r) => got.push(`c0:${r.result}`));
    await turn();
    assert.deepEqual(got, ['a2:busy', 'a3:busy', 'c0:busy']);
    assert.equal(checks.stats.refusedBusy, 3);
    assert.equal(calls.length, 1);
  });

  test('repeated failures from one source are refused without hashing for a doubling time; others are served', async () => {
    const { users, calls } = manualUsers();
    let now = 1_000_000;
    const checks = new PasswordChecks({ concurrency: 4, freeFailures: 3, backoffMs: 1000, maxBackoffMs: 8000 }, () => now);
    const once = async (source: string, ok: boolean): Promise<string> => {
      let result = '';
      const before = calls.length;
      checks.check(users, source, 'u', 'p', (r) => (result = r.result === 'backoff' ? `backoff ${r.retryMs}` : r.result));
      await turn();
      if (calls.length > before) calls[before]!.settle(ok);
      await turn();
      return result;
    };
    for (let i = 0; i < 3; i++) assert.equal(await once('bad', false), 'fail');
    assert.equal(calls.length, 3);
    assert.equal(await once('bad', true), 'backoff 1000', 'even the right password waits');
    assert.equal(calls.length, 3, 'no hashing');
    assert.equal(await once('good', true), 'ok', 'another source is served');
    now += 1000;
    assert.equal(await once('bad', false), 'fail', 'checked again once the time is up');
    assert.equal(await once('bad', false), 'backoff 2000', 'and refused twice as long');
    now += 2000;
    assert.equal(await once('bad', true), 'ok');
    assert.equal(await once('bad', false), 'fail', 'a success starts the count again');
    assert.equal(checks.stats.refusedBackoff, 2);
  });

  test('a source failing while checks of it wait: those are refused at their turn without hashing', async () => {
    const { users, calls } = manualUsers();
    const checks = new PasswordChecks({ concurrency: 1, freeFailures: 1 });
    const got: string[] = [];
    for (let i = 0; i < 3; i++) checks.check(users, 's', `u${i}`, 'x', (r) => got.push(r.result));
    await turn();
    calls[0]!.settle(false);
    await turn();
    await turn();
    assert.deepEqual(got, ['fail', 'backoff', 'backoff']);
    assert.equal(calls.length, 1);
    assert.equal(checks.stats.waiting, 0);
  });

  test('one source is an IPv4 address or an IPv6 /64', () => {
    assert.equal(sourceKey('192.0.2.1'), '192.0.2.1');
    assert.equal(sourceKey('2001:db8:1:2:aaaa::1'), sourceKey('2001:db8:1:2:bbbb::2'));
    assert.notEqual(sourceKey('2001:db8:1:2::1'), sourceKey('2001:db8:1:3::1'));
    assert.equal(sourceKey('::ffff:192.0.2.1'), '192.0.2.1');
  });
});
