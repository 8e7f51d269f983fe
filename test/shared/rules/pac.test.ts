// The key property of the rules model: the generated PAC answers every URL as decide() does, in a
// real PAC engine (pac-resolver on QuickJS) and in a bare vm whose DNS helpers throw.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import vm from 'node:vm';
import { createPacResolver, sandbox as pacSandbox } from 'pac-resolver';
import { QuickJS } from 'quickjs-wasi';
import { parseIp } from '../../../shared/net/address.js';
import { DEFAULT_SETTINGS, decide, pacResult, parseSettings, toPac, type Settings } from '../../../shared/rules/index.js';

const URLS = [
  // names
  'http://example.com/',
  'https://www.example.com/path?q=1',
  'http://a.b.example.com:8080/',
  'http://example.com.evil.net/',
  'http://notexample.com/',
  'http://example.community/',
  'http://EXAMPLE.COM/',
  'http://WWW.Example.Com./',
  'http://example.com./',
  'https://example.org/',
  'https://www.example.org:8443/',
  'http://api.example.com:8080/',
  'https://api.example.com:8080/',
  'http://api.example.com:8081/',
  'ws://chat.example.net/',
  'wss://chat.example.net/',
  'ftp://files.example.net/',
  'http://example.net/',
  'http://bücher.de/',
  'http://10.1.2.3.nip.io/',
  'http://www.example.co.uk/',
  'http://user:pw@www.example.com:81/',
  // plain names and localhost
  'http://intranet/',
  'http://localhost:3000/',
  'http://localhost./',
  'http://app.localhost/',
  'http://printer.lan/',
  'http://lan/',
  'https://router.home.arpa/',
  // IPv4 literals
  'http://93.184.216.34/',
  'http://93.184.217.1:8443/',
  'https://8.8.8.8./',
  'http://10.1.2.3/',
  'http://10.1.2.3:8080/',
  'http://172.16.0.1/',
  'http://172.32.0.1/',
  'http://192.168.1.1/',
  'http://127.0.0.1:3000/',
  'http://127.255.255.254/',
  'http://169.254.169.254/',
  'http://100.64.0.1/',
  'http://0x7f.1/',
  // IPv6 literals
  'http://[2001:db8::1]/',
  'https://[2001:DB8::1]:8443/',
  'http://[2001:db9::1]/',
  'http://[::1]:8080/',
  'http://[::1]/',
  'http://[fe80::1]/',
  'http://[fd00::5]/',
  'http://[::ffff:127.0.0.1]/',
  'http://[::ffff:8.8.8.8]/',
  'http://[64:ff9b::808:808]/',
  'http://[2606:4700::1111]/',
  'https://[2001:db8:0:0:1:0:0:1]/',
];

const SETTINGS: Record<string, Settings> = {
  defaults: DEFAULT_SETTINGS,
  listed: parseSettings({
    mode: 'listed',
    rules: [
      '*.example.com',
      { type: 'exact', pattern: 'example.org' },
      '2001:db8::/32',
      '93.184.216.0/24',
      '**.example.net',
      { pattern: 'api.example.com', port: 8080, scheme: 'http' },
      { type: 'exact', pattern: '::ffff:8.8.8.8' },
    ],
  }),
  except: parseSettings({
    mode: 'except',
    rules: ['*.example.com', '10.0.0.0/8', { pattern: '*', port: 8443 }, '[::1]'],
    bypass: [],
    proxy: { host: 'bridge.example', port: 3128 },
  }),
  chromeBypass: parseSettings({
    mode: 'all',
    bypass: [
      '<local>',
      '*.lan',
      '.example.net',
      'http://*.example.org',
      '[::1]:8080',
      '127.0.0.1',
      '192.168.0.0/16',
      'example.com:8080',
      '[2001:db8::]/32',
      'https://*:8443',
      '?.b.example.com',
      '::ffff:0:0/96',
    ],
  }),
  ipv6Proxy: parseSettings({
    mode: 'listed',
    rules: ['*', '*.home.arpa'],
    bypass: ['*.localhost', '::1/128', '127.0.0.0/8'],
    proxy: { host: '::1', port: 1081 },
  }),
  globs: parseSettings({
    mode: 'listed',
    rules: ['www.*.com', 'exam?le.com', '*.example.*', '10.*', 'xn--bcher-kva.de'],
    bypass: [],
  }),
  nothing: parseSettings({ mode: 'listed', rules: [], bypass: [] }),
};

