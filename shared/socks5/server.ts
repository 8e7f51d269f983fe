// Sans-IO SOCKS5 server handshake (after mitmproxy's layers): feed() takes received bytes and
// returns commands for the I/O layer. A protocol fault becomes reply bytes and a close, never
// a thrown exception. The I/O layer answers 'authenticate' with authResult() and 'request'
// with succeed() or fail().
import { DualsocksError, SocksProtocolError } from '../errors.js';
import {
  decodeAuthRequest,
  decodeGreeting,
  decodeRequest,
  encodeAuthReply,
  encodeFailureReply,
  encodeMethodSelection,
  encodeReply,
  concatBytes as concat,
  type Decoded,
  type Request,
} from './codec.js';
import { AUTH_STATUS_FAIL, AUTH_STATUS_OK, METHOD, REP, type Rep } from './constants.js';
import type { HostPort } from '../net/address.js';

export type ServerCommand =
  | { type: 'send'; data: Uint8Array }
  /** RFC 1929 credentials, as the bytes the client sent. */
  | { type: 'authenticate'; username: Uint8Array; password: Uint8Array }
  | { type: 'request'; request: Request }
  /** Bytes the client sent after its request; they belong to the relay. */
  | { type: 'data'; data: Uint8Array }
  /** `clientGone`: the client ended before saying all the handshake needs (no reply to send). */
  | { type: 'close'; error?: DualsocksError; clientGone?: true };

