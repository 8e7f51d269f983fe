// Loads one page in Debian's Chromium (puppeteer-core) through an HTTP proxy that asks for a login
// (407): page.authenticate() answers the challenge as a person typing into the browser's dialog
// would. Run inside the client's namespace: `ip netns exec NS node dist/test/e2e/proxy-auth-driver.js JSON`.
// Prints one JSON line: the page's status and text.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface ProxyAuthDriverOptions {
  /** host:port of the HTTP proxy; or, with `pac`, of the bridge whose /proxy.pac the browser follows. */
  proxy: string;
  pac?: boolean;
  url: string;
  /** Omitted: the challenge is not answered. */
  credentials?: { username: string; password: string };
}

export interface ProxyAuthDriverResult {
  status: number | null;
  text: string;
  /** Why the page did not load (Chromium's net:: error). */
  error?: string;
  browserVersion: string;
}

async function main(o: ProxyAuthDriverOptions): Promise<ProxyAuthDriverResult> {
  const { default: puppeteer } = await import('puppeteer-core');
  const profile = mkdtempSync(join(tmpdir(), 'dualsocks-auth-chromium-'));
  const browser = await puppeteer.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    userDataDir: profile,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      ...(o.pac
        ? [`--proxy-pac-url=http://${o.proxy}/proxy.pac`]
        : [
            `--proxy-server=http://${o.proxy}`,
            // no direct connections at all, also for names Chromium thinks are local
            '--proxy-bypass-list=<-loopback>',
          ]),
    ],
  });
  try {
    const page = await browser.newPage();
    if (o.credentials) await page.authenticate(o.credentials);
    const browserVersion = await browser.version();
    let res;
    try {
      res = await page.goto(o.url, { waitUntil: 'load', timeout: 30_000 });
    } catch (e) {
      return { status: null, text: '', error: (e as Error).message, browserVersion };
    }
    const text = await page.evaluate(() => (globalThis as unknown as { document: { body: { innerText: string } } }).document.body.innerText);
    return { status: res?.status() ?? null, text, browserVersion };
  } finally {
    await browser.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

if (process.argv[2]) {
  main(JSON.parse(process.argv[2]) as ProxyAuthDriverOptions).then(
    (r) => process.stdout.write(`${JSON.stringify(r)}\n`),
    (e: unknown) => {
      process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
      process.exit(1);
    },
  );
}
