// sha256 on a worker thread, so the thread that reads the socket only reads: hashing in line
// held the receiving endpoint near one full core and set the bulk rate instead of the path.
// Chunks are handed over (transferred when they own their memory), hashed in order, and the
// reader is paused while too much is waiting, so memory stays bounded.
import { Worker } from 'node:worker_threads';

const WORKER = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
let hash = createHash('sha256');
parentPort.on('message', (m) => {
  if (m === 'digest') {
    parentPort.postMessage({ digest: hash.digest('hex') });
    hash = createHash('sha256');
  } else {
    hash.update(new Uint8Array(m));
    parentPort.postMessage({ done: m.byteLength });
  }
});
`;

const HIGH = 32 * 1024 * 1024;
const LOW = 8 * 1024 * 1024;

/** Something that can stop and restart delivering chunks (a socket). */
export interface Pausable {
  pause(): unknown;
  resume(): unknown;
}

export class Sha256Worker {
  private readonly worker = new Worker(WORKER, { eval: true });
  private pending = 0;
  private paused: Pausable | null = null;
  private waiting: ((hex: string) => void) | null = null;
  private failed: Error | null = null;

  constructor() {
    this.worker.unref();
    this.worker.on('message', (m: { done?: number; digest?: string }) => {
      if (m.done !== undefined) {
        this.pending -= m.done;
        if (this.paused && this.pending < LOW) {
          this.paused.resume();
          this.paused = null;
        }
      } else if (m.digest !== undefined) {
        const w = this.waiting;
        this.waiting = null;
        w?.(m.digest);
      }
    });
    this.worker.on('error', (e) => (this.failed = e));
  }

  /** Queues `chunk`; pauses `source` while more than a few MiB wait to be hashed. */
  update(chunk: Buffer, source: Pausable): void {
    const owned = chunk.byteOffset === 0 && chunk.buffer.byteLength === chunk.length && chunk.buffer instanceof ArrayBuffer;
    const ab = owned ? (chunk.buffer as ArrayBuffer) : chunk.buffer.slice(chunk.byteOffset, chunk.byteOffset + chunk.length);
    this.pending += chunk.length;
    this.worker.postMessage(ab, [ab as ArrayBuffer]);
    if (this.pending > HIGH && !this.paused) {
      source.pause();
      this.paused = source;
    }
  }

  /** The digest of everything queued since the last digest; the next update starts afresh. */
  digest(): Promise<string> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve) => {
      this.waiting = resolve;
      this.worker.postMessage('digest');
    });
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}
