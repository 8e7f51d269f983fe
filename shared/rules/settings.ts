// Routing settings: their shape, the defaults, and validation of user or imported JSON.
import { parseIp, unbracket } from '../net/address.js';
import { ConfigError } from '../errors.js';
import { bypassCondition, inferRuleType, ruleCondition, type Rule, type RuleType } from './conditions.js';

/**
 * 'all': everything through the proxy except the bypass list.
 * 'listed': only hosts matching a rule go through the proxy.
 * 'except': everything through the proxy except bypassed hosts and hosts matching a rule.
 * The bypass list wins in every mode, so loopback and LAN traffic never reach the gateway.
 */
export type Mode = 'all' | 'listed' | 'except';
export const MODES: readonly Mode[] = ['all', 'listed', 'except'];

export interface ProxyAddress {
  readonly host: string;
  readonly port: number;
}

/** Treated as immutable: decide() caches what it compiles per Settings object. */
export interface Settings {
  readonly mode: Mode;
  readonly rules: readonly Rule[];
  readonly bypass: readonly string[];
  readonly proxy: ProxyAddress;
}

/** Plain names, *.localhost (RFC 6761), loopback, link-local, private and unique-local ranges. */
export const DEFAULT_BYPASS: readonly string[] = Object.freeze([
  '<local>',
  '*.localhost',
  '127.0.0.0/8',
  '::1',
  '169.254.0.0/16',
  'fe80::/10',
  '10.0.0.0/8',
  '172.16.0.0/12',
  '192.168.0.0/16',
  '100.64.0.0/10',
  'fc00::/7',
]);

/** The bridge's mixed port. */
export const DEFAULT_PROXY: ProxyAddress = Object.freeze({ host: '127.0.0.1', port: 1080 });

export const DEFAULT_SETTINGS: Settings = Object.freeze({
  mode: 'all',
  rules: Object.freeze([]) as readonly Rule[],
  bypass: DEFAULT_BYPASS,
  proxy: DEFAULT_PROXY,
});

const RULE_TYPES: readonly RuleType[] = ['wildcard', 'exact', 'cidr'];

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function onlyKeys(obj: Record<string, unknown>, allowed: readonly string[], prefix: string): void {
  for (const k of Object.keys(obj)) {
    if (!allowed.includes(k)) throw new ConfigError(prefix + k, 'unknown key');
  }
}

/** A proxy host as it may appear in a PAC: an IP (brackets removed) or a DNS name. */
export function checkProxyHost(key: string, host: unknown): string {
  if (typeof host !== 'string') throw new ConfigError(key, 'must be a string');
  const h = unbracket(host);
  if (parseIp(h)) return h;
  if (h.length <= 253 && /^[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?$/i.test(h)) return h;
  throw new ConfigError(key, `${JSON.stringify(host)}: not an IP address or host name`);
}

export function checkProxyPort(key: string, port: unknown): number {
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new ConfigError(key, `${JSON.stringify(port)}: port must be an integer from 1 to 65535`);
  }
  return port;
}

function parseRule(raw: unknown, key: string): Rule {
  const obj = typeof raw === 'string' ? { pattern: raw } : raw;
  if (!isObject(obj)) throw new ConfigError(key, 'must be a pattern string or an object');
  onlyKeys(obj, ['type', 'pattern', 'port', 'scheme'], `${key}.`);
  if (obj.type !== undefined && !RULE_TYPES.includes(obj.type as RuleType)) {
    throw new ConfigError(`${key}.type`, `${JSON.stringify(obj.type)}: must be one of ${RULE_TYPES.join(', ')}`);
  }
  if (typeof obj.pattern !== 'string') throw new ConfigError(`${key}.pattern`, 'must be a string');
  const rule: Rule = {
    type: (obj.type as RuleType | undefined) ?? inferRuleType(obj.pattern),
    pattern: obj.pattern.trim(),
  };
  if (obj.port !== undefined) rule.port = obj.port as number;
  if (obj.scheme !== undefined) rule.scheme = obj.scheme as string;
  ruleCondition(rule, key); // validates pattern, port and scheme with the same code decide() uses
  if (rule.scheme !== undefined) rule.scheme = rule.scheme.toLowerCase();
  return Object.freeze(rule);
}

/**
 * Validates settings from the user or an import (an object or JSON text). Missing keys take the
 * defaults; unknown keys are errors, so a typo is not silently ignored. Throws ConfigError naming
 * the bad key, e.g. `rules[2].pattern`. Returns a frozen Settings.
 */
export function parseSettings(input: unknown): Settings {
  let json = input;
  if (typeof input === 'string') {
    try {
      json = JSON.parse(input);
    } catch (e) {
      throw new ConfigError('settings', `not valid JSON (${(e as Error).message})`);
    }
  }
  if (!isObject(json)) throw new ConfigError('settings', 'must be an object');
  onlyKeys(json, ['mode', 'rules', 'bypass', 'proxy'], '');

  const mode = json.mode ?? DEFAULT_SETTINGS.mode;
  if (!MODES.includes(mode as Mode)) throw new ConfigError('mode', `${JSON.stringify(mode)}: must be one of ${MODES.join(', ')}`);

  let rules = DEFAULT_SETTINGS.rules;
  if (json.rules !== undefined) {
    if (!Array.isArray(json.rules)) throw new ConfigError('rules', 'must be an array');
    rules = Object.freeze(json.rules.map((r, i) => parseRule(r, `rules[${i}]`)));
  }

  let bypass = DEFAULT_SETTINGS.bypass;
  if (json.bypass !== undefined) {
    if (!Array.isArray(json.bypass)) throw new ConfigError('bypass', 'must be an array of strings');
    bypass = Object.freeze(
      json.bypass.map((b, i) => {
        bypassCondition(b as string, `bypass[${i}]`);
        return (b as string).trim();
      }),
    );
  }

  let proxy = DEFAULT_SETTINGS.proxy;
  if (json.proxy !== undefined) {
    if (!isObject(json.proxy)) throw new ConfigError('proxy', 'must be an object with host and port');
    onlyKeys(json.proxy, ['host', 'port'], 'proxy.');
    proxy = Object.freeze({
      host: checkProxyHost('proxy.host', json.proxy.host ?? DEFAULT_PROXY.host),
      port: checkProxyPort('proxy.port', json.proxy.port ?? DEFAULT_PROXY.port),
    });
  }

  return Object.freeze({ mode: mode as Mode, rules, bypass, proxy });
}
