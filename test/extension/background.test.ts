// The built background script (dist/extension/background.js), run in a vm against fake browser
// APIs: Firefox's proxy.onRequest answers and Chromium's pac_script must agree URL for URL, both
// come from the shared rules model, and Firefox never answers before the stored settings are read.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import vm from 'node:vm';
import { DEFAULT_SETTINGS, parseSettings, toPac, type Settings } from '../../shared/rules/index.js';

const BACKGROUND = readFileSync(new URL('../../extension/background.js', import.meta.url), 'utf8');

type Fn = (...args: unknown[]) => unknown;

/** An API function that answers a trailing callback (as the polyfill calls Chromium) or returns a promise. */
function api(fn: Fn): Fn {
  return (...args: unknown[]) => {
    const cb = typeof args[args.length - 1] === 'function' ? (args.pop() as Fn) : null;
    const p = Promise.resolve().then(() => fn(...args));
    if (!cb) return p;
    void p.then(cb);
    return undefined;
  };
}

function event(): { addListener: Fn; listeners: Fn[] } {
  const listeners: Fn[] = [];
  return { listeners, addListener: (f) => void listeners.push(f as Fn) };
}

interface Fake {
  engine: 'firefox' | 'chromium';
  /** storage.local.get waits for this; call release() to answer (a cold wake's slow read). */
  release(): void;
  stored: Record<string, unknown>;
  onRequest: ReturnType<typeof event>;
  onMessage: ReturnType<typeof event>;
  onChanged: ReturnType<typeof event>;
  onInstalled: ReturnType<typeof event>;
  opened: string[];
  proxySet: unknown[];
  proxyCleared: number;
  badge: string[];
}

function load(engine: 'firefox' | 'chromium', stored: Record<string, unknown>): Fake {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const fake: Fake = { engine, release, stored, onRequest: event(), onMessage: event(), onChanged: event(), onInstalled: event(), opened: [], proxySet: [], proxyCleared: 0, badge: [] };
  let proxyValue: { value: unknown; levelOfControl: string } = { value: { mode: 'system' }, levelOfControl: 'controllable_by_this_extension' };
  const ext = {
    runtime: { id: 'test@dualsocks', onMessage: fake.onMessage, onInstalled: fake.onInstalled, getURL: (p: string) => `ext://id/${p}` },
    tabs: { create: api((d) => void fake.opened.push((d as { url: string }).url)) },
    storage: {
      local: {
        get: api(async (keys) => {
          await gate;
          return Object.fromEntries((keys as string[]).filter((k) => k in fake.stored).map((k) => [k, fake.stored[k]]));
        }),
        set: api((o) => void Object.assign(fake.stored, o)),
      },
      onChanged: fake.onChanged,
      managed: { get: api(() => Promise.reject(new Error('Managed storage manifest not found'))) },
    },
    action: { setBadgeText: api((d) => void fake.badge.push((d as { text: string }).text)), setBadgeBackgroundColor: api(() => undefined) },
    proxy: {
      settings: {
        get: api(() => proxyValue),
        set: api((d) => {
          fake.proxySet.push((d as { value: unknown }).value);
          proxyValue = { value: (d as { value: unknown }).value, levelOfControl: 'controlled_by_this_extension' };
        }),
        clear: api(() => {
          fake.proxyCleared++;
          proxyValue = { value: { mode: 'system' }, levelOfControl: 'controllable_by_this_extension' };
        }),
      },
      onProxyError: event(),
      ...(engine === 'firefox' ? { onRequest: fake.onRequest, onError: event() } : {}),
    },
  };
  const ctx: Record<string, unknown> = { console, URL, setTimeout, clearTimeout, chrome: ext };
  if (engine === 'firefox') ctx.browser = ext;
  vm.runInNewContext(BACKGROUND, ctx, { filename: 'background.js' });
  return fake;
}

async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
}

/** Firefox's answer written as a PAC result, to compare with the PAC's. */
function asPac(answer: unknown): string {
  const list = JSON.parse(JSON.stringify(answer)) as { type: string; host?: string; port?: number; proxyDNS?: boolean }[];
  return list
    .map((p) => {
      if (p.type === 'direct') return 'DIRECT';
      const hp = `${p.host!.includes(':') ? `[${p.host}]` : p.host}:${p.port}`;
      if (p.type === 'socks') {
        assert.equal(p.proxyDNS, true, 'a SOCKS answer must resolve names at the proxy');
        return `SOCKS5 ${hp}`;
      }
      assert.equal(p.type, 'http');
      return `PROXY ${hp}`;
    })
    .join('; ');
}

function firefoxAnswer(fake: Fake, url: string): unknown {
  return fake.onRequest.listeners[0]!({ url, type: 'main_frame', requestId: '1' });
}

const URLS = [
  'http://v6only.test/',
  'https://www.example.com/path',
  'http://example.com:8080/',
  'http://api.example.com:8443/x',
  'https://api.example.com:8443/x',
  'wss://chat.example.net/socket',
  'http://intranet/',
  'http://localhost:3000/',
  'http://app.localhost/',
  'http://127.0.0.1:8080/',
  'http://10.0.0.1/',
  'http://192.168.1.1/',
  'http://100.64.1.1/',
  'http://169.254.169.254/latest',
  'http://93.184.216.34/',
  'http://[2001:db8::1]/',
  'http://[::1]:8080/',
  'http://[fe80::1]/',
  'http://[fd00::5]/',
  'http://[::ffff:10.0.0.1]/',
  'http://EXAMPLE.org./',
  'ftp://files.example.net/',
];

