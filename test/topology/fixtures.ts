// The gateway as the topology tests start it: a users file made by `dualsocks passwd`, and
// `dualsocks gateway` inside a namespace, waited for on every listener.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, startCli, type Running } from '../helpers/process.js';
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
