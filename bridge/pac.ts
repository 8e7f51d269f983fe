// `dualsocks pac`: the PAC file the bridge serves at /proxy.pac, written out once, for a web
// server, a GPO or WPAD. The same generator (toPac) and the same rules file format as the bridge.
import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { ConfigError, ERRORS } from '../shared/errors.js';
import { toPac } from '../shared/rules/index.js';
import { DEFAULT_SETTINGS } from '../shared/rules/settings.js';
import { pacProxy, readRules } from './local/config.js';
import { helpText, parseOptions, type OptionSpec } from './options.js';

const OPTIONS: OptionSpec[] = [
  { key: 'rules', kind: 'string', arg: 'FILE', help: "routing rules (JSON, as the bridge's --rules; default: the bridge's default rules)" },
  { key: 'proxy', kind: 'string', arg: 'HOST:PORT', help: 'the bridge or gateway the PAC sends proxied requests to (required)' },
  { key: 'out', kind: 'string', arg: 'FILE', help: 'write here, atomically (a temporary file renamed over it), instead of standard output' },
];

/** Writes `data` to `file` so a reader sees the old file or the new one, never a part. */
function writeAtomically(file: string, data: string): void {
  const tmp = join(dirname(file), `.${basename(file)}.${process.pid}.tmp`);
  let fd: number | undefined;
  try {
    fd = openSync(tmp, 'w', 0o644);
    writeSync(fd, data);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, file);
  } catch (e) {
    if (fd !== undefined) closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      /* never made, or already renamed */
    }
    throw new ConfigError('--out', `cannot write ${file}: ${(e as Error).message.replace(tmp, file)}`);
  }
}

/** A ConfigError's text after its key. */
const detailOf = (e: ConfigError): string => e.message.slice(`${ERRORS.ERR_CONFIG.text}: ${e.key}: `.length);

export function pacCommand(argv: string[]): void {
  if (argv.includes('--help')) {
    process.stdout.write(
      helpText(
        'Usage: dualsocks pac --proxy HOST:PORT [--rules FILE] [--out FILE]',
        "Writes the PAC file a bridge serves at /proxy.pac for the same rules, naming HOST:PORT as the proxy,\nto put on a web server, in a GPO, or behind WPAD (http://wpad.DOMAIN/wpad.dat, DHCP option 252).",
        OPTIONS,
      ),
    );
    return;
  }
  const o = parseOptions(argv, OPTIONS);
  if (o.proxy === undefined) throw new ConfigError('--proxy', 'required: the HOST:PORT the PAC sends proxied requests to');
  const proxy = pacProxy(o.proxy as string, '--proxy');
  let rules = DEFAULT_SETTINGS;
  let pac: string;
  try {
    if (o.rules !== undefined) rules = readRules(o.rules as string);
  } catch (e) {
    // the file, or a key inside it: say which flag it came from
    if (!(e instanceof ConfigError)) throw e;
    throw new ConfigError('--rules', e.key === 'rules' ? detailOf(e) : `${o.rules as string}: ${e.key}: ${detailOf(e)}`);
  }
  try {
    pac = toPac(rules, { proxyHost: proxy.host, proxyPort: proxy.port });
  } catch (e) {
    throw e instanceof ConfigError ? new ConfigError('--proxy', `"${o.proxy as string}": ${detailOf(e)}`) : e;
  }
  const out = o.out as string | undefined;
  if (!out) {
    process.stdout.write(pac);
    return;
  }
  writeAtomically(out, pac);
  process.stderr.write(`wrote ${out} (${Buffer.byteLength(pac)} bytes, proxy ${o.proxy as string})\n`);
}
