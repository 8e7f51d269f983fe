// `dualsocks transparent nft`: the nftables ruleset that sends this host's programs to the
// bridge's transparent port (--transparent) without any proxy setting. One table, `inet
// dualsocks`, so that --remove takes all of it away and nothing else:
// - TCP to the fake ranges (the bridge's DNS answers) is redirected to the transparent port,
//   which reads the original destination and asks the gateway for the name;
// - optionally (--dns-port) every DNS query (UDP and TCP port 53) goes to the bridge's DNS;
// - UDP to the fake ranges is rejected with an ICMP error, so QUIC gives up at once and the
//   program falls back to TCP (there is no UDP counterpart to the transparent port);
// - the bridge's own traffic is never caught: its user is excluded (meta skuid), so its
//   upstream DNS queries and its direct connections leave as they are. The uid, not a cgroup:
//   it works the same under systemd, in a container or from a shell.
import { execFileSync, spawn } from 'node:child_process';
import { ConfigError } from '../shared/errors.js';
import { formatIp, isV4, parseCidr } from '../shared/net/address.js';
import { DEFAULT_FAKE_RANGE, DEFAULT_FAKE_RANGE6 } from './local/fake/table.js';
import { helpText, parseOptions, type OptionSpec } from './options.js';

export const NFT_TABLE = 'inet dualsocks';
export const DEFAULT_TRANSPARENT_PORT = 1082;

const OPTIONS: OptionSpec[] = [
  { key: 'port', kind: 'count', arg: 'PORT', help: `the bridge's --transparent port on 127.0.0.1 and [::1] (default ${DEFAULT_TRANSPARENT_PORT})` },
  { key: 'dnsPort', kind: 'count', arg: 'PORT', help: "also send every DNS query (port 53, UDP and TCP) to the bridge's --dns-listen on this port of 127.0.0.1 and [::1]" },
  { key: 'fakeRange', kind: 'string', arg: 'CIDR', help: `the bridge's --fake-range (default ${DEFAULT_FAKE_RANGE})` },
  { key: 'fakeRange6', kind: 'string', arg: 'CIDR', help: `the bridge's --fake-range6 (default ${DEFAULT_FAKE_RANGE6})` },
  { key: 'uid', kind: 'string', arg: 'USER|UID', help: 'the user the bridge runs as, whose traffic is never redirected (default: the user running this, or the one who ran sudo)' },
  { key: 'apply', kind: 'flag', help: 'load the ruleset (nft -f -) instead of printing it; replaces an earlier one' },
  { key: 'remove', kind: 'flag', help: `delete the table ${NFT_TABLE}` },
];

export interface NftOptions {
  port: number;
  dnsPort?: number | undefined;
  /** Network form (ADDRESS/PREFIX with the host bits zero), as nft wants it. */
  range4: string;
  range6: string;
  uid: number;
}

function port(key: string, v: unknown): number {
  const n = v as number;
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new ConfigError(key, `${String(v)}: must be a port from 1 to 65535`);
  return n;
}

/** ADDRESS/PREFIX of one family with the host bits cleared; errors name `key`. */
export function networkCidr(key: string, text: string, family: 4 | 6): string {
  const c = text.includes('/') ? parseCidr(text) : null;
  if (!c || (family === 4) !== (isV4(c.ip) && !text.includes(':'))) throw new ConfigError(key, `${JSON.stringify(text)}: not an IPv${family} CIDR (ADDRESS/PREFIX)`);
  const ip = new Uint8Array(16);
  for (let i = 0, bits = c.bits; i < 16 && bits > 0; i++, bits -= 8) ip[i] = c.ip[i]! & (bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff);
  return `${formatIp(ip)}/${family === 4 ? c.bits - 96 : c.bits}`;
}

