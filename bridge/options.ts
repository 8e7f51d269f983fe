// One option table per command drives both its flags and its JSON config file, so a key means
// the same in both places and every error names the flag or key that was wrong.
import { readConfigFile } from './config-common.js';
import { ConfigError } from '../shared/errors.js';

export type OptionKind = 'string' | 'list' | 'flag' | 'seconds' | 'count';

export interface OptionSpec {
  /** camelCase key in the JSON config; the flag is its kebab-case form. */
  key: string;
  kind: OptionKind;
  arg?: string;
  help: string;
  /** Allowed values for a string option. */
  choices?: readonly string[];
  /** A seconds option that takes 0 says here what 0 means ("never"); without it 0 is refused. */
  zero?: string;
}

export type OptionValues = Record<string, string | string[] | boolean | number | undefined>;

/** Node's timers hold at most 2^31-1 ms; a longer delay fires at once (TimeoutOverflowWarning). */
export const MAX_TIMER_MS = 2 ** 31 - 1;
const MS_PER_SECOND = 1000;

export const flagOf = (key: string): string => `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;

function coerce(spec: OptionSpec, raw: unknown, where: string): string | string[] | boolean | number {
  const bad = (what: string): never => {
    throw new ConfigError(where, what);
  };
  switch (spec.kind) {
    case 'flag':
      if (typeof raw !== 'boolean') bad('must be true or false');
      return raw as boolean;
    case 'list': {
      const items = Array.isArray(raw) ? raw : [raw];
      return items.map((v, i) => (typeof v === 'string' && v !== '' ? v : bad(`item ${i} must be a non-empty string`)));
    }
    case 'seconds':
    case 'count': {
      const n = typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : raw;
      if (typeof n !== 'number' || !Number.isFinite(n) || n < 0) bad('must be a number >= 0');
      if (spec.kind === 'count' && !Number.isInteger(n)) bad('must be a whole number');
      if (spec.kind === 'seconds') {
        // every duration becomes a timer: check here, once, what the timer would do with it
        const ms = Math.round((n as number) * MS_PER_SECOND);
        if (ms > MAX_TIMER_MS) bad(`must be at most ${Math.floor(MAX_TIMER_MS / MS_PER_SECOND)} seconds (about 24 days, the longest timer Node keeps)`);
        if (n === 0 && !spec.zero) bad('must be more than 0');
        if (ms === 0 && n !== 0) bad('must be at least 0.001 (one millisecond)');
      }
      return n as number;
    }
    case 'string':
      if (typeof raw !== 'string' || raw === '') bad('must be a non-empty string');
      if (spec.choices && !spec.choices.includes(raw as string)) bad(`must be one of ${spec.choices.join(', ')}`);
      return raw as string;
  }
}

/** A seconds option (checked by coerce) in milliseconds, or the default given in seconds. */
export function millis(o: OptionValues, key: string, dfltSeconds: number): number {
  return Math.round(((o[key] as number | undefined) ?? dfltSeconds) * MS_PER_SECOND);
}

/** Reads a JSON config file; unknown keys and wrong types are errors naming the key. */
export function readJsonConfig(path: string, specs: OptionSpec[]): OptionValues {
  const text = readConfigFile('config', path);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ConfigError('config', `${path}: ${(e as Error).message}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new ConfigError('config', `${path}: must hold a JSON object`);
  const out: OptionValues = {};
  for (const [key, value] of Object.entries(json)) {
    const spec = specs.find((s) => s.key === key);
    if (!spec || key === 'config') {
      const near = specs.find((s) => s.key.toLowerCase() === key.toLowerCase());
      throw new ConfigError(key, `unknown key in ${path}${near ? ` (did you mean "${near.key}"?)` : ''}`);
    }
    out[key] = coerce(spec, value, key);
  }
  return out;
}

/** Parses argv against the table; `--config FILE` is read first and flags override it. */
export function parseOptions(argv: string[], specs: OptionSpec[]): OptionValues {
  const fromFlags: OptionValues = {};
  let configPath: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const eq = arg.indexOf('=');
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    if (name === '--config') {
      configPath = eq > 0 ? arg.slice(eq + 1) : argv[++i];
      if (!configPath) throw new ConfigError('--config', 'needs a file path');
      continue;
    }
    const spec = specs.find((s) => flagOf(s.key) === name);
    if (!spec) throw new ConfigError(name, 'unknown option (see --help)');
    if (spec.kind === 'flag') {
      if (eq > 0) throw new ConfigError(name, 'takes no value');
      fromFlags[spec.key] = true;
      continue;
    }
    const value = eq > 0 ? arg.slice(eq + 1) : argv[++i];
    if (value === undefined) throw new ConfigError(name, `needs a value (${spec.arg ?? 'VALUE'})`);
    if (spec.kind === 'list') {
      const prev = fromFlags[spec.key];
      fromFlags[spec.key] = [...(Array.isArray(prev) ? prev : []), ...(coerce(spec, value, name) as string[])];
    } else {
      fromFlags[spec.key] = coerce(spec, value, name);
    }
  }
  const fromFile = configPath ? readJsonConfig(configPath, specs) : {};
  return { ...fromFile, ...fromFlags };
}

export function helpText(usage: string, description: string, specs: OptionSpec[]): string {
  const rows = [['--config FILE', 'JSON file with the same keys in camelCase (flags win)'], ...specs.map((s) => [`${flagOf(s.key)}${s.arg ? ` ${s.arg}` : ''}`, s.help])];
  const width = Math.max(...rows.map((r) => r[0]!.length)) + 2;
  return `${usage}\n\n${description}\n\nOptions:\n${rows.map(([a, b]) => `  ${a!.padEnd(width)}${b}`).join('\n')}\n  --help${' '.repeat(width - 6)}show this help\n`;
}
