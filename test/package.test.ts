// The package as a newcomer and an operator meet it: `npm ci` runs no dependency install script
// that the project has not reviewed (npm's allowScripts, so npm prints no install-scripts warning).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { run } from './helpers/process.js';
import { ROOT } from './helpers/sources.js';

/** npm run in the repository (npm's own script path: `npm` resolves as the user's shell would). */
function npm(args: string[], timeoutMs = 120000): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  return run('sh', ['-c', `cd "$1" && shift && exec npm "$@"`, 'npm', ROOT, ...args], { timeoutMs });
}

describe('npm install scripts', () => {
  test('every dependency install script is covered by allowScripts (npm ci warns about none)', async () => {
    const r = await npm(['install-scripts', 'ls', '--offline']);
    assert.equal(r.code, 0, r.stderr);
    const out = r.stdout.toString() + r.stderr;
    assert.match(out, /No packages with unreviewed install scripts/, out);
    assert.doesNotMatch(out, /not yet covered/, out);
  });
});
