// `dualsocks transparent nft`: the printed ruleset, its options, and (as root) that nft accepts
// it, loads it twice (the second replaces the first) and removes it, in a namespace of its own.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError } from '../../shared/errors.js';
import { nftOptions, nftRuleset } from '../../bridge/transparent-nft.js';
import { haveCommand, requireCapability, rootNetns } from '../helpers/env.js';
import { CLI, run } from '../helpers/process.js';

test('the default ruleset: TCP to both fake ranges to port 1082, UDP to them rejected, the bridge uid left alone, no DNS', () => {
  assert.equal(
    nftRuleset(nftOptions(['--uid', '1234'])),
    `# dualsocks transparent mode: this host's TCP to the fake ranges goes to the bridge's port 1082
table inet dualsocks
delete table inet dualsocks
table inet dualsocks {
\tchain nat_output {
\t\ttype nat hook output priority -100; policy accept;
\t\t# the bridge (uid 1234) is never redirected: its own connections and DNS queries leave as they are
\t\tmeta skuid 1234 return
\t\tip daddr 198.18.0.0/15 meta l4proto tcp redirect to :1082
\t\tip6 daddr 2001:2::/48 meta l4proto tcp redirect to :1082
\t}

\tchain filter_output {
\t\ttype filter hook output priority 0; policy accept;
\t\tmeta skuid 1234 return
\t\t# no UDP to fake addresses (QUIC): an ICMP error at once, so the program falls back to TCP
\t\tip daddr 198.18.0.0/15 meta l4proto udp reject with icmpx type admin-prohibited
\t\tip6 daddr 2001:2::/48 meta l4proto udp reject with icmpx type admin-prohibited
\t}
}
`,
  );
});

test('--dns-port, --port and the ranges (host bits cleared, as nft wants them)', () => {
  const text = nftRuleset(nftOptions(['--port', '4000', '--dns-port', '5300', '--fake-range', '10.1.2.3/24', '--fake-range6', 'fd00::1/64', '--uid', '0']));
  assert.match(text, /^\t\tip daddr 10\.1\.2\.0\/24 meta l4proto tcp redirect to :4000$/m);
  assert.match(text, /^\t\tip6 daddr fd00::\/64 meta l4proto tcp redirect to :4000$/m);
  assert.match(text, /^\t\tmeta l4proto \{ tcp, udp \} th dport 53 redirect to :5300$/m);
  assert.match(text, /^\t\tip daddr 10\.1\.2\.0\/24 meta l4proto udp reject with icmpx type admin-prohibited$/m);
  assert.match(text, /^\t\tmeta skuid 0 return$/m);
  // DNS redirect comes after the bridge's exclusion: its own upstream queries are never caught
  assert.ok(text.indexOf('meta skuid 0 return') < text.indexOf('th dport 53'));
});

test('bad options name their flag', () => {
  const bad: [string[], RegExp][] = [
    [['--port', '0'], /--port/],
    [['--port', '70000'], /--port/],
    [['--dns-port', 'x'], /--dns-port/],
    [['--fake-range', '2001:db8::/64'], /--fake-range: .*IPv4/],
    [['--fake-range6', '198.18.0.0/15'], /--fake-range6: .*IPv6/],
    [['--fake-range', '198.18.0.0'], /--fake-range/],
    [['--uid', 'no such user here'], /--uid/],
    [['--apply', '--remove'], /--apply/],
  ];
  for (const [argv, re] of bad) assert.throws(() => nftOptions(argv), (e: unknown) => e instanceof ConfigError && re.test(e.message), argv.join(' '));
  assert.equal(nftOptions(['--uid', 'root']).uid, 0);
});

const live = rootNetns() || requireCapability('nft', haveCommand('nft', ['--version']), 'install nftables');

test('nft accepts the ruleset; --apply loads it (twice: replaced), --remove deletes it', { skip: live }, async () => {
  const ns = `dsnft${process.pid % 100000}`;
  await run('ip', ['netns', 'del', ns]);
  assert.equal((await run('ip', ['netns', 'add', ns])).code, 0);
  try {
    for (const args of [[], ['--dns-port', '53', '--fake-range', '10.1.2.3/24', '--fake-range6', 'fd00::/64']]) {
      const printed = await run(process.execPath, [CLI, 'transparent', 'nft', ...args]);
      assert.equal(printed.code, 0, printed.stderr);
      const check = await run('nft', ['-c', '-f', '-'], { netns: ns, input: printed.stdout });
      assert.equal(check.code, 0, `${check.stderr}\n${printed.stdout.toString()}`);
    }
    for (let i = 0; i < 2; i++) {
      const r = await run(process.execPath, [CLI, 'transparent', 'nft', '--dns-port', '5300', '--uid', '0', '--apply'], { netns: ns });
      assert.equal(r.code, 0, r.stderr);
    }
    const listed = (await run('nft', ['list', 'table', 'inet', 'dualsocks'], { netns: ns })).stdout.toString();
    assert.equal(listed.match(/redirect to :1082/g)?.length, 2, listed);
    assert.match(listed, /th dport 53 redirect to :5300/, listed);
    const rm = await run(process.execPath, [CLI, 'transparent', 'nft', '--remove'], { netns: ns });
    assert.equal(rm.code, 0, rm.stderr);
    assert.equal((await run('nft', ['list', 'tables'], { netns: ns })).stdout.toString(), '');
    const again = await run(process.execPath, [CLI, 'transparent', 'nft', '--remove'], { netns: ns });
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr, /no table inet dualsocks/);
  } finally {
    await run('ip', ['netns', 'del', ns]);
  }
});

test('a subcommand other than nft: usage, exit 2', async () => {
  const r = await run(process.execPath, [CLI, 'transparent', 'iptables']);
  assert.equal(r.code, 2);
  assert.match(r.stdout.toString(), /dualsocks transparent nft/);
});
