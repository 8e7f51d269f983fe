// Config helpers the gateway and the bridge share: listen addresses, CIDR sets, files to read.
// Errors are ConfigErrors naming the option (`key`).
import { readFileSync } from 'node:fs';
import { ConfigError } from '../shared/errors.js';
import { CidrSet, parseCidr, parseIp, splitHostPort, type HostPort } from '../shared/net/address.js';
import { specialClass } from '../shared/net/policy.js';

/** Listen addresses from HOST:PORT texts; errors name `key`. */
export function listenAddresses(key: string, items: string[]): HostPort[] {
  return items.map((text) => {
    const hp = splitHostPort(text);
    if (!hp) throw new ConfigError(key, `"${text}" is not HOST:PORT (put IPv6 in brackets: [::]:1081)`);
    if (!parseIp(hp.host) && hp.host !== 'localhost') throw new ConfigError(key, `"${text}": listen on an IP address`);
    return { host: hp.host === 'localhost' ? '127.0.0.1' : hp.host, port: hp.port };
  });
}

/** A CIDR set from texts; errors name `key`. */
export function cidrs(key: string, items: string[]): CidrSet {
  for (const c of items) if (!parseCidr(c)) throw new ConfigError(key, `"${c}" is not an address or CIDR`);
  return new CidrSet(items);
}

export function isLoopbackListen(hp: HostPort): boolean {
  const ip = parseIp(hp.host);
  return ip !== null && specialClass(ip) === 'loopback';
}

/** A config file's text; a file that cannot be read is a ConfigError naming `key`. */
export function readConfigFile(key: string, path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(key, `${path}: ${(e as Error).message}`);
  }
}
