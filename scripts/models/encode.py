"""Prints the token ids of a text file as JSON (the Python reference encoder): encode.py TOKENIZER_JSON TEXT_FILE."""
import json
import sys

from common import BPETokenizer

if __name__ == '__main__':
    tok = BPETokenizer(sys.argv[1])
    with open(sys.argv[2], encoding='utf-8', newline='') as f:
        text = f.read()
    json.dump(tok.encode(text), sys.stdout)
