// Builds the WebExtension into dist/extension/ (a folder Chromium loads unpacked and Firefox loads
// as a temporary add-on); `--zip` also writes dist/dualsocks-extension-VERSION.zip for the stores.
// Icons are drawn here so the repository holds no binary files.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { deflateRawSync, deflateSync } from 'node:zlib';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'extension');
const out = join(root, 'dist', 'extension');

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, 'icons'), { recursive: true });

await build({
  entryPoints: {
    background: join(src, 'background/index.ts'),
    popup: join(src, 'popup/popup.ts'),
    options: join(src, 'options/options.ts'),
  },
  outdir: out,
  bundle: true,
  format: 'iife', // Firefox event pages and Chromium workers both run classic scripts
  target: ['chrome120', 'firefox128'],
  platform: 'browser',
  sourcemap: false,
  minify: false, // store reviewers read the code
  legalComments: 'inline',
  logLevel: 'warning',
});

const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const manifest = JSON.parse(readFileSync(join(root, 'manifest.json'), 'utf8'));
manifest.version = pkg.version;
writeFileSync(join(out, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
for (const f of ['popup/popup.html', 'options/options.html', 'lib/ui.css']) copyFileSync(join(src, f), join(out, f.split('/').pop()));

// ---- icons: a circle, IPv4 half and IPv6 half, with a gap between them ----
const crcTable = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function png(size) {
  const raw = Buffer.alloc(size * (size * 4 + 1));
  const r = size / 2;
  for (let y = 0; y < size; y++) {
    raw[y * (size * 4 + 1)] = 0;
    for (let x = 0; x < size; x++) {
      const dx = x + 0.5 - r;
      const dy = y + 0.5 - r;
      const inside = Math.hypot(dx, dy) <= r - 0.5;
      const gap = Math.abs(dx) < size / 16;
      const rgb = dx < 0 ? [0x1e, 0x88, 0xe5] : [0x6a, 0x1b, 0x9a];
      const o = y * (size * 4 + 1) + 1 + x * 4;
      if (inside && !gap) raw.set([...rgb, 255], o);
    }
  }
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(td));
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr.set([8, 6, 0, 0, 0], 8);
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}
for (const s of [16, 32, 48, 128]) writeFileSync(join(out, 'icons', `${s}.png`), png(s));

// ---- zip (deflate, no extra fields): enough for AMO and the Chrome Web Store ----
function files(dir) {
  return readdirSync(dir).sort().flatMap((n) => (statSync(join(dir, n)).isDirectory() ? files(join(dir, n)) : [join(dir, n)]));
}
function zip(dir, dest) {
  const locals = [];
  const centrals = [];
  let offset = 0;
  for (const file of files(dir)) {
    const name = Buffer.from(relative(dir, file).split('\\').join('/'));
    const data = readFileSync(file);
    const packed = deflateRawSync(data, { level: 9 });
    const crc = crc32(data);
    const head = Buffer.alloc(30);
    head.writeUInt32LE(0x04034b50, 0);
    head.writeUInt16LE(20, 4);
    head.writeUInt16LE(8, 8); // deflate
    head.writeUInt16LE(0x21, 12); // 1980-01-01: reproducible archives
    head.writeUInt32LE(crc, 14);
    head.writeUInt32LE(packed.length, 18);
    head.writeUInt32LE(data.length, 22);
    head.writeUInt16LE(name.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(8, 10);
    central.writeUInt16LE(0x21, 14);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(packed.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(offset, 42);
    locals.push(head, name, packed);
    centrals.push(central, name);
    offset += head.length + name.length + packed.length;
  }
  const cd = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(centrals.length / 2, 8);
  end.writeUInt16LE(centrals.length / 2, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  writeFileSync(dest, Buffer.concat([...locals, cd, end]));
}
if (process.argv.includes('--zip')) {
  const dest = join(root, 'dist', `dualsocks-extension-${pkg.version}.zip`);
  zip(out, dest);
  console.log(`wrote ${relative(root, dest)}`);
}
