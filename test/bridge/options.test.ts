// Durations, as an operator types them: every one becomes a Node timer, so a value the timer
// cannot hold (past 2^31-1 ms it fires at once) or a 0 that would refuse everyone is a
// configuration error naming the flag (or the --config key), exit 2, before anything listens.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { GATEWAY_OPTIONS, gatewayConfig } from '../../bridge/gateway/config.js';
import { BRIDGE_LISTEN_OPTIONS, BRIDGE_OPTIONS, bridgeConfig } from '../../bridge/local/config.js';
import { flagOf, parseOptions, type OptionSpec } from '../../bridge/options.js';
import { CLI, run } from '../helpers/process.js';

const dir = mkdtempSync(join(tmpdir(), 'dualsocks-options-'));
const GW = ['--gateway', 'socks5://127.0.0.1:1'];

const durations = (specs: OptionSpec[]): string[] => specs.filter((o) => o.kind === 'seconds').map((o) => o.key);
/** Where --help documents what 0 means ("0 for never", "0 for no cache"). */
const ZERO_MEANS = ['dnsCache', 'idleTimeout'];

const COMMANDS: { cmd: string; base: string[]; durations: string[] }[] = [
  { cmd: 'gateway', base: ['--listen', '127.0.0.1:0'], durations: durations(GATEWAY_OPTIONS) },
  { cmd: 'bridge', base: ['--listen', '127.0.0.1:0', ...GW], durations: durations(BRIDGE_OPTIONS) },
  // start takes the bridge's and a few of the gateway's, no duration among those
  { cmd: 'start', base: ['--listen', '127.0.0.1:0'], durations: durations(BRIDGE_LISTEN_OPTIONS) },
];

const BAD = ['2200000', '2147484', '1e12'];

describe('duration options', () => {
  test('in process: past the timer limit and a 0 that means nothing are refused naming the flag; documented zeros stay', () => {
    for (const v of BAD) {
      assert.throws(() => gatewayConfig(['--handshake-timeout', v]), (e: Error) => e.message.includes('--handshake-timeout: must be at most 2147483 seconds'), v);
    }
    // the largest value a timer holds is still accepted
    assert.equal(gatewayConfig(['--idle-timeout', '2147483.647']).idleTimeoutMs, 2 ** 31 - 1);
    assert.throws(() => gatewayConfig(['--handshake-timeout', '0']), /--handshake-timeout: must be more than 0/);
    assert.throws(() => gatewayConfig(['--connect-timeout', '0.0001']), /--connect-timeout: must be at least 0\.001/);
    assert.equal(gatewayConfig(['--idle-timeout', '0']).idleTimeoutMs, 0);
    assert.equal(gatewayConfig(['--dns-cache', '0']).dnsCacheSeconds, 0);
    assert.equal(gatewayConfig(['--handshake-timeout', '0.5']).handshakeTimeoutMs, 500);
    assert.equal(bridgeConfig(parseOptions([...GW, '--idle-timeout', '0'], BRIDGE_OPTIONS)).idleTimeoutMs, 0);
    assert.throws(() => bridgeConfig(parseOptions([...GW, '--health-interval', '0'], BRIDGE_OPTIONS)), /--health-interval: must be more than 0/);
  });

  test('the option tables say which durations take 0, as --help documents', () => {
    for (const o of [...GATEWAY_OPTIONS, ...BRIDGE_OPTIONS].filter((x) => x.kind === 'seconds')) {
      assert.equal(o.zero !== undefined, /\b0 for\b/.test(o.help), o.key);
      assert.equal(o.zero !== undefined, ZERO_MEANS.includes(o.key), o.key);
    }
  });

  for (const { cmd, base, durations } of COMMANDS) {
    test(`dualsocks ${cmd}: each bad duration exits 2 naming the flag, or the key in --config`, async () => {
      const cases: { args: string[]; names: string }[] = [];
      for (const key of durations) {
        const flag = flagOf(key);
        const values = ZERO_MEANS.includes(key) ? ['2200000'] : ['2200000', '0'];
        for (const v of values) {
          cases.push({ args: [...base, flag, v], names: flag });
          const file = join(dir, `${cmd}-${key}-${v}.json`);
          writeFileSync(file, JSON.stringify({ [key]: Number(v) }));
          cases.push({ args: [...base, '--config', file], names: key });
        }
      }
      // a config error exits before listening, so these are short; a few at a time
      for (let i = 0; i < cases.length; i += 6) {
        await Promise.all(
          cases.slice(i, i + 6).map(async ({ args, names }) => {
            const r = await run(process.execPath, [CLI, cmd, ...args], { timeoutMs: 20000 });
            assert.equal(r.code, 2, `${cmd} ${args.join(' ')}: exit ${r.code}, stderr: ${r.stderr}`);
            assert.ok(r.stderr.startsWith('dualsocks: ') && r.stderr.includes(` ${names}: must be`), `${cmd} ${args.join(' ')}: ${r.stderr}`);
            assert.doesNotMatch(r.stderr, /TimeoutOverflowWarning/);
          }),
        );
      }
    });
  }
});
