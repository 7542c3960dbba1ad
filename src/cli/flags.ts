// What went wrong with a command's flags, in words: node:util parseArgs throws a TypeError with
// a code (ERR_PARSE_ARGS_UNKNOWN_OPTION, …); the CLI turns it into one line naming the nearest
// known flag, followed by the command's usage, and exits 2.

/** The `--flag` names a usage text mentions, in order of first appearance. */
export function flagsInUsage(usage: string): string[] {
  return [...new Set(usage.match(/--[a-z][a-z0-9-]*/g) ?? [])];
}

/** Levenshtein distance (insert, delete, substitute; a swap of two neighbours counts 1). */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

/** The known flag closest to `flag`, when it is close enough to be a likely typo (or a prefix). */
export function nearestFlag(flag: string, known: readonly string[]): string | undefined {
  const name = flag.replace(/=.*$/, '');
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const k of known) {
    const dist = k.startsWith(name) && name.length >= 4 ? 0.5 : editDistance(name, k);
    if (dist < bestDistance) {
      best = k;
      bestDistance = dist;
    }
  }
  const allowed = Math.max(2, Math.floor(name.length / 3));
  return bestDistance <= allowed ? best : undefined;
}

/** A message for a parseArgs failure (unknown flag, missing value, stray argument), else undefined. */
export function flagProblem(e: unknown, usage: string): string | undefined {
  // Commands that wrap the parse error in a UsageError keep the original as its cause.
  if (e instanceof Error && e.cause instanceof Error) {
    const inner = flagProblem(e.cause, usage);
    if (inner) return inner;
  }
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code !== 'string' || !code.startsWith('ERR_PARSE_ARGS_')) return undefined;
  const message = (e as Error).message;
  const quoted = /'([^']+)'/.exec(message)?.[1];
  switch (code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION': {
      const flag = quoted ?? '?';
      const near = nearestFlag(flag, flagsInUsage(usage));
      return `unknown option ${flag}${near ? ` — did you mean ${near}?` : ''}`;
    }
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE': {
      const flag = (quoted ?? '').replace(/ <value>$/, '');
      if (/argument missing/.test(message)) return `${flag} needs a value`;
      if (/does not take an argument/.test(message)) return `${flag} takes no value`;
      return message;
    }
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return `unexpected argument ${quoted ?? ''}: this command takes no file names`.replace(/ +:/, ':');
    default:
      return message;
  }
}