const SETTINGS: Record<string, Settings> = {
  defaults: DEFAULT_SETTINGS,
  listed: parseSettings({
    mode: 'listed',
    rules: ['*.example.com', { type: 'exact', pattern: 'example.org' }, '2001:db8::/32', { pattern: 'api.example.com', port: 8443, scheme: 'https' }],
    proxy: { host: '127.0.0.1', port: 1999 },
  }),
  except: parseSettings({ mode: 'except', rules: ['**.example.com', '93.184.216.0/24'], bypass: ['<local>', '127.0.0.0/8'], proxy: { host: '::1', port: 1080 } }),
};

for (const [name, settings] of Object.entries(SETTINGS)) {
  test(`background: Chromium's pac_script and Firefox's onRequest agree for every URL (${name})`, async () => {
    const stored = settings === DEFAULT_SETTINGS ? {} : { settings: JSON.parse(JSON.stringify(settings)) as unknown };
    const chromium = load('chromium', { ...stored });
    chromium.release();
    await settle();
    assert.equal(chromium.proxySet.length, 1);
    const config = chromium.proxySet[0] as { mode: string; pacScript: { data: string; mandatory: boolean } };
    assert.equal(config.mode, 'pac_script');
    assert.equal(config.pacScript.mandatory, true, 'a broken PAC must not fall back to DIRECT');
    assert.equal(config.pacScript.data, toPac(settings), 'the PAC comes from the shared rules model');

    const pac = vm.runInNewContext(`${config.pacScript.data}\nFindProxyForURL`, {
      dnsResolve: () => assert.fail('the PAC resolved a name'),
      isInNet: () => assert.fail('the PAC called isInNet'),
      myIpAddress: () => assert.fail('the PAC called myIpAddress'),
      isResolvable: () => assert.fail('the PAC called isResolvable'),
    }) as (url: string, host: string) => string;

    const firefox = load('firefox', { ...stored });
    firefox.release();
    await settle();
    for (const url of URLS) {
      const ff = asPac(await firefoxAnswer(firefox, url));
      assert.equal(pac(url, new URL(url).hostname), ff, url);
    }
  });
}

test('background (Firefox): onRequest is registered synchronously and waits for the stored settings on a cold wake', async () => {
  const fake = load('firefox', { settings: { proxy: { host: '127.0.0.1', port: 1999 } } });
  assert.equal(fake.onRequest.listeners.length, 1, 'listener added during the first synchronous run');
  let answered: unknown = null;
  const pending = Promise.resolve(firefoxAnswer(fake, 'http://v6only.test/')).then((a) => (answered = a));
  await settle();
  assert.equal(answered, null, 'no answer (and so no DIRECT) before the settings are read');
  fake.release();
  await pending;
  assert.equal(asPac(answered), 'SOCKS5 127.0.0.1:1999; PROXY 127.0.0.1:1999');
  // Later requests answer synchronously from the loaded state.
  assert.equal(asPac(firefoxAnswer(fake, 'http://v6only.test/')), 'SOCKS5 127.0.0.1:1999; PROXY 127.0.0.1:1999');
});

test('background: switching off sends everything DIRECT (Firefox) and clears the proxy setting (Chromium)', async () => {
  for (const engine of ['firefox', 'chromium'] as const) {
    const fake = load(engine, {});
    fake.release();
    await settle();
    fake.stored.enabled = false;
    for (const l of fake.onChanged.listeners) l({ enabled: { newValue: false } }, 'local');
    await settle();
    assert.deepEqual(fake.badge.at(-1), 'off', engine);
    if (engine === 'firefox') assert.equal(asPac(firefoxAnswer(fake, 'http://v6only.test/')), 'DIRECT');
    else assert.equal(fake.proxyCleared, 1);
  }
});

test('background: status message reports the engine, control and the Firefox leak guard; errors come back as data', async () => {
  for (const engine of ['firefox', 'chromium'] as const) {
    const fake = load(engine, {});
    fake.release();
    await settle();
    const listener = fake.onMessage.listeners[0]!;
    // Firefox calls the listener directly; the polyfill's Chromium wrapper takes sendResponse.
    const ask = (msg: unknown): Promise<unknown> =>
      new Promise((resolve) => {
        const r = listener(msg, {}, resolve);
        if (r && typeof (r as Promise<unknown>).then === 'function') void (r as Promise<unknown>).then(resolve);
      });
    const reply = JSON.parse(JSON.stringify(await ask({ type: 'status', req: {} }))) as { ok: Record<string, unknown> };
    assert.equal(reply.ok.engine, engine);
    assert.equal(reply.ok.enabled, true);
    assert.equal(reply.ok.control, engine === 'chromium' ? 'controlled_by_this_extension' : 'controllable_by_this_extension');
    assert.equal(reply.ok.leakGuard, engine === 'firefox' ? false : null);
    assert.equal(listener({ type: 'nope' }, {}, () => {}), engine === 'firefox' ? undefined : false);
  }
});

test('background: a first install opens the options page with the welcome note, an update does not', async () => {
  const fake = load('chromium', {});
  fake.release();
  await settle();
  fake.onInstalled.listeners[0]!({ reason: 'update' });
  await settle();
  assert.deepEqual(fake.opened, []);
  fake.onInstalled.listeners[0]!({ reason: 'install' });
  await settle();
  assert.deepEqual(fake.opened, ['ext://id/options.html?welcome=1']);
});
