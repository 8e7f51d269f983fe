// Background entry for both browsers: Chromium runs it as the MV3 service worker, Firefox as an
// event page (manifest background.scripts). One module per browser proxy API.
import browser from 'webextension-polyfill';
import { loadState, onStateChange, type State } from '../lib/state.js';
import { serve, type BackgroundStatus, type Engine, type ProxyErrorInfo } from '../lib/messages.js';
import { applyChromium, chromiumControl, registerChromium } from './chromium.js';
import { firefoxControl, firefoxLeakGuard, registerFirefox } from './firefox.js';
import { applyWebrtc, type WebrtcResult } from './webrtc.js';

const engine: Engine = typeof (browser.proxy as { onRequest?: unknown }).onRequest === 'object' ? 'firefox' : 'chromium';

let state: State | null = null;
let loading: Promise<State> = loadState().then((s) => (state = s));
let lastError: ProxyErrorInfo | null = null;
let webrtc: WebrtcResult = { wanted: false, applied: false, note: null };

const current = (): State | Promise<State> => state ?? loading;

function recordError(message: string): void {
  lastError = { time: new Date().toISOString(), message };
  console.warn('dualsocks: proxy error:', message);
  void browser.action.setBadgeBackgroundColor({ color: '#c62828' });
  void browser.action.setBadgeText({ text: '!' });
}

// Listeners first, synchronously: Firefox only wakes an event page for listeners added at top level.
if (engine === 'firefox') registerFirefox(current, recordError);
else registerChromium(recordError);

async function apply(): Promise<void> {
  const s = await current();
  if (engine === 'chromium') await applyChromium(s);
  webrtc = await applyWebrtc(s.webrtc);
  await browser.action.setBadgeBackgroundColor({ color: '#757575' });
  await browser.action.setBadgeText({ text: s.enabled ? '' : 'off' });
  if (s.enabled) lastError = null;
}

onStateChange(() => {
  loading = loadState().then((s) => (state = s));
  void loading.then(apply);
});

const ready = apply().catch((e: unknown) => recordError(`could not apply the proxy settings: ${(e as Error).message}`));

async function status(): Promise<BackgroundStatus> {
  await ready;
  const s = await current();
  return {
    engine,
    enabled: s.enabled,
    control: engine === 'firefox' ? await firefoxControl() : await chromiumControl(),
    lastError,
    leakGuard: engine === 'firefox' ? await firefoxLeakGuard() : null,
    webrtc,
  };
}

// First install: open the options page, which says what else is needed (the bridge, Firefox's policy).
browser.runtime.onInstalled.addListener((details) => {
  if (details.reason === 'install') void browser.tabs.create({ url: browser.runtime.getURL('options.html?welcome=1') });
});

serve({
  status,
  async apply() {
    await apply();
    return status();
  },
});
