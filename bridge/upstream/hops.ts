// SOCKS5 hops as the operator names them: socks5://[user:pass@]host:port URLs, chains of them
// ("socks5://h1:1081,socks5://h2:1081"), and their labels for logs and status pages (passwords hidden).
import { ConfigError } from '../../shared/errors.js';
import { joinHostPort, unbracket } from '../../shared/net/address.js';

export interface Hop {
  host: string;
  port: number;
  username?: string | undefined;
  password?: string | undefined;
}

/** Parses socks5://[user:pass@]host:port (socks5h is accepted as a synonym). */
export function parseHopUrl(text: string): Hop | null {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    return null; // the caller names the option in its ConfigError

  }
  if (u.protocol !== 'socks5:' && u.protocol !== 'socks5h:') return null;
  if (!u.hostname || u.pathname.replace(/^\/$/, '') !== '' || u.search || u.hash) return null;
  const host = unbracket(u.hostname);
  const port = u.port ? Number(u.port) : 1080;
  return {
    host,
    port,
    username: u.username ? decodeURIComponent(u.username) : undefined,
    password: u.username ? decodeURIComponent(u.password) : undefined,
  };
}

export function hopLabel(h: Hop): string {
  return `gateway ${joinHostPort(h.host, h.port)}`;
}

/** Parses "socks5://u:p@h1:1081,socks5://h2:1081" (hops in order). */
export function parseGatewayUrl(text: string, key = 'gateway'): Hop[] {
  const hops = text.split(',').map((part) => {
    const hop = parseHopUrl(part.trim());
    if (!hop) throw new ConfigError(key, `"${part}" is not socks5://[user:pass@]host:port`);
    return hop;
  });
  if (hops.length === 0) throw new ConfigError(key, 'empty');
  return hops;
}

/** URL with the password hidden, for status pages and logs. */
export function redactedUrl(hops: Hop[]): string {
  return hops.map((h) => `socks5://${h.username ? `${encodeURIComponent(h.username)}:***@` : ''}${joinHostPort(h.host, h.port)}`).join(',');
}
