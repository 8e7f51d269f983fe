// The addresses the FTP tests without sockets (bridge/gateway/ftp.test.ts, ftp-session.test.ts)
// give each side: a client and a server in each family, and the gateway's address facing each
// (documentation ranges: RFC 5737, RFC 3849).
import { parseIp, type Ip } from '../../shared/net/address.js';

export const ip = (t: string): Ip => parseIp(t)!;
export const C4 = ip('203.0.113.2');
export const C6 = ip('2001:db8:c6::2');
export const S4 = ip('198.51.100.10');
export const S6 = ip('2001:db8:56::10');
export const GW_C4 = ip('203.0.113.1');
export const GW_C6 = ip('2001:db8:c6::1');
export const GW_S4 = ip('198.51.100.1');
export const GW_S6 = ip('2001:db8:56::1');
