// The splice(2) relay in bridge/native/ on its own, and the JavaScript relay beside it with the
// same checks: byte-exact both ways at once, half-close, backpressure, idle timeout, an early
// destroy(), and the native relay once more with the sockets released at hand-over (what the
// gateway does), ended from outside through its RelayGroup. The native suites are skipped on a machine that cannot build the addon, and fails
// under CI=true, where the toolchain is there and the addon must have built.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { describe, test } from 'node:test';
import { nativeRelayStatus, nativeStats, releasedToNative } from '../../bridge/native/loader.js';
import { relay, RelayGroup, relayJs, type RelayResult } from '../../bridge/relay.js';
import { requireCapability } from '../helpers/env.js';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
/** After a FIN, how long the other direction is watched for a wrong close. */
const AFTER_FIN_MS = 50;
/** A sender that wrote nothing for this long is taken as stalled. */
const NO_PROGRESS_MS = 300;

function listen(onConn: (s: Socket) => void): Promise<Server> {
  const srv = createServer({ allowHalfOpen: true }, onConn);
  return new Promise((r) => srv.listen(0, '127.0.0.1', () => r(srv)));
}
const portOf = (s: Server): number => (s.address() as { port: number }).port;

function collect(s: Socket): Promise<Buffer> {
  const parts: Buffer[] = [];
  s.on('data', (d: Buffer) => parts.push(d));
  return new Promise((resolve, reject) => {
    s.once('end', () => resolve(Buffer.concat(parts)));
    s.once('error', reject);
  });
}

