// The CLI runs the pipeline in its own process, and glibc reads its malloc settings only at process
// start (src/runtime/mallocTunables.ts). So when they are missing, `obr` starts itself once more
// with them in the environment and stands by as a transparent wrapper: same node, same flags and
// arguments, stdin/stdout/stderr inherited, signals forwarded, the child's exit code returned and
// a child killed by a signal re-raised on this process. The child is marked so it never
// re-executes again.
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { MALLOC_RELAUNCHED, missingMallocTunables } from '../runtime/mallocTunables';

/** Signals a user or a process manager sends to the `obr` process; passed on to the child. */
const FORWARDED: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/** A Ctrl-C reaches the child twice (the terminal's process group, then our forward) within this. */
const SAME_SIGINT_MS = 1000;

/** Whether this process is the child started by relaunchWithMallocTunables. */
export function isRelaunched(env: NodeJS.ProcessEnv = process.env): boolean {
  return env[MALLOC_RELAUNCHED] === '1';
}

function debugging(): boolean {
  const flags = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)];
  return flags.some((f) => f.startsWith('--inspect'));
}

/**
 * Re-executes this script with the malloc settings when they are missing (Linux, not opted out,
 * not already relaunched, not under a debugger). Resolves to the exit code to leave with, or to
 * undefined when this process should run the command itself (nothing to add, or the child could
 * not be started). A child that dies by a signal makes this process die by the same signal.
 */
export function relaunchWithMallocTunables(): Promise<number | undefined> | undefined {
  if (isRelaunched() || debugging() || !process.argv[1]) return undefined;
  const missing = missingMallocTunables(process.env);
  if (Object.keys(missing).length === 0) return undefined;
  return new Promise<number | undefined>((resolve) => {
    const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
      stdio: 'inherit',
      env: { ...process.env, ...missing, [MALLOC_RELAUNCHED]: '1' },
    });
    const forward = (signal: NodeJS.Signals): void => {
      child.kill(signal);
    };
    for (const s of FORWARDED) process.on(s, forward);
    const stopForwarding = (): void => {
      for (const s of FORWARDED) process.off(s, forward);
    };
    child.once('error', () => {
      // Not started (spawn failed): run the command here, without the settings.
      stopForwarding();
      resolve(undefined);
    });
    child.once('exit', (code, signal) => {
      stopForwarding();
      if (signal) {
        process.kill(process.pid, signal);
        resolve(128 + signalNumber(signal)); // if the signal is caught or ignored after all
        return;
      }
      resolve(code ?? 1);
    });
  });
}

function signalNumber(signal: NodeJS.Signals): number {
  return constants.signals[signal] ?? 0;
}

/**
 * In the relaunched child: one Ctrl-C arrives twice (from the terminal to the whole process group,
 * and forwarded by the parent). The second copy within SAME_SIGINT_MS is dropped, so a command's
 * cancel handler isn't followed by the default SIGINT exit; a SIGINT that no command handles
 * exits with 130, as without the wrapper.
 */
export function guardRelaunchedSigint(): void {
  let last = -Infinity;
  process.on('SIGINT', () => {
    const now = performance.now();
    const repeat = now - last < SAME_SIGINT_MS;
    last = now;
    if (repeat) return;
    if (process.listenerCount('SIGINT') > 1) return; // a command's cancel handler takes it
    process.exit(130);
  });
}

/**
 * Runs `run` (the CLI's command) in a process that has the malloc settings: this one when it has
 * them (or they don't apply), else a relaunched child whose exit code is returned.
 */
export async function runWithMallocTunables(run: () => Promise<number>): Promise<number> {
  const relaunched = relaunchWithMallocTunables();
  const code = relaunched ? await relaunched : undefined;
  if (code !== undefined) return code;
  if (isRelaunched()) guardRelaunchedSigint();
  return run();
}
