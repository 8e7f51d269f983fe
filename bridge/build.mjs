// Transpiles the Node parts (bridge, shared, test) file by file into dist/, keeping paths,
// so stack traces and test files line up with the sources. Type checking is `npm run typecheck`.
// For `npm pack` and `npm publish` (their prepare step) only what the package ships, from clean,
// without source maps (they would double its size; Node reads them only with --enable-source-maps).
import { build } from 'esbuild';
import { readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';

function tsFiles(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return tsFiles(p);
    return p.endsWith('.ts') && !p.endsWith('.d.ts') ? [p] : [];
  });
}

const release = ['pack', 'publish'].includes(process.env.npm_command ?? '');
if (release) for (const d of ['dist/bridge', 'dist/shared']) rmSync(d, { recursive: true, force: true });

await build({
  entryPoints: (release ? ['bridge', 'shared'] : ['bridge', 'shared', 'test']).flatMap(tsFiles),
  outdir: 'dist',
  outbase: '.',
  platform: 'node',
  format: 'esm',
  target: 'node20',
  sourcemap: release ? false : 'inline',
  logLevel: 'warning',
});
