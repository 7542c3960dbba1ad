"""Writes media/text/sotu-{calib,test,valid}.txt and media/text/wikitext-2-test.raw (see media/text/README.md)."""
import os
import shutil

from common import TEXT_DIR, CACHE, split_docs, calib_docs, join_docs, ROOT

WIKITEXT = os.path.join(ROOT, '..', 'shared', 'data', 'wikitext-2-raw', 'wiki.test.raw')


def main():
    os.makedirs(TEXT_DIR, exist_ok=True)
    os.makedirs(CACHE, exist_ok=True)
    s = split_docs()
    outs = {
        'sotu-test.txt': s['test'],
        'sotu-valid.txt': s['valid'],
        'sotu-calib.txt': calib_docs(s['train']),
    }
    for name, docs in outs.items():
        with open(os.path.join(TEXT_DIR, name), 'w', encoding='utf-8', newline='') as f:
            f.write(join_docs(docs))
        print(name, len(docs), 'docs', sum(len(t.encode()) for _, t in docs), 'bytes:', ' '.join(n[:-4] for n, _ in docs))
    with open(os.path.join(CACHE, 'sotu-train.txt'), 'w', encoding='utf-8', newline='') as f:
        f.write(join_docs(s['train']))
    print('train', len(s['train']), 'docs')
    if os.path.exists(WIKITEXT):
        shutil.copyfile(WIKITEXT, os.path.join(TEXT_DIR, 'wikitext-2-test.raw'))


if __name__ == '__main__':
    main()
