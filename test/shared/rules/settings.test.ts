import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError } from '../../../shared/errors.js';
import { DEFAULT_SETTINGS, decide, parseSettings, pacResult, toPac, type Settings } from '../../../shared/rules/index.js';

function throwsKey(fn: () => unknown, key: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${String(e)}`);
    assert.equal(e.key, key);
    assert.equal(e.code, 'ERR_CONFIG');
    assert.ok(e.message.includes(key), e.message);
    return true;
  });
}

const PROXY = { type: 'PROXY', host: '127.0.0.1', port: 1080 };
const DIRECT = { type: 'DIRECT' };

describe('defaults', () => {
  test('everything goes through the bridge except loopback, link-local, private and plain names', () => {
    for (const u of ['http://example.com/', 'https://[2001:db8::1]/', 'http://93.184.216.34/', 'http://172.32.0.1/', 'http://www.localhost.example/']) {
      assert.deepEqual(decide(DEFAULT_SETTINGS, u), PROXY, u);
    }
    for (const u of [
      'http://localhost/',
      'http://localhost.:3000/',
      'http://app.localhost/',
      'http://intranet/',
      'http://127.0.0.1/',
      'http://[::1]:8080/',
      'http://169.254.169.254/',
      'http://[fe80::1]/',
      'http://10.1.2.3/',
      'http://172.16.5.4/',
      'http://192.168.1.1/',
      'http://100.64.0.1/',
      'http://[fd12::1]/',
      'http://[::ffff:192.168.0.1]/',
    ]) {
      assert.deepEqual(decide(DEFAULT_SETTINGS, u), DIRECT, u);
    }
  });

  test('parseSettings({}) gives the defaults', () => {
    assert.deepEqual(parseSettings({}), DEFAULT_SETTINGS);
    assert.deepEqual(parseSettings('{}'), DEFAULT_SETTINGS);
  });
});

describe('modes', () => {
  const rules = ['*.example.com', '10.0.0.0/8'];
  test('listed: only rule matches go through the proxy; bypass still wins', () => {
    const s = parseSettings({ mode: 'listed', rules });
    assert.deepEqual(decide(s, 'http://www.example.com/'), PROXY);
    assert.deepEqual(decide(s, 'http://example.org/'), DIRECT);
    assert.deepEqual(decide(s, 'http://10.0.0.1/'), DIRECT); // default bypass has 10/8
    assert.deepEqual(decide(parseSettings({ mode: 'listed', rules, bypass: [] }), 'http://10.0.0.1/'), PROXY);
    assert.deepEqual(decide(parseSettings({ mode: 'listed' }), 'http://example.com/'), DIRECT);
  });

  test('except: everything through the proxy but rule matches and bypass', () => {
    const s = parseSettings({ mode: 'except', rules, bypass: ['<local>'] });
    assert.deepEqual(decide(s, 'http://www.example.com/'), DIRECT);
    assert.deepEqual(decide(s, 'http://10.0.0.1/'), DIRECT);
    assert.deepEqual(decide(s, 'http://intranet/'), DIRECT);
    assert.deepEqual(decide(s, 'http://example.org/'), PROXY);
    assert.deepEqual(decide(s, 'http://127.0.0.1/'), PROXY); // bypass replaced: nothing left for loopback
  });

  test('the bridge routes bare targets', () => {
    const s = parseSettings({ mode: 'listed', rules: [{ pattern: '*.example.com', port: 443 }], bypass: [] });
    assert.deepEqual(decide(s, { host: 'WWW.EXAMPLE.COM', port: 443 }), PROXY);
    assert.deepEqual(decide(s, { host: 'www.example.com', port: 80 }), DIRECT);
  });

  test('the proxy address comes from the settings', () => {
    const s = parseSettings({ proxy: { host: '::1', port: 1081 } });
    const d = decide(s, 'http://example.com/');
    assert.deepEqual(d, { type: 'PROXY', host: '::1', port: 1081 });
    assert.equal(pacResult(d), 'SOCKS5 [::1]:1081; PROXY [::1]:1081');
    assert.equal(pacResult({ type: 'PROXY', host: '[::1]', port: 1 }), 'SOCKS5 [::1]:1; PROXY [::1]:1');
  });
});

describe('parseSettings', () => {
  test('normalises rules: string shorthand, inferred type, lower-case scheme', () => {
    const s = parseSettings({
      mode: 'listed',
      rules: [' *.Example.com ', { pattern: '2001:db8::/32' }, { type: 'exact', pattern: 'a.example', port: 8080, scheme: 'HTTP' }],
      bypass: [' <local> '],
      proxy: { host: '[::1]' },
    });
    assert.deepEqual(s, {
      mode: 'listed',
      rules: [
        { type: 'wildcard', pattern: '*.Example.com' },
        { type: 'cidr', pattern: '2001:db8::/32' },
        { type: 'exact', pattern: 'a.example', port: 8080, scheme: 'http' },
      ],
      bypass: ['<local>'],
      proxy: { host: '::1', port: 1080 },
    });
    assert.ok(Object.isFrozen(s) && Object.isFrozen(s.rules) && Object.isFrozen(s.rules[0]) && Object.isFrozen(s.proxy));
  });

  test('names the bad key', () => {
    throwsKey(() => parseSettings('{'), 'settings');
    throwsKey(() => parseSettings([]), 'settings');
    throwsKey(() => parseSettings(null), 'settings');
    throwsKey(() => parseSettings({ bypas: [] }), 'bypas');
    throwsKey(() => parseSettings({ mode: 'some' }), 'mode');
    throwsKey(() => parseSettings({ rules: {} }), 'rules');
    throwsKey(() => parseSettings({ rules: ['a.example', 'b.example', { pattern: 'exa mple.com' }] }), 'rules[2].pattern');
    throwsKey(() => parseSettings({ rules: ['a.example', '*.b.example/x'] }), 'rules[1].pattern');
    throwsKey(() => parseSettings({ rules: [{ pattern: 1 }] }), 'rules[0].pattern');
    throwsKey(() => parseSettings({ rules: [{}] }), 'rules[0].pattern');
    throwsKey(() => parseSettings({ rules: [{ pattern: 'a', type: 'regex' }] }), 'rules[0].type');
    throwsKey(() => parseSettings({ rules: [{ pattern: 'a', port: 1.5 }] }), 'rules[0].port');
    throwsKey(() => parseSettings({ rules: [{ pattern: 'a', scheme: 'a b' }] }), 'rules[0].scheme');
    throwsKey(() => parseSettings({ rules: [{ pattern: 'a', action: 'direct' }] }), 'rules[0].action');
    throwsKey(() => parseSettings({ rules: [7] }), 'rules[0]');
    throwsKey(() => parseSettings({ bypass: '<local>' }), 'bypass');
    throwsKey(() => parseSettings({ bypass: ['<local>', 5] }), 'bypass[1]');
    throwsKey(() => parseSettings({ bypass: ['<local>', '10.0.0.0/40'] }), 'bypass[1]');
    throwsKey(() => parseSettings({ proxy: '127.0.0.1:1080' }), 'proxy');
    throwsKey(() => parseSettings({ proxy: { host: 'a b' } }), 'proxy.host');
    throwsKey(() => parseSettings({ proxy: { host: '"; alert(1); "' } }), 'proxy.host');
    throwsKey(() => parseSettings({ proxy: { port: 0 } }), 'proxy.port');
    throwsKey(() => parseSettings({ proxy: { port: '1080' } }), 'proxy.port');
    throwsKey(() => parseSettings({ proxy: { user: 'x' } }), 'proxy.user');
  });

  test('decide and toPac validate hand-built settings with the same messages', () => {
    const bad: Settings = { ...DEFAULT_SETTINGS, rules: [{ pattern: 'ok.example' }, { pattern: 'bad pattern' }] };
    throwsKey(() => decide(bad, 'http://x/'), 'rules[1].pattern');
    throwsKey(() => toPac(bad), 'rules[1].pattern');
    throwsKey(() => decide({ ...DEFAULT_SETTINGS, mode: 'x' as 'all' }, 'http://x/'), 'mode');
  });

  test('toPac validates the proxy address it is given', () => {
    throwsKey(() => toPac(DEFAULT_SETTINGS, { proxyHost: 'evil"host' }), 'proxyHost');
    throwsKey(() => toPac(DEFAULT_SETTINGS, { proxyHost: '127.0.0.1:1080' }), 'proxyHost');
    throwsKey(() => toPac(DEFAULT_SETTINGS, { proxyPort: 70000 }), 'proxyPort');
  });
});
