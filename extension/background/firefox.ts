// Firefox: proxy.onRequest decides per request with decide() from the shared rules model.
// The listener is added synchronously when the event page starts, so a cold wake (the event page
// was suspended, or the browser just started) still reaches it; until the stored settings are
// read it returns a promise, never a DIRECT answer, so there is no window that leaks.
import browser, { type Proxy } from 'webextension-polyfill';
import { unbracket } from '../../shared/net/address.js';
import { decide } from '../../shared/rules/index.js';
import type { State } from '../lib/state.js';
import type { Control } from '../lib/messages.js';

type ProxyInfo = { type: 'direct' } | { type: 'socks' | 'http'; host: string; port: number; proxyDNS?: boolean; failoverTimeout?: number };

/** The answer for one URL. A decision to proxy mirrors the PAC's "SOCKS5 h:p; PROXY h:p". */
export function proxyInfoFor(state: State, url: string): ProxyInfo[] {
  if (!state.enabled) return [{ type: 'direct' }];
  let d;
  try {
    d = decide(state.settings, url);
  } catch {
    return [{ type: 'direct' }]; // not a URL the rules model can read (onRequest sees only network URLs)
  }
  if (d.type === 'DIRECT') return [{ type: 'direct' }];
  const host = unbracket(d.host);
  return [
    { type: 'socks', host, port: d.port, proxyDNS: true, failoverTimeout: 5 },
    { type: 'http', host, port: d.port },
  ];
}

export function registerFirefox(current: () => State | Promise<State>, onError: (message: string) => void): void {
  browser.proxy.onRequest.addListener(
    (details: Proxy.OnRequestDetailsType) => {
      const s = current();
      return s instanceof Promise ? s.then((st) => proxyInfoFor(st, details.url)) : proxyInfoFor(s, details.url);
    },
    { urls: ['<all_urls>'] },
  );
  browser.proxy.onError.addListener((e) => onError(String((e as { message?: unknown }).message ?? e)));
}

export async function firefoxControl(): Promise<Control> {
  try {
    return (await browser.proxy.settings.get({})).levelOfControl as Control;
  } catch {
    return 'unknown'; // the browser does not tell: the popup shows control as unknown
  }
}

/** `dualsocks policy firefox` sets the 3rdparty managed value leakGuard next to the locked preference. */
export async function firefoxLeakGuard(): Promise<boolean> {
  try {
    const m = await browser.storage.managed.get('leakGuard');
    return m.leakGuard === true;
  } catch {
    return false; // no policy for this extension
  }
}
