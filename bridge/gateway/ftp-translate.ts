// FTP translation (RFC 3089 §5.10), sans-IO: takes control-channel lines from either side and
// returns lines to send and data-channel actions, so the protocol runs in unit tests without
// sockets. The gateway is the data endpoint for both sides: the client is told about a
// gateway listener in its own family, the server about one in the server's family.
import { familyOf, formatIp, isV4, ipFromV4Bytes, parseIp, sameIp, type Family, type Ip } from '../../shared/net/address.js';

/** Longest control line accepted (RFC 959 sets none; paths make long lines legitimate). */
export const MAX_FTP_LINE = 8192;

/** Lines of one multi-line reply kept while it is held for rewriting (the rest are dropped). */
export const MAX_HELD_REPLY_LINES = 32;

/** Below this a port is privileged: a PORT/EPRT naming one is an FTP bounce (RFC 2577). */
export const FIRST_UNPRIVILEGED_PORT = 1024;

export interface DataAddress {
  ip: Ip;
  port: number;
}

export type FtpAction =
  | { type: 'toClient'; line: string }
  | { type: 'toServer'; line: string }
  /** Open a data listener on the gateway's address facing `side`; answer with listening()/listenFailed(). */
  | { type: 'listen'; id: number; side: 'client' | 'server' }
  /** Where a connection accepted on listener `id` is to be relayed. */
  | { type: 'dataTarget'; id: number; target: DataAddress }
  /** Listener `id` will not be used: close it. */
  | { type: 'closeData'; id: number };

type Pending =
  | { kind: 'plain' }
  | { kind: 'local'; line: string }
  | { kind: 'passive'; id: number; form: 'pasv' | 'epsv'; listen: DataAddress }
  | { kind: 'active'; id: number };

/** Splits a byte stream into lines (CRLF or LF), latin1 so any byte survives the round trip. */
export class LineReader {
  private pending = '';
  constructor(private readonly max = MAX_FTP_LINE) {}

  /** The complete lines in `chunk`, or null when a line exceeds the bound. */
  feed(chunk: Uint8Array): string[] | null {
    this.pending += Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString('latin1');
    const lines: string[] = [];
    let i: number;
    while ((i = this.pending.indexOf('\n')) >= 0) {
      const line = this.pending.slice(0, i);
      this.pending = this.pending.slice(i + 1);
      if (line.length > this.max) return null;
      lines.push(line.endsWith('\r') ? line.slice(0, -1) : line);
    }
    return this.pending.length > this.max ? null : lines;
  }

  /** An unterminated last line, taken once at end of stream. */
  rest(): string {
    const r = this.pending;
    this.pending = '';
    return r;
  }
}

export function encodeLine(line: string): Buffer {
  return Buffer.from(`${line}\r\n`, 'latin1');
}

/** "h1,h2,h3,h4,p1,p2" anywhere in the text (RFC 1123 §4.1.2.6: scan for the numbers). */
export function parseHostPortCommas(text: string): DataAddress | null {
  const m = /(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3})/.exec(text);
  if (!m) return null;
  const n = m.slice(1).map(Number);
  if (n.some((v) => v > 255)) return null;
  const port = n[4]! * 256 + n[5]!;
  if (port === 0) return null;
  return { ip: ipFromV4Bytes(Uint8Array.from(n.slice(0, 4))), port };
}

export function formatHostPortCommas(a: DataAddress): string {
  if (!isV4(a.ip)) throw new RangeError('PORT and 227 carry IPv4 only');
  return `${formatIp(a.ip).replace(/\./g, ',')},${a.port >> 8},${a.port & 0xff}`;
}

/** The port in a 229 reply: "(|||port|)" with any printable delimiter (RFC 2428 §3). */
export function parse229(text: string): number | null {
  const m = /\(([\x21-\x7e])\1\1(\d{1,5})\1\)/.exec(text);
  if (!m) return null;
  const port = Number(m[2]);
  return port >= 1 && port <= 65535 ? port : null;
}

export type EprtResult = { ok: true; address: DataAddress } | { ok: false; code: 501 | 522 };

/** EPRT |af|addr|port| (RFC 2428 §2); 522 for an address family other than 1 or 2. */
export function parseEprt(arg: string): EprtResult {
  const d = arg[0];
  if (d === undefined || d.charCodeAt(0) < 33 || d.charCodeAt(0) > 126) return { ok: false, code: 501 };
  const parts = arg.split(d);
  if (parts.length !== 5 || parts[0] !== '' || parts[4] !== '') return { ok: false, code: 501 };
  const [, af, addr, portText] = parts as [string, string, string, string];
  if (af !== '1' && af !== '2') return /^\d+$/.test(af) ? { ok: false, code: 522 } : { ok: false, code: 501 };
  const ip = parseIp(addr!);
  if (!ip || (af === '1') !== (isV4(ip) && !addr!.includes(':'))) return { ok: false, code: 501 };
  if (!/^\d{1,5}$/.test(portText!)) return { ok: false, code: 501 };
  const port = Number(portText);
  if (port < 1 || port > 65535) return { ok: false, code: 501 };
  return { ok: true, address: { ip, port } };
}