/** What a browser passes to FindProxyForURL: Chrome strips https URLs to the origin and gives IPv6 hosts without brackets. */
function browserArgs(url: string): { url: string; hosts: string[] } {
  const u = new URL(url);
  const pacUrl = u.protocol === 'https:' ? `${u.origin}/` : u.href;
  const bare = u.hostname.replace(/^\[(.*)\]$/, '$1');
  const hosts = [bare, u.hostname, bare.toUpperCase()];
  return { url: pacUrl, hosts: [...new Set(hosts)] };
}

const FORBIDDEN = ['dnsResolve', 'dnsResolveEx', 'isInNet', 'isInNetEx', 'myIpAddress', 'myIpAddressEx', 'isResolvable', 'isResolvableEx'];

/** A context with the standard PAC helpers, where every one that could resolve a name throws. */
function strictPacContext(): vm.Context & { FindProxyForURL?: (url: string, host: string) => string; __dsIp?: (t: string) => number[] | null } {
  const ctx: Record<string, unknown> = {
    isPlainHostName: pacSandbox.isPlainHostName,
    dnsDomainIs: pacSandbox.dnsDomainIs,
    localHostOrDomainIs: pacSandbox.localHostOrDomainIs,
    dnsDomainLevels: pacSandbox.dnsDomainLevels,
    shExpMatch: pacSandbox.shExpMatch,
    weekdayRange: pacSandbox.weekdayRange,
    dateRange: pacSandbox.dateRange,
    timeRange: pacSandbox.timeRange,
    alert: () => {},
  };
  for (const name of FORBIDDEN) {
    ctx[name] = () => {
      throw new Error(`PAC called ${name}()`);
    };
  }
  return vm.createContext(ctx);
}

