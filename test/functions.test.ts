// No function or method body in the sources is longer than 80 lines (issue 14): a long function
// is one a newcomer has to hold in their head all at once. The scan is a brace matcher over the
// text with strings, comments, regular expressions and template text blanked out.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { ROOT, SOURCE_DIRS as DIRS, sources } from './helpers/sources.js';

const MAX_LINES = 80;

/**
 * Functions still over the limit, as `path:name`. Issue 14: this list only shrinks — split the
 * function and delete its line; a new long function fails the test.
 */
const ALLOWED = new Set<string>([]);

const REGEX_BEFORE = /(?:^|[(,=:[!&|?{};+\-*%<>~^]|\breturn|\btypeof|\bcase|\bof|\bin)\s*$/;

/** The text with the contents of strings, comments, regexes and template text replaced by spaces (newlines kept). */
export function blank(text: string): string {
  const out = text.split('');
  const wipe = (from: number, to: number): void => {
    for (let k = from; k < to; k++) if (out[k] !== '\n') out[k] = ' ';
  };
  // One entry per open `{`: true when it is a template literal's `${`.
  const braces: boolean[] = [];
  let i = 0;
  const template = (): void => {
    // i is just past a backtick or a `}` closing `${`; stop after the closing backtick or at `${`.
    const start = i;
    while (i < text.length) {
      const c = text[i]!;
      if (c === '\\') { i += 2; continue; }
      if (c === '`') { wipe(start, i); i++; return; }
      if (c === '$' && text[i + 1] === '{') { wipe(start, i); i += 2; braces.push(true); return; }
      i++;
    }
    wipe(start, i);
  };
  while (i < text.length) {
    const c = text[i]!;
    const next = text[i + 1];
    if (c === '/' && next === '/') {
      const end = text.indexOf('\n', i);
      const stop = end < 0 ? text.length : end;
      wipe(i, stop);
      i = stop;
    } else if (c === '/' && next === '*') {
      const end = text.indexOf('*/', i + 2);
      const stop = end < 0 ? text.length : end + 2;
      wipe(i, stop);
      i = stop;
    } else if (c === "'" || c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== c && text[j] !== '\n') j += text[j] === '\\' ? 2 : 1;
      wipe(i + 1, j);
      i = j + 1;
    } else if (c === '`') {
      i++;
      template();
    } else if (c === '/' && REGEX_BEFORE.test(out.slice(Math.max(0, i - 20), i).join(''))) {
      let j = i + 1;
      let inClass = false;
      while (j < text.length && text[j] !== '\n') {
        const d = text[j]!;
        if (d === '\\') { j += 2; continue; }
        if (d === '[') inClass = true;
        else if (d === ']') inClass = false;
        else if (d === '/' && !inClass) break;
        j++;
      }
      wipe(i + 1, j);
      i = j + 1;
    } else if (c === '{') {
      braces.push(false);
      i++;
    } else if (c === '}') {
      const wasTemplate = braces.pop();
      i++;
      if (wasTemplate) template();
    } else {
      i++;
    }
  }
  return out.join('');
}

const CONTROL = new Set(['if', 'for', 'while', 'switch', 'catch', 'with']);

export interface LongFunction { name: string; line: number; lines: number }

/** Function and method bodies (`) {`, `): T {`, `=> {`) of more than `max` lines, counted from the opening line to the closing brace. */
export function longFunctions(text: string, max = MAX_LINES): LongFunction[] {
  const code = blank(text);
  const lineAt = (pos: number): number => code.slice(0, pos).split('\n').length;
  const found: LongFunction[] = [];
  const open: { pos: number; name: string | undefined }[] = [];
  for (let i = 0; i < code.length; i++) {
    if (code[i] === '{') {
      open.push({ pos: i, name: functionName(code, i) });
    } else if (code[i] === '}') {
      const o = open.pop();
      if (o?.name === undefined) continue;
      const lines = lineAt(i) - lineAt(o.pos) + 1;
      if (lines > max) found.push({ name: o.name, line: lineAt(o.pos), lines });
    }
  }
  return found;
}

/** The name of the function whose body opens at `brace`, '(anonymous)' for one without, undefined for a non-function block. */
function functionName(code: string, brace: number): string | undefined {
  const before = code.slice(Math.max(0, brace - 400), brace);
  if (/=>\s*$/.test(before)) {
    const m = /(\w+)\s*[:=][^;{}]*=>\s*$/.exec(before);
    return m ? m[1] : '(anonymous)';
  }
  const m = /\)\s*(?::\s*[^{}();=]+)?$/.exec(before);
  if (!m) return undefined;
  // Find the `(` matching the `)` and read the word before it.
  let depth = 0;
  let k = brace - (before.length - m.index);
  for (; k >= 0; k--) {
    if (code[k] === ')') depth++;
    else if (code[k] === '(' && --depth === 0) break;
  }
  const word = /([\w$]+)\s*(?:<[^()]*>)?\s*$/.exec(code.slice(Math.max(0, k - 200), k))?.[1];
  if (word === undefined) return '(anonymous)';
  return CONTROL.has(word) ? undefined : word;
}

test('longFunctions counts function, method and arrow bodies, not control blocks or strings', () => {
  const body = (n: number): string => Array.from({ length: n }, (_, k) => `  x(${k});`).join('\n');
  const text = [
    'function a(): void {', body(3), '}',
    'class C {', '  m(x: number): Promise<void> {', body(5), '  }', '}',
    'const f = async (y) => {', body(4), '};',
    'if (z) {', body(9), '}',
    'const s = "{ not a brace"; const t = `${1} {`; const r = /\\{/; // {',
    'function b() {', "  const o = { k: '}' };", body(6), '}',
  ].join('\n');
  const got = longFunctions(text, 5).map((f) => `${f.name}:${f.lines}`);
  assert.deepEqual(got, ['m:7', 'f:6', 'b:9']);
});

test('the scan reads every source with balanced braces (a misread string or regex would unbalance them)', () => {
  const unbalanced: string[] = [];
  for (const file of DIRS.flatMap((d) => sources(join(ROOT, d)))) {
    let depth = 0;
    let min = 0;
    for (const c of blank(readFileSync(file, 'utf8'))) {
      if (c === '{') depth++;
      else if (c === '}') min = Math.min(min, --depth);
    }
    if (depth !== 0 || min < 0) unbalanced.push(relative(ROOT, file));
  }
  assert.deepEqual(unbalanced, []);
});

test(`no function over ${MAX_LINES} lines in bridge/, shared/ or extension/`, () => {
  const long: string[] = [];
  for (const file of DIRS.flatMap((d) => sources(join(ROOT, d)))) {
    for (const f of longFunctions(readFileSync(file, 'utf8'))) {
      const key = `${relative(ROOT, file)}:${f.name}`;
      if (!ALLOWED.has(key)) long.push(`${key} (line ${f.line}, ${f.lines} lines)`);
    }
  }
  assert.deepEqual(long, []);
});

test('every allowed long function still exists and is still long (the list only shrinks)', () => {
  const stillLong = new Set<string>();
  for (const file of DIRS.flatMap((d) => sources(join(ROOT, d)))) {
    for (const f of longFunctions(readFileSync(file, 'utf8'))) stillLong.add(`${relative(ROOT, file)}:${f.name}`);
  }
  assert.deepEqual([...ALLOWED].filter((k) => !stillLong.has(k)), []);
});
