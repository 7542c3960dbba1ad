"""Reference perplexity for the pipeline's `obr eval` test: rebuilds the tiny model in PyTorch from
the ONNX file's own initializers (scripts/models/model.py, the training code) and evaluates it
exactly as scripts/models/train.py does (window_nll: mean cross-entropy over the seqlen-1 shifted
targets of numel // seqlen windows, float64). The token ids come from the caller (the Node
tokenizer), so only the model arithmetic is compared.

Usage: /usr/bin/python3 reference_ppl.py MODEL_DIR IDS.json SEQLEN  ->  prints {"nll": ..., "windows": ...}
"""
import json
import os
import sys

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..'))
sys.path.insert(0, os.path.join(ROOT, 'scripts', 'models'))
from model import LlamaConfig, LlamaForCausalLM  # noqa: E402


def main(model_dir, ids_path, seqlen):
    cfg_json = json.load(open(os.path.join(model_dir, 'config.json')))
    keys = ['vocab_size', 'hidden_size', 'num_hidden_layers', 'num_attention_heads', 'num_key_value_heads',
            'intermediate_size', 'max_position_embeddings', 'rms_norm_eps', 'rope_theta']
    model = LlamaForCausalLM(LlamaConfig(**{k: cfg_json[k] for k in keys}))
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(os.path.join(model_dir, 'model.onnx')).graph.initializer}
    state = {}
    for k, v in model.state_dict().items():
        a = inits[k]
        if k.endswith('_proj.weight') or k == 'lm_head.weight':
            a = a.T  # MatMul weights are stored [in, out]
        state[k] = torch.from_numpy(np.ascontiguousarray(a)).to(v.dtype)
    model.load_state_dict(state)
    model.eval()
    torch.set_num_threads(1)
    ids = np.array(json.load(open(ids_path)), dtype=np.int64)
    n = len(ids) // seqlen
    wins = torch.from_numpy(ids[: n * seqlen].reshape(n, seqlen).copy())
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, n, 8):
            w = wins[i:i + 8]
            logits = model.loss_logits(w)
            total += F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).double(), w[:, 1:].reshape(-1), reduction='sum').item()
            count += w[:, 1:].numel()
    print(json.dumps({'nll': total / count, 'windows': n}))


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
