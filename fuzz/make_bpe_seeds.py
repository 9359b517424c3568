#!/usr/bin/env python3
"""Write the byte-level BPE seeds of fuzz_tokenizer (made by this script,
from nothing but the GGUF format and GPT-2's byte map):

  seeds/fuzz_tokenizer/gguf_bpe    mode 1: a GGUF (no tensors) with a "gpt2"
                                   tokenizer: 256 byte tokens, 6 merges, a
                                   control, an added and an EOG token
  seeds/fuzz_tokenizer/bpe_text    mode 2: mixed text for the built-in vocab
"""
import os
import struct

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", "fuzz_tokenizer")


def spell(b):
    keep = 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or b >= 0xAE
    if keep:
        return chr(b)
    n = sum(1 for i in range(b) if not (0x21 <= i <= 0x7E or 0xA1 <= i <= 0xAC or i >= 0xAE))
    return chr(256 + n)


def s(x):
    x = x.encode()
    return struct.pack("<Q", len(x)) + x


def kv_str(k, v):
    return s(k) + struct.pack("<I", 8) + s(v)


def kv_u32(k, v):
    return s(k) + struct.pack("<II", 4, v)


def kv_arr_str(k, vs):
    return s(k) + struct.pack("<IIQ", 9, 8, len(vs)) + b"".join(s(v) for v in vs)


def kv_arr_i32(k, vs):
    return s(k) + struct.pack("<IIQ", 9, 5, len(vs)) + b"".join(struct.pack("<i", v) for v in vs)


tokens = [spell(b) for b in range(256)]
types = [1] * 256
merges = [(spell(32), "t"), ("h", "e"), (spell(32) + "t", "he"), ("1", "2"), ("12", "3"),
          (spell(10), spell(10))]
for a, b in merges:
    tokens.append(a + b)
    types.append(1)
tokens += ["<|begin_of_text|>", "<|eot_id|>", "<tool>"]
types += [3, 3, 4]
kvs = [
    kv_str("tokenizer.ggml.model", "gpt2"),
    kv_str("tokenizer.ggml.pre", "llama-bpe"),
    kv_arr_str("tokenizer.ggml.tokens", tokens),
    kv_arr_i32("tokenizer.ggml.token_type", types),
    kv_arr_str("tokenizer.ggml.merges", ["%s %s" % m for m in merges]),
    kv_u32("tokenizer.ggml.bos_token_id", len(tokens) - 3),
    kv_u32("tokenizer.ggml.eos_token_id", len(tokens) - 2),
]
img = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs)
with open(os.path.join(here, "gguf_bpe"), "wb") as f:
    f.write(b"\x01" + img + "the 123 <tool> it's\n\n".encode())
with open(os.path.join(here, "bpe_text"), "wb") as f:
    f.write(b"\x02" + "Hello  the 1234 it's xy z<|end|> caf\u00e9 \u4e2d\U0001f999\n\n\t \xff".encode()
            + b"\xff\xc3")
