// Unknown or misspelled CLI flags: the nearest known flag is named, parse failures become one line.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseArgs } from 'node:util';
import { editDistance, flagProblem, flagsInUsage, nearestFlag } from '../../../src/cli/flags';

const USAGE = 'obr x MODEL.onnx [--sparsity 0.5] [--samples 128] [--seqlen N] [--eval-text FILE] [--eval-windows K] [--json]';

function parseError(args: string[]): unknown {
  try {
    parseArgs({ args, allowPositionals: false, options: { sparsity: { type: 'string' }, samples: { type: 'string' }, json: { type: 'boolean' } } });
  } catch (e) {
    return e;
  }
  throw new Error('expected a parse error');
}

test('edit distance counts inserts, deletes, substitutions and neighbour swaps', () => {
  assert.equal(editDistance('sparsity', 'sparsity'), 0);
  assert.equal(editDistance('sparsty', 'sparsity'), 1);
  assert.equal(editDistance('spasrity', 'sparsity'), 1);
  assert.equal(editDistance('', 'abc'), 3);
  assert.equal(editDistance('kitten', 'sitting'), 3);
});

test('the nearest flag is a likely typo or a prefix, else nothing', () => {
  const known = flagsInUsage(USAGE);
  assert.deepEqual(known, ['--sparsity', '--samples', '--seqlen', '--eval-text', '--eval-windows', '--json']);
  assert.equal(nearestFlag('--sparsty', known), '--sparsity');
  assert.equal(nearestFlag('--sampels=3', known), '--samples');
  assert.equal(nearestFlag('--eval-window', known), '--eval-windows');
  assert.equal(nearestFlag('--jsno', known), '--json');
  assert.equal(nearestFlag('--temperature', known), undefined);
});

test('parse failures become one line; other errors are left alone', () => {
  assert.equal(flagProblem(parseError(['--sparsty', '1']), USAGE), 'unknown option --sparsty — did you mean --sparsity?');
  assert.equal(flagProblem(parseError(['--zzzzzzzz']), USAGE), 'unknown option --zzzzzzzz');
  assert.equal(flagProblem(parseError(['--samples']), USAGE), '--samples needs a value');
  assert.equal(flagProblem(parseError(['--json=1']), USAGE), '--json takes no value');
  assert.match(flagProblem(parseError(['model.onnx']), USAGE)!, /unexpected argument model\.onnx/);
  // A wrapped parse error (cause) is found; an ordinary error is not a flag problem.
  assert.equal(flagProblem(new Error('wrapped', { cause: parseError(['--sparsty']) }), USAGE), 'unknown option --sparsty — did you mean --sparsity?');
  assert.equal(flagProblem(new Error('no such file'), USAGE), undefined);
  assert.equal(flagProblem(new Error('outer', { cause: new Error('inner') }), USAGE), undefined);
});
