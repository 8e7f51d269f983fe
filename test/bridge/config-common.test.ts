// Config helpers the gateway and the bridge share.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { ConfigError } from '../../shared/errors.js';
import { parseIp } from '../../shared/net/address.js';
import { cidrs, isLoopbackListen, listenAddresses, readConfigFile } from '../../bridge/config-common.js';

test('listen addresses: IP literals and localhost; names and missing brackets are refused', () => {
  assert.deepEqual(listenAddresses('listen', ['localhost:1080', '[::1]:1081']), [
    { host: '127.0.0.1', port: 1080 },
    { host: '::1', port: 1081 },
  ]);
  assert.throws(() => listenAddresses('listen', ['gw.example:1080']), ConfigError);
  assert.throws(() => listenAddresses('listen', ['::1:1080']), ConfigError);
  assert.equal(isLoopbackListen({ host: '::1', port: 1 }), true);
  assert.equal(isLoopbackListen({ host: '192.0.2.1', port: 1 }), false);
});

test('CIDR sets; a bad entry is a ConfigError naming the option', () => {
  assert.equal(cidrs('clients', ['192.0.2.0/24']).has(parseIp('192.0.2.7')!), true);
  assert.throws(() => cidrs('clients', ['192.0.2.0/33']), (e: unknown) => e instanceof ConfigError && /clients/.test(e.message));
});

test('readConfigFile: the text, or a ConfigError naming the option and the path', () => {
  const dir = mkdtempSync(join(tmpdir(), 'dualsocks-config-'));
  const file = join(dir, 'rules.json');
  writeFileSync(file, '{}');
  assert.equal(readConfigFile('rules', file), '{}');
  const missing = join(dir, 'missing.json');
  assert.throws(() => readConfigFile('rules', missing), (e: unknown) => e instanceof ConfigError && e.message.includes('rules') && e.message.includes(missing));
});
