import assert from 'node:assert/strict';
import { test } from 'node:test';
import { readFileSync } from 'node:fs';
import { parseEpList } from '../../../src/cli/commands/compress';
import { DEFAULT_EXECUTION_PROVIDERS, DEFAULT_OPTIONS, EXECUTION_PROVIDERS, GROUP_SIZES, OptionError, parseGroupSize, parseRecipeList, parseSparsity, sparsityTag, validateGroupSize } from '../../../src/protocol/recipes';

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

test('group sizes: 0, 32, 64, 128, 256 accepted; others, and sizes wider than the layer, refused naming the allowed values', () => {
  for (const g of GROUP_SIZES) {
    assert.equal(validateGroupSize(g), g);
    assert.equal(parseGroupSize(String(g)), g);
  }
  assert.equal(validateGroupSize(128, 128), 128);
  assert.equal(validateGroupSize(0, 16), 0);
  for (const bad of ['48', '16', '512', '-32', '1e2', 'g128', '', '128.5']) {
    assert.throws(() => parseGroupSize(bad), (e: unknown) => e instanceof OptionError && /use one of 0, 32, 64, 128, 256/.test((e as Error).message), bad);
  }
  assert.throws(
    () => validateGroupSize(256, 200, 'layer up_proj'),
    (e: unknown) => e instanceof OptionError && (e as Error).message === 'group size 256 is larger than the input width 200 of layer up_proj; use one of 0, 32, 64, 128 (0 = one scale per output row)',
  );
  assert.throws(() => validateGroupSize(32, 16), (e: unknown) => e instanceof OptionError && /use one of 0 \(0 = one/.test((e as Error).message));
});

test('the default execution providers: the same in the code, the CLI and the settings manifest; WebGPU only on request', () => {
  const manifest = JSON.parse(readFileSync('package.json', 'utf8')) as { contributes: { configuration: { properties: Record<string, { default: unknown; items: { enum: string[] } }> } } };
  const setting = manifest.contributes.configuration.properties['obr.executionProviders']!;
  assert.deepEqual(setting.default, [...DEFAULT_EXECUTION_PROVIDERS]);
  assert.deepEqual(setting.items.enum, [...EXECUTION_PROVIDERS]);
  assert.deepEqual(DEFAULT_OPTIONS.executionProviders, [...DEFAULT_EXECUTION_PROVIDERS]);
  assert.deepEqual(parseEpList(undefined), [...DEFAULT_EXECUTION_PROVIDERS]);
  assert.ok(!DEFAULT_EXECUTION_PROVIDERS.includes('webgpu'));
  assert.equal(DEFAULT_EXECUTION_PROVIDERS.at(-1), 'cpu');
  assert.deepEqual(parseEpList('webgpu,cpu'), ['webgpu', 'cpu']);
});
