// What the extension stores (storage.local) and the one way to read it. The routing settings are
// the shared rules model; the bridge address is settings.proxy. Unreadable stored settings fall
// back to the defaults (which still proxy everything non-local) rather than to DIRECT.
import browser from 'webextension-polyfill';
import { DEFAULT_SETTINGS, parseSettings, type Settings } from '../../shared/rules/index.js';

export interface State {
  enabled: boolean;
  settings: Settings;
  /** Set WebRTC IP handling to disable_non_proxied_udp. */
  webrtc: boolean;
}

export const DEFAULT_STATE: State = Object.freeze({ enabled: true, settings: DEFAULT_SETTINGS, webrtc: false });

const KEYS = ['enabled', 'settings', 'webrtc'] as const;

export function stateFrom(raw: Record<string, unknown>): State {
  let settings = DEFAULT_SETTINGS;
  if (raw.settings !== undefined) {
    try {
      settings = parseSettings(raw.settings);
    } catch (e) {
      console.error('dualsocks: stored settings are invalid, using the defaults:', e);
    }
  }
  return {
    enabled: raw.enabled !== false,
    settings,
    webrtc: raw.webrtc === true,
  };
}

export async function loadState(): Promise<State> {
  return stateFrom(await browser.storage.local.get([...KEYS]));
}

/** Settings as plain JSON, the same shape parseSettings() takes (export, storage). */
export function settingsJson(s: Settings): Record<string, unknown> {
  return JSON.parse(JSON.stringify({ mode: s.mode, rules: s.rules, bypass: s.bypass, proxy: s.proxy })) as Record<string, unknown>;
}

export async function saveState(patch: Partial<State>): Promise<void> {
  const out: Record<string, unknown> = {};
  if (patch.enabled !== undefined) out.enabled = patch.enabled;
  if (patch.webrtc !== undefined) out.webrtc = patch.webrtc;
  if (patch.settings !== undefined) out.settings = settingsJson(patch.settings);
  await browser.storage.local.set(out);
}

export function onStateChange(fn: () => void): void {
  browser.storage.onChanged.addListener((changes, area) => {
    if (area === 'local' && KEYS.some((k) => k in changes)) fn();
  });
}
