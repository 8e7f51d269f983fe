// Sans-IO SOCKS5 client handshake, used for every upstream hop (bridge → gateway, gateway →
// next gateway). The server's reply code is kept in the error, so what the last gateway said is
// what our own client sees.
import { DualsocksError, SocksProtocolError, SocksReplyError, type ErrorCode } from '../errors.js';
import {
  decodeAuthReply,
  decodeMethodSelection,
  decodeReply,
  encodeAuthRequest,
  encodeGreeting,
  encodeRequest,
  failureCode,
  concatBytes as concat,
  type Decoded,
  type Reply,
} from './codec.js';
import { AUTH_STATUS_OK, CMD, METHOD, REP, REP_TEXT } from './constants.js';

export interface ClientRequest {
  cmd?: number;
  host: string;
  port: number;
  auth?: { username: string; password: string } | undefined;
  /**
   * Send greeting, credentials and request at once instead of waiting for each answer (one round
   * trip instead of two or three). Only for a server known to read them so (microsocks does not):
   * with one method offered, its answers can only be that method or a refusal.
   */
  pipeline?: boolean;
  /**
   * Offer METHOD.ERROR_CODES beside the auth method: a dualsocks server then names its exact error
   * (ERR_NAME_NOT_FOUND rather than REP 0x04 alone) in a failure reply. Others ignore the offer.
   */
  errorCodes?: boolean;
  /**
   * The greeting (and credentials) were answered already on this connection (one opened ahead
   * of need): only the request goes, and only its reply is read.
   */
  greeted?: boolean;
}

export type ClientCommand =
  | { type: 'send'; data: Uint8Array }
  /** A success reply. For BIND a second one follows. `rest` is relay data that came with it. */
  | { type: 'reply'; reply: Reply; rest: Uint8Array }
  | { type: 'failed'; error: DualsocksError };

type State = 'method' | 'auth' | 'reply' | 'reply2' | 'open' | 'closed';

/**
 * The error for a failure reply: the REP survives, and the server's own error code when it sent
 * one (else ERR_SOCKS_REPLY); the words say which hop said it.
 */
export function replyError(rep: number, from?: string, code?: ErrorCode | null): DualsocksError {
  const text = REP_TEXT[rep] ?? `reply code 0x${rep.toString(16)}`;
  return new SocksReplyError(code ?? 'ERR_SOCKS_REPLY', from ? `${from}: ${text}` : text, { rep });
}

export class Socks5ClientSession {
  private state: State = 'method';
  private buf: Uint8Array = new Uint8Array(0);

  constructor(
    private readonly req: ClientRequest,
    private readonly label?: string,
  ) {}

  start(): ClientCommand[] {
    if (this.req.greeted) {
      this.state = 'reply';
      return [{ type: 'send', data: this.encodedRequest() }];
    }
    const methods: number[] = this.req.auth ? [METHOD.USERPASS] : [METHOD.NO_AUTH];
    if (this.req.errorCodes) methods.push(METHOD.ERROR_CODES);
    const greeting = encodeGreeting({ methods });
    if (!this.req.pipeline) return [{ type: 'send', data: greeting }];
    const auth = this.req.auth ? [encodeAuthRequest(this.req.auth)] : [];
    return [{ type: 'send', data: concat(greeting, ...auth, this.encodedRequest()) }];
  }

  private encodedRequest(): Uint8Array {
    return encodeRequest({ cmd: this.req.cmd ?? CMD.CONNECT, host: this.req.host, port: this.req.port });
  }

  feed(chunk: Uint8Array): ClientCommand[] {
    if (this.state === 'closed' || this.state === 'open') return [];
    this.buf = this.buf.length === 0 ? chunk : concat(this.buf, chunk);
    const out: ClientCommand[] = [];
    this.advance(out);
    return out;
  }

  private failWith(out: ClientCommand[], error: DualsocksError): void {
    this.state = 'closed';
    out.push({ type: 'failed', error });
  }

  private take<T>(d: Decoded<T> & { status: 'ok' }): T {
    this.buf = this.buf.subarray(d.size);
    return d.msg;
  }

  /** The request goes now, or went with the greeting. */
  private sendRequest(out: ClientCommand[]): void {
    if (!this.req.pipeline) out.push({ type: 'send', data: this.encodedRequest() });
    this.state = 'reply';
  }

  private advance(out: ClientCommand[]): void {
    for (;;) {
      switch (this.state) {
        case 'method': {
          const d = decodeMethodSelection(this.buf);
          if (d.status === 'need') return;
          if (d.status === 'error') return this.failWith(out, d.error);
          const { method } = this.take(d);
          const offered = this.req.auth ? METHOD.USERPASS : METHOD.NO_AUTH;
          if (this.req.pipeline && method !== offered) {
            // what we sent after the greeting was for the method we offered, and is now misread
            return this.failWith(out, new SocksProtocolError('ERR_SOCKS_NO_METHOD', `${this.label ?? 'server'} chose method 0x${method.toString(16)}`, { rep: REP.NOT_ALLOWED }));
          }
          if (method === METHOD.USERPASS && this.req.auth) {
            if (!this.req.pipeline) out.push({ type: 'send', data: encodeAuthRequest(this.req.auth) });
            this.state = 'auth';
          } else if (method === METHOD.NO_AUTH) {
            this.sendRequest(out);
          } else {
            return this.failWith(out, new SocksProtocolError('ERR_SOCKS_NO_METHOD', `${this.label ?? 'server'} wants method 0x${method.toString(16)}`, { rep: REP.NOT_ALLOWED }));
          }
          break;
        }
        case 'auth': {
          const d = decodeAuthReply(this.buf);
          if (d.status === 'need') return;
          if (d.status === 'error') return this.failWith(out, d.error);
          if (this.take(d).status !== AUTH_STATUS_OK) {
            return this.failWith(out, new SocksProtocolError('ERR_SOCKS_AUTH_FAILED', this.label));
          }
          this.sendRequest(out);
          break;
        }
        case 'reply':
        case 'reply2': {
          const d = decodeReply(this.buf);
          if (d.status === 'need') return;
          if (d.status === 'error') return this.failWith(out, d.error);
          const reply = this.take(d);
          if (reply.rep !== REP.SUCCEEDED) return this.failWith(out, replyError(reply.rep, this.label, this.req.errorCodes ? failureCode(reply) : null));
          const isBindFirst = this.state === 'reply' && this.req.cmd === CMD.BIND;
          this.state = isBindFirst ? 'reply2' : 'open';
          const rest = isBindFirst ? new Uint8Array(0) : this.buf;
          if (!isBindFirst) this.buf = new Uint8Array(0);
          out.push({ type: 'reply', reply, rest });
          if (!isBindFirst) return;
          break;
        }
        default:
          return;
      }
    }
  }
}
