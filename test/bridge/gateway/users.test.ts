// RFC 1929 credentials are bytes: the users table hashes and compares bytes, never decoded text.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { hashPassword, Users } from '../../../bridge/gateway/users.js';
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