export function formatEprt(a: DataAddress): string {
  return `EPRT |${isV4(a.ip) ? 1 : 2}|${formatIp(a.ip)}|${a.port}|`;
}


export interface FtpTranslatorOptions {
  /** The control connection's client address: the only host a PORT/EPRT may name. */
  clientIp: Ip;
  /** The control connection's server address: passive data goes there, whatever 227 says. */
  serverIp: Ip;
}

/**
 * Each command the server gets is answered by exactly one final (2xx–5xx) reply, so a queue of
 * what was sent pairs replies with commands, and a reply the gateway makes itself waits its
 * turn behind replies still due from the server.
 */
export class FtpTranslator {
  private readonly clientFamily: Family;
  private readonly serverFamily: Family;
  /** The server's greeting is a reply without a command. */
  private readonly queue: Pending[] = [{ kind: 'plain' }];
  private waiting: { id: number; then: (addr: DataAddress) => FtpAction[] } | undefined;
  private held: string[] = [];
  private reply: { code: string; lines: string[] } | undefined;
  private nextId = 1;

  constructor(private readonly opts: FtpTranslatorOptions) {
    this.clientFamily = familyOf(opts.clientIp);
    this.serverFamily = familyOf(opts.serverIp);
  }

  /** True while a listener is being opened: client lines are held until it is ready. */
  get busy(): boolean {
    return this.waiting !== undefined;
  }

  fromClient(line: string): FtpAction[] {
    if (this.waiting) {
      this.held.push(line);
      return [];
    }
    return this.command(line);
  }

  fromServer(line: string): FtpAction[] {
    const m = /^(\d{3})([ -]|$)/.exec(line);
    if (this.reply) {
      // a multi-line reply ends at a line starting with its code and a space
      if (m && m[1] === this.reply.code && m[2] !== '-') {
        const done = this.reply;
        this.reply = undefined;
        done.lines.push(line);
        return this.replyDone(done.code, done.lines);
      }
      if (this.streaming()) return [{ type: 'toClient', line }];
      // a reply held for rewriting keeps a bounded part of its text
      if (this.reply.lines.length < MAX_HELD_REPLY_LINES) this.reply.lines.push(line);
      return [];
    }
    if (!m) return [{ type: 'toClient', line }]; // not a reply: nothing to pair, pass it on
    if (m[2] === '-') {
      this.reply = { code: m[1]!, lines: [line] };
      return this.streaming() ? [{ type: 'toClient', line }] : [];
    }
    return this.replyDone(m[1]!, [line]);
  }

  listening(id: number, addr: DataAddress): FtpAction[] {
    if (this.waiting?.id !== id) return [{ type: 'closeData', id }];
    const { then } = this.waiting;
    this.waiting = undefined;
    return [...then(addr), ...this.drainHeld()];
  }

  listenFailed(id: number): FtpAction[] {
    if (this.waiting?.id !== id) return [];
    this.waiting = undefined;
    return [...this.local("425 Can't open data connection (gateway listener failed)."), ...this.drainHeld()];
  }

  private drainHeld(): FtpAction[] {
    const out: FtpAction[] = [];
    while (!this.waiting && this.held.length > 0) out.push(...this.command(this.held.shift()!));
    return out;
  }

  /** Whether the reply now arriving passes straight through (it is not one the gateway rewrites). */
  private streaming(): boolean {
    const head = this.queue[0];
    return head === undefined || head.kind === 'plain';
  }

  private command(line: string): FtpAction[] {
    const sp = line.indexOf(' ');
    const verb = (sp < 0 ? line : line.slice(0, sp)).toUpperCase();
    const arg = sp < 0 ? '' : line.slice(sp + 1).trim();
    switch (verb) {
      case 'PASV':
        if (this.clientFamily === 6) return this.local('502 PASV cannot name an IPv6 address; use EPSV.');
        return this.passive('pasv');
      case 'EPSV': {
        // EPSV ALL is the client's promise to use EPSV only; the gateway keeps it, the server
        // must not hear it because the gateway may still send it PASV
        if (arg.toUpperCase() === 'ALL') return this.local('200 EPSV ALL command successful.');
        if (arg !== '' && arg !== (this.clientFamily === 4 ? '1' : '2')) {
          return /^\d+$/.test(arg) ? this.local(`522 Network protocol not supported, use (${this.clientFamily === 4 ? 1 : 2}).`) : this.local('501 Syntax error in EPSV argument.');
        }
        return this.passive('epsv');
      }
      case 'PORT': {
        const a = parseHostPortCommas(arg);
        if (!a || !/^\s*\d{1,3}(,\d{1,3}){5}\s*$/.test(arg)) return this.local('501 Syntax error in PORT argument.');
        return this.active(a);
      }
      case 'EPRT': {
        const r = parseEprt(arg);
        if (!r.ok) return this.local(r.code === 522 ? `522 Network protocol not supported, use (${this.clientFamily === 4 ? 1 : 2}).` : '501 Syntax error in EPRT argument.');
        return this.active(r.address);
      }
      case 'LPRT':
      case 'LPSV':
        return this.local(`502 ${verb} not implemented; use EPRT/EPSV.`);
      default:
        this.queue.push({ kind: 'plain' });
        return [{ type: 'toServer', line }];
    }
  }