/** Bytes as text for logs: UTF-8, or 0x… hex when they are not UTF-8. */
export function displayName(bytes: Uint8Array): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return `0x${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
  }
}

type State = 'greeting' | 'auth' | 'auth-wait' | 'request' | 'request-wait' | 'open' | 'closed';

// A handshake never needs more than this; more is garbage or abuse.
const MAX_HANDSHAKE_BUFFER = 1024;

export class Socks5ServerSession {
  private state: State = 'greeting';
  private buf: Uint8Array = new Uint8Array(0);
  /** The client sent FIN: no byte will follow what is in `buf`. */
  private eof = false;
  /** The username as text for logs (UTF-8, or 0x… hex when it is not UTF-8); compare bytes, never this. */
  username: string | undefined;
  /** The client offered METHOD.ERROR_CODES: failure replies carry the error code in BND. */
  private errorCodes = false;

  constructor(private readonly opts: { requireAuth: boolean }) {}

  get phase(): State {
    return this.state;
  }

  feed(chunk: Uint8Array): ServerCommand[] {
    if (this.state === 'closed') return [];
    if (this.state === 'open') return [{ type: 'data', data: chunk }];
    this.buf = this.buf.length === 0 ? chunk : concat(this.buf, chunk);
    const out: ServerCommand[] = [];
    this.advance(out);
    if (this.needsBytes() && this.buf.length > MAX_HANDSHAKE_BUFFER) {
      this.close(out, new SocksProtocolError('ERR_SOCKS_TRUNCATED', 'handshake too long'));
    }
    return out;
  }

  /**
   * The client sent FIN. A handshake still waiting for its bytes ends now. One waiting for the
   * I/O layer goes on only if what is buffered can still be answered (a pipelining client that
   * sent greeting, credentials and request, then FIN); otherwise the pending work (a password
   * check) is for nothing and the close says so. After the request, FIN is the relay's.
   */
  end(): ServerCommand[] {
    if (this.state === 'closed' || this.state === 'open') return [];
    this.eof = true;
    const out: ServerCommand[] = [];
    if (this.needsBytes() || (this.state === 'auth-wait' && decodeRequest(this.buf).status === 'need')) this.gone(out);
    return out;
  }

  /**
   * The I/O layer's answer to an 'authenticate' command. A refusal closes with `why`, by default
   * ERR_SOCKS_AUTH_FAILED naming the user (the client is told only "failure", RFC 1929 §2).
   */
  authResult(okay: boolean, why?: DualsocksError): ServerCommand[] {
    if (this.state !== 'auth-wait') return [];
    const out: ServerCommand[] = [{ type: 'send', data: encodeAuthReply({ status: okay ? AUTH_STATUS_OK : AUTH_STATUS_FAIL }) }];
    if (!okay) {
      this.close(out, why ?? new SocksProtocolError('ERR_SOCKS_AUTH_FAILED', this.username ? `user ${JSON.stringify(this.username)}` : undefined));
      return out;
    }
    this.state = 'request';
    this.advance(out);
    if (this.eof && this.needsBytes()) this.gone(out);
    return out;
  }

  /** Request granted: reply with the bound address and hand over to the relay. */
  succeed(bound: HostPort): ServerCommand[] {
    if (this.state !== 'request-wait') return [];
    this.state = 'open';
    const out: ServerCommand[] = [{ type: 'send', data: encodeReply({ rep: REP.SUCCEEDED, ...bound }) }];
    if (this.buf.length > 0) out.push({ type: 'data', data: this.buf });
    this.buf = new Uint8Array(0);
    return out;
  }

  /** A further reply for the same request (BIND's second reply). */
  reply(rep: Rep, bound: HostPort): ServerCommand[] {
    return [{ type: 'send', data: encodeReply({ rep, ...bound }) }];
  }

  /** Request failed: reply with the error's code and close. */
  fail(error: DualsocksError): ServerCommand[] {
    if (this.state === 'closed') return [];
    const out: ServerCommand[] = [];
    if (this.state === 'request-wait' || this.state === 'open') out.push({ type: 'send', data: this.failureReply(error) });
    this.close(out, error);
    return out;
  }

  /** The failure reply for `error` as this client reads it (with its code if it offered 0xD5). */
  failureReply(error: DualsocksError): Uint8Array {
    return encodeFailureReply(error.rep, this.errorCodes ? error.code : undefined);
  }

  private needsBytes(): boolean {
    return this.state === 'greeting' || this.state === 'auth' || this.state === 'request';
  }

  private gone(out: ServerCommand[]): void {
    this.state = 'closed';
    this.buf = new Uint8Array(0);
    out.push({ type: 'close', clientGone: true });
  }

  private close(out: ServerCommand[], error?: DualsocksError): void {
    this.state = 'closed';
    this.buf = new Uint8Array(0);
    out.push(error ? { type: 'close', error } : { type: 'close' });
  }

  private take<T>(d: Decoded<T> & { status: 'ok' }): T {
    this.buf = this.buf.subarray(d.size);
    return d.msg;
  }

  private advance(out: ServerCommand[]): void {
    for (;;) {
      switch (this.state) {
        case 'greeting': {
          const d = decodeGreeting(this.buf);
          if (d.status === 'need') return;
          if (d.status === 'error') return this.close(out, d.error);
          const { methods } = this.take(d);
          this.errorCodes = methods.includes(METHOD.ERROR_CODES);
          // RFC 1928 §3: select only a method this server supports; without users that is
          // NO_AUTH alone (selecting USERPASS would ask for credentials nobody can check)
          const supported = this.opts.requireAuth ? METHOD.USERPASS : METHOD.NO_AUTH;
          const method = methods.includes(supported) ? supported : METHOD.NO_ACCEPTABLE;
          out.push({ type: 'send', data: encodeMethodSelection({ method }) });
          if (method === METHOD.NO_ACCEPTABLE) {
            return this.close(out, new SocksProtocolError('ERR_SOCKS_NO_METHOD', `offered ${methods.join(',')}`));
          }
          this.state = method === METHOD.USERPASS ? 'auth' : 'request';
          break;
        }
        case 'auth': {
          const d = decodeAuthRequest(this.buf);
          if (d.status === 'need') return;
          if (d.status === 'error') {
            out.push({ type: 'send', data: encodeAuthReply({ status: AUTH_STATUS_FAIL }) });
            return this.close(out, d.error);
          }
          const { username, password } = this.take(d);
          this.username = displayName(username);
          this.state = 'auth-wait';
          out.push({ type: 'authenticate', username, password });
          return;
        }
        case 'request': {
          const d = decodeRequest(this.buf);
          if (d.status === 'need') return;
          if (d.status === 'error') {
            out.push({ type: 'send', data: this.failureReply(d.error) });
            return this.close(out, d.error);
          }
          const request = this.take(d);
          this.state = 'request-wait';
          out.push({ type: 'request', request });
          return;
        }
        default:
          return;
      }
    }
  }
}
