// Pending FTP passive data connections of one gateway. A translated control session registers a
// slot when its data listener is up; a SOCKS CONNECT from the same client (and user) to the
// control connection's host, or to the address the 227/229 named, and the listener's port claims
// it (curl's passive mode through a SOCKS proxy). Owned by the Gateway, so two gateways in one
// process never see each other's slots.
import { parseIp, sameIp, type Ip } from '../../shared/net/address.js';

/** The CONNECT a slot is matched against: what a RequestContext has. */
export interface SlotClaim {
  /** The client's address (RequestContext.source). */
  readonly source: { readonly host: string };
  readonly request: { readonly host: string; readonly port: number };
  readonly record: { readonly user?: unknown };
}

/** A pending passive data connection that a SOCKS CONNECT from the same client may claim. */
export interface PassiveSlot<C extends SlotClaim = SlotClaim> {
  clientIp: Ip;
  /** The SOCKS username the control connection authenticated as (as logged); undefined without --users. */
  user: string | undefined;
  /** The control request's host, lowercased, and the address the 227/229 named. */
  host: string;
  listenIp: Ip;
  port: number;
  ready(): boolean;
  claim(ctx: C): Promise<void>;
}

export class FtpDataSlots<C extends SlotClaim> {
  private readonly pending = new Set<PassiveSlot<C>>();

  get size(): number {
    return this.pending.size;
  }

  add(slot: PassiveSlot<C>): void {
    this.pending.add(slot);
  }

  delete(slot: PassiveSlot<C>): void {
    this.pending.delete(slot);
  }

  /** Serves a CONNECT that is a translated session's passive data connection; undefined if it is not one. */
  claim(ctx: C): Promise<void> | undefined {
    if (this.pending.size === 0) return undefined;
    const from = parseIp(ctx.source.host);
    const asked = parseIp(ctx.request.host);
    for (const slot of this.pending) {
      if (!from || !sameIp(from, slot.clientIp) || slot.user !== ctx.record.user || slot.port !== ctx.request.port || !slot.ready()) continue;
      if (ctx.request.host.toLowerCase() === slot.host || (asked && sameIp(asked, slot.listenIp))) return slot.claim(ctx);
    }
    return undefined;
  }
}
