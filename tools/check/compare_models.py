#!/usr/bin/env python3
"""Compares two .flt model files (docs/model-format.md) for a refactoring that must not change
results: the data buffers byte for byte, the tensor tables, and the metadata except the entries
that name the code version (training.code_version) and the checksum that covers it.

    tools/check/compare_models.py [--ignore KEY]... A.flt B.flt
                                                  exit status 0: the same model, 1: different
"""
import json
import struct
import sys

IGNORED = ("checksum_crc32", "training.code_version")


def load(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    return header.pop("__metadata__"), header, raw[8 + n:]


def main():
    args = sys.argv[1:]
    ignored = list(IGNORED)
    while len(args) >= 2 and args[0] == "--ignore":
        ignored.append(args[1])
        args = args[2:]
    if len(args) != 2:
        sys.exit(__doc__)
    meta_a, table_a, data_a = load(args[0])
    meta_b, table_b, data_b = load(args[1])
    differing = sorted(k for k in set(meta_a) | set(meta_b) if k not in ignored and meta_a.get(k) != meta_b.get(k))
    same = data_a == data_b and table_a == table_b and not differing
    print(f"{args[0]} vs {args[1]}: data {'equal' if data_a == data_b else 'DIFFERENT'} "
          f"({len(data_a)} / {len(data_b)} bytes), tensor tables {'equal' if table_a == table_b else 'DIFFERENT'} "
          f"({len(table_a)} tensors), metadata differing: {differing or 'none'}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
