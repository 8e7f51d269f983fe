// A translated FTP control session, sans-IO (the way shared/socks5/server.ts is written): control
// bytes, socket ends and data-listener events in, commands for the I/O layer out. It frames lines,
// runs the translator (ftp-translate.ts: the PASV/EPSV/PORT/EPRT rewriting and the FTP-bounce
// check), and decides about the data channel: which listener to open facing which side, who
// may connect to it, and what a data connection is joined to. bridge/gateway/ftp.ts does the I/O.
import { familyOf, sameIp, type Family, type Ip } from '../../shared/net/address.js';
import { FtpTranslator, LineReader, type DataAddress, type FtpAction } from './ftp-translate.js';

export type FtpSide = 'client' | 'server';

export type FtpCommand =
  | { type: 'toClient'; line: string }
  | { type: 'toServer'; line: string }
  /**
   * Open data listener `id` on the gateway's own address on `side`'s control connection (so in
   * `family`, that side's); answer with listening() or listenFailed(). Only `peer` may use it.
   */
  | { type: 'listen'; id: number; side: FtpSide; family: Family; peer: Ip }
  /** Listener `id` (facing the client) is up: a SOCKS CONNECT from `peer` may claim it as its data connection. */
  | { type: 'offerSlot'; id: number; listen: DataAddress; peer: Ip }
  /** Listener `id` will not be used: close it (and withdraw its slot). */
  | { type: 'closeData'; id: number }
  /** Relay the data connection at hand (accepted or claimed) to `target`; `side` is whom it came from. */
  | { type: 'joinData'; side: FtpSide; target: DataAddress }
  /** Drop the data connection at hand. */
  | { type: 'refuseData' }
  /** Pass the FIN on to `to`, after `rest`: an unterminated last line, as a plain relay would. */
  | { type: 'end'; to: FtpSide; rest: string }
  /** End the session (both control sockets); `why` is the log's end reason. */
  | { type: 'shutdown'; why: string }
  /** The control connection is quiet, but a transfer runs: wait another idle period. */
  | { type: 'rearmIdle' };

interface Listener {
  side: FtpSide;
  peer: Ip;
  target?: DataAddress;
}

export interface FtpSessionOptions {
  /** The control connection's client address. */
  clientIp: Ip;
  /** The control connection's server address. */
  serverIp: Ip;
}

export class FtpSession {
  private readonly translator: FtpTranslator;
  private readonly clientLines = new LineReader();
  private readonly serverLines = new LineReader();
  /** Data listeners opened and not yet used or closed, by id. */
  private readonly listeners = new Map<number, Listener>();
  private done = false;

  constructor(private readonly opts: FtpSessionOptions) {
    this.translator = new FtpTranslator(opts);
  }

  /** True while a listener is being opened: the I/O layer stops reading the client. */
  get busy(): boolean {
    return this.translator.busy;
  }

  /** Bytes from the client's control connection. */
  fromClient(chunk: Uint8Array): FtpCommand[] {
    return this.lines('client', chunk);
  }

  /** Bytes from the server's control connection. */
  fromServer(chunk: Uint8Array): FtpCommand[] {
    return this.lines('server', chunk);
  }

  /** FIN from `from`: it passes on to the other side. */
  ended(from: FtpSide): FtpCommand[] {
    const rest = (from === 'client' ? this.clientLines : this.serverLines).rest();
    return [{ type: 'end', to: from === 'client' ? 'server' : 'client', rest }];
  }

  /** The client's control connection went idle; `transferring` says whether a data connection is open. */
  idle(transferring: boolean): FtpCommand[] {
    // a long transfer leaves the control connection quiet: only idle everywhere is idle
    return [transferring ? { type: 'rearmIdle' } : { type: 'shutdown', why: 'idle' }];
  }

  /** Listener `id` is listening on `addr`. */
  listening(id: number, addr: DataAddress): FtpCommand[] {
    const l = this.listeners.get(id);
    if (this.done || !l) return [];
    const offer: FtpCommand[] = l.side === 'client' ? [{ type: 'offerSlot', id, listen: addr, peer: l.peer }] : [];
    return [...offer, ...this.translate(this.translator.listening(id, addr))];
  }

  /** Listener `id` could not be opened (no address to listen on, or listen() failed). */
  listenFailed(id: number): FtpCommand[] {
    if (this.done) return [];
    return [...this.close(id), ...this.translate(this.translator.listenFailed(id))];
  }

  /** Listener `id` failed after it was listening, or its wait for a connection ran out. */
  listenerGone(id: number): FtpCommand[] {
    return this.close(id);
  }

  /** Whether listener `id` knows where its data connection goes (a CONNECT may claim it only then). */
  dataReady(id: number): boolean {
    return this.listeners.get(id)?.target !== undefined;
  }

  /**
   * A connection from `from` reached listener `id` (`from` null: no address). Only the control
   * connection's peer may use it, once, and only once its target is known; a joined connection
   * closes the listener (one data connection per PASV/PORT, as with a real server).
   */
  dataConnected(id: number, from: Ip | null): FtpCommand[] {
    const l = this.listeners.get(id);
    if (this.done || !l || !l.target || !from || !sameIp(from, l.peer)) return [{ type: 'refuseData' }];
    return [...this.close(id), { type: 'joinData', side: l.side, target: l.target }];
  }

  /** A SOCKS CONNECT from the client claimed listener `id`'s slot (the registry checked who it is from). */
  dataClaimed(id: number): FtpCommand[] {
    const l = this.listeners.get(id);
    if (this.done || !l?.target) return [{ type: 'refuseData' }];
    return [...this.close(id), { type: 'joinData', side: l.side, target: l.target }];
  }

  /** Both control sockets closed: every listener closes; nothing is done after this. */
  closed(): FtpCommand[] {
    const out = [...this.listeners.keys()].flatMap((id) => this.close(id));
    this.done = true;
    return out;
  }

  private lines(from: FtpSide, chunk: Uint8Array): FtpCommand[] {
    const lines = (from === 'client' ? this.clientLines : this.serverLines).feed(chunk);
    if (lines === null) return [{ type: 'shutdown', why: `ftp-line-too-long-from-${from}` }];
    const out: FtpCommand[] = [];
    for (const line of lines) {
      if (this.done) break;
      out.push(...this.translate(from === 'client' ? this.translator.fromClient(line) : this.translator.fromServer(line)));
    }
    return out;
  }

  private close(id: number): FtpCommand[] {
    return this.listeners.delete(id) ? [{ type: 'closeData', id }] : [];
  }

  /** The translator's actions as commands, keeping the listeners' bookkeeping here. */
  private translate(actions: FtpAction[]): FtpCommand[] {
    const out: FtpCommand[] = [];
    for (const a of actions) {
      switch (a.type) {
        case 'listen': {
          // one data connection pending at a time, as with a real server: a new PASV/PORT replaces it
          for (const old of [...this.listeners.keys()]) out.push(...this.close(old));
          const peer = a.side === 'client' ? this.opts.clientIp : this.opts.serverIp;
          this.listeners.set(a.id, { side: a.side, peer });
          out.push({ type: 'listen', id: a.id, side: a.side, family: familyOf(peer), peer });
          break;
        }
        case 'dataTarget': {
          const l = this.listeners.get(a.id);
          if (l) l.target = a.target;
          break;
        }
        case 'closeData':
          // a stale id (the translator no longer waits for it) is closed whether or not it is known here
          this.listeners.delete(a.id);
          out.push(a);
          break;
        default:
          out.push(a);
      }
    }
    return out;
  }
}
