// The built extension folder: one MV3 manifest both browsers load, and every file it names exists.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const EXT = fileURLToPath(new URL('../../extension/', import.meta.url));

test('manifest: MV3 for Chromium (service worker) and Firefox (event page), every referenced file built', () => {
  const m = JSON.parse(readFileSync(`${EXT}manifest.json`, 'utf8')) as Record<string, any>;
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  assert.equal(m.manifest_version, 3);
  assert.equal(m.version, pkg.version);
  assert.equal(m.background.service_worker, 'background.js');
  assert.deepEqual(m.background.scripts, ['background.js']);
  assert.match(m.browser_specific_settings.gecko.id, /@/);
  assert.ok(Number.parseFloat(m.browser_specific_settings.gecko.strict_min_version) >= 128);
  assert.deepEqual([...m.permissions].sort(), ['proxy', 'storage']);
  assert.deepEqual(m.optional_permissions, ['privacy']);
  const files = [m.background.service_worker, m.action.default_popup, m.options_ui.page, ...Object.values(m.icons), ...Object.values(m.action.default_icon)] as string[];
  for (const f of files) assert.ok(existsSync(EXT + f), `${f} is built`);
  for (const page of ['popup.html', 'options.html']) {
    for (const [, ref] of readFileSync(EXT + page, 'utf8').matchAll(/(?:src|href)="([^"#:]+)"/g)) assert.ok(existsSync(EXT + ref!), `${page} -> ${ref}`);
  }
});
