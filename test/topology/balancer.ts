// A site with N gateways behind a TCP balancer (RFC 3089 §5.11 "easy load balancing" done with
// the balancer people already run):
//
//   c4 (IPv4 only) ─┐          ┌─ g1 ─┐
//                   lb (HAProxy, router)   srv (dual-stack HTTP and UDP echo)
//   c6 (IPv6 only) ─┘          └─ g2 ─┘
//
// lb routes, so a client's UDP datagrams reach the gateway its association is on directly (the
// balancer carries TCP only); the clients have routes to the gateways' networks and to lb, none
// to srv, so they reach srv only through a gateway. HAProxy talks to the gateways over IPv4
// only: an IPv6 client's family is known to the gateway from the PROXY header alone.
import { writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { eventually } from '../helpers/settle.js';
import { addNamespaces, buildLab, link, must, openLab, run, type ExecResult } from './netns.js';

export type LbRole = 'c4' | 'c6' | 'lb' | 'g1' | 'g2' | 'srv';
const ROLES: readonly LbRole[] = ['c4', 'c6', 'lb', 'g1', 'g2', 'srv'];

export const LB_ADDR = {
  lb: { c4: '203.0.113.1', c6: '2001:db8:c6::1', g1: '192.0.2.1', g1v6: '2001:db8:1::1', g2: '192.0.2.5', g2v6: '2001:db8:2::1', srv: '198.51.100.1', srvV6: '2001:db8:56::1' },
  c4: '203.0.113.2',
  /** A second address of c4, outside the gateways' --clients. */
  c4Outsider: '203.0.113.3',
  c6: '2001:db8:c6::2',
  g1: { v4: '192.0.2.2', v6: '2001:db8:1::2' },
  g2: { v4: '192.0.2.6', v6: '2001:db8:2::2' },
  srv: { v4: '198.51.100.10', v6: '2001:db8:56::10' },
} as const;

export const LB_NAMES = { dual: 'www.test', v4only: 'v4only.test', v6only: 'v6only.test' } as const;
export const SRV_HTTP_PORT = 80;
export const SRV_UDP_PORT = 7;

export interface BalancerTopology {
  ns: Record<LbRole, string>;
  dir: string;
  hostsFile: string;
  /** srv's index.html. */
  index: string;
  exec(role: LbRole, cmd: string, args: string[], opts?: { input?: string | Buffer; timeoutMs?: number }): Promise<ExecResult>;
  /** A long-running child in `role`, its stdout and stderr appended to dir/logName. */
  spawnIn(role: LbRole, logName: string, cmd: string, args: string[]): import('node:child_process').ChildProcess;
  destroy(): Promise<void>;
}

const SRV_UDP_ECHO = `
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", int(sys.argv[1])))
while True:
    d, a = s.recvfrom(65535)
    s.sendto(d, a)
`;

export async function createBalancerTopology(): Promise<BalancerTopology> {
  const lab = openLab('lb', ROLES);
  const { ns, dir } = lab;
  return buildLab(lab, async () => {
    await addNamespaces(lab, ROLES, ['c6'], ['c4']);
    await must('sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1'], ns.lb);
    const A = LB_ADDR;
    await link(lab, 'lb', 'c4', [[A.lb.c4, A.c4, 26]]);
    await must('ip', ['-n', ns.c4, 'addr', 'add', `${A.c4Outsider}/26`, 'dev', 'to-lb']);
    await link(lab, 'lb', 'c6', [[A.lb.c6, A.c6, 64]]);
    await link(lab, 'lb', 'g1', [[A.lb.g1, A.g1.v4, 30], [A.lb.g1v6, A.g1.v6, 64]]);
    await link(lab, 'lb', 'g2', [[A.lb.g2, A.g2.v4, 30], [A.lb.g2v6, A.g2.v6, 64]]);
    await link(lab, 'lb', 'srv', [[A.lb.srv, A.srv.v4, 24], [A.lb.srvV6, A.srv.v6, 64]]);
    // the clients reach the gateways (their datagrams) and lb, never srv
    await must('ip', ['-n', ns.c4, 'route', 'add', '192.0.2.0/29', 'via', A.lb.c4]);
    for (const net of ['2001:db8:1::/64', '2001:db8:2::/64']) await must('ip', ['-n', ns.c6, '-6', 'route', 'add', net, 'via', A.lb.c6]);
    for (const g of ['g1', 'g2'] as const) {
      await must('ip', ['-n', ns[g], 'route', 'add', 'default', 'via', g === 'g1' ? A.lb.g1 : A.lb.g2]);
      await must('ip', ['-n', ns[g], '-6', 'route', 'add', 'default', 'via', g === 'g1' ? A.lb.g1v6 : A.lb.g2v6]);
    }
    // srv answers the gateways only
    await must('ip', ['-n', ns.srv, 'route', 'add', '192.0.2.0/29', 'via', A.lb.srv]);
    for (const net of ['2001:db8:1::/64', '2001:db8:2::/64']) await must('ip', ['-n', ns.srv, '-6', 'route', 'add', net, 'via', A.lb.srvV6]);

    const www = join(dir, 'www');
    mkdirSync(www);
    const index = `<h1>srv behind the balanced gateways (${lab.id})</h1>\n`;
    writeFileSync(join(www, 'index.html'), index);
    // python's http.server on "::" serves both families
    lab.spawnIn('srv', 'http.out', '/usr/bin/python3', ['-m', 'http.server', '--bind', '::', String(SRV_HTTP_PORT), '--directory', www]);
    lab.spawnIn('srv', 'udp-echo.out', '/usr/bin/python3', ['-c', SRV_UDP_ECHO, String(SRV_UDP_PORT)]);

    const hostsFile = join(dir, 'gateway-hosts');
    writeFileSync(hostsFile, [
      `${A.srv.v4}\t${LB_NAMES.dual}`,
      `${A.srv.v6}\t${LB_NAMES.dual}`,
      `${A.srv.v4}\t${LB_NAMES.v4only}`,
      `${A.srv.v6}\t${LB_NAMES.v6only}`,
      '',
    ].join('\n'));

    for (const host of [A.srv.v4, `[${A.srv.v6}]`]) {
      const url = `http://${host}:${SRV_HTTP_PORT}/index.html`;
      await eventually(async () => (await run('curl', ['-sf', '-o', '/dev/null', '--max-time', '2', url], { netns: ns.srv })).code === 0, `HTTP server in srv serving ${url}`, { timeoutMs: 15000 });
    }
    await eventually(async () => (await run('ss', ['-Hlnu', 'sport', '=', `:${SRV_UDP_PORT}`], { netns: ns.srv })).stdout.length > 0, 'UDP echo in srv', { timeoutMs: 15000 });
    let destroyed = false;
    return {
      ns,
      dir,
      hostsFile,
      index,
      exec: (role, cmd, args, opts = {}) => run(cmd, args, { ...opts, netns: ns[role] }),
      spawnIn: (role, logName, cmd, args) => lab.spawnIn(role, logName, cmd, args),
      async destroy() {
        if (destroyed) return;
        destroyed = true;
        await Promise.all(lab.children.map((c) => new Promise<void>((resolve) => {
          if (c.exitCode !== null || c.signalCode !== null) return resolve();
          const timer = setTimeout(() => c.kill('SIGKILL'), 5000);
          c.once('exit', () => { clearTimeout(timer); resolve(); });
          c.kill('SIGTERM');
        })));
        lab.cleanupSync();
      },
    };
  });
}