  private local(line: string): FtpAction[] {
    this.queue.push({ kind: 'local', line });
    return this.drainLocal();
  }

  private drainLocal(): FtpAction[] {
    const out: FtpAction[] = [];
    for (let head = this.queue[0]; head?.kind === 'local'; head = this.queue[0]) {
      this.queue.shift();
      out.push({ type: 'toClient', line: head.line });
    }
    return out;
  }

  private passive(form: 'pasv' | 'epsv'): FtpAction[] {
    const id = this.nextId++;
    this.waiting = {
      id,
      then: (listen) => {
        if (form === 'pasv' && !isV4(listen.ip)) return [{ type: 'closeData', id }, ...this.local("425 Can't open data connection (no IPv4 address for 227).")];
        this.queue.push({ kind: 'passive', id, form, listen });
        return [{ type: 'toServer', line: this.serverFamily === 6 ? 'EPSV' : 'PASV' }];
      },
    };
    return [{ type: 'listen', id, side: 'client' }];
  }

  private active(announced: DataAddress): FtpAction[] {
    // FTP bounce (RFC 2577): the gateway connects only back to the client itself, never to a
    // privileged port
    if (!sameIp(announced.ip, this.opts.clientIp) || announced.port < FIRST_UNPRIVILEGED_PORT) {
      return this.local('504 Data connections go only to your own address and an unprivileged port.');
    }
    const id = this.nextId++;
    this.waiting = {
      id,
      then: (listen) => {
        if (this.serverFamily === 4 && !isV4(listen.ip)) return [{ type: 'closeData', id }, ...this.local("425 Can't open data connection (no IPv4 address for PORT).")];
        this.queue.push({ kind: 'active', id });
        const line = this.serverFamily === 6 ? formatEprt(listen) : `PORT ${formatHostPortCommas(listen)}`;
        return [{ type: 'dataTarget', id, target: announced }, { type: 'toServer', line }];
      },
    };
    return [{ type: 'listen', id, side: 'server' }];
  }

  private replyDone(code: string, lines: string[]): FtpAction[] {
    const streamed = this.streaming();
    const last = lines[lines.length - 1]!;
    const preliminary = code[0] === '1';
    const out: FtpAction[] = [];
    if (preliminary || this.queue.length === 0) {
      // a 1xx belongs to the command at the head, which still awaits its final reply; a reply
      // nobody asked for (421 before closing) goes to the client as it is
      if (streamed) out.push({ type: 'toClient', line: last });
      else out.push(...lines.map((l) => ({ type: 'toClient' as const, line: l })));
      return out;
    }
    const head = this.queue.shift()!;
    const pass = (): FtpAction[] => (streamed ? [{ type: 'toClient', line: last }] : lines.map((l) => ({ type: 'toClient' as const, line: l })));
    switch (head.kind) {
      case 'plain':
      case 'local': // not reachable: locals never stay at the head
        out.push(...pass());
        break;
      case 'passive': {
        const port = code === '229' ? parse229(last) : code === '227' ? parseHostPortCommas(last.slice(4))?.port ?? null : null;
        if (port !== null) {
          out.push({ type: 'dataTarget', id: head.id, target: { ip: this.opts.serverIp, port } });
          out.push({
            type: 'toClient',
            line: head.form === 'pasv' ? `227 Entering Passive Mode (${formatHostPortCommas(head.listen)}).` : `229 Entering Extended Passive Mode (|||${head.listen.port}|)`,
          });
        } else {
          out.push({ type: 'closeData', id: head.id });
          if (code[0] === '2') out.push({ type: 'toClient', line: "425 Can't open data connection (the server's passive reply was not understood)." });
          else out.push(...pass());
        }
        break;
      }
      case 'active':
        if (code[0] !== '2') out.push({ type: 'closeData', id: head.id });
        out.push(...pass());
        break;
    }
    out.push(...this.drainLocal());
    return out;
  }
}
