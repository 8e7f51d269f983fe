// The gateway as the topology tests start it: a users file made by `dualsocks passwd`, and
// `dualsocks gateway` inside a namespace, waited for on every listener.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, startCli, type Running } from '../helpers/process.js';
import { eventually } from '../helpers/settle.js';
import { run } from './netns.js';

/** Runs `dualsocks passwd user` with `pass` on stdin, asserts it succeeded, and writes its output to dir/users. */
export async function makeUsersFile(dir: string, user: string, pass: string): Promise<string> {
  const pw = await run(process.execPath, [CLI, 'passwd', user], { input: `${pass}\n` });
  assert.equal(pw.code, 0, pw.stderr);
  const usersFile = join(dir, 'users');
  writeFileSync(usersFile, pw.stdout);
  return usersFile;
}

/** Both wildcard listen addresses (IPv4 and IPv6) on `port`. */
export const anyAddress = (port: number): string[] => [`0.0.0.0:${port}`, `[::]:${port}`];

/**
 * Starts `dualsocks gateway --listen L… ARGS…` inside `netns`, waits until every `listen` address is
 * listening, and adds it to `running` (what the test stops at the end) when given.
 */
export async function startGateway(netns: string, listen: string[], args: string[], running?: Running[]): Promise<Running> {
  const gw = await startCli(['gateway', ...listen.flatMap((l) => ['--listen', l]), ...args], { netns, expectListeners: listen.length });
  running?.push(gw);
  return gw;
}

// Echoes every datagram and prints its payload, so a test sees what reached the server.
const PY_UDP_ECHO = `
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    d, a = s.recvfrom(65535)
    s.sendto(d, a)
    print(d.decode(errors="replace"), flush=True)
`;

/** A UDP echo (python3) on host:port inside `role`'s namespace, each payload pushed to `heard`; returns once it listens. */
export async function startPyUdpEcho(topo: { ns: Record<string, string> }, role: string, host: string, port: number, heard: string[]): Promise<ChildProcess> {
  const p = spawn('ip', ['netns', 'exec', topo.ns[role]!, '/usr/bin/python3', '-c', PY_UDP_ECHO, host, String(port)], { stdio: ['ignore', 'pipe', 'inherit'] });
  p.stdout!.setEncoding('utf8').on('data', (d: string) => heard.push(...d.split('\n').filter(Boolean)));
  try {
    await eventually(async () => (await run('ss', ['-Hlnu', 'sport', '=', `:${port}`], { netns: topo.ns[role] })).stdout.length > 0, `UDP echo in ${role} listening`, { timeoutMs: 10_000 });
  } catch (e) {
    p.kill('SIGKILL');
    throw e;
  }
  return p;
}
