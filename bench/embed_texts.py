#!/usr/bin/env python3
"""Deterministic benchmark sentences for `metallic embed` and `embed_bench.py`.

    python3 bench/embed_texts.py                       # writes bench/embed_texts.txt (1024 lines)
    python3 bench/embed_texts.py -n 64 -o - --seed 7   # 64 lines to stdout
    python3 bench/embed_texts.py --check MODEL_DIR     # also print word-piece length statistics

Each line is one English text of about 20-60 word pieces (with [CLS] and [SEP]), assembled from
fixed word lists and clause templates by a seeded SplitMix64 generator written out here, so the
output depends on nothing but this file and the seed (not on Python's `random`, whose
algorithms may change between versions). Both engines read the committed output file.
"""

import argparse
import os
import sys

SUBJECTS = [
    "the new library", "our team", "the city council", "a small startup", "the research group",
    "my neighbour", "the museum", "the local bakery", "the airline", "the hospital",
    "a volunteer group", "the orchestra", "the weather service", "the school board",
    "the engineering department", "a freelance photographer", "the football club",
    "the software update", "the chef", "the recycling plant", "the train operator",
    "a retired teacher", "the bookshop on the corner", "the regional bank", "the film festival",
    "the laboratory", "the delivery company", "the park rangers", "the student union",
    "the hotel", "an independent journalist", "the power grid", "the farmers' market",
]
VERBS = [
    "announced", "postponed", "redesigned", "reviewed", "celebrated", "cancelled", "tested",
    "improved", "explained", "published", "questioned", "expanded", "simplified", "measured",
    "replaced", "documented", "funded", "organised", "criticised", "launched", "delayed",
    "translated", "repaired", "predicted", "welcomed", "analysed", "restored", "shared",
]
ADJECTIVES = [
    "annual", "unexpected", "ambitious", "modest", "detailed", "controversial", "popular",
    "experimental", "long-awaited", "affordable", "quiet", "crowded", "efficient", "fragile",
    "seasonal", "historic", "temporary", "remarkable", "practical", "confusing", "generous",
    "careful", "rapid", "lengthy", "colourful", "reliable", "outdated", "sustainable",
]
OBJECTS = [
    "budget", "schedule", "exhibition", "timetable", "menu", "survey", "prototype", "report",
    "website", "contract", "festival", "bridge", "training programme", "garden", "database",
    "recipe", "forecast", "policy", "playground", "concert", "marathon", "laboratory",
    "newsletter", "parking plan", "tutorial", "warehouse", "vaccine trial", "podcast",
    "search engine", "translation tool", "bus route", "solar panel project", "climate study",
]
PLACES = [
    "in the old town", "near the river", "at the central station", "across the region",
    "in three villages", "on the university campus", "along the coast", "in the north",
    "at the harbour", "in the city centre", "downtown", "in the suburbs", "at the airport",
    "in the mountains", "online", "at the conference centre", "in several countries",
]
TIMES = [
    "last week", "on Monday", "this morning", "after months of debate", "in early spring",
    "before the holidays", "during the storm", "late on Friday", "over the summer",
    "for the second time", "earlier this year", "at short notice", "after a long delay",
    "yesterday evening", "in 2019", "next month", "by the end of the decade",
]
REASONS = [
    "because costs had risen sharply", "after complaints from residents",
    "so that more people could take part", "to reduce waiting times",
    "although not everyone agreed", "while the weather remained uncertain",
    "since the old system kept failing", "to make the results easier to compare",
    "even though the deadline was close", "as demand kept growing",
    "because the data looked promising", "to save energy during the winter",
    "after a careful review of the evidence", "unless the funding falls through",
]
CONNECTORS = [
    "Meanwhile,", "However,", "As a result,", "In addition,", "According to officials,",
    "For now,", "Surprisingly,", "In the end,", "At the same time,", "Critics say that",
    "Supporters argue that", "Some experts believe",
]
NUMBERS = ["two", "three", "five", "a dozen", "twenty", "forty", "a hundred", "several thousand",
           "12", "37", "150", "2,500"]
NOUNS_PLURAL = [
    "visitors", "students", "volunteers", "passengers", "customers", "patients", "residents",
    "engineers", "researchers", "musicians", "drivers", "readers", "players", "shops", "trees",
]
QUALITIES = ["cheaper", "faster", "safer", "quieter", "more accessible", "easier to use",
             "more reliable", "better organised", "more popular", "less crowded"]


