// The extension zip as addons.mozilla.org sees it: Mozilla's addons-linter (what `web-ext lint`
// runs) finds no error in what `npm run package` writes, and no unsafe DOM assignment.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { run } from '../helpers/process.js';
import { ROOT } from '../helpers/sources.js';

interface Message {
  code: string;
  message: string;
  file?: string;
  line?: number;
}

test('addons-linter: the packaged extension has 0 errors', async () => {
  const built = await run(process.execPath, [join(ROOT, 'extension/build.mjs'), '--zip']);
  assert.equal(built.code, 0, built.stderr);
  const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
  const zip = join(ROOT, 'dist', `dualsocks-extension-${version}.zip`);
  const r = await run(join(ROOT, 'node_modules', '.bin', 'addons-linter'), ['--output', 'json', '--boring', zip]);
  const report = JSON.parse(r.stdout.toString()) as { summary: { errors: number }; errors: Message[]; warnings: Message[] };
  const show = (ms: Message[]): string => ms.map((m) => `${m.code} ${m.file ?? ''}:${m.line ?? ''} ${m.message}`).join('\n');
  assert.equal(report.summary.errors, 0, show(report.errors));
  assert.deepEqual(report.warnings.filter((w) => w.code === 'UNSAFE_VAR_ASSIGNMENT'), [], show(report.warnings));
});
