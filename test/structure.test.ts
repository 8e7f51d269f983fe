// The source tree has no import cycle: a newcomer can read any module after the modules it
// imports. Type-only imports count too — a type cycle is still a circle of meaning to read, and
// it becomes a load-time cycle as soon as someone imports a value along the same edge.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { ROOT, SOURCE_DIRS as DIRS, sources } from './helpers/sources.js';


// Static `import … from './x.js'`, `export … from './x.js'` and bare `import './x.js'`, over
// several lines too. Dynamic `import()` is left out: it loads after the importer has finished.
const IMPORT = /^\s*(?:import|export)\s[^;]*?\bfrom\s+['"](\.{1,2}\/[^'"]+)['"]|^\s*import\s+['"](\.{1,2}\/[^'"]+)['"]/gm;

export function importsOf(file: string, text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(IMPORT)) {
    const spec = (m[1] ?? m[2])!;
    out.push(resolve(dirname(file), spec.replace(/\.js$/, '.ts')));
  }
  return out;
}

/** Every cycle found by a depth-first search, each as the list of files around it. */
export function findCycles(graph: Map<string, string[]>): string[][] {
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const cycles: string[][] = [];
  const visit = (node: string): void => {
    state.set(node, 'open');
    stack.push(node);
    for (const next of graph.get(node) ?? []) {
      const s = state.get(next);
      if (s === 'open') cycles.push([...stack.slice(stack.indexOf(next)), next]);
      else if (s === undefined && graph.has(next)) visit(next);
    }
    stack.pop();
    state.set(node, 'done');
  };
  for (const node of [...graph.keys()].sort()) if (!state.has(node)) visit(node);
  return cycles;
}

test('findCycles finds a two-file and a three-file cycle and nothing in a tree', () => {
  assert.deepEqual(findCycles(new Map([['a', ['b']], ['b', ['c']], ['c', []]])), []);
  assert.deepEqual(findCycles(new Map([['a', ['b']], ['b', ['a']]])), [['a', 'b', 'a']]);
  assert.deepEqual(findCycles(new Map([['a', ['b']], ['b', ['c']], ['c', ['a']]])), [['a', 'b', 'c', 'a']]);
});

test('importsOf reads type-only, multi-line, re-export and bare imports', () => {
  const text = [
    "import type { A } from './a.js';",
    'import {',
    '  b,',
    "} from '../b.js';",
    "export { c } from './c.js';",
    "import './d.js';",
    "import { e } from 'node:fs';",
    "const f = await import('./f.js');",
  ].join('\n');
  const got = importsOf('/x/y/z.ts', text).map((p) => relative('/x', p));
  assert.deepEqual(got, ['y/a.ts', 'b.ts', 'y/c.ts', 'y/d.ts']);
});

test('no import cycle in bridge/, shared/ or extension/', () => {
  const graph = new Map<string, string[]>();
  for (const file of DIRS.flatMap((d) => sources(join(ROOT, d)))) {
    graph.set(file, importsOf(file, readFileSync(file, 'utf8')));
  }
  assert.ok(graph.size > 50, `found only ${graph.size} sources under ${ROOT}`);
  const cycles = findCycles(graph).map((c) => c.map((f) => relative(ROOT, f)).join(' -> '));
  assert.deepEqual(cycles, []);
});
