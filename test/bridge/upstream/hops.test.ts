// Hop URLs as the operator writes them, and their redacted form for logs and status pages.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError } from '../../../shared/errors.js';
import { hopLabel, parseGatewayUrl, parseHopUrl, redactedUrl } from '../../../bridge/upstream/hops.js';

test('a chain of hops parses in order, with credentials and IPv6 in brackets', () => {
  const hops = parseGatewayUrl('socks5://u%40x:p%3Aw@gw1.example:1081, socks5h://[2001:db8::2]');
  assert.deepEqual(hops, [
    { host: 'gw1.example', port: 1081, username: 'u@x', password: 'p:w' },
    { host: '2001:db8::2', port: 1080, username: undefined, password: undefined },
  ]);
  assert.equal(hopLabel(hops[1]!), 'gateway [2001:db8::2]:1080');
});

test('the redacted URL hides passwords and keeps the rest', () => {
  const hops = parseGatewayUrl('socks5://alice:secret@gw1.example:1081,socks5://[2001:db8::2]:1082');
  assert.equal(redactedUrl(hops), 'socks5://alice:***@gw1.example:1081,socks5://[2001:db8::2]:1082');
});

test('what is not a socks5 URL is refused, naming the option', () => {
  assert.equal(parseHopUrl('http://gw.example:1081'), null);
  assert.equal(parseHopUrl('socks5://gw.example:1081/path'), null);
  assert.throws(() => parseGatewayUrl('socks5://gw.example,nonsense', 'upstream[0]'), (e: unknown) => e instanceof ConfigError && /upstream\[0\]/.test(e.message));
});