class SplitMix64:
    """SplitMix64: tiny, fully specified, identical in every language."""

    MASK = (1 << 64) - 1

    def __init__(self, seed):
        self.state = seed & self.MASK

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & self.MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & self.MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & self.MASK
        return z ^ (z >> 31)

    def below(self, n):
        return self.next() % n  # the bias is ~n/2^64: irrelevant here

    def pick(self, seq):
        return seq[self.below(len(seq))]


def clause(r, joined):
    """One clause of 6-20 words; `joined`: it follows ", and" (no capitalised connector)."""
    k = r.below(7)
    if joined and k == 5:
        k = 0
    if k == 0:
        return f"{r.pick(SUBJECTS)} {r.pick(VERBS)} the {r.pick(ADJECTIVES)} {r.pick(OBJECTS)} {r.pick(PLACES)}"
    if k == 1:
        return f"{r.pick(TIMES)}, {r.pick(SUBJECTS)} {r.pick(VERBS)} its {r.pick(OBJECTS)} {r.pick(REASONS)}"
    if k == 2:
        return (f"{r.pick(NUMBERS)} {r.pick(NOUNS_PLURAL)} said the {r.pick(OBJECTS)} was "
                f"{r.pick(QUALITIES)} than the {r.pick(ADJECTIVES)} one")
    if k == 3:
        return f"{r.pick(SUBJECTS)} {r.pick(VERBS)} a {r.pick(ADJECTIVES)} {r.pick(OBJECTS)} {r.pick(TIMES)}"
    if k == 4:
        return (f"the {r.pick(OBJECTS)} {r.pick(PLACES)} is now {r.pick(QUALITIES)}, "
                f"{r.pick(REASONS)}")
    if k == 5:
        return (f"{r.pick(CONNECTORS)} {r.pick(SUBJECTS)} {r.pick(VERBS)} the {r.pick(OBJECTS)} "
                f"for {r.pick(NUMBERS)} {r.pick(NOUNS_PLURAL)}")
    return f"nobody expected {r.pick(SUBJECTS)} to have {r.pick(VERBS)} the {r.pick(ADJECTIVES)} {r.pick(OBJECTS)} so {r.pick(['soon', 'quietly', 'quickly', 'openly'])}"


def capitalise(s):
    return s[:1].upper() + s[1:]


def text(r):
    """One text: clauses until a target of 16-40 words, at most 44 (~20-60 word pieces)."""
    target = 16 + r.below(25)
    sentences = []
    words = 0
    while words < target:
        joined = words > 0 and r.below(3) == 0
        c = clause(r, joined)
        if words and words + len(c.split()) > 44:
            break
        if joined:
            # join to the previous sentence
            sentences[-1] = sentences[-1][:-1] + ", and " + c + "."
        else:
            end = r.pick(["!", "?"]) if r.below(10) == 0 else "."
            sentences.append(capitalise(c) + end)
        words += len(c.split())
    return " ".join(sentences)


def generate(n, seed):
    r = SplitMix64(seed)
    return [text(r) for _ in range(n)]


def check(lines, model_dir):
    from tokenizers import Tokenizer  # only for --check

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    lens = sorted(len(e.ids) for e in tok.encode_batch(lines))
    q = lambda p: lens[min(len(lens) - 1, int(p * len(lens)))]
    print(f"{len(lens)} texts, word pieces with [CLS]/[SEP]: min {lens[0]}, p10 {q(0.1)}, "
          f"median {q(0.5)}, p90 {q(0.9)}, max {lens[-1]}, mean {sum(lens) / len(lens):.1f}",
          file=sys.stderr)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=1024, help="number of texts (1024)")
    ap.add_argument("--seed", type=int, default=5, help="generator seed (5)")
    ap.add_argument("-o", "--output", default=os.path.join(here, "embed_texts.txt"),
                    help="output file, '-' for stdout (bench/embed_texts.txt)")
    ap.add_argument("--check", metavar="MODEL_DIR",
                    help="print word-piece length statistics with MODEL_DIR/tokenizer.json (needs `tokenizers`)")
    a = ap.parse_args()
    lines = generate(a.n, a.seed)
    body = "".join(line + "\n" for line in lines)
    if a.output == "-":
        sys.stdout.write(body)
    else:
        with open(a.output, "w", encoding="utf-8", newline="\n") as f:
            f.write(body)
    if a.check:
        check(lines, a.check)


if __name__ == "__main__":
    main()
