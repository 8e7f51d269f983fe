// The toolbar popup: on/off, the bridge's and gateways' health from the bridge's status API, and
// the family the gateway reached the current tab's host over (what the browser cannot see behind
// a proxy), plus warnings about who controls the proxy and about Firefox's HTTPS-record lookups.
import browser from 'webextension-polyfill';
import { decide } from '../../shared/rules/index.js';
import { bridgeBase, familyText, fetchStatus, latestFor } from '../lib/bridge.js';
import { send, type BackgroundStatus } from '../lib/messages.js';
import { loadState, saveState } from '../lib/state.js';

const $ = (id: string): HTMLElement => document.getElementById(id)!;

function notice(text: string, bad = false): void {
  const div = document.createElement('div');
  div.className = bad ? 'notice bad' : 'notice';
  div.textContent = text;
  $('notices').append(div);
}

/** The tab the popup is about: the active tab, or when this page is itself open in a tab, the last http(s) tab used. */
async function currentTab(): Promise<browser.Tabs.Tab | undefined> {
  const own = browser.runtime.getURL('');
  const [active] = await browser.tabs.query({ active: true, lastFocusedWindow: true });
  if (active?.url && !active.url.startsWith(own)) return active;
  const web = (await browser.tabs.query({})).filter((t) => /^(https?|wss?|ftp):/.test(t.url ?? ''));
  web.sort((a, b) => (b.lastAccessed ?? 0) - (a.lastAccessed ?? 0));
  return web[0] ?? active;
}

function controlNotices(bg: BackgroundStatus, lastFailure: string | null): void {
  if (bg.control === 'controlled_by_other_extensions') {
    notice(bg.engine === 'firefox' ? 'Another extension controls the proxy settings. dualsocks still routes requests, but check that extension is not routing them elsewhere.' : 'Another extension controls the proxy settings, so dualsocks is not in effect. Disable that extension or its proxy.', true);
  } else if (bg.control === 'not_controllable' && bg.engine === 'chromium') {
    notice('The proxy is set by policy or by the system and this extension cannot change it.', true);
  }
  if (bg.lastError) notice(`Last proxy error (${new Date(bg.lastError.time).toLocaleTimeString()}): ${bg.lastError.message}${lastFailure ? `. The bridge's last failure: ${lastFailure}` : ''}`);
  if (bg.engine === 'firefox' && bg.enabled && bg.leakGuard === false) {
    notice('Firefox still asks the local DNS for HTTPS records of the sites you visit. Install the policy from "dualsocks policy firefox", or set network.dns.native_https_query to false in about:config (check at about:policies).');
  }
  if (bg.webrtc.wanted && !bg.webrtc.applied) notice(`WebRTC protection is not applied: ${bg.webrtc.note ?? 'unknown reason'}`);
}

async function render(): Promise<void> {
  const state = await loadState();
  const enabled = $('enabled') as HTMLInputElement;
  enabled.checked = state.enabled;
  $('enabled-text').textContent = state.enabled ? 'Proxy on' : 'Proxy off';
  $('notices').replaceChildren();
  $('bridge-addr').textContent = bridgeBase(state.settings.proxy).replace('http://', '');

  const bgP = send('status', {}).catch((e: Error) => e);
  const statusP = fetchStatus(state.settings.proxy).catch((e: Error) => e);
  const tab = await currentTab();

  const bg = await bgP;
  const status = await statusP;
  if (bg instanceof Error) notice(`Background script: ${bg.message}`, true);
  else {
    $('engine').textContent = bg.engine === 'firefox' ? '(Firefox)' : '(Chromium)';
    const failed = status instanceof Error ? undefined : [...status.recent].reverse().find((r) => r.result !== 'ok');
    controlNotices(bg, failed ? `${failed.host}:${failed.port} ${failed.result}` : null);
  }

  if (status instanceof Error) {
    $('bridge-dot').className = 'dot bad';
    $('bridge-text').textContent = 'not reachable';
    $('bridge-text').className = 'bad';
    $('bridge-conns').textContent = `Start it with "dualsocks start" (${status.message}).`;
    $('gateways').textContent = '—';
  } else {
    $('bridge-dot').className = 'dot ok';
    $('bridge-text').textContent = `up, v${status.version}`;
    $('bridge-text').className = 'ok';
    $('bridge-conns').textContent = `${status.connections.open} open, ${status.connections.total} total, ${status.connections.failed} failed`;
    const rows = status.gateways.map((g) => {
      const row = document.createElement('div');
      row.className = 'row';
      const name = document.createElement('span');
      const dot = document.createElement('span');
      dot.className = `dot ${g.up ? 'ok' : 'bad'}`;
      name.append(dot, g.url);
      const health = document.createElement('span');
      health.className = g.up ? 'ok' : 'bad';
      health.textContent = g.up ? (g.latencyMs === null ? 'up' : `up, ${Math.round(g.latencyMs)} ms`) : `down${g.lastError ? `: ${g.lastError}` : ''}`;
      row.append(name, health);
      return row;
    });
    $('gateways').replaceChildren(...(rows.length ? rows : [document.createTextNode('none configured')]));
  }

  const fam = $('tab-family');
  fam.className = 'family';
  $('tab-detail').textContent = '';
  let url: URL | null = null;
  try {
    url = tab?.url ? new URL(tab.url) : null;
  } catch {
    url = null; // a tab URL we cannot read: shown as not a web page below
  }
  if (!url || !/^(https?|wss?|ftp):$/.test(url.protocol)) {
    $('tab-host').textContent = tab?.url ?? 'no tab';
    fam.textContent = 'not a web page';
    return;
  }
  $('tab-host').textContent = url.host;
  if (!state.enabled) {
    fam.textContent = 'direct (proxy off)';
    return;
  }
  if (decide(state.settings, url.href).type === 'DIRECT') {
    fam.textContent = 'direct (not proxied by the rules)';
    return;
  }
  if (status instanceof Error) {
    fam.textContent = 'unknown: bridge not reachable';
    return;
  }
  const r = latestFor(status, url.hostname);
  fam.textContent = familyText(r);
  if (r?.result === 'ok' && r.family) fam.classList.add(`v${r.family}`);
  if (r) $('tab-detail').textContent = `${r.bound ? `gateway's side: ${r.bound}` : ''}${r.gateway ? ` · ${r.gateway}` : ''} · ${new Date(r.time).toLocaleTimeString()}`;
}

($('enabled') as HTMLInputElement).addEventListener('change', async (e) => {
  await saveState({ enabled: (e.target as HTMLInputElement).checked });
  await render();
});
$('options-link').addEventListener('click', (e) => {
  e.preventDefault();
  void browser.runtime.openOptionsPage();
});

void render().then(() => document.body.setAttribute('data-ready', '1'));