/** A uid from a number or a user name (looked up with id(1)). */
function uidOf(text: string): number {
  if (/^\d+$/.test(text)) return Number(text);
  if (!/^[a-z_][a-z0-9_.-]*\$?$/i.test(text)) throw new ConfigError('--uid', `${JSON.stringify(text)}: not a user name or uid`);
  try {
    return Number(execFileSync('id', ['-u', text], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim());
  } catch {
    throw new ConfigError('--uid', `no user ${JSON.stringify(text)} on this host`);
  }
}

function defaultUid(): number {
  const sudo = process.env.SUDO_UID;
  return sudo && /^\d+$/.test(sudo) ? Number(sudo) : (process.getuid?.() ?? 0);
}

/** The ruleset; loading it twice replaces the first (the empty table + delete idiom). */
export function nftRuleset(o: NftOptions): string {
  const own = `meta skuid ${o.uid} return`;
  const nat = [
    `# the bridge (uid ${o.uid}) is never redirected: its own connections and DNS queries leave as they are`,
    own,
    `ip daddr ${o.range4} meta l4proto tcp redirect to :${o.port}`,
    `ip6 daddr ${o.range6} meta l4proto tcp redirect to :${o.port}`,
  ];
  if (o.dnsPort !== undefined) nat.push("# every DNS query to the bridge's DNS", `meta l4proto { tcp, udp } th dport 53 redirect to :${o.dnsPort}`);
  const filter = [
    own,
    '# no UDP to fake addresses (QUIC): an ICMP error at once, so the program falls back to TCP',
    `ip daddr ${o.range4} meta l4proto udp reject with icmpx type admin-prohibited`,
    `ip6 daddr ${o.range6} meta l4proto udp reject with icmpx type admin-prohibited`,
  ];
  const chain = (name: string, head: string, rules: string[]): string => `\tchain ${name} {\n\t\t${head}\n${rules.map((r) => `\t\t${r}\n`).join('')}\t}\n`;
  return (
    `# dualsocks transparent mode: this host's TCP to the fake ranges goes to the bridge's port ${o.port}\n` +
    `table ${NFT_TABLE}\ndelete table ${NFT_TABLE}\n` +
    `table ${NFT_TABLE} {\n` +
    chain('nat_output', 'type nat hook output priority -100; policy accept;', nat) +
    '\n' +
    chain('filter_output', 'type filter hook output priority 0; policy accept;', filter) +
    '}\n'
  );
}

/** Parsed and checked options of `dualsocks transparent nft`. */
export function nftOptions(argv: string[]): NftOptions & { apply: boolean; remove: boolean } {
  const v = parseOptions(argv, OPTIONS);
  if (v.apply && v.remove) throw new ConfigError('--apply', 'give --apply or --remove, not both');
  return {
    port: v.port === undefined ? DEFAULT_TRANSPARENT_PORT : port('--port', v.port),
    dnsPort: v.dnsPort === undefined ? undefined : port('--dns-port', v.dnsPort),
    range4: networkCidr('--fake-range', (v.fakeRange as string | undefined) ?? DEFAULT_FAKE_RANGE, 4),
    range6: networkCidr('--fake-range6', (v.fakeRange6 as string | undefined) ?? DEFAULT_FAKE_RANGE6, 6),
    uid: v.uid === undefined ? defaultUid() : uidOf(v.uid as string),
    apply: v.apply === true,
    remove: v.remove === true,
  };
}

/** Runs nft with `input` on stdin; resolves with its exit code and what it printed on stderr. */
function nft(args: string[], input?: string): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn('nft', args, { stdio: [input === undefined ? 'ignore' : 'pipe', 'inherit', 'pipe'] });
    let stderr = '';
    p.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', (e) => resolve({ code: 127, stderr: `cannot run nft: ${e.message} (install nftables)` }));
    p.on('close', (code) => resolve({ code, stderr }));
    if (p.stdin) {
      // nft gone before reading: its exit code says why
      p.stdin.on('error', () => {});
      p.stdin.end(input);
    }
  });
}

const USAGE = 'Usage: dualsocks transparent nft [--port 1082] [--dns-port PORT] [--fake-range CIDR] [--fake-range6 CIDR] [--uid USER] [--apply | --remove]';

export async function transparentCommand(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv;
  if (sub !== 'nft' || rest.includes('--help')) {
    process.stdout.write(
      helpText(
        USAGE,
        `Prints (or loads, or removes) the nftables table ${NFT_TABLE} that redirects this host's TCP to the
bridge's fake addresses to its --transparent port, optionally its DNS to the bridge's --dns-listen, and
rejects UDP to the fake addresses (QUIC falls back to TCP). The bridge's own user is left alone.`,
        OPTIONS,
      ),
    );
    if (sub !== 'nft' && sub !== '--help') process.exitCode = 2;
    return;
  }
  const o = nftOptions(rest);
  if (!o.apply && !o.remove) {
    process.stdout.write(nftRuleset(o));
    return;
  }
  const r = o.remove ? await nft(['delete', 'table', ...NFT_TABLE.split(' ')]) : await nft(['-f', '-'], nftRuleset(o));
  if (o.remove && r.code === 1 && /No such file or directory/.test(r.stderr)) {
    process.stderr.write(`no table ${NFT_TABLE} to remove\n`);
    return;
  }
  if (r.code !== 0) {
    process.stderr.write(`dualsocks: nft ${o.remove ? 'delete table' : '-f -'} failed (${r.code}): ${r.stderr}`);
    process.exitCode = 1;
    return;
  }
  process.stderr.write(o.remove ? `removed table ${NFT_TABLE}\n` : `loaded table ${NFT_TABLE}: TCP to ${o.range4} and ${o.range6} -> port ${o.port}${o.dnsPort ? `, DNS -> port ${o.dnsPort}` : ''}, uid ${o.uid} excluded\n`);
}
