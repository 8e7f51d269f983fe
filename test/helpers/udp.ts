// UDP test pieces: an echo server that remembers who sent what, a SOCKS5 UDP client built on the
// `socks` package (its ASSOCIATE and UDP frame helpers), and PySocks as a real client's script.
import { createSocket, type RemoteInfo, type Socket as UdpSocket } from 'node:dgram';
import type { Socket } from 'node:net';
import { SocksClient } from 'socks';
import { canonicalHost } from '../../shared/net/address.js';
import { run } from './process.js';
import { concatBytes, encodeUdpHeader } from '../../shared/socks5/codec.js';

/** A SOCKS5 UDP datagram (RFC 1928 §7): the header for host:port (with FRAG `frag`), then `data`. */
export const socksDatagram = (host: string, port: number, data = 'hi', frag = 0): Buffer =>
  Buffer.from(concatBytes(encodeUdpHeader({ host, port, frag }), Buffer.from(data)));

export interface UdpEcho {
  socket: UdpSocket;
  host: string;
  port: number;
  /** Every datagram received, in order. */
  seen: { from: RemoteInfo; data: Buffer }[];
  /** Resolves when a datagram with this payload arrives (rejects after timeoutMs). */
  waitFor(payload: string, timeoutMs?: number): Promise<RemoteInfo>;
  close(): Promise<void>;
}

/** Echoes each datagram; a payload starting with "BIG " is answered with `bigReply` bytes instead. */
export async function startUdpEcho(host: string, opts: { bigReply?: number } = {}): Promise<UdpEcho> {
  const socket = createSocket({ type: host.includes(':') ? 'udp6' : 'udp4', ipv6Only: host.includes(':') });
  const seen: UdpEcho['seen'] = [];
  const waiters: (() => void)[] = [];
  socket.on('message', (data, from) => {
    seen.push({ from, data });
    const reply = data.subarray(0, 4).toString() === 'BIG ' ? Buffer.alloc(opts.bigReply ?? 65507, 0x42) : data;
    socket.send(reply, from.port, from.address);
    waiters.splice(0).forEach((w) => w());
  });
  await new Promise<void>((r) => socket.bind(0, host, r));
  // a failed test must not keep the file from exiting
  socket.unref();
  return {
    socket,
    host,
    port: socket.address().port,
    seen,
    waitFor(payload, timeoutMs = 5000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`echo ${host} never got ${JSON.stringify(payload)}`)), timeoutMs);
        const check = (): void => {
          const hit = seen.find((s) => s.data.toString() === payload);
          if (hit) {
            clearTimeout(timer);
            resolve(hit.from);
          } else waiters.push(check);
        };
        check();
      });
    },
    close: () => new Promise((r) => socket.close(() => r())),
  };
}

export interface Association {
  control: Socket;
  relay: { host: string; port: number };
  udp: UdpSocket;
  /** Sends `data` to host:port through the relay, with an optional FRAG number. */
  send(host: string, port: number, data: Buffer | string, frag?: number): void;
  /** The next datagram from the relay, parsed (rejects after timeoutMs). */
  receive(timeoutMs?: number): Promise<{ host: string; port: number; data: Buffer }>;
  close(): void;
}

export async function udpBind(host: string, port = 0): Promise<UdpSocket> {
  const s = createSocket({ type: host.includes(':') ? 'udp6' : 'udp4', ipv6Only: host.includes(':') });
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.bind(port, host, () => {
      s.off('error', reject);
      resolve();
    });
  });
  s.unref();
  return s;
}

const open = new Set<Association>();

/** Closes associations a failed test left open, so the test file can exit. */
export function closeAssociations(): void {
  for (const a of open) a.close();
}

/** UDP ASSOCIATE with the `socks` package; `announce` says whether DST.PORT names our port. */
export async function associate(proxy: { host: string; port: number }, opts: { announce?: boolean; localHost?: string } = {}): Promise<Association> {
  const localHost = opts.localHost ?? (proxy.host.includes(':') ? '::1' : '127.0.0.1');
  const udp = await udpBind(localHost);
  // createConnection() takes CONNECT only; ASSOCIATE goes through the client's event API
  const client = new SocksClient({
    proxy: { host: proxy.host, port: proxy.port, type: 5 },
    command: 'associate',
    destination: { host: proxy.host.includes(':') ? '::' : '0.0.0.0', port: opts.announce === false ? 0 : udp.address().port },
    timeout: 5000,
  });
  const { socket: control, remoteHost } = await new Promise<{ socket: Socket; remoteHost?: { host: string; port: number } }>((resolve, reject) => {
    client.once('established', resolve);
    client.once('error', reject);
    client.connect();
  });
  const relay = { host: canonicalHost(remoteHost!.host), port: remoteHost!.port };
  const inbox: Buffer[] = [];
  const waiters: (() => void)[] = [];
  udp.on('message', (m) => {
    inbox.push(m);
    waiters.splice(0).forEach((w) => w());
  });
  const association: Association = {
    control,
    relay,
    udp,
    send(host, port, data, frag = 0) {
      const frame = SocksClient.createUDPFrame({ frameNumber: frag, remoteHost: { host, port }, data: Buffer.from(data) });
      udp.send(frame, relay.port, relay.host);
    },
    receive(timeoutMs = 5000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no datagram from the relay')), timeoutMs);
        const check = (): void => {
          const m = inbox.shift();
          if (!m) return void waiters.push(check);
          clearTimeout(timer);
          const f = SocksClient.parseUDPFrame(m);
          resolve({ host: canonicalHost(f.remoteHost.host), port: f.remoteHost.port, data: f.data });
        };
        check();
      });
    },
    close() {
      open.delete(association);
      control.destroy();
      try {
        udp.close();
      } catch {
        /* closed by the test */
      }
    },
  };
  open.add(association);
  return association;
}

/**
 * PySocks (Debian python3-socks, so /usr/bin/python3) sends one datagram per message through a
 * SOCKS5 UDP ASSOCIATE, names unresolved (rdns), and prints each answer as JSON.
 */
export const PYSOCKS_UDP = `
import json, socket, socks, sys
proxy_host, proxy_port, host, port = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
s.set_proxy(socks.SOCKS5, proxy_host, proxy_port, rdns=True)
s.settimeout(10)
for msg in sys.argv[5:]:
    s.sendto(msg.encode(), (host, port))
    data, addr = s.recvfrom(65535)
    print(json.dumps({"data": data.decode(), "from": list(addr)}), flush=True)
s.close()
`;

/** One answer PYSOCKS_UDP printed: the payload, and the sender the relay's header named. */
export type PySocksAnswer = { data: string; from: [string, number] };

/** PYSOCKS_UDP through `proxy` to host:port, a datagram per message: how it exited, and the answers it printed. */
export async function pysocksUdp(proxy: { host: string; port: number }, host: string, port: number, messages: string[]): Promise<{ code: number | null; stderr: string; lines: PySocksAnswer[] }> {
  const r = await run('/usr/bin/python3', ['-c', PYSOCKS_UDP, proxy.host, String(proxy.port), host, String(port), ...messages], { timeoutMs: 20000 });
  const lines = r.stdout.toString().split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as PySocksAnswer);
  return { code: r.code, stderr: r.stderr, lines };
}
