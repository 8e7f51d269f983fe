// Direct dialing with Happy Eyeballs (RFC 8305 §4–5): addresses interleaved by family starting
// with the preferred one, a new attempt every 250 ms or as soon as the previous one fails, first
// connection wins. Policy is checked on each address before it is tried.
import { connect, type Socket } from 'node:net';
import { RequestError, type ErrorCode } from '../../shared/errors.js';
import { familyOf, formatIp, joinHostPort, type Ip, type HostPort } from '../../shared/net/address.js';

export const ATTEMPT_DELAY_MS = 250;

export interface DialResult {
  socket: Socket;
  address: Ip;
}

export interface DialOptions {
  prefer: 'ipv6' | 'ipv4';
  timeoutMs: number;
  /** Returns a reason to skip the address, or null to try it. */
  deny?: (ip: Ip) => string | null;
  signal?: AbortSignal;
}

/** RFC 8305 §4: alternate families, the preferred first. */
export function interleave(ips: Ip[], prefer: 'ipv6' | 'ipv4'): Ip[] {
  const first = ips.filter((ip) => familyOf(ip) === (prefer === 'ipv6' ? 6 : 4));
  const second = ips.filter((ip) => familyOf(ip) !== (prefer === 'ipv6' ? 6 : 4));
  const out: Ip[] = [];
  for (let i = 0; i < Math.max(first.length, second.length); i++) {
    if (i < first.length) out.push(first[i]!);
    if (i < second.length) out.push(second[i]!);
  }
  return out;
}

const ERRNO_CODES: Record<string, ErrorCode> = {
  ECONNREFUSED: 'ERR_CONNECTION_REFUSED',
  ENETUNREACH: 'ERR_NETWORK_UNREACHABLE',
  EADDRNOTAVAIL: 'ERR_NETWORK_UNREACHABLE',
  EAFNOSUPPORT: 'ERR_NETWORK_UNREACHABLE',
  EHOSTUNREACH: 'ERR_HOST_UNREACHABLE',
  EHOSTDOWN: 'ERR_HOST_UNREACHABLE',
  ETIMEDOUT: 'ERR_CONNECT_TIMEOUT',
  ECONNRESET: 'ERR_CONNECTION_REFUSED',
};

// When every address failed, the most telling failure is reported.
const RANK: ErrorCode[] = [
  'ERR_CONNECTION_REFUSED',
  'ERR_CONNECT_TIMEOUT',
  'ERR_HOST_UNREACHABLE',
  'ERR_NETWORK_UNREACHABLE',
  'ERR_CONNECT_FAILED',
  'ERR_POLICY_DESTINATION',
];

export function errnoToError(e: NodeJS.ErrnoException, target: string): RequestError {
  return new RequestError(ERRNO_CODES[e.code ?? ''] ?? 'ERR_CONNECT_FAILED', `${target} (${e.code ?? e.message})`, { cause: e });
}

export function dialDirect(ips: Ip[], port: number, opts: DialOptions): Promise<DialResult> {
  return new Promise((resolve, reject) => {
    const errors: RequestError[] = [];
    const queue: Ip[] = [];
    for (const ip of interleave(ips, opts.prefer)) {
      const why = opts.deny?.(ip);
      if (why) errors.push(new RequestError('ERR_POLICY_DESTINATION', `${formatIp(ip)}: ${why}`));
      else queue.push(ip);
    }
    const pending = new Set<Socket>();
    let done = false;
    let stagger: NodeJS.Timeout | undefined;
    const finish = (): void => {
      done = true;
      clearTimeout(stagger);
      clearTimeout(deadline);
      opts.signal?.removeEventListener('abort', onAbort);
      for (const s of pending) s.destroy();
      pending.clear();
    };
    const failAll = (): void => {
      const best = RANK.map((code) => errors.find((e) => e.code === code)).find(Boolean) ?? errors[0];
      finish();
      reject(best ?? new RequestError('ERR_NO_ADDRESS'));
    };
    const next = (): void => {
      clearTimeout(stagger);
      const ip = queue.shift();
      if (ip === undefined) {
        if (pending.size === 0) failAll();
        return;
      }
      const text = formatIp(ip);
      const sock = connect({ host: text, port, family: familyOf(ip), noDelay: true, allowHalfOpen: true });
      pending.add(sock);
      sock.once('connect', () => {
        if (done) return;
        pending.delete(sock);
        sock.removeAllListeners('error');
        finish();
        resolve({ socket: sock, address: ip });
      });
      sock.once('error', (e: NodeJS.ErrnoException) => {
        pending.delete(sock);
        sock.destroy();
        if (done) return;
        errors.push(errnoToError(e, text));
        next();
      });
      if (queue.length > 0) stagger = setTimeout(next, ATTEMPT_DELAY_MS);
    };
    const deadline = setTimeout(() => {
      errors.push(new RequestError('ERR_CONNECT_TIMEOUT', `no answer within ${opts.timeoutMs} ms`));
      failAll();
    }, opts.timeoutMs);
    const onAbort = (): void => {
      finish();
      reject(new RequestError('ERR_CONNECT_FAILED', 'client went away'));
    };
    opts.signal?.addEventListener('abort', onAbort);
    next();
  });
}

/** One plain TCP connection with a deadline (a gateway hop, or an IP literal the bridge may reach itself). */
export function connectTcp(to: HostPort, timeoutMs: number): Promise<Socket> {
  const label = joinHostPort(to.host, to.port);
  return new Promise((resolve, reject) => {
    const s = connect({ host: to.host, port: to.port, noDelay: true, allowHalfOpen: true });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new RequestError('ERR_CONNECT_TIMEOUT', label));
    }, timeoutMs);
    s.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(errnoToError(e, label));
    });
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      s.pause();
      resolve(s);
    });
  });
}
