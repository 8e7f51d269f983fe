// Drives one real browser with the built extension, from inside the client network namespace
// (`ip netns exec NS node dist/test/e2e/driver.js OPTIONS_JSON`), so the browser, its DevTools or
// BiDi connection and the bridge all share that namespace's loopback. Loads the page, then the
// extension's popup and options page, saves screenshots, and prints one JSON line with what it saw.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eventually } from '../helpers/settle.js';

export interface DriverOptions {
  engine: 'chromium' | 'firefox';
  /** The built extension folder. */
  extension: string;
  url: string;
  /** Text the page must contain; the driver waits for it. */
  expect: string;
  artifacts: string;
  /** When set, typed into the options page and saved before the page load. */
  bridge?: string;
  /** Firefox preferences for the profile (the leak guard comes from policies.json, not from here). */
  firefoxPrefs?: Record<string, unknown>;
  /** Firefox: tick the WebRTC box, Save, and read back what the browser says is in effect. */
  webrtc?: boolean;
}

export interface DriverResult {
  engine: string;
  browserVersion: string;
  pageText: string;
  popupText: string;
  optionsSaved: string | null;
  screenshots: string[];
  /** With `webrtc`: the options page's message after Save, and the browser's own webRTCIPHandlingPolicy. */
  webrtc?: { message: string; value: string; levelOfControl: string } | undefined;
}

const GECKO_ID = 'dualsocks@dualsocks.invalid';
// A fixed moz-extension:// host, so the driver can open the extension's pages by URL.
const FIREFOX_UUID = '6d7b1f30-3f7a-4a49-9a3c-7d0d2b9f5a11';
const POPUP_VIEWPORT = { width: 360, height: 560 };
const OPTIONS_VIEWPORT = { width: 820, height: 1000 };

/** The subset of a page both Playwright and Puppeteer offer. */
interface AnyPage {
  goto(url: string, opts?: object): Promise<unknown>;
  waitForSelector(sel: string, opts?: object): Promise<unknown>;
  evaluate<T>(fn: () => T): Promise<T>;
  screenshot(opts: { path: string; fullPage?: boolean }): Promise<unknown>;
  type(sel: string, text: string): Promise<unknown>;
  click(sel: string): Promise<unknown>;
}

// Functions passed to evaluate() run in the page; the Node typings here have no DOM.
interface PageGlobals {
  document: { body: { innerText: string }; getElementById(id: string): { value: string } };
}

async function bodyText(page: AnyPage): Promise<string> {
  return page.evaluate(() => (globalThis as unknown as PageGlobals).document.body.innerText);
}

/** Progress on stderr, so a failure's output says which step it was. */
function step(what: string): void {
  process.stderr.write(`driver step: ${what}\n`);
}

async function waitForText(page: AnyPage, text: string, timeoutMs = 20000): Promise<string> {
  let last = '';
  await eventually(
    async () => {
      last = await bodyText(page).catch(() => '');
      return last.includes(text);
    },
    `page showed ${JSON.stringify(text)}`,
    { timeoutMs, describe: () => last },
  );
  return last;
}

type Sized = AnyPage & { setViewport?: unknown; setViewportSize?: unknown };

async function resize(p: Sized, v: { width: number; height: number }): Promise<void> {
  if (typeof p.setViewportSize === 'function') await (p.setViewportSize as (v: object) => Promise<void>)(v);
  else if (typeof p.setViewport === 'function') await (p.setViewport as (v: object) => Promise<void>)(v);
}

/** Shows one of the extension's pages (popup.html, options.html) and waits until it has rendered. */
type OpenExtensionPage = (path: string, viewport: { width: number; height: number }) => Promise<AnyPage>;

/** Set on a tab's window before it navigates away: the next document starts without it. */
const LEAVING = '__dualsocksLeaving';

async function waitReady(page: AnyPage, path: string, timeoutMs = 20000): Promise<void> {
  let ok = '';
  const ready = async (): Promise<boolean> => {
    ok = await page
      .evaluate(() => {
        const g = globalThis as unknown as { location: { href: string }; document: { body: { hasAttribute(a: string): boolean } | null }; __dualsocksLeaving?: boolean };
        const d = g.document as unknown as { readyState: string; body: { innerText: string } | null };
        // a document marked as being left (LEAVING; this runs in the page, so spelled out) is the old one
        return `${g.location.href} ${d.readyState} ${JSON.stringify(d.body?.innerText.slice(0, 80) ?? null)} ${g.document.body?.hasAttribute('data-ready') && !g.__dualsocksLeaving ? 'ready' : ''}`;
      })
      .catch(() => '');
    return ok.split(' ')[0]!.includes(`/${path}`) && ok.endsWith(' ready');
  };
  await eventually(ready, `${path} ready`, { timeoutMs, describe: () => ok });
}

