// Whether a first hop takes greeting, credentials and request in one write (pipelining saves
// round trips), probed once per hop without requesting anything.
import type { Socket } from 'node:net';
import { DualsocksError } from '../../shared/errors.js';
import { concatBytes, decodeAuthReply, decodeMethodSelection, encodeAuthRequest, encodeGreeting } from '../../shared/socks5/codec.js';
import { METHOD } from '../../shared/socks5/constants.js';
import { connectTcp } from './direct.js';
import type { Hop } from './hops.js';
import { dialChain, type Socks5Dial } from './socks5.js';

/**
 * Whether `hop` reads a greeting and credentials sent in one write (then it takes the request
 * along too): both answers mean yes. microsocks answers the greeting, drops the rest and waits:
 * no. Only hops with credentials are asked, and nothing is requested, so no destination is
 * touched; without credentials there is no second message to try, and the answer is no.
 */
export async function probePipelining(hop: Hop, timeoutMs: number): Promise<boolean> {
  if (hop.username === undefined) return false;
  let s: Socket;
  try {
    s = await connectTcp(hop, timeoutMs);
  } catch {
    return false; // unreachable for the probe: requests go step by step, and their own dial reports the error

  }
  try {
    return await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      let buf: Uint8Array = new Uint8Array(0);
      const settle = (answer: boolean): void => {
        clearTimeout(timer);
        resolve(answer);
      };
      s.on('data', (chunk: Buffer) => {
        buf = concatBytes(buf, chunk);
        const m = decodeMethodSelection(buf);
        if (m.status === 'error' || (m.status === 'ok' && m.msg.method !== METHOD.USERPASS)) return settle(false);
        if (m.status !== 'ok') return;
        const a = decodeAuthReply(buf.subarray(m.size));
        if (a.status !== 'need') settle(a.status === 'ok');
      });
      s.once('error', () => settle(false));
      s.once('end', () => settle(false));
      s.resume();
      s.write(concatBytes(encodeGreeting({ methods: [METHOD.USERPASS] }), encodeAuthRequest({ username: hop.username!, password: hop.password ?? '' })));
    });
  } finally {
    s.destroy();
  }
}

/**
 * Probe answers per hop, for a dialer without health checks (the gateway's --upstream): the first
 * ask starts the probe and says no; later asks get its answer.
 */
export class PipeliningCache {
  private readonly known = new Map<string, Promise<boolean>>();
  private readonly answers = new Map<string, boolean>();

  private readonly timeoutMs: number;

  constructor(connectTimeoutMs: number) {
    // a server that drops pipelined bytes leaves the probe unanswered: keep that wait short
    this.timeoutMs = Math.min(connectTimeoutMs, 2000);
  }

  private static key(hop: Hop): string {
    return JSON.stringify([hop.host, hop.port, hop.username ?? null, hop.password ?? null]);
  }

  /** The probe's answer for `hop`, starting it if needed. */
  probe(hop: Hop): Promise<boolean> {
    const key = PipeliningCache.key(hop);
    let p = this.known.get(key);
    if (!p) {
      p = probePipelining(hop, this.timeoutMs).then((yes) => {
        this.answers.set(key, yes);
        return yes;
      });
      this.known.set(key, p);
    }
    return p;
  }

  /** Whether requests to `hop` may be pipelined now (false until the probe has said yes). */
  allows(hop: Hop): boolean {
    void this.probe(hop);
    return this.answers.get(PipeliningCache.key(hop)) === true;
  }

  /** The probe's answer, or null while there is none yet. */
  answer(hop: Hop): boolean | null {
    return this.answers.get(PipeliningCache.key(hop)) ?? null;
  }

  /** Forgets the answer (a pipelined request went unanswered): the next ask probes again. */
  forget(hop: Hop): void {
    const key = PipeliningCache.key(hop);
    this.known.delete(key);
    this.answers.delete(key);
  }

  /** dialChain, the first hop's handshake in one write once its probe said yes (or on `warm`, its greeting done). */
  async dial(hops: Hop[], req: { cmd?: number; host: string; port: number }, timeoutMs: number, signal?: AbortSignal, warm?: Socket): Promise<Socks5Dial> {
    const pipelined = warm === undefined && this.allows(hops[0]!);
    try {
      return await dialChain(hops, req, timeoutMs, { pipelineFirst: pipelined, signal, warm });
    } catch (e) {
      // no answer after pipelining: maybe another server listens there now; ask again
      if (pipelined && e instanceof DualsocksError && e.code === 'ERR_CONNECT_TIMEOUT') this.forget(hops[0]!);
      throw e;
    }
  }
}
