// `dualsocks policy firefox|chromium`: enterprise-policy files for what an extension cannot do.
// Firefox looks up a page's HTTPS record (DNS type 65) on the local resolver even when a SOCKS
// proxy resolves the name (proxyDNS) — with the extension, with a PAC, or with an HTTP proxy. The
// preference network.dns.native_https_query=false stops it, and only a policy (or the user in
// about:config) can set it. The policy also tells the extension, through managed storage
// (3rdparty), that the guard is in place, so its popup stops warning.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { ConfigError } from '../shared/errors.js';
import { joinHostPort, splitHostPort, type HostPort } from '../shared/net/address.js';
import { helpText, parseOptions, type OptionSpec } from './options.js';

export const EXTENSION_GECKO_ID = 'dualsocks@dualsocks.invalid';

const OPTIONS: OptionSpec[] = [
  { key: 'bridge', kind: 'string', arg: 'HOST:PORT', help: 'the bridge whose /proxy.pac the browser uses (default 127.0.0.1:1080)' },
  { key: 'mode', kind: 'string', arg: 'pac|extension', choices: ['pac', 'extension'], help: 'pac (default): the browser proxies by the bridge\'s PAC; extension: only the DNS leak guard, for use with the dualsocks extension' },
  { key: 'out', kind: 'string', arg: 'FILE', help: 'write here (directories are created) instead of standard output' },
];

const WHERE = {
  firefox: `Firefox reads /etc/firefox/policies/policies.json (Debian's firefox-esr too;
macOS: /Library/Application Support/Mozilla/policies.json or the app's Contents/Resources/distribution/;
Windows: distribution\\policies.json next to firefox.exe). Check it in about:policies.`,
  chromium: `Chromium reads /etc/chromium/policies/managed/*.json (Google Chrome on Linux: /etc/opt/chrome/policies/managed/;
Windows and macOS take the same keys through Group Policy or a configuration profile). Check it in chrome://policy.`,
};

export interface PolicyOptions {
  bridge: HostPort;
  mode: 'pac' | 'extension';
}

function pacUrl(o: PolicyOptions): string {
  return `http://${joinHostPort(o.bridge.host, o.bridge.port)}/proxy.pac`;
}

export function firefoxPolicy(o: PolicyOptions): Record<string, unknown> {
  const policies: Record<string, unknown> = {
    Preferences: {
      // The measured leak: one type-65 query per page load, whatever the proxy settings.
      'network.dns.native_https_query': { Value: false, Status: 'locked' },
      // Guesses ahead of a click would also be looked up locally.
      'network.dns.disablePrefetch': { Value: true, Status: 'locked' },
      'network.predictor.enabled': { Value: false, Status: 'locked' },
    },
    '3rdparty': { Extensions: { [EXTENSION_GECKO_ID]: { leakGuard: true } } },
  };
  if (o.mode === 'pac') {
    policies.Proxy = { Mode: 'autoConfig', AutoConfigURL: pacUrl(o), UseProxyForDNS: true, Locked: true };
  }
  return { policies };
}

export function chromiumPolicy(o: PolicyOptions): Record<string, unknown> {
  if (o.mode === 'extension') {
    throw new ConfigError('--mode', 'Chromium needs no policy next to the extension: with SOCKS5 or PROXY it resolves nothing locally');
  }
  // Mandatory: when the bridge cannot serve the PAC, fail instead of going direct.
  return { ProxySettings: { ProxyMode: 'pac_script', ProxyPacUrl: pacUrl(o), ProxyPacMandatory: true } };
}

export async function policyCommand(argv: string[]): Promise<void> {
  const [browser, ...rest] = argv;
  if (!browser || browser === '--help' || rest.includes('--help')) {
    process.stdout.write(
      helpText(
        'Usage: dualsocks policy firefox|chromium [options]',
        `Writes the browser's enterprise-policy file: proxy by the bridge's PAC URL, names resolved by the proxy,
and for Firefox the DNS leak guard (network.dns.native_https_query=false, locked).

${WHERE.firefox}
${WHERE.chromium}`,
        OPTIONS,
      ),
    );
    if (!browser) process.exitCode = 2;
    return;
  }
  if (browser !== 'firefox' && browser !== 'chromium') throw new ConfigError('browser', `"${browser}": must be firefox or chromium`);
  const v = parseOptions(rest, OPTIONS);
  const bridgeText = (v.bridge as string | undefined) ?? '127.0.0.1:1080';
  const bridge = splitHostPort(bridgeText);
  if (!bridge) throw new ConfigError('--bridge', `"${bridgeText}": must be HOST:PORT (IPv6 in brackets)`);
  const o: PolicyOptions = { bridge, mode: (v.mode as PolicyOptions['mode'] | undefined) ?? 'pac' };
  const json = `${JSON.stringify(browser === 'firefox' ? firefoxPolicy(o) : chromiumPolicy(o), null, 2)}\n`;
  const out = v.out as string | undefined;
  if (!out) {
    process.stdout.write(json);
    return;
  }
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, json);
  process.stderr.write(`wrote ${out}\n${WHERE[browser]}\n`);
}
