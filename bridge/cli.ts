#!/usr/bin/env node
// dualsocks command line: `gateway`, `passwd`. Configuration errors name the flag or key and exit 2.
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { ConfigError } from '../shared/errors.js';
import { joinHostPort } from '../shared/net/address.js';
import { GATEWAY_OPTIONS, gatewayConfig } from './gateway/config.js';
import { Gateway } from './gateway/server.js';
import { hashPassword } from './gateway/users.js';
import { policyCommand } from './policy.js';
import { jsonLines, say } from './log.js';
import { helpText } from './options.js';

const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

const USAGE = `dualsocks ${VERSION} — SOCKS-based IPv6/IPv4 gateway (RFC 3089)

Usage:
  dualsocks gateway [options]   dual-stack SOCKS5 gateway that resolves names for its clients
  dualsocks passwd USER         read a password on stdin, print a line for the --users file
  dualsocks COMMAND --help      options of a command
`;

async function readPassword(): Promise<string> {
  const rl = createInterface({ input: process.stdin, terminal: false });
  for await (const line of rl) {
    rl.close();
    return line;
  }
  throw new ConfigError('password', 'none given on stdin');
}

async function gateway(argv: string[]): Promise<void> {
  if (argv.includes('--help')) {
    process.stdout.write(helpText('Usage: dualsocks gateway [options]', 'Dual-stack SOCKS5 gateway: resolves names for its clients (A and AAAA, Happy Eyeballs) and relays\nbetween IPv4 and IPv6. Logs one JSON line per finished connection on stdout.', GATEWAY_OPTIONS));
    return;
  }
  const cfg = gatewayConfig(argv);
  const gw = new Gateway(cfg, jsonLines);
  const bound = await gw.listen();
  for (const b of bound) say(`dualsocks gateway ${VERSION} listening on ${joinHostPort(b.host, b.port)}${cfg.requireAuth ? ' (username/password)' : ''}`);
  const stop = (): void => {
    void gw.close().then(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

async function passwd(argv: string[]): Promise<void> {
  const user = argv[0];
  if (!user || user === '--help' || argv.length > 1) {
    process.stdout.write('Usage: dualsocks passwd USER < password\n\nPrints "USER:scrypt$…" for the gateway\'s --users file.\n');
    if (!user) process.exitCode = 2;
    return;
  }
  if (user.includes(':') || /\s/.test(user) || Buffer.byteLength(user) > 255) throw new ConfigError('USER', 'no colon or space, at most 255 bytes');
  const password = await readPassword();
  if (Buffer.byteLength(password) > 255) throw new ConfigError('password', 'at most 255 bytes (RFC 1929)');
  process.stdout.write(`${user}:${await hashPassword(password)}\n`);
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'gateway':
      return gateway(rest);
    case 'passwd':
      return passwd(rest);
    case 'policy':
      return policyCommand(rest);
    case '--version':
      process.stdout.write(`${VERSION}\n`);
      return;
    case undefined:
    case '--help':
    case 'help':
      process.stdout.write(USAGE);
      return;
    default:
      process.stderr.write(`dualsocks: unknown command "${cmd}"\n\n${USAGE}`);
      process.exitCode = 2;
  }
}

main(process.argv.slice(2)).catch((e: unknown) => {
  if (e instanceof ConfigError) {
    process.stderr.write(`dualsocks: ${e.message}\n`);
    process.exit(2);
  }
  const err = e as NodeJS.ErrnoException;
  if (err.code === 'EADDRINUSE' || err.code === 'EADDRNOTAVAIL' || err.code === 'EACCES') {
    process.stderr.write(`dualsocks: cannot listen: ${err.message}\n`);
    process.exit(1);
  }
  process.stderr.write(`dualsocks: ${err.stack ?? String(e)}\n`);
  process.exit(1);
});
