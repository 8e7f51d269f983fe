// npm's install step for a packaged dualsocks: builds the optional splice relay addon when Node's
// headers are on this machine, and never downloads them (node-gyp would, without --nodedir). No
// headers, no compiler, or a failed build: one line, exit 0, and the JavaScript relay is used.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const say = (line) => process.stdout.write(`dualsocks: ${line}\n`);

function headers() {
  // the operator's choice, when made (npm config set nodedir, as .ci/run does), is the only place
  if (process.env.npm_config_nodedir) return existsSync(join(process.env.npm_config_nodedir, 'include', 'node', 'node_api.h')) ? process.env.npm_config_nodedir : undefined;
  const dirs = [
    // Debian's nodejs: /usr/include/node; an official build: <prefix>/include/node
    join(dirname(process.execPath), '..'),
    process.config.variables.node_prefix,
    // what an earlier node-gyp run downloaded
    join(homedir(), '.cache', 'node-gyp', process.versions.node),
  ];
  return dirs.find((d) => d && existsSync(join(d, 'include', 'node', 'node_api.h')));
}

function main() {
  if (process.platform !== 'linux') return say('the native splice relay is Linux only; using the JavaScript relay');
  if (process.env.DUALSOCKS_NATIVE_RELAY === '0') return say('DUALSOCKS_NATIVE_RELAY=0: native splice relay not built');
  const nodedir = headers();
  if (!nodedir) return say('no Node headers on this machine (Debian: libnode-dev); using the JavaScript relay');
  // npm hands its own node-gyp to scripts; otherwise one on PATH
  const gyp = process.env.npm_config_node_gyp;
  const [cmd, args] = gyp ? [process.execPath, [gyp]] : ['node-gyp', []];
  const r = spawnSync(cmd, [...args, 'rebuild', `--nodedir=${nodedir}`], { cwd: here, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (r.status === 0) return say('native splice relay built');
  const why = r.error ? r.error.message : (r.stderr ?? '').trim().split('\n').filter((l) => !l.startsWith('gyp info')).slice(-1)[0];
  say(`native splice relay not built (${why || `exit ${r.status}`}); using the JavaScript relay`);
}

main();
