#!/usr/bin/env python3
"""A synthetic document folder for RAG benchmarks: FILES Markdown files of SECTIONS sections each, every section
about 700 characters of words drawn (Zipf-like) from a fixed vocabulary, so `sluice rag build` with the default
chunk size makes one chunk per section (FILES x SECTIONS chunks). Deterministic (seeded).
    bench/rag_corpus.py OUT_DIR [FILES=500] [SECTIONS=20]"""
import os
import random
import sys

out = sys.argv[1]
files = int(sys.argv[2]) if len(sys.argv) > 2 else 500
sections = int(sys.argv[3]) if len(sys.argv) > 3 else 20
rnd = random.Random(17)
syll = ["ka", "lo", "mi", "ner", "tos", "va", "qui", "ben", "dra", "sel", "um", "pra", "ti", "gor", "zen", "fa"]
vocab = sorted({"".join(rnd.choice(syll) for _ in range(rnd.randint(2, 4))) for _ in range(8000)})
cum, acc = [], 0.0
for i in range(len(vocab)):
    acc += 1.0 / (i + 1) ** 0.9
    cum.append(acc)
os.makedirs(out, exist_ok=True)
for f in range(files):
    lines = [f"# Document {f}", ""]
    for s in range(sections):
        lines += [f"## Section {s} {rnd.choice(vocab)} {rnd.choice(vocab)}", ""]
        words, size = [], 0
        for w in rnd.choices(vocab, cum_weights=cum, k=140):
            if size >= 700:
                break
            words.append(w)
            size += len(w) + 1
        lines += [" ".join(words) + ".", ""]
    with open(os.path.join(out, f"doc{f:04d}.md"), "w") as fh:
        fh.write("\n".join(lines))
