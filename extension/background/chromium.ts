// Chromium: chrome.proxy.settings with a pac_script compiled by toPac() from the shared rules
// model, the same compiler the bridge's /proxy.pac uses. The setting persists in the browser, so
// proxying does not depend on the service worker being awake.
import { toPac } from '../../shared/rules/index.js';
import type { State } from '../lib/state.js';
import type { Control } from '../lib/messages.js';

export function pacConfig(state: State): chrome.ProxyConfig {
  // mandatory: a PAC that fails to run blocks requests instead of falling back to direct
  return { mode: 'pac_script', pacScript: { data: toPac(state.settings), mandatory: true } };
}

export async function applyChromium(state: State): Promise<void> {
  const now = await chrome.proxy.settings.get({});
  if (!state.enabled) {
    if (now.levelOfControl === 'controlled_by_this_extension') await chrome.proxy.settings.clear({ scope: 'regular' });
    return;
  }
  const want = pacConfig(state);
  // Setting an identical value again would still make Chromium reload the proxy configuration.
  if (now.levelOfControl === 'controlled_by_this_extension' && now.value.mode === want.mode && now.value.pacScript?.data === want.pacScript!.data) return;
  await chrome.proxy.settings.set({ value: want, scope: 'regular' });
}

export function registerChromium(onError: (message: string) => void): void {
  chrome.proxy.onProxyError.addListener((e) => onError(`${e.error}${e.details ? `: ${e.details}` : ''}${e.fatal ? ' (fatal)' : ''}`));
}

export async function chromiumControl(): Promise<Control> {
  try {
    return (await chrome.proxy.settings.get({})).levelOfControl;
  } catch {
    return 'unknown'; // the browser does not tell: the popup shows control as unknown
  }
}
