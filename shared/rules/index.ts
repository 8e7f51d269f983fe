// dualsocks routing rules: the one model behind the bridge's /proxy.pac and /wpad.dat, Chromium's
// chrome.proxy pac_script, Firefox's proxy.onRequest and the bridge's own routing.
//
//   parseSettings(json: unknown): Settings               validate user/imported JSON (ConfigError names the key)
//   decide(settings, url | {scheme?, host, port?}): Decision   { type: 'DIRECT' } | { type: 'PROXY', host, port }
//   toPac(settings, {proxyHost?, proxyPort?}?): string   a FindProxyForURL giving decide()'s answers
//   pacResult(decision): string                          'DIRECT' | 'SOCKS5 h:p; PROXY h:p'
//
// Conditions (see conditions.ts): host wildcards in omega-pac style (`*.example.com` also matches
// `example.com`, `**.example.com` only subdomains, `*` everything), exact hosts, IP/CIDR (IP
// literals only, never a resolved name), and bypass entries in Chrome's syntax (`<local>` = plain
// names without a dot that are not IP literals). Hosts compare lower case, without one trailing dot.
//
// The PAC never resolves a name: it calls no dnsResolve, isInNet, myIpAddress or isResolvable, and
// parses IP literals itself. It answers only "SOCKS5 …; PROXY …" (never SOCKS/SOCKS4, which make
// the browser resolve locally) or "DIRECT", with no DIRECT fallback: a stopped bridge fails closed.
// No node: imports: the extension bundles this module.
import { joinHostPort, unbracket } from '../net/address.js';
import { ConfigError } from '../errors.js';
import { bypassCondition, PAC_PRELUDE, PAC_RUNTIME, requestInfo, ruleCondition, type Condition, type Target } from './conditions.js';
import { checkProxyHost, checkProxyPort, MODES, type Settings } from './settings.js';

export { requestInfo, normalizeHost, wildcardSource, bypassCondition, ruleCondition } from './conditions.js';
export type { Condition, RequestInfo, Rule, RuleType, Target } from './conditions.js';
export { DEFAULT_BYPASS, DEFAULT_PROXY, DEFAULT_SETTINGS, MODES, parseSettings } from './settings.js';
export type { Mode, ProxyAddress, Settings } from './settings.js';

export type Decision = { readonly type: 'DIRECT' } | { readonly type: 'PROXY'; readonly host: string; readonly port: number };

export interface PacOptions {
  /** Defaults to settings.proxy; the bridge passes the host its PAC was fetched with. IPv6 with or without brackets. */
  proxyHost?: string;
  proxyPort?: number;
}

interface Compiled {
  readonly bypass: readonly Condition[];
  readonly rules: readonly Condition[];
}

const compiledCache = new WeakMap<Settings, Compiled>();

function compile(settings: Settings): Compiled {
  let c = compiledCache.get(settings);
  if (!c) {
    if (!MODES.includes(settings.mode)) throw new ConfigError('mode', `${JSON.stringify(settings.mode)}: must be one of ${MODES.join(', ')}`);
    c = {
      bypass: settings.bypass.map((b, i) => bypassCondition(b, `bypass[${i}]`)),
      rules: settings.rules.map((r, i) => ruleCondition(r, `rules[${i}]`)),
    };
    compiledCache.set(settings, c);
  }
  return c;
}

const DIRECT: Decision = Object.freeze({ type: 'DIRECT' });

/** Where a request goes. A string is parsed as a URL (throws TypeError when it is not one). */
export function decide(settings: Settings, target: string | Target): Decision {
  const c = compile(settings);
  const req = requestInfo(target);
  if (c.bypass.some((b) => b.match(req))) return DIRECT;
  const listed = c.rules.some((r) => r.match(req));
  const viaProxy = settings.mode === 'all' ? true : settings.mode === 'listed' ? listed : !listed;
  return viaProxy ? { type: 'PROXY', host: settings.proxy.host, port: settings.proxy.port } : DIRECT;
}

/** The PAC return value for a decision. The bridge speaks both SOCKS5 and HTTP on one port. */
export function pacResult(d: Decision): string {
  if (d.type === 'DIRECT') return 'DIRECT';
  const hp = joinHostPort(unbracket(d.host), d.port);
  return `SOCKS5 ${hp}; PROXY ${hp}`;
}

// Comments carry user text; keep it to printable ASCII so it cannot end the comment line.
const commentText = (t: string): string => JSON.stringify(t).replace(/[^\x20-\x7e]/g, '?');

/** A complete PAC script giving, for every URL, the answer decide() gives. */
export function toPac(settings: Settings, opts: PacOptions = {}): string {
  const c = compile(settings);
  const host = checkProxyHost('proxyHost', opts.proxyHost ?? settings.proxy.host);
  const port = checkProxyPort('proxyPort', opts.proxyPort ?? settings.proxy.port);
  const proxy = JSON.stringify(pacResult({ type: 'PROXY', host, port }));
  const test = (cond: Condition, ret: string): string => `  if (${cond.compile()}) return ${ret}; // ${commentText(cond.text)}\n`;

  let body = '  // bypass list\n';
  body += c.bypass.map((b) => test(b, '"DIRECT"')).join('');
  body += `  // mode ${settings.mode}\n`;
  if (settings.mode === 'all') {
    body += `  return ${proxy};\n`;
  } else if (settings.mode === 'listed') {
    body += c.rules.map((r) => test(r, proxy)).join('');
    body += '  return "DIRECT";\n';
  } else {
    body += c.rules.map((r) => test(r, '"DIRECT"')).join('');
    body += `  return ${proxy};\n`;
  }
  return (
    '// dualsocks PAC, generated from the routing settings. It never resolves names.\n' +
    PAC_RUNTIME +
    'function FindProxyForURL(url, host) {\n' +
    PAC_PRELUDE +
    body +
    '}\n'
  );
}
