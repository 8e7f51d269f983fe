// The popup's line for the current tab (extension/lib/bridge.ts): a failure says the gateway's own
// error in words when the bridge learnt it (METHOD.ERROR_CODES); anything else is shown as it came.
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { build } from 'esbuild';
import type { RecentDestination, StatusSnapshot as BridgeStatus } from '../../../shared/status.js';
import { ROOT } from '../../helpers/sources.js';

// the extension is bundled for browsers, not transpiled into dist/: bundle this module alone
const outfile = join(mkdtempSync(join(tmpdir(), 'dualsocks-ext-')), 'bridge.mjs');
await build({ entryPoints: [join(ROOT, 'extension/lib/bridge.ts')], bundle: true, format: 'esm', platform: 'neutral', outfile, logLevel: 'warning' });
const { familyText, latestFor } = (await import(pathToFileURL(outfile).href)) as {
  familyText(r: RecentDestination | null): string;
  latestFor(s: BridgeStatus, host: string): RecentDestination | null;
};

const rec = (host: string, result: string): RecentDestination => ({ time: '2026-01-01T00:00:00.000Z', host, port: 443, via: 'connect', family: null, bound: null, gateway: 'socks5://127.0.0.1:1081', result });

test("the tab's failure names the gateway's exact error", () => {
  const status = { recent: [rec('gone.example', 'ERR_NAME_NOT_FOUND'), rec('v6.example', 'ERR_HOST_UNREACHABLE'), rec('old.example', 'ERR_SOCKS_REPLY')] } as unknown as BridgeStatus;
  assert.equal(familyText(latestFor(status, 'gone.example')), 'failed: name not found (ERR_NAME_NOT_FOUND)');
  assert.equal(familyText(latestFor(status, 'v6.example')), 'failed: host unreachable (ERR_HOST_UNREACHABLE)');
  assert.equal(familyText(latestFor(status, 'old.example')), 'failed: upstream SOCKS server refused the request (ERR_SOCKS_REPLY)');
  // not a code: no words looked up for it (the popup sets it as text, never as HTML)
  assert.equal(familyText(rec('x.example', 'constructor')), 'failed: (constructor)');
});
