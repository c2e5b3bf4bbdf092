#!/usr/bin/env python3
"""Expected ids for keel's normalizer tests, computed by Hugging Face `tokenizers` itself.

Usage: python3 gen_normalizer_ids.py NAME=tokenizer.json ... > normalizer_ids.json
For every tokenizer and every text below it records encode(text, add_special_tokens=False).ids,
the normalizer's output (normalize_str) and decode(ids, skip_special_tokens=False).
"""
import json
import sys

import tokenizers
from tokenizers import Tokenizer

TEXTS = [
    "Hello world",
    "café",                       # composed é (U+00E9)
    "cafe\u0301",                 # e + combining acute
    "Ångström",                   # composed
    "A\u030angstro\u0308m",       # decomposed
    "\u212b \u2126",              # Angstrom sign, Ohm sign (singletons: NFC maps them)
    "a\u0307\u0323 a\u0323\u0307",  # combining marks in both orders (canonical reordering)
    "\ufb01nance \ufb02",          # ﬁ ﬂ ligatures
    "\u2460\u2461\u2473",          # ① ② ⑳
    "\uff26\uff55\uff4c\uff4c\uff0d\uff57\uff49\uff44\uff54\uff48 \uff21\uff22\uff23 \uff11\uff12\uff13",  # full-width
    "\uff76\uff80\uff76\uff85",    # half-width katakana
    "x\u00b2 \u00bd \u2122 \u216b",  # superscript, fraction, trade mark, roman numeral
    "한국어",                      # precomposed Hangul syllables
    "\u1112\u1161\u11ab\u1100\u116e\u11a8",  # the same as conjoining jamo
    "\u0915\u093c \u0958",         # Devanagari qa: decomposed and the composition exclusion
    "Tiếng Việt",
    "İstanbul ΟΔΟΣ Straße",        # dotted capital I, final sigma, sharp s
    "HELLO World ÀÉÎ",
    "  leading and trailing  ",
    "tabs\tand\nnew  lines",
    "\u00a0non-breaking\u2003em space\u3000",
    "hello  hello   finance",
    "",
]


def main():
    out = {"tokenizers_version": tokenizers.__version__, "texts": TEXTS, "tokenizers": {}}
    for arg in sys.argv[1:]:
        name, path = arg.split("=", 1)
        try:
            tok = Tokenizer.from_file(path)
        except Exception as e:  # keep the other tokenizers' ids; the error is recorded
            out["tokenizers"][name] = {"error": str(e)}
            continue
        rows = []
        for text in TEXTS:
            enc = tok.encode(text, add_special_tokens=False)
            normalized = tok.normalizer.normalize_str(text) if tok.normalizer is not None else text
            rows.append({"text": text, "normalized": normalized, "ids": enc.ids,
                         "decoded": tok.decode(enc.ids, skip_special_tokens=False)})
        out["tokenizers"][name] = rows
    json.dump(out, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