/** `p`, or a failure after 20 s: what a lost FIN looks like, without leaving the test hanging. */
function within<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no ${what} within 20 s`)), 20_000)));
  return Promise.race([p, limit]).finally(() => clearTimeout(timer));
}

/** A client and an origin joined through a relay: client <-> [cs relay rs] <-> origin. */
interface Path {
  client: Socket;
  origin: Socket;
  /** The relay's two sockets, as the gateway holds them. */
  cs: Socket;
  rs: Socket;
  result: Promise<RelayResult>;
  close(): void;
}

type RelayFn = (c: Socket, r: Socket, opts: { idleTimeoutMs: number }) => Promise<RelayResult>;

/** Listens once, and resolves the first accepted socket. */
async function acceptOne(): Promise<{ srv: Server; port: number; accepted: Promise<Socket> }> {
  let got!: (s: Socket) => void;
  const accepted = new Promise<Socket>((r) => (got = r));
  const srv = await listen((s) => got(s));
  return { srv, port: portOf(srv), accepted };
}

/** Client ↔ (cs | rs) ↔ origin, connected, no relay started yet. */
async function ends(): Promise<Omit<Path, 'result'>> {
  const front = await acceptOne();
  const back = await acceptOne();
  const client = connect({ host: '127.0.0.1', port: front.port, allowHalfOpen: true });
  const cs = await front.accepted;
  const rs = connect({ host: '127.0.0.1', port: back.port, allowHalfOpen: true });
  await new Promise((r) => rs.once('connect', r));
  const origin = await back.accepted;
  return {
    client,
    origin,
    cs,
    rs,
    close: () => {
      client.destroy();
      origin.destroy();
      front.srv.close();
      back.srv.close();
    },
  };
}

async function path(run: RelayFn, idleTimeoutMs = 0): Promise<Path> {
  const e = await ends();
  return { ...e, result: run(e.cs, e.rs, { idleTimeoutMs }) };
}

/** How a server ends a tunnel from outside when it shuts down. */
interface Shutdown {
  what: string;
  run(p: Path): void;
}
// what the gateway's close() does to every client socket
const DESTROY: Shutdown = { what: 'destroying a socket from outside', run: (p) => p.cs.destroy() };

function suite(name: string, run: RelayFn, skip: false | string, shutdown: Shutdown = DESTROY): void {
  describe(name, { skip }, () => {
    test('32 MiB each way at once arrive byte-exact, and the counts add up', async () => {
      const p = await path(run);
      try {
        const up = randomBytes(32 * 1024 * 1024);
        const down = randomBytes(32 * 1024 * 1024);
        const atOrigin = collect(p.origin);
        const atClient = collect(p.client);
        p.client.end(up);
        p.origin.end(down);
        assert.equal(sha(await atOrigin), sha(up));
        assert.equal(sha(await atClient), sha(down));
        const r = await p.result;
        assert.deepEqual(r, { up: up.length, down: down.length, end: 'closed' });
      } finally {
        p.close();
      }
    });

    test('half-close: the client FIN reaches the origin while its reply still flows back', async () => {
      const p = await path(run);
      try {
        const payload = randomBytes(3 * 1024 * 1024);
        const atClient = collect(p.client);
        const atOrigin = collect(p.origin);
        p.client.end(payload);
        const got = await atOrigin; // the FIN came through: 'end' at the origin
        // the other direction is still open: a reply written after the FIN arrives (time let pass on
        // purpose: a relay that closed both ways on the FIN would have done so by now)
        await new Promise((r) => setTimeout(r, AFTER_FIN_MS));
        p.origin.end(`got ${sha(got)}`);
        assert.equal((await atClient).toString(), `got ${sha(payload)}`);
        assert.equal((await p.result).end, 'closed');
      } finally {
        p.close();
      }
    });

    test('a FIN Node read before the relay began (with the first bytes, either side) is passed on after them', async () => {
      // as the gateway meets it: the request, early data and FIN arrive together, the handshake
      // reads them all ('end' fires), and only then is the tunnel handed to the relay
      const { client, origin, cs, rs, close } = await ends();
      try {
        const atClient = collect(client);
        const atOrigin = collect(origin);
        client.end('early up');
        origin.end('early down');
        const [up, down] = await Promise.all([collect(cs), collect(rs)]);
        assert.ok(cs.readableEnded && rs.readableEnded, "both 'end' events fired before the relay");
        rs.write(up);
        cs.write(down);
        const result = run(cs, rs, { idleTimeoutMs: 0 });
        assert.equal((await within(atOrigin, 'EOF at the origin')).toString(), 'early up');
        assert.equal((await within(atClient, 'EOF at the client')).toString(), 'early down');
        assert.equal((await within(result, 'end of the relay')).end, 'closed');
      } finally {
        close();
      }
    });

    test('a client FIN read before the relay began reaches the origin while the origin still answers', async () => {
      const { client, origin, cs, rs, close } = await ends();
      try {
        const atClient = collect(client);
        const atOrigin = collect(origin);
        client.end('request');
        const early = await collect(cs);
        rs.write(early);
        const result = run(cs, rs, { idleTimeoutMs: 0 });
        const got = await within(atOrigin, 'EOF at the origin');
        const answer = randomBytes(2 * 1024 * 1024);
        origin.end(answer);
        assert.equal(got.toString(), 'request');
        assert.equal(sha(await within(atClient, 'EOF at the client')), sha(answer));
        const r = await within(result, 'end of the relay');
        assert.deepEqual(r, { up: 7, down: answer.length, end: 'closed' });
      } finally {
        close();
      }
    });

    test('backpressure: a paused reader stalls the sender instead of filling the relay', async () => {
      const p = await path(run);
      try {
        p.client.pause();
        const chunk = Buffer.alloc(64 * 1024, 3);
        const total = 512 * 1024 * 1024;
        let written = 0;
        const pump = (): void => {
          while (written < total) {
            written += chunk.length;
            if (!p.origin.write(chunk)) {
              p.origin.once('drain', pump);
              return;
            }
          }
          p.origin.end();
        };
        pump();
        // time let pass on purpose: "no progress" is the absence of an event, over an interval
        let last = -1;
        while (last !== written) {
          last = written;
          await new Promise((r) => setTimeout(r, NO_PROGRESS_MS));
        }
        assert.ok(written < 64 * 1024 * 1024, `sender stalled after ${written} bytes`);
        // and everything flows once the reader reads again
        let received = 0;
        p.client.on('data', (d: Buffer) => (received += d.length));
        p.client.resume();
        await new Promise((r) => p.client.once('end', r));
        assert.equal(received, total);
        p.client.end();
        assert.equal((await p.result).down, total);
      } finally {
        p.close();
      }
    });

    test('a tunnel with no traffic ends as idle after its timeout, and both sockets close', async () => {
      const p = await path(run, 200);
      try {
        const atClient = collect(p.client);
        p.origin.write('x');
        const started = Date.now();
        const r = await p.result;
        assert.equal(r.end, 'idle');
        assert.ok(Date.now() - started >= 150, 'not before the timeout');
        assert.equal((await atClient).toString(), 'x');
      } finally {
        p.close();
      }
    });

    test(`${shutdown.what} (server shutdown) ends the relay and closes both`, async () => {
      const p = await path(run);
      try {
        // the client is allowHalfOpen: it sees the FIN (or a reset), not a close of its own
        const clientEnded = new Promise((r) => {
          p.client.once('end', r);
          p.client.once('error', r);
        });
        p.client.resume();
        const relayed = new Promise((r) => p.client.once('data', r));
        p.origin.write('before');
        await relayed; // the relay is running when the shutdown comes
        shutdown.run(p);
        await p.result;
        await clientEnded;
        assert.ok(p.cs.destroyed && p.rs.destroyed);
      } finally {
        p.close();
      }
    });
  });
}

const status = nativeRelayStatus();
const skipNative = requireCapability('native splice relay', status.available, status.reason);

suite('native splice relay', (c, r, o) => {
  const before = nativeStats.handedOver;
  const p = relay(c, r, o);
  assert.equal(nativeStats.handedOver, before + 1, 'the tunnel went to the addon');
  return p;
}, skipNative);
suite('JavaScript relay', relayJs, false);

const group = new RelayGroup();
suite(
  'native splice relay, sockets released',
  (c, r, o) => {
    const before = nativeStats.handedOver;
    const p = relay(c, r, { ...o, group });
    assert.equal(nativeStats.handedOver, before + 1, 'the tunnel went to the addon');
    // nothing of the tunnel is left in JavaScript but its promise: the addon holds duplicates
    assert.ok(c.destroyed && r.destroyed, 'both sockets destroyed at the hand-over');
    assert.ok(releasedToNative(c) && releasedToNative(r));
    assert.equal(group.size, 1);
    void p.then(() => assert.equal(group.size, 0, 'the group forgets an ended tunnel'));
    return p;
  },
  skipNative,
  { what: 'RelayGroup.closeAll()', run: () => group.closeAll() },
);

const openFds = (): number => readdirSync('/proc/self/fd').length;

describe('native relay hand-over', { skip: skipNative }, () => {
  test('a tunnel costs its two descriptors, released or not (10,000 tunnels must fit the limit)', async () => {
    for (const release of [undefined, new RelayGroup()]) {
      let before = 0;
      let during = 0;
      const p = await path((c, r, o) => {
        before = openFds();
        const res = relay(c, r, { ...o, group: release });
        during = openFds();
        return res;
      });
      try {
        assert.equal(during, before, release ? 'released: the duplicates replace the sockets own' : 'kept: no duplicates');
        p.client.end();
        p.origin.end();
        await p.result;
      } finally {
        p.close();
      }
    }
  });

  test('bytes Node already read are passed on before the hand-over', async () => {
    const p = await path((c, r, o) => {
      c.unshift(Buffer.from('early'));
      const before = nativeStats.handedOver;
      const res = relay(c, r, o);
      assert.equal(nativeStats.handedOver, before + 1);
      return res;
    });
    try {
      const atOrigin = collect(p.origin);
      p.client.end('late');
      assert.equal((await atOrigin).toString(), 'earlylate');
      p.origin.end();
      assert.deepEqual(await p.result, { up: 9, down: 0, end: 'closed' });
    } finally {
      p.close();
    }
  });

  test('a socket with a write still pending in Node is left to JavaScript', async () => {
    const p = await path((c, r, o) => {
      r.cork();
      r.write('early');
      const before = nativeStats.declined;
      const res = relay(c, r, o);
      assert.equal(nativeStats.declined, before + 1);
      process.nextTick(() => r.uncork());
      return res;
    });
    try {
      const atOrigin = collect(p.origin);
      p.client.end('late');
      assert.equal((await atOrigin).toString(), 'earlylate');
      p.origin.end();
      assert.equal((await p.result).end, 'closed');
    } finally {
      p.close();
    }
  });
});
