// The bounded fuzz run of `npm test`: every in-process target with 60,000 inputs and a small
// live batch against real gateway (plain with the native front, --users, --workers 2,
// --proxy-protocol with --metrics), bridge (plain, --users) and start processes (in their own network namespace, so
// root and `ip netns`; with CI=true a missing capability fails instead of skipping). Same
// checks as `npm run fuzz`: no property failure, no crash, no leak, every valid request served.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { rootNetns } from '../helpers/env.js';
import { fuzz } from './run.js';

test('fuzz (bounded): in process, no property fails', () => {
  let out = '';
  return fuzz({ inProcess: 60_000, live: 0, seed: 20261201, skip: new Set(), parallel: 64, netns: true }, (s) => (out += s)).then((r) => {
    assert.ok(r.ok, out);
    assert.ok(r.inProcess!.inputs >= 60_000, out);
  });
});

test('fuzz (bounded): live gateway, bridge and start survive hostile input without leaks', { skip: rootNetns() }, async () => {
  let out = '';
  const r = await fuzz({ inProcess: 0, live: 2_000, seed: 20261201, skip: new Set(), parallel: 96, netns: true }, (s) => (out += s));
  assert.ok(r.live!.inputs >= 2_000, out);
  assert.ok(r.ok, out);
});
