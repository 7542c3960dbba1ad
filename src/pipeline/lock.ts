// One job per output folder: a pid file `.NAME.obr-partial.lock` beside the working folder,
// created atomically (open with 'wx': fails when it exists). A second job on the same model and
// output folder (two terminals, or the CLI beside the extension) is refused instead of sharing
// `.NAME.obr-partial/`; a lock left by a process that no longer exists is taken over.
import { constants as fsConstants, existsSync, statSync } from 'node:fs';
import { access, open, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { OptionError } from '../protocol/recipes';

/** Another live job holds the working folder. */
export class JobLockError extends Error {
  override name = 'JobLockError';
  constructor(
    readonly pid: number,
    readonly lockFile: string,
  ) {
    super(`another job (pid ${pid}) is compressing this model into this folder (${path.dirname(lockFile)}); wait for it to finish or cancel it${pid === process.pid ? '' : `, or remove ${lockFile} if no such process is running`}`);
  }
}

function alive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export class JobLock {
  private constructor(readonly file: string) {}

  /** Takes the lock for `partialDir` (the lock file sits beside it) or throws JobLockError. */
  static async acquire(partialDir: string): Promise<JobLock> {
    const file = `${partialDir}.lock`;
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const h = await open(file, 'wx');
        try {
          await h.writeFile(`${process.pid}\n`);
        } finally {
          await h.close();
        }
        return new JobLock(file);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      const text = await readFile(file, 'utf8').catch(() => '');
      const pid = Number.parseInt(text.trim(), 10);
      // An empty file may be a lock being written right now: give its owner a moment.
      if (text === '' && attempt === 0) {
        await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      if (alive(pid)) throw new JobLockError(pid, file);
      await rm(file, { force: true }); // stale: its process is gone
    }
    throw new JobLockError(NaN, file);
  }

  /** Throws JobLockError when a live job holds `partialDir` now (a check before expensive work). */
  static async check(partialDir: string): Promise<void> {
    const file = `${partialDir}.lock`;
    const text = await readFile(file, 'utf8').catch(() => undefined);
    if (text === undefined) return;
    const pid = Number.parseInt(text.trim(), 10);
    if (alive(pid)) throw new JobLockError(pid, file);
  }

  async release(): Promise<void> {
    await rm(this.file, { force: true });
  }
}

/**
 * Checks that the output folder exists or can be created, without creating it: the nearest
 * existing ancestor must be a writable folder. Throws OptionError with the reason.
 */
export async function checkOutputFolder(dir: string): Promise<void> {
  let p = path.resolve(dir);
  for (;;) {
    if (existsSync(p)) break;
    const up = path.dirname(p);
    if (up === p) break;
    p = up;
  }
  let isDir = false;
  try {
    isDir = statSync(p).isDirectory();
  } catch {
    isDir = false;
  }
  if (!isDir) throw new OptionError(`can't create the output folder ${dir}: ${p} is a file, not a folder; pick another --out`);
  try {
    await access(p, fsConstants.W_OK);
  } catch {
    throw new OptionError(`can't create the output folder ${dir}: no permission to write in ${p}; pick another --out`);
  }
}
