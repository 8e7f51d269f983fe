// The extension in real browsers, in an IPv4-only client namespace (c4): Debian's chromium through
// playwright-core and Debian's firefox-esr through puppeteer-core (WebDriver BiDi) load the built
// extension with its defaults, which send the page to the bridge on c4's 127.0.0.1:1080; the bridge
// hands the name to a gateway in gw, the only place that can resolve it, which reaches an
// IPv6-only server. The page content must arrive, the popup must say "IPv6 via gateway", and c4's
// resolver must have received no query at all for the name. In Firefox the options page then turns
// on the WebRTC protection, and the browser must report the policy as set by the extension.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { requireCapability, rootNetns } from '../helpers/env.js';
import { CLI, startCli, type Running } from '../helpers/process.js';
import { createTopology, run, ADDR, ALLOW_DESTINATIONS, NAMES, type Topology } from '../topology/netns.js';
import type { DriverOptions, DriverResult } from './driver.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const EXTENSION = join(ROOT, 'dist/extension');
const DRIVER = fileURLToPath(new URL('./driver.js', import.meta.url));
const ARTIFACTS = join(ROOT, 'test-artifacts');
const GATEWAY_PORT = 1081;

const netns = rootNetns();
const skipFor = (bin: string, pkg: string): false | string =>
  netns || requireCapability(pkg, existsSync(bin), `apt-get install ${pkg} (tests drive ${bin}; they never download a browser)`);

const BROWSERS = [
  { engine: 'chromium', skip: skipFor('/usr/bin/chromium', 'chromium') },
  { engine: 'firefox', skip: skipFor('/usr/bin/firefox-esr', 'firefox-esr') },
] as const;

/**
 * Runs the driver inside the client namespace. For Firefox, the policies.json that
 * `dualsocks policy firefox --mode extension` writes is mounted over Firefox's distribution
 * directory (a location Firefox reads policies from) inside the driver's own mount namespace,
 * which `ip netns exec` creates, so nothing on the host changes.
 */
async function drive(topo: Topology, o: DriverOptions, policyDir?: string): Promise<DriverResult> {
  const argv = [process.execPath, DRIVER, JSON.stringify(o)];
  const cmd = policyDir
    ? ['sh', '-c', 'mount --bind "$1" "$2" && shift 2 && exec "$@"', 'sh', policyDir, realpathSync('/usr/lib/firefox-esr/distribution'), ...argv]
    : argv;
  const r = await run('ip', ['netns', 'exec', topo.ns.c4, ...cmd], { timeoutMs: 150000 });
  const line = r.stdout.toString().trim().split('\n').pop() ?? '';
  assert.equal(r.code, 0, `driver failed:\n${r.stderr}`);
  return JSON.parse(line) as DriverResult;
}

test('browsers reach an IPv6-only server by a name only the gateway knows, from an IPv4-only client, with no local lookup', { skip: netns, timeout: 600000 }, async (t) => {
  const topo = await createTopology();
  const running: Running[] = [];
  try {
    mkdirSync(ARTIFACTS, { recursive: true });
    const gw = await startCli(['gateway', '--listen', `${ADDR.gw.c4}:${GATEWAY_PORT}`, '--no-auth', '--hosts', topo.hostsFile, '--dns', 'none', ...ALLOW_DESTINATIONS], { netns: topo.ns.gw });
    running.push(gw);
    // The extension's defaults point at 127.0.0.1:1080: nothing is configured in the browser.
    const bridge = await startCli(['bridge', '--listen', '127.0.0.1:1080', '--gateway', `socks5://${ADDR.gw.c4}:${GATEWAY_PORT}`, '--health-interval', '2'], { netns: topo.ns.c4 });
    running.push(bridge);

    const policyDir = join(topo.dir, 'firefox-distribution');
    const pol = await run(process.execPath, [CLI, 'policy', 'firefox', '--mode', 'extension', '--out', join(policyDir, 'policies.json')]);
    assert.equal(pol.code, 0, pol.stderr);
    const policy = JSON.parse(readFileSync(join(policyDir, 'policies.json'), 'utf8')) as { policies: { Preferences: Record<string, { Value: unknown; Status: string }> } };
    assert.deepEqual(policy.policies.Preferences['network.dns.native_https_query'], { Value: false, Status: 'locked' });

    for (const b of BROWSERS) {
      await t.test(b.engine, { skip: b.skip }, async () => {
        const before = topo.queriesFor('c4', NAMES.v6only);
        const r = await drive(
          topo,
          {
            engine: b.engine,
            extension: EXTENSION,
            url: `http://${NAMES.v6only}/`,
            expect: topo.index.s6.replace(/<[^>]+>/g, '').trim(),
            artifacts: ARTIFACTS,
            // Firefox grants an optional permission without its prompt with this pref; Chromium's
            // prompt cannot be answered headless, so WebRTC is checked in Firefox only
            ...(b.engine === 'firefox' ? { webrtc: true, firefoxPrefs: { 'extensions.webextOptionalPermissionPrompts': false } } : {}),
          },
          b.engine === 'firefox' ? policyDir : undefined,
        );
        t.diagnostic(`${b.engine}: ${r.browserVersion}`);
        assert.ok(r.pageText.includes(`IPv6-only server ${ADDR.s6}`), r.pageText);
        assert.match(r.popupText, /IPv6 via gateway/);
        assert.match(r.popupText, /up, v\d/, 'the popup shows the bridge up');
        assert.ok(r.popupText.includes(`socks5://${ADDR.gw.c4}:${GATEWAY_PORT}`), 'the popup lists the gateway');
        if (b.engine === 'firefox') assert.doesNotMatch(r.popupText, /HTTPS records/, 'the popup sees the leak guard from the policy');
        for (const shot of r.screenshots) assert.ok(existsSync(shot), shot);
        if (b.engine === 'firefox') {
          assert.equal(r.webrtc?.message, 'Saved.', 'saved with WebRTC protection applied');
          assert.deepEqual({ value: r.webrtc?.value, levelOfControl: r.webrtc?.levelOfControl }, { value: 'disable_non_proxied_udp', levelOfControl: 'controlled_by_this_extension' });
        }
        const rec = await gw.waitRecord((x) => x.host === NAMES.v6only && x.result === 'ok' && (x.family === 6 || x.family === '6'));
        assert.ok(rec);
        assert.equal(topo.queriesFor('c4', NAMES.v6only) - before, 0, `${b.engine} looked ${NAMES.v6only} up on the client's resolver`);
      });
    }
    // Proof that the resolver log counts what it should: a lookup by hand shows up.
    await topo.exec('c4', 'getent', ['hosts', NAMES.v6only]);
    assert.ok(topo.queriesFor('c4', NAMES.v6only) > 0, 'the c4 resolver logs queries');
  } finally {
    for (const r of running.reverse()) await r.stop();
    await topo.destroy();
  }
});
