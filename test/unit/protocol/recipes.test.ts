import assert from 'node:assert/strict';
import { test } from 'node:test';
import { OptionError, parseRecipeList, parseSparsity, sparsityTag } from '../../../src/protocol/recipes';

test('parseSparsity reads fractions, percentages and N:M patterns', () => {
  assert.deepEqual(parseSparsity('0.5'), { kind: 'unstructured', ratio: 0.5 });
  assert.deepEqual(parseSparsity('50%'), { kind: 'unstructured', ratio: 0.5 });
  assert.deepEqual(parseSparsity('0'), { kind: 'dense' });
  assert.deepEqual(parseSparsity('2:4'), { kind: 'nm', n: 2, m: 4 });
  assert.deepEqual(parseSparsity(' 4:8 '), { kind: 'nm', n: 4, m: 8 });
  assert.equal(sparsityTag(parseSparsity('2:4')), '2of4');
  assert.equal(sparsityTag(parseSparsity('0.5')), 's50');
});

test('parseSparsity rejects out-of-range values with an actionable message', () => {
  for (const bad of ['1', '1.5', '-0.1', '4:4', '0:4', '5:4', 'half', '']) {
    assert.throws(() => parseSparsity(bad), (e: unknown) => e instanceof OptionError && /sparsity/.test((e as Error).message), bad);
  }
});

test('parseRecipeList reads a comma-separated list in order, without repeats, and names unknown recipes', () => {
  assert.deepEqual(parseRecipeList('wanda-rtn,sparsegpt-gptq'), ['wanda-rtn', 'sparsegpt-gptq']);
  assert.deepEqual(parseRecipeList(' RTN , gptq,rtn '), ['rtn', 'gptq']);
  assert.throws(() => parseRecipeList('wanda-rtn,wanda'), (e: unknown) => e instanceof OptionError && /unknown recipe "wanda" \(choose from obr-gptq, obr-rtn, sparsegpt-gptq, wanda-rtn, gptq, rtn\)/.test((e as Error).message));
  assert.throws(() => parseRecipeList(','), OptionError);
});
