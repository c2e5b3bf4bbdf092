#!/usr/bin/env python3
"""Writes the small hand-written byte-level BPE tokenizer.json files of tests/data/normalizers/.

Each file has the same vocabulary (the 256 byte-level characters plus a few merges) and differs in
its normalizer (and, for sequence.json, its decoder), so a test can pin one normalizer at a time.
Usage: scripts/make_normalizer_tokenizers.py tests/data/normalizers
"""
import json
import os
import sys


def bytes_to_unicode():
    # GPT-2's byte -> printable character map (the ByteLevel pre-tokenizer's alphabet).
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_CHAR = bytes_to_unicode()


def byte_level(text):
    return "".join(BYTE_CHAR[b] for b in text.encode("utf-8"))


# Merges that turn a few normalized forms into single tokens, so a wrong normalization changes
# the ids and not only the byte sequence.
WORDS = ["he", "hello", "world", "café", "fi", "finance", "▁", "▁hello", "ß", "ss", "a\u0301", "é"]


def merges_for(words):
    merges, seen = [], set()
    for w in words:
        chars = list(byte_level(w))
        while len(chars) > 1:
            pair = (chars[0], chars[1])
            if pair not in seen:
                seen.add(pair)
                merges.append(pair)
            chars = [chars[0] + chars[1]] + chars[2:]
    return merges


def tokenizer(normalizer, decoder=None):
    vocab = {BYTE_CHAR[b]: i for i, b in enumerate(sorted(BYTE_CHAR))}
    merges = merges_for(WORDS)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": normalizer,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": decoder or {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [[a, b] for a, b in merges]},
    }


NORMALIZERS = {
    "nfc": {"type": "NFC"},
    "nfd": {"type": "NFD"},
    "nfkc": {"type": "NFKC"},
    "nfkd": {"type": "NFKD"},
    "lowercase": {"type": "Lowercase"},
    "replace_string": {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
    "replace_regex": {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
    "prepend": {"type": "Prepend", "prepend": "▁"},
    "strip": {"type": "Strip", "strip_left": True, "strip_right": True},
    "strip_left": {"type": "Strip", "strip_left": True, "strip_right": False},
    "strip_accents": {"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "StripAccents"}]},
    "sequence": {"type": "Sequence", "normalizers": [
        {"type": "NFKC"}, {"type": "Lowercase"}, {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
        {"type": "Strip", "strip_left": True, "strip_right": True},
        {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}, {"type": "Prepend", "prepend": "▁"}]},
}

# sequence.json also undoes its normalizer's spaces on decode, as SentencePiece-style files do.
DECODERS = {
    "sequence": {"type": "Sequence", "decoders": [
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/data/normalizers"
    os.makedirs(out, exist_ok=True)
    for name, normalizer in NORMALIZERS.items():
        with open(os.path.join(out, name + ".json"), "w", encoding="utf-8") as f:
            json.dump(tokenizer(normalizer, DECODERS.get(name)), f, ensure_ascii=False, indent=None)
            f.write("\n")


if __name__ == "__main__":
    main()
