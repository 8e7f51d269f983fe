// Every error code is documented in the README's error table with the REP it maps to.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { ERRORS } from '../../shared/errors.js';

test('every error code is in the README with its REP', () => {
  const readme = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');
  for (const [code, { rep }] of Object.entries(ERRORS)) {
    const row = readme.split('\n').find((l) => l.startsWith(`| \`${code}\` |`));
    assert.ok(row, `README documents ${code}`);
    if (code !== 'ERR_SOCKS_REPLY' && code !== 'ERR_CONFIG') assert.ok(row.includes(`0x0${rep}`), `${code} row shows REP 0x0${rep}`);
  }
});
