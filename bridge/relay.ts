// Byte relay between two connected sockets. pipe() gives backpressure (the reader pauses while
// the writer's buffer is full, so a slow reader never makes us buffer without bound) and passes
// a FIN on as end() while the other direction keeps flowing (both sockets are allowHalfOpen).
import type { Socket } from 'node:net';

export interface RelayResult {
  /** Bytes from the client side to the remote side, and back. */
  up: number;
  down: number;
  /** Why it ended: 'closed' for a normal close, 'idle' or an error code. */
  end: string;
}

export function relay(client: Socket, remote: Socket, opts: { idleTimeoutMs: number }): Promise<RelayResult> {
  return new Promise((resolve) => {
    let end = 'closed';
    let closed = 0;
    const onClose = (): void => {
      if (++closed < 2) {
        // one side is gone for good: nothing more can flow either way
        client.destroy();
        remote.destroy();
        return;
      }
      resolve({ up: remote.bytesWritten, down: remote.bytesRead, end });
    };
    const onError = (e: NodeJS.ErrnoException): void => {
      if (end === 'closed') end = e.code ?? 'error';
      client.destroy();
      remote.destroy();
    };
    client.on('error', onError);
    remote.on('error', onError);
    client.once('close', onClose);
    remote.once('close', onClose);
    if (opts.idleTimeoutMs > 0) {
      // any byte relayed either way is a read or write on the client socket, so its idle timer is the tunnel's
      client.setTimeout(opts.idleTimeoutMs, () => {
        end = 'idle';
        client.destroy();
        remote.destroy();
      });
    }
    client.pipe(remote);
    remote.pipe(client);
  });
}