describe('PAC text', () => {
  for (const [name, s] of Object.entries(SETTINGS)) {
    test(`${name}: only SOCKS5/PROXY/DIRECT, no DNS helpers`, () => {
      const pac = toPac(s);
      assert.match(pac, /function FindProxyForURL\(url, host\)/);
      assert.ok(!/SOCKS /.test(pac) && !/SOCKS4/.test(pac), 'no SOCKS or SOCKS4 token');
      for (const f of FORBIDDEN) assert.ok(!pac.includes(f), `PAC mentions ${f}`);
      for (const ret of pac.matchAll(/return ("[^"]*")/g)) {
        const value = JSON.parse(ret[1]!) as string;
        assert.ok(value === 'DIRECT' || /^SOCKS5 \S+; PROXY \S+$/.test(value), `unexpected PAC result ${value}`);
      }
    });
  }

  test('the proxy address comes from the caller; IPv6 is bracketed', () => {
    assert.match(toPac(DEFAULT_SETTINGS, { proxyHost: '::1', proxyPort: 1090 }), /"SOCKS5 \[::1\]:1090; PROXY \[::1\]:1090"/);
    assert.match(toPac(DEFAULT_SETTINGS, { proxyHost: '[2001:db8::2]' }), /"SOCKS5 \[2001:db8::2\]:1080; PROXY \[2001:db8::2\]:1080"/);
    assert.match(toPac(DEFAULT_SETTINGS, { proxyHost: 'gw.example' }), /"SOCKS5 gw.example:1080; PROXY gw.example:1080"/);
    assert.match(toPac(DEFAULT_SETTINGS), /"SOCKS5 127.0.0.1:1080; PROXY 127.0.0.1:1080"/);
  });

  test('user text in comments cannot break out of the comment line', () => {
    const s: Settings = { ...DEFAULT_SETTINGS, bypass: ['\u2028*.lan\u2029'] };
    const pac = toPac(s);
    assert.ok(!/[\u2028\u2029]/.test(pac));
    assert.doesNotThrow(() => new vm.Script(pac));
  });
});

describe('PAC agrees with decide()', () => {
  let qjs: QuickJS;
  before(async () => {
    qjs = await QuickJS.create();
  });

  for (const [name, s] of Object.entries(SETTINGS)) {
    test(`${name}: vm with throwing DNS helpers`, () => {
      const ctx = strictPacContext();
      vm.runInContext(toPac(s), ctx);
      for (const url of URLS) {
        const want = pacResult(decide(s, url));
        const args = browserArgs(url);
        for (const host of args.hosts) {
          assert.equal(ctx.FindProxyForURL!(args.url, host), want, `${url} (host ${host})`);
        }
      }
    });

    test(`${name}: pac-resolver (QuickJS)`, async () => {
      const findProxy = createPacResolver(qjs, toPac(s));
      for (const url of URLS) {
        const want = pacResult(decide(s, url));
        const args = browserArgs(url);
        for (const host of args.hosts) {
          assert.equal(await findProxy(args.url, host), want, `${url} (host ${host})`);
        }
      }
    });
  }

  test('the answers differ across settings (the table is not trivially DIRECT)', () => {
    for (const [name, s] of Object.entries(SETTINGS)) {
      const kinds = new Set(URLS.map((u) => decide(s, u).type));
      if (name === 'nothing') assert.deepEqual([...kinds], ['DIRECT']);
      else assert.deepEqual([...kinds].sort(), ['DIRECT', 'PROXY'], name);
    }
  });
});

describe('the PAC IP parser is address.ts parseIp', () => {
  const ctx = strictPacContext();
  vm.runInContext(toPac(DEFAULT_SETTINGS), ctx);
  const pacIp = (t: string): number[] | null => {
    const r = ctx.__dsIp!(t);
    return r === null ? null : Array.from(r);
  };
  const tsIp = (t: string): number[] | null => {
    const r = parseIp(t);
    return r === null ? null : Array.from(r);
  };

  test('on hand-picked literals', () => {
    const cases = [
      '1.2.3.4', '0.0.0.0', '255.255.255.255', '256.1.1.1', '01.2.3.4', '1.2.3', '1.2.3.4.5', '', '.', 'a.b.c.d',
      '::', '::1', '1::', '2001:db8::1', '2001:DB8::1', '[::1]', '[1.2.3.4]', '1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8:9',
      '1:2:3:4:5:6:7::', '::2:3:4:5:6:7:8', '1::2::3', ':::', '::ffff:1.2.3.4', '::1.2.3.4', '1:2:3:4:5:6:1.2.3.4',
      '1:2:3:4:5:6:7:1.2.3.4', '::ffff:1.2.3', '12345::', 'g::1', 'fe80::1%eth0', '1.2.3.4::', '::1.2.3.4:5',
      '0:0:0:0:0:ffff:7f00:1', '2001:db8:0:0:1:0:0:1',
    ];
    for (const c of cases) assert.deepEqual(pacIp(c), tsIp(c), JSON.stringify(c));
  });

  test('on random strings and random addresses', () => {
    let seed = 0x2545f491;
    const rand = (n: number): number => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    const alphabet = '0123456789abcdefABCDEF:::...[]%g';
    for (let i = 0; i < 20000; i++) {
      let s = '';
      const len = rand(24);
      for (let j = 0; j < len; j++) s += alphabet[rand(alphabet.length)];
      assert.deepEqual(pacIp(s), tsIp(s), JSON.stringify(s));
    }
    for (let i = 0; i < 5000; i++) {
      const words = Array.from({ length: 8 }, () => (rand(3) === 0 ? 0 : rand(0x10000)).toString(16));
      let s = words.join(':');
      if (rand(2)) s = s.replace(/(^|:)0(:0)+(:|$)/, '::');
      if (rand(4) === 0) s = `${words.slice(0, 6).join(':')}:${rand(256)}.${rand(256)}.${rand(256)}.${rand(256)}`;
      assert.deepEqual(pacIp(s), tsIp(s), s);
      assert.ok(tsIp(s), `expected ${s} to parse`);
    }
  });
});
