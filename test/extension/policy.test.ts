// `dualsocks policy`: the enterprise-policy files for Firefox's DNS leak guard and PAC distribution.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromiumPolicy, EXTENSION_GECKO_ID, firefoxPolicy, policyCommand } from '../../bridge/policy.js';
import { ConfigError } from '../../shared/errors.js';

const manifest = JSON.parse(readFileSync(new URL('../../../manifest.json', import.meta.url), 'utf8')) as { browser_specific_settings: { gecko: { id: string } } };

test('policy firefox: PAC from the bridge with proxy DNS, and the HTTPS-record lookup locked off', () => {
  const { policies } = firefoxPolicy({ bridge: { host: '::1', port: 1080 }, mode: 'pac' }) as { policies: Record<string, any> };
  assert.deepEqual(policies.Proxy, { Mode: 'autoConfig', AutoConfigURL: 'http://[::1]:1080/proxy.pac', UseProxyForDNS: true, Locked: true });
  assert.deepEqual(policies.Preferences['network.dns.native_https_query'], { Value: false, Status: 'locked' });
  assert.equal(EXTENSION_GECKO_ID, manifest.browser_specific_settings.gecko.id, 'managed storage reaches the extension by its id');
  assert.deepEqual(policies['3rdparty'].Extensions[EXTENSION_GECKO_ID], { leakGuard: true });
  const ext = (firefoxPolicy({ bridge: { host: '127.0.0.1', port: 1080 }, mode: 'extension' }) as { policies: Record<string, unknown> }).policies;
  assert.equal(ext.Proxy, undefined, 'with the extension, the extension routes');
  assert.deepEqual(ext.Preferences, policies.Preferences);
});

test('policy chromium: mandatory PAC from the bridge; nothing to add next to the extension', () => {
  assert.deepEqual(chromiumPolicy({ bridge: { host: '127.0.0.1', port: 1080 }, mode: 'pac' }), {
    ProxySettings: { ProxyMode: 'pac_script', ProxyPacUrl: 'http://127.0.0.1:1080/proxy.pac', ProxyPacMandatory: true },
  });
  assert.throws(() => chromiumPolicy({ bridge: { host: '127.0.0.1', port: 1080 }, mode: 'extension' }), ConfigError);
});

test('policy command: --out writes the file; bad arguments are ConfigErrors naming the flag', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ds-policy-'));
  try {
    const out = join(dir, 'policies', 'policies.json');
    const write = process.stderr.write;
    process.stderr.write = (() => true) as typeof process.stderr.write;
    try {
      await policyCommand(['firefox', '--bridge', '127.0.0.1:3128', '--out', out]);
    } finally {
      process.stderr.write = write;
    }
    const json = JSON.parse(readFileSync(out, 'utf8')) as { policies: { Proxy: { AutoConfigURL: string } } };
    assert.equal(json.policies.Proxy.AutoConfigURL, 'http://127.0.0.1:3128/proxy.pac');
    await assert.rejects(policyCommand(['safari']), (e: unknown) => e instanceof ConfigError && /browser/.test(e.message));
    await assert.rejects(policyCommand(['firefox', '--bridge', 'nope']), (e: unknown) => e instanceof ConfigError && /--bridge/.test(e.message));
    await assert.rejects(policyCommand(['firefox', '--mode', 'x']), ConfigError);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
