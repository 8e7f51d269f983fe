// The options page in real Chromium (Debian's /usr/bin/chromium through playwright-core) with the
// built extension, used as a person would: pick a routing mode, type host rules, Save, Export and
// Import JSON, and mistype the bridge. What was saved is read back from chrome.storage and from
// the PAC the background handed to chrome.proxy, both through the extension's service worker.
// The page is local (chrome-extension://), so no namespace is needed; the launch flags keep
// Chromium from making connections of its own.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import vm from 'node:vm';
import type { BrowserContext, Page, Worker } from 'playwright-core';
import { requireCapability } from '../helpers/env.js';
import { eventually } from '../helpers/settle.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const EXTENSION = join(ROOT, 'dist/extension');
const ARTIFACTS = join(ROOT, 'test-artifacts');
const CHROMIUM = '/usr/bin/chromium';

const skip = requireCapability('chromium', existsSync(CHROMIUM), `apt-get install chromium (tests drive ${CHROMIUM}; they never download a browser)`);

interface StoredSettings {
  mode: string;
  rules: { type: string; pattern: string; port?: number; scheme?: string }[];
  bypass: string[];
  proxy: { host: string; port: number };
}

// Functions passed to evaluate() run in the browser; the Node typings here have no DOM or chrome.
type Chrome = {
  storage: { local: { get(keys: string[] | null): Promise<Record<string, unknown>> } };
  proxy: { settings: { get(d: object): Promise<{ levelOfControl: string; value: { mode: string; pacScript?: { data?: string } } }> } };
};

async function stored(sw: Worker): Promise<Record<string, unknown>> {
  return sw.evaluate(() => (globalThis as unknown as { chrome: Chrome }).chrome.storage.local.get(null));
}

async function pacData(sw: Worker): Promise<string | null> {
  return sw.evaluate(async () => {
    const s = await (globalThis as unknown as { chrome: Chrome }).chrome.proxy.settings.get({});
    return s.levelOfControl === 'controlled_by_this_extension' && s.value.mode === 'pac_script' ? (s.value.pacScript?.data ?? null) : null;
  });
}

/** Polls (bounded) until the PAC in effect satisfies `ok`; the background applies it asynchronously. */
async function waitPac(sw: Worker, ok: (pac: string) => boolean, what: string): Promise<string> {
  let last: string | null = null;
  await eventually(
    async () => {
      last = await pacData(sw);
      return last !== null && ok(last);
    },
    `the PAC in effect ${what}`,
    { describe: () => (last === null ? 'none' : last.slice(-600)) },
  );
  return last!;
}

/** FindProxyForURL from PAC text, in a bare vm whose name-resolving helpers fail the test. */
function pacFunction(pac: string): (url: string) => string {
  const forbid = (name: string) => () => assert.fail(`the PAC called ${name}()`);
  const f = vm.runInNewContext(`${pac}\nFindProxyForURL`, {
    dnsResolve: forbid('dnsResolve'),
    isInNet: forbid('isInNet'),
    myIpAddress: forbid('myIpAddress'),
    isResolvable: forbid('isResolvable'),
  }) as (url: string, host: string) => string;
  return (url) => f(url, new URL(url).hostname);
}

async function message(page: Page, previous?: string): Promise<{ text: string; cls: string }> {
  // Bounded wait for the status line to change (or to be non-empty).
  await page.waitForFunction(
    (prev) => {
      const t = (globalThis as unknown as { document: { getElementById(id: string): { textContent: string | null } } }).document.getElementById('message').textContent ?? '';
      return t !== '' && t !== prev;
    },
    previous ?? '',
    { timeout: 10000 },
  );
  const m = page.locator('#message');
  return { text: (await m.textContent()) ?? '', cls: (await m.getAttribute('class')) ?? '' };
}

/** Clicks a button and returns the status line it produced (cleared first, so a repeat still shows). */
async function clickAndRead(page: Page, selector: string): Promise<{ text: string; cls: string }> {
  await page.locator('#message').evaluate((m) => (m.textContent = ''));
  await page.click(selector);
  return message(page);
}

