// Transpiles the Node parts (bridge, shared, test) file by file into dist/, keeping paths,
// so stack traces and test files line up with the sources. Type checking is `npm run typecheck`.
import { build } from 'esbuild';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

function tsFiles(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return tsFiles(p);
    return p.endsWith('.ts') && !p.endsWith('.d.ts') ? [p] : [];
  });
}

await build({
  entryPoints: ['bridge', 'shared', 'test'].flatMap(tsFiles),
  outdir: 'dist',
  outbase: '.',
  platform: 'node',
  format: 'esm',
  target: 'node20',
  sourcemap: 'inline',
  logLevel: 'warning',
});
