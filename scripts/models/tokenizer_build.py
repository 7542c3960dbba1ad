"""Trains the byte-level BPE on the train split and writes tokenizer.json + tokenizer_config.json."""
import json
import os
import sys
import time

from common import SIZES, train_text, train_bpe, tokenizer_json, tokenizer_config


def main(size, out_dir):
    cfg = SIZES[size]
    t0 = time.time()
    vocab, merges = train_bpe(train_text(), cfg['vocab_size'])
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, 'tokenizer.json'), 'w', encoding='utf-8') as f:
        json.dump(tokenizer_json(vocab, merges), f, ensure_ascii=False, indent=1)
        f.write('\n')
    with open(os.path.join(out_dir, 'tokenizer_config.json'), 'w', encoding='utf-8') as f:
        json.dump(tokenizer_config(cfg['max_position_embeddings']), f, indent=2)
        f.write('\n')
    print(f'tokenizer {size}: {len(vocab)} tokens, {len(merges)} merges, {time.time() - t0:.1f}s')


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2])