async function setBridge(open: OpenExtensionPage, bridge: string): Promise<string> {
  const page = await open('options.html', OPTIONS_VIEWPORT);
  await page.evaluate(() => ((globalThis as unknown as PageGlobals).document.getElementById('bridge').value = ''));
  await page.type('#bridge', bridge);
  await page.click('#save');
  return waitForText(page, 'Saved.', 10000).then(() => 'Saved.');
}

/**
 * Ticks "Keep WebRTC from sending UDP outside the proxy" and saves, as a person would (the click
 * is the user input Firefox wants before it grants the optional "privacy" permission), then asks
 * the browser, from a fresh extension page, which WebRTC policy is in effect and who set it.
 */
async function setWebrtc(open: OpenExtensionPage): Promise<NonNullable<DriverResult['webrtc']>> {
  const page = await open('options.html', OPTIONS_VIEWPORT);
  step('webrtc: click #webrtc');
  await page.click('#webrtc');
  step('webrtc: click #save');
  await page.click('#save');
  step('webrtc: wait for Saved');
  await waitForText(page, 'Saved', 15000);
  step('webrtc: read the setting');
  const message = await page.evaluate(() => ((globalThis as unknown as PageGlobals).document.getElementById('message') as unknown as { textContent: string }).textContent);
  const fresh = await open('options.html', OPTIONS_VIEWPORT);
  const setting = await fresh.evaluate(async () => {
    type Setting = { get(d: object): Promise<{ value: string; levelOfControl: string }> };
    const b = (globalThis as unknown as { browser: { privacy?: { network: { webRTCIPHandlingPolicy: Setting } } } }).browser;
    if (!b.privacy) return { value: 'no privacy API (permission not granted)', levelOfControl: '' };
    const s = await b.privacy.network.webRTCIPHandlingPolicy.get({});
    return { value: s.value, levelOfControl: s.levelOfControl };
  });
  return { message, ...setting };
}

async function extensionPages(o: DriverOptions, open: OpenExtensionPage, result: DriverResult): Promise<void> {
  // The popup, opened as a tab, reports on the most recently used web tab: the page just loaded.
  const popup = await open('popup.html', POPUP_VIEWPORT);
  result.popupText = await waitForText(popup, 'via gateway');
  const popupShot = join(o.artifacts, `${o.engine}-popup.png`);
  await popup.screenshot({ path: popupShot });
  const options = await open('options.html', OPTIONS_VIEWPORT);
  const optionsShot = join(o.artifacts, `${o.engine}-options.png`);
  await options.screenshot({ path: optionsShot, fullPage: true });
  result.screenshots.push(popupShot, optionsShot);
}

async function chromiumRun(o: DriverOptions, profile: string): Promise<DriverResult> {
  const { chromium } = await import('playwright-core');
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', `--disable-extensions-except=${o.extension}`, `--load-extension=${o.extension}`],
  });
  try {
    const sw = ctx.serviceWorkers()[0] ?? (await ctx.waitForEvent('serviceworker', { timeout: 20000 }));
    const base = `chrome-extension://${new URL(sw.url()).host}/`;
    const result: DriverResult = { engine: 'chromium', browserVersion: ctx.browser()?.version() ?? '', pageText: '', popupText: '', optionsSaved: null, screenshots: [] };
    const open: OpenExtensionPage = async (path, viewport) => {
      const p = await ctx.newPage();
      await p.setViewportSize(viewport);
      await p.goto(base + path);
      await waitReady(p as unknown as AnyPage, path);
      return p as unknown as AnyPage;
    };
    if (o.bridge) result.optionsSaved = await setBridge(open, o.bridge);
    // The PAC is set asynchronously after the worker starts; wait until Chromium reports it in effect.
    await eventually(
      () =>
        sw.evaluate(async () => {
          type Setting = { get(d: object): Promise<{ levelOfControl: string; value: { mode: string } }> };
          const c = (globalThis as unknown as { chrome: { proxy: { settings: Setting } } }).chrome;
          const s = await c.proxy.settings.get({});
          return s.levelOfControl === 'controlled_by_this_extension' && s.value.mode === 'pac_script';
        }),
      'the extension set the proxy',
      { timeoutMs: 10_000 },
    );
    const page = await ctx.newPage();
    await page.goto(o.url, { timeout: 30000 });
    result.pageText = await waitForText(page as unknown as AnyPage, o.expect);
    await extensionPages(o, open, result);
    return result;
  } finally {
    await ctx.close();
  }
}

