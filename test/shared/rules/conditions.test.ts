import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError } from '../../../shared/errors.js';
import {
  bypassCondition,
  normalizeHost,
  requestInfo,
  ruleCondition,
  wildcardSource,
  type Condition,
  type Rule,
  type Target,
} from '../../../shared/rules/index.js';

function matches(cond: Condition, target: string | Target): boolean {
  return cond.match(requestInfo(target));
}

function rule(r: Rule | string): Condition {
  return ruleCondition(typeof r === 'string' ? { pattern: r } : r, 'rules[0]');
}

function bypass(entry: string): Condition {
  return bypassCondition(entry, 'bypass[0]');
}

function check(cond: Condition, yes: (string | Target)[], no: (string | Target)[]): void {
  for (const u of yes) assert.equal(matches(cond, u), true, `${cond.text} should match ${JSON.stringify(u)}`);
  for (const u of no) assert.equal(matches(cond, u), false, `${cond.text} should not match ${JSON.stringify(u)}`);
}

describe('requestInfo', () => {
  test('normalises hosts the way browsers hand them to a PAC', () => {
    assert.deepEqual(
      { ...requestInfo('HTTP://WWW.Example.COM./x'), ip: null },
      { scheme: 'http', host: 'www.example.com', port: 80, ip: null },
    );
    assert.equal(requestInfo('https://[2001:DB8::1]:8443/').host, '2001:db8::1');
    assert.equal(requestInfo('https://[2001:DB8::1]:8443/').port, 8443);
    assert.equal(requestInfo({ host: '2001:DB8:0::1' }).host, '2001:db8::1');
    assert.equal(requestInfo({ host: '[::1]', port: 22 }).port, 22);
    assert.equal(requestInfo({ host: 'example.com' }).port, 0);
    assert.equal(requestInfo({ scheme: 'HTTPS', host: 'example.com' }).port, 443);
    assert.equal(requestInfo('http://0x7f.1/').host, '127.0.0.1');
    assert.equal(requestInfo({ host: '0x7f.1' }).host, '127.0.0.1');
    assert.equal(requestInfo('http://bücher.de/').host, 'xn--bcher-kva.de');
    assert.ok(requestInfo('http://10.1.2.3/').ip);
    assert.equal(requestInfo('http://10.1.2.3.example/').ip, null);
    assert.throws(() => requestInfo('not a url'), TypeError);
  });

  test('normalizeHost drops one trailing dot and IPv6 brackets', () => {
    assert.equal(normalizeHost('Example.COM.'), 'example.com');
    assert.equal(normalizeHost('[::1]'), '::1');
    assert.equal(normalizeHost('.'), '.');
  });
});

describe('host wildcard (omega-pac conventions)', () => {
  test('*.example.com matches the domain itself and every subdomain', () => {
    check(
      rule('*.example.com'),
      ['http://example.com/', 'http://www.example.com/', 'https://a.b.example.com:8443/', 'http://EXAMPLE.com./'],
      ['http://example.com.evil.net/', 'http://notexample.com/', 'http://example.co/', 'http://example.community/', 'http://com/'],
    );
  });

  test('.example.com is the same as *.example.com', () => {
    assert.equal(wildcardSource('k', '.example.com'), wildcardSource('k', '*.example.com'));
  });

  test('**.example.com matches subdomains only', () => {
    check(rule('**.example.com'), ['http://www.example.com/', 'http://a.b.example.com/'], ['http://example.com/', 'http://xexample.com/']);
  });

  test('a pattern without wildcards is one exact host', () => {
    check(rule('example.com'), ['http://example.com/', 'http://Example.Com./'], ['http://www.example.com/', 'http://example.com.au/']);
  });

  test('* matches everything, names and literals', () => {
    check(rule('*'), ['http://a/', 'http://example.com/', 'http://10.0.0.1/', 'http://[::1]/'], []);
  });

  test('* inside a pattern crosses dots, ? is one character', () => {
    check(rule('www.*.com'), ['http://www.example.com/', 'http://www.a.b.com/'], ['http://example.com/', 'http://www.example.org/']);
    check(rule('exam?le.com'), ['http://example.com/', 'http://examqle.com/'], ['http://exampple.com/', 'http://examle.com/']);
    check(rule('*.example.*'), ['http://example.org/', 'http://www.example.co.uk/'], ['http://notexample.org/', 'http://example/']);
  });

  test('regex characters in a pattern are literal', () => {
    check(rule('a-b.example.com'), ['http://a-b.example.com/'], ['http://a-bxexample.com/']);
  });

  test('rejects what is not a host pattern', () => {
    for (const p of ['', ' ', 'exa mple.com', 'example.com/path', 'ex%61mple.com', 'bücher.de', 'a*b*c*d*e', 'http://x']) {
      assert.throws(() => rule({ type: 'wildcard', pattern: p }), (e: unknown) => e instanceof ConfigError && e.key === 'rules[0].pattern', p);
    }
  });
});

describe('exact host', () => {
  test('matches only that host; * is not a wildcard', () => {
    check(rule({ type: 'exact', pattern: 'Example.com' }), ['http://example.com/', 'http://example.com./'], ['http://www.example.com/']);
    assert.throws(() => rule({ type: 'exact', pattern: '*.example.com' }), ConfigError);
  });

  test('an IP literal compares as an address, not as text', () => {
    check(rule({ type: 'exact', pattern: '2001:db8:0:0::1' }), ['http://[2001:db8::1]/', { host: '2001:DB8::1' }], ['http://[2001:db8::2]/']);
    check(rule({ type: 'exact', pattern: '127.0.0.1' }), ['http://127.0.0.1/', 'http://[::ffff:127.0.0.1]/'], ['http://127.0.0.2/']);
  });
});

