// Options: bridge address, routing mode, host rules, bypass list, WebRTC, import/export. Every
// save and import goes through parseSettings(), so the error names the line or key that is wrong.
import browser from 'webextension-polyfill';
import { splitHostPort } from '../../shared/net/address.js';
import { DEFAULT_SETTINGS, parseSettings, type Rule, type Settings } from '../../shared/rules/index.js';
import { inferRuleType } from '../../shared/rules/conditions.js';
import { loadState, saveState, settingsJson } from '../lib/state.js';
import { send } from '../lib/messages.js';

const $ = <T extends HTMLElement = HTMLInputElement>(id: string): T => document.getElementById(id) as T;

function say(text: string, bad = false): void {
  const m = $('message');
  m.textContent = text;
  m.className = bad ? 'bad' : 'ok';
}

function ruleLine(r: Rule): string {
  if (r.port === undefined && r.scheme === undefined) {
    if (r.type === 'exact') return `=${r.pattern}`;
    if (r.type === inferRuleType(r.pattern)) return r.pattern;
  }
  return JSON.stringify(r);
}

function parseRuleLine(line: string): unknown {
  if (line.startsWith('{')) return JSON.parse(line);
  if (line.startsWith('=')) return { type: 'exact', pattern: line.slice(1).trim() };
  return line;
}

function show(s: Settings, webrtc: boolean): void {
  const p = s.proxy;
  $('bridge').value = p.host.includes(':') ? `[${p.host}]:${p.port}` : `${p.host}:${p.port}`;
  for (const r of document.querySelectorAll<HTMLInputElement>('input[name=mode]')) r.checked = r.value === s.mode;
  $<HTMLTextAreaElement>('rules').value = s.rules.map(ruleLine).join('\n');
  $<HTMLTextAreaElement>('bypass').value = s.bypass.join('\n');
  $('webrtc').checked = webrtc;
}

function fromForm(): Settings {
  const bridge = $('bridge').value.trim() || '127.0.0.1:1080';
  const hp = splitHostPort(bridge);
  if (!hp) throw new Error(`Bridge address: "${bridge}" is not HOST:PORT (IPv6 in brackets)`);
  const lines = (id: string): string[] => $<HTMLTextAreaElement>(id).value.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  const rules = lines('rules').map((l, i) => {
    try {
      return parseRuleLine(l);
    } catch {
      throw new Error(`Host rules, line ${i + 1}: not valid JSON`);
    }
  });
  const mode = document.querySelector<HTMLInputElement>('input[name=mode]:checked')?.value ?? 'all';
  return parseSettings({ mode, rules, bypass: lines('bypass'), proxy: { host: hp.host, port: hp.port } });
}

async function save(): Promise<void> {
  let settings: Settings;
  try {
    settings = fromForm();
  } catch (e) {
    say((e as Error).message, true);
    return;
  }
  const webrtc = $('webrtc').checked;
  // permissions.request needs the click's user gesture, so it comes before any other await.
  if (webrtc && !(await browser.permissions.request({ permissions: ['privacy'] }))) {
    say('WebRTC protection needs the "privacy" permission; it was not granted.', true);
    return;
  }
  await saveState({ settings, webrtc });
  const bg = await send('apply', {}).catch(() => null);
  say(bg?.webrtc.wanted && !bg.webrtc.applied ? `Saved, but WebRTC protection is not applied: ${bg.webrtc.note}` : 'Saved.', Boolean(bg?.webrtc.wanted && !bg.webrtc.applied));
}

/** Exports what the form holds, once it validates. */
function exportJson(s: Settings): void {
  const blob = new Blob([`${JSON.stringify(settingsJson(s), null, 2)}\n`], { type: 'application/json' });
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = 'dualsocks-settings.json';
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

async function importJson(file: File): Promise<void> {
  try {
    const s = parseSettings(await file.text());
    show(s, $('webrtc').checked);
    say(`Imported ${file.name}: review and press Save.`);
  } catch (e) {
    say(`Import failed: ${(e as Error).message}`, true);
  }
}

async function init(): Promise<void> {
  if (new URLSearchParams(location.search).has('welcome')) {
    $('welcome').hidden = false;
    $('welcome-firefox').hidden = typeof (browser.runtime as { getBrowserInfo?: unknown }).getBrowserInfo !== 'function';
  }
  const state = await loadState();
  show(state.settings, state.webrtc);
  $('save').addEventListener('click', () => void save());
  $('reset').addEventListener('click', () => {
    show(DEFAULT_SETTINGS, false);
    say('Defaults restored in the form: press Save to keep them.');
  });
  $('export').addEventListener('click', () => {
    try {
      exportJson(fromForm());
    } catch (e) {
      say((e as Error).message, true);
    }
  });
  $('import-btn').addEventListener('click', () => $('import').click());
  $('import').addEventListener('change', () => {
    const input = $('import');
    const f = input.files?.[0];
    // Cleared, so picking the same file again (after fixing it) fires change again.
    input.value = '';
    if (f) void importJson(f);
  });
  document.body.setAttribute('data-ready', '1');
}

void init();