test('options page in Chromium: rules, save, export, import, bad input', { skip, timeout: 180000 }, async (t) => {
  const { chromium } = await import('playwright-core');
  mkdirSync(ARTIFACTS, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), 'dualsocks-chromium-options-'));
  const files = mkdtempSync(join(tmpdir(), 'dualsocks-options-files-'));
  let ctx: BrowserContext | undefined;
  try {
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      acceptDownloads: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', `--disable-extensions-except=${EXTENSION}`, `--load-extension=${EXTENSION}`],
    });
    const sw = ctx.serviceWorkers()[0] ?? (await ctx.waitForEvent('serviceworker', { timeout: 20000 }));
    const id = new URL(sw.url()).host;
    t.diagnostic(`chromium ${ctx.browser()?.version() ?? '?'}, extension ${id}`);
    // The defaults are in effect before the test touches anything: everything to the bridge.
    const defaultPac = await waitPac(sw, () => true, 'appeared');
    assert.match(pacFunction(defaultPac)('http://other.test/'), /^SOCKS5 127\.0\.0\.1:1080/);

    const page = await ctx.newPage();
    await page.setViewportSize({ width: 820, height: 1000 });
    page.on('pageerror', (e) => process.stderr.write(`[options page error] ${e.message}\n`));
    await page.goto(`chrome-extension://${id}/options.html`);
    await page.waitForSelector('body[data-ready]', { timeout: 20000 });
    assert.equal(await page.inputValue('#bridge'), '127.0.0.1:1080');
    assert.equal(await page.isChecked('input[name=mode][value=all]'), true);

    let saved: StoredSettings | undefined;

    await t.test('listed mode with two rules: Save stores them and the PAC proxies only those', async () => {
      await page.check('input[name=mode][value=listed]');
      await page.fill('#rules', '');
      await page.click('#rules');
      await page.keyboard.type('*.example.com\n2001:db8::/32');
      const m = await clickAndRead(page, '#save');
      assert.equal(m.text, 'Saved.');
      assert.equal(m.cls, 'ok');

      const s = (await stored(sw)).settings as StoredSettings;
      assert.equal(s.mode, 'listed');
      assert.deepEqual(s.rules, [
        { type: 'wildcard', pattern: '*.example.com' },
        { type: 'cidr', pattern: '2001:db8::/32' },
      ]);
      assert.deepEqual(s.proxy, { host: '127.0.0.1', port: 1080 });
      assert.ok(s.bypass.includes('<local>'), 'the default bypass list is kept');
      saved = s;

      const pac = await waitPac(sw, (p) => p.includes('*.example.com') && p.includes('2001:db8::/32'), 'listed the new rules');
      const find = pacFunction(pac);
      assert.match(find('http://a.example.com/'), /^SOCKS5 127\.0\.0\.1:1080/);
      assert.match(find('http://example.com/'), /^SOCKS5 127\.0\.0\.1:1080/, '*.example.com also covers example.com');
      assert.match(find('http://[2001:db8::5]/'), /^SOCKS5 127\.0\.0\.1:1080/);
      assert.equal(find('http://other.test/'), 'DIRECT');
      assert.equal(find('http://[2001:db9::5]/'), 'DIRECT');
    });

    await t.test('Export JSON downloads the saved settings', async () => {
      const [download] = await Promise.all([page.waitForEvent('download', { timeout: 10000 }), page.click('#export')]);
      assert.equal(download.suggestedFilename(), 'dualsocks-settings.json');
      const path = await download.path();
      const exported = JSON.parse(readFileSync(path, 'utf8')) as unknown;
      assert.deepEqual(exported, saved);
    });

    await t.test('Import JSON: a valid file fills the form, and Save applies it', async () => {
      const good = { mode: 'except', rules: ['**.intranet.test', { pattern: 'api.example.org', port: 8443, scheme: 'https' }], bypass: ['<local>'], proxy: { host: '::1', port: 1090 } };
      const file = join(files, 'good.json');
      writeFileSync(file, JSON.stringify(good));
      await page.locator('#message').evaluate((m) => (m.textContent = ''));
      await page.setInputFiles('#import', file);
      const m = await message(page);
      assert.equal(m.text, 'Imported good.json: review and press Save.');
      assert.equal(await page.isChecked('input[name=mode][value=except]'), true);
      assert.equal(await page.inputValue('#rules'), '**.intranet.test\n{"type":"wildcard","pattern":"api.example.org","port":8443,"scheme":"https"}');
      assert.equal(await page.inputValue('#bypass'), '<local>');
      assert.equal(await page.inputValue('#bridge'), '[::1]:1090');
      await page.screenshot({ path: join(ARTIFACTS, 'chromium-options-import.png'), fullPage: true });
      // Importing alone changes nothing stored.
      assert.deepEqual((await stored(sw)).settings, saved);

      assert.equal((await clickAndRead(page, '#save')).text, 'Saved.');
      const s = (await stored(sw)).settings as StoredSettings;
      assert.deepEqual(s, {
        mode: 'except',
        rules: [
          { type: 'wildcard', pattern: '**.intranet.test' },
          { type: 'wildcard', pattern: 'api.example.org', port: 8443, scheme: 'https' },
        ],
        bypass: ['<local>'],
        proxy: { host: '::1', port: 1090 },
      });
      saved = s;
      const find = pacFunction(await waitPac(sw, (p) => p.includes('**.intranet.test'), 'took the imported rules'));
      assert.equal(find('http://a.intranet.test/'), 'DIRECT');
      assert.match(find('http://other.test/'), /^SOCKS5 \[::1\]:1090/);
      assert.equal(find('https://api.example.org:8443/'), 'DIRECT');
      assert.match(find('http://api.example.org/'), /^SOCKS5 \[::1\]:1090/);
    });

    await t.test('Import JSON: an invalid file names the bad key, leaves the form and saves nothing', async () => {
      const before = await page.inputValue('#rules');
      const cases: [string, string, RegExp][] = [
        ['bad-mode.json', '{"mode":"sometimes"}', /^Import failed: (?:invalid configuration: )?mode: "sometimes": must be one of all, listed, except$/],
        ['bad-rule.json', '{"rules":["*.example.com",{"pattern":"a.example","port":0}]}', /^Import failed: (?:invalid configuration: )?rules\[1\]\.port: /],
        ['bad-key.json', '{"mode":"listed","rulez":[]}', /^Import failed: (?:invalid configuration: )?rulez: unknown key$/],
        ['not-json.json', '{mode: listed', /^Import failed: (?:invalid configuration: )?settings: not valid JSON/],
      ];
      for (const [name, text, want] of cases) {
        const file = join(files, name);
        writeFileSync(file, text);
        await page.locator('#message').evaluate((m) => (m.textContent = ''));
        await page.setInputFiles('#import', file);
        const m = await message(page);
        assert.match(m.text, want, name);
        assert.equal(m.cls, 'bad', name);
        assert.equal(await page.inputValue('#rules'), before, `${name} left the form alone`);
        assert.equal(await page.isChecked('input[name=mode][value=except]'), true, name);
        assert.deepEqual((await stored(sw)).settings, saved, `${name} saved nothing`);
        // Chromium fires no change for a file already selected: the page must clear the input so
        // the user can fix the file and pick it again.
        assert.equal(await page.inputValue('#import'), '', `${name}: the file input is cleared for the next pick`);
      }
    });

    await t.test('a bad bridge address is refused on Save, and nothing is saved', async () => {
      const cases: [string, RegExp][] = [
        ['2001:db8::1:1080', /^Bridge address: "2001:db8::1:1080" is not HOST:PORT \(IPv6 in brackets\)$/],
        ['127.0.0.1:99999', /^Bridge address: "127\.0\.0\.1:99999" is not HOST:PORT/],
        ['bridge.local', /^Bridge address: "bridge\.local" is not HOST:PORT/],
        ['bad host!:1080', /^(?:invalid configuration: )?proxy\.host: "bad host!": not an IP address or host name$/],
        ['127.0.0.1:0', /^(?:invalid configuration: )?proxy\.port: 0: port must be an integer from 1 to 65535$/],
      ];
      // Something else changes too, so a partial save would show.
      await page.check('input[name=mode][value=all]');
      const pacBefore = await pacData(sw);
      for (const [bridge, want] of cases) {
        await page.fill('#bridge', bridge);
        const m = await clickAndRead(page, '#save');
        assert.match(m.text, want, bridge);
        assert.equal(m.cls, 'bad', bridge);
        assert.deepEqual((await stored(sw)).settings, saved, `${bridge}: nothing saved`);
      }
      // Export validates the form too: no download, the same message.
      let downloads = 0;
      const count = (): void => void downloads++;
      page.on('download', count);
      const m = await clickAndRead(page, '#export');
      page.off('download', count);
      assert.match(m.text, /^(?:invalid configuration: )?proxy\.port: 0/);
      assert.equal(downloads, 0, 'an invalid form is not exported');
      assert.equal(await pacData(sw), pacBefore, 'the PAC in effect is unchanged');
    });
  } finally {
    await ctx?.close();
    rmSync(profile, { recursive: true, force: true });
    rmSync(files, { recursive: true, force: true });
  }
});
