// Root- and browser-dependent tests skip loudly on a developer's machine without them, but with
// CI=true a missing capability is a failure, never a skip.
import { execFileSync } from 'node:child_process';

export const IN_CI = process.env.CI === 'true';

function can(cmd: string, args: string[]): boolean {
  try {
    execFileSync(cmd, args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** `false` when the tests may run; a reason string for `test(..., { skip })` otherwise. Throws in CI. */
export function requireCapability(name: string, available: boolean, hint: string): false | string {
  if (available) return false;
  const msg = `${name} not available: ${hint}`;
  if (IN_CI) throw new Error(`CI=true but ${msg}`);
  process.stderr.write(`\n*** SKIPPING: ${msg} ***\n\n`);
  return msg;
}

export function rootNetns(): false | string {
  const ok = process.getuid?.() === 0 && can('ip', ['netns', 'list']);
  return requireCapability('root with ip netns', ok, 'run as root with iproute2 installed');
}

export function haveCommand(cmd: string, args: string[] = ['--version']): boolean {
  return can(cmd, args);
}