describe('IP / CIDR', () => {
  test('matches IP literals in the range', () => {
    check(
      rule('10.0.0.0/8'),
      ['http://10.1.2.3/', 'http://10.255.255.255:8080/', 'http://[::ffff:10.0.0.1]/', { host: '10.9.9.9', port: 443 }],
      ['http://11.0.0.1/', 'http://[2001:db8::1]/'],
    );
    check(rule('2001:db8::/32'), ['http://[2001:db8::1]/', 'http://[2001:DB8:FFFF::]/'], ['http://[2001:db9::1]/', 'http://10.0.0.1/']);
    check(rule('[2001:db8::]/32'), ['http://[2001:db8::1]/'], ['http://[2001:db9::1]/']);
    check(rule('[::1]'), ['http://[::1]:8080/'], ['http://[::2]/']);
  });

  test('never matches a name, even one that spells an address', () => {
    check(rule('10.0.0.0/8'), [], ['http://10.1.2.3.example/', 'http://ten.example/', { host: '10.1.2.3.nip.io' }]);
    check(rule('0.0.0.0/0'), ['http://8.8.8.8/'], ['http://example.com/', 'http://[::1]/']);
    check(rule('::/0'), ['http://[::1]/', 'http://8.8.8.8/'], ['http://localhost/']);
  });

  test('type is inferred from the pattern', () => {
    check(rule('192.168.1.1'), ['http://192.168.1.1/'], ['http://192.168.1.10/']);
  });

  test('rejects bad CIDRs', () => {
    for (const p of ['10.0.0.0/33', '10.0.0/8', '::/129', '[10.0.0.0]/8', 'example.com/8']) {
      assert.throws(() => rule({ type: 'cidr', pattern: p }), (e: unknown) => e instanceof ConfigError && e.key === 'rules[0].pattern', p);
    }
  });
});

describe('port and scheme', () => {
  test('a rule with a port or scheme also needs those to match', () => {
    const c = rule({ pattern: '*.example.com', port: 8080, scheme: 'HTTP' });
    check(c, ['http://example.com:8080/', 'http://a.example.com:8080/'], ['https://example.com:8080/', 'http://example.com/', 'http://other.com:8080/']);
    check(rule({ pattern: '*', port: 443 }), ['https://x.example/', { host: 'x.example', port: 443 }], ['http://x.example/', { host: 'x.example' }]);
  });

  test('bad ports and schemes name their key', () => {
    assert.throws(() => rule({ pattern: 'a', port: 0 }), (e: unknown) => e instanceof ConfigError && e.key === 'rules[0].port');
    assert.throws(() => rule({ pattern: 'a', port: 65536 }), (e: unknown) => e instanceof ConfigError && e.key === 'rules[0].port');
    assert.throws(() => rule({ pattern: 'a', port: '80' as unknown as number }), (e: unknown) => e instanceof ConfigError && e.key === 'rules[0].port');
    assert.throws(() => rule({ pattern: 'a', scheme: 'ht tp' }), (e: unknown) => e instanceof ConfigError && e.key === 'rules[0].scheme');
  });
});

describe('bypass entries (Chrome bypass-list syntax)', () => {
  test('<local> is a plain name: no dot and not an IP literal', () => {
    check(
      bypass('<local>'),
      ['http://intranet/', 'http://localhost:8080/', 'http://LOCALHOST./', 'http://printer/'],
      ['http://example.com/', 'http://[::1]/', 'http://127.0.0.1/', 'http://[2001:db8::1]/', 'http://foo.localhost/'],
    );
    check(bypass('<LOCAL>'), ['http://intranet/'], []);
  });

  test('host patterns, with optional scheme and port', () => {
    check(bypass('*.lan'), ['http://printer.lan/', 'http://lan/'], ['http://lan.example/', 'http://plan/']);
    check(bypass('.lan'), ['http://printer.lan/'], ['http://plan/']);
    check(bypass('http://*.example.org'), ['http://www.example.org/'], ['https://www.example.org/']);
    check(bypass('example.com:8080'), ['http://example.com:8080/'], ['http://example.com/']);
    check(bypass('https://*:8443'), ['https://anything.example:8443/'], ['http://anything.example:8443/', 'https://anything.example/']);
  });

  test('IP literals and CIDRs', () => {
    check(bypass('127.0.0.0/8'), ['http://127.0.0.1/', 'http://127.9.9.9:99/', 'http://[::ffff:127.0.0.1]/'], ['http://localhost/', 'http://128.0.0.1/']);
    check(bypass('127.0.0.1'), ['http://127.0.0.1:80/'], ['http://127.0.0.2/']);
    check(bypass('127.0.0.1:8080'), ['http://127.0.0.1:8080/'], ['http://127.0.0.1/']);
    check(bypass('::1'), ['http://[::1]/'], ['http://[::2]/']);
    check(bypass('[::1]'), ['http://[::1]/'], []);
    check(bypass('[::1]:8080'), ['http://[::1]:8080/'], ['http://[::1]/']);
    check(bypass('[fe80::]/10'), ['http://[fe80::1]/'], ['http://[fec0::1]/']);
    check(bypass('fe80::/10'), ['http://[febf::1]/'], []);
    check(bypass('https://10.0.0.0/8'), ['https://10.0.0.1/'], ['http://10.0.0.1/']);
  });

  test('rejects malformed entries, naming the entry', () => {
    for (const e of ['', '[::1', '[::1]x', '::1:8080:', 'example.com:99999', 'a:b:c', '10.0.0.0/99', '[example.com]', 'ftp ://x', 'exa mple']) {
      assert.throws(() => bypass(e), (err: unknown) => err instanceof ConfigError && err.key === 'bypass[0]', JSON.stringify(e));
    }
  });
});
