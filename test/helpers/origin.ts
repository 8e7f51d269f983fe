// Origin servers for tests: an HTTP server with a page and a checksummed random blob, and raw
// TCP servers whose behaviour the tests need (echo after FIN, endless sender).
import { createHash, randomBytes } from 'node:crypto';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';

export const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

export interface Origin {
  server: HttpServer;
  port: number;
  blob: Buffer;
  blobSha256: string;
  /** Host headers seen, in order. */
  hosts: string[];
  close(): Promise<void>;
}

export async function startOrigin(host = '127.0.0.1', blobSize = 4 * 1024 * 1024, page = 'hello from origin'): Promise<Origin> {
  const blob = randomBytes(blobSize);
  const hosts: string[] = [];
  const server = createHttpServer((req, res) => {
    hosts.push(req.headers.host ?? '');
    if (req.url === '/blob.bin') {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': blob.length });
      res.end(blob);
    } else if (req.url === '/echo-headers') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(req.headers));
    } else {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(page);
    }
  });
  await new Promise<void>((r) => server.listen(0, host, r));
  return {
    server,
    port: (server.address() as AddressInfo).port,
    blob,
    blobSha256: sha256(blob),
    hosts,
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}

export async function startTcp(host: string, onConn: (s: Socket) => void): Promise<{ server: Server; port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
    onConn(s);
  });
  await new Promise<void>((r) => server.listen(0, host, r));
  return {
    server,
    port: (server.address() as AddressInfo).port,
    close: () => new Promise((r) => { for (const s of sockets) s.destroy(); server.close(() => r()); }),
  };
}

/** A TCP port that was listening on `host` and is not any more: a dial to it is refused. */
export async function closedTcpPort(host = '127.0.0.1'): Promise<number> {
  const t = await startTcp(host, () => {});
  await t.close();
  return t.port;
}

/** Reads a socket to its end. */
export function readAll(s: Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    s.on('data', (d: Buffer) => parts.push(d));
    s.once('end', () => resolve(Buffer.concat(parts)));
    s.once('error', reject);
  });
}
