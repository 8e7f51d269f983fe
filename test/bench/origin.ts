// The benchmark's destination servers, in a process of their own so that the client, the
// servers and the gateway each have an event loop (and a core, where there are enough).
//   bulk port: the client sends OP (1 byte) and SIZE (u64 BE). OP_DOWNLOAD: the server sends
//     SIZE bytes of the pattern and closes. OP_UPLOAD: the client sends SIZE bytes, the server
//     answers with the sha256 (32 bytes, hashed on a worker thread) of what it read and closes.
//   echo port: the first chunk comes back; a later one makes the server close; a FIN is answered with a FIN.
//   ping port: the first chunk comes back, followed by a FIN.
// Run as `node origin.js --bench-origin PERIOD`; it reports its ports over IPC and exits when
// its parent goes away. Imported, it only exports the client side of this protocol.
import { fork } from 'node:child_process';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { Sha256Worker } from './hasher.js';
import { patternBytes, slices } from './pattern.js';

export const OP_DOWNLOAD = 0x44;
export const OP_UPLOAD = 0x55;
export const HEADER_LENGTH = 9;
const SEND_CHUNK = 1024 * 1024;

export function bulkHeader(op: number, size: number): Buffer {
  const b = Buffer.alloc(HEADER_LENGTH);
  b[0] = op;
  b.writeBigUInt64BE(BigInt(size), 1);
  return b;
}

export interface Origin {
  host: string;
  bulkPort: number;
  echoPort: number;
  /** Echoes the first chunk and closes. */
  pingPort: number;
  pid: number;
  stop(): Promise<void>;
}

/** Starts the origin process; its pattern repeats every `period` bytes. */
export function startOrigin(period: number, timeoutMs = 30000): Promise<Origin> {
  const proc = fork(fileURLToPath(import.meta.url), ['--bench-origin', String(period)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM');
      await exited;
    }
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      void stop();
      reject(new Error('bench origin did not start'));
    }, timeoutMs);
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`bench origin exited (${code ?? signal}) before it listened`));
    });
    proc.once('message', (m: { bulkPort: number; echoPort: number; pingPort: number }) => {
      clearTimeout(timer);
      resolve({ host: '127.0.0.1', bulkPort: m.bulkPort, echoPort: m.echoPort, pingPort: m.pingPort, pid: proc.pid!, stop });
    });
  });
}

function sendStream(s: Socket, pattern: Buffer, size: number): void {
  const it = slices(pattern, size, SEND_CHUNK);
  const pump = (): void => {
    for (let r = it.next(); !r.done; r = it.next()) {
      if (!s.write(r.value)) {
        s.once('drain', pump);
        return;
      }
    }
    s.end();
  };
  pump();
}

// hashers for uploads, one per upload in progress (the bench runs one at a time)
const idleHashers: Sha256Worker[] = [];

function serveBulk(s: Socket, pattern: Buffer): void {
  let head = Buffer.alloc(0);
  const onData = (chunk: Buffer): void => {
    head = Buffer.concat([head, chunk]);
    if (head.length < HEADER_LENGTH) return;
    s.off('data', onData);
    const op = head[0];
    const size = Number(head.readBigUInt64BE(1));
    const rest = head.subarray(HEADER_LENGTH);
    if (op === OP_DOWNLOAD) {
      // the client sends nothing more; its FIN is read and ignored
      s.resume();
      sendStream(s, pattern, size);
    } else if (op === OP_UPLOAD) {
      // answered after SIZE bytes, not at the FIN: some relays (microsocks) do not half-close
      const hasher = idleHashers.pop() ?? new Sha256Worker();
      let got = 0;
      const take = (c: Buffer): void => {
        const n = Math.min(c.length, size - got);
        if (n <= 0) return;
        got += n;
        hasher.update(n === c.length ? c : Buffer.from(c.subarray(0, n)), s);
        if (got === size) {
          void hasher.digest().then((hex) => {
            idleHashers.push(hasher);
            s.end(Buffer.from(hex, 'hex'));
          });
        }
      };
      if (rest.length > 0) take(Buffer.from(rest));
      s.on('data', take);
      if (size === 0) take(Buffer.alloc(0));
    } else s.destroy();
  };
  s.on('data', onData);
}

function listen(onConn: (s: Socket) => void): Promise<Server> {
  const server = createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
    s.on('error', () => s.destroy());
    onConn(s);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

async function main(period: number): Promise<void> {
  const pattern = patternBytes(period);
  const bulk = await listen((s) => serveBulk(s, pattern));
  // held tunnels: the first chunk comes back, the next one asks the origin to close first
  const echo = await listen((s) => {
    let n = 0;
    s.on('data', (d: Buffer) => (n++ === 0 ? s.write(d) : s.end()));
    s.once('end', () => s.end());
  });
  // the origin closes first, so TIME_WAIT stays on listening ports: thousands of connections a
  // second from relays that bind() before connect() (Dante) would otherwise use up ephemeral ports
  const ping = await listen((s) => {
    s.once('data', (d: Buffer) => s.end(d));
    s.resume();
  });
  // the parent is the only user: when it goes (even killed), so do we
  process.once('disconnect', () => process.exit(0));
  process.once('SIGTERM', () => process.exit(0));
  process.send!({ bulkPort: (bulk.address() as AddressInfo).port, echoPort: (echo.address() as AddressInfo).port, pingPort: (ping.address() as AddressInfo).port });
}

// `node --test dist/test/` loads every file under test/, so only the flag (and IPC) starts servers
if (process.argv[2] === '--bench-origin' && process.send) {
  main(Number(process.argv[3])).catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
}