function page0Logs(p: AnyPage): void {
  const on = (p as unknown as { on?: (ev: string, f: (m: { type(): string; text(): string }) => void) => void }).on;
  on?.call(p, 'console', (m) => process.stderr.write(`[page console ${m.type()}] ${m.text()}\n`));
  (p as unknown as { on: (ev: string, f: (e: Error) => void) => void }).on('pageerror', (e) => process.stderr.write(`[page error] ${e.message}\n`));
}

async function firefoxRun(o: DriverOptions): Promise<DriverResult> {
  const { default: puppeteer } = await import('puppeteer-core');
  const browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: '/usr/bin/firefox-esr',
    headless: true,
    extraPrefsFirefox: { 'extensions.webextensions.uuids': JSON.stringify({ [GECKO_ID]: FIREFOX_UUID }), ...o.firefoxPrefs },
  });
  try {
    const id = await browser.installExtension(o.extension);
    if (id !== GECKO_ID) throw new Error(`installed as ${id}, expected ${GECKO_ID}`);
    const base = `moz-extension://${FIREFOX_UUID}/`;
    const result: DriverResult = { engine: 'firefox', browserVersion: await browser.version(), pageText: '', popupText: '', optionsSaved: null, screenshots: [] };
    // WebDriver BiDi may not navigate a tab to moz-extension:// URLs. The extension opens its
    // options page on install; find that tab, and move it between the extension's pages from inside.
    // A page still loading can leave evaluate() pending, so each look is bounded.
    const hrefOf = (p: { evaluate: AnyPage['evaluate'] }): Promise<string> =>
      Promise.race([
        p.evaluate(() => (globalThis as unknown as { location: { href: string } }).location.href).catch(() => ''),
        new Promise<string>((r) => setTimeout(() => r(''), 2000)),
      ]);
    let found: AnyPage | undefined;
    await eventually(
      async () => {
        for (const p of await browser.pages()) if ((await hrefOf(p as unknown as AnyPage)).startsWith(base)) found = p as unknown as AnyPage;
        return found !== undefined;
      },
      'the options page opened on install',
      { timeoutMs: 45_000 },
    );
    const tab = found!;
    const open: OpenExtensionPage = async (path, viewport) => {
      await resize(tab as Sized, viewport);
      // the same URL again is a reload: without the mark, the old document could pass for the new one
      const go = new Function(`globalThis.${LEAVING} = true; location.href = ${JSON.stringify(base + path)}`) as () => void;
      await tab.evaluate(go);
      // Once in a while the first navigation's page never reports ready to BiDi; a second one does.
      await waitReady(tab, path, 10000).catch(async (e: Error) => {
        process.stderr.write(`retrying ${path}: ${e.message}\n`);
        await tab.evaluate(go);
        await waitReady(tab, path);
      });
      return tab;
    };
    step('firefox: set the bridge');
    if (o.bridge) result.optionsSaved = await setBridge(open, o.bridge);
    page0Logs(tab);
    step('firefox: load the page');
    const page = await browser.newPage();
    await page.goto(o.url, { timeout: 30000 });
    result.pageText = await waitForText(page as unknown as AnyPage, o.expect);
    step('firefox: extension pages');
    await extensionPages(o, open, result);
    if (o.webrtc) result.webrtc = await setWebrtc(open);
    return result;
  } finally {
    await browser.close();
  }
}

async function main(): Promise<void> {
  const o = JSON.parse(process.argv[2] ?? '{}') as DriverOptions;
  mkdirSync(o.artifacts, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), `dualsocks-${o.engine}-`));
  try {
    const r = o.engine === 'chromium' ? await chromiumRun(o, profile) : await firefoxRun(o);
    process.stdout.write(`${JSON.stringify(r)}\n`);
  } finally {
    rmSync(profile, { recursive: true, force: true });
  }
}

// Only when started with options: `node --test` also loads this file, and must find nothing to run.
if (process.argv[2]?.startsWith('{')) {
  main().catch((e: unknown) => {
    process.stderr.write(`driver failed: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  });
}
