#!/usr/bin/env python3
"""Writes the fuzzers' seed inputs into fuzz/seeds/<target>/ from real files: the GGUF reader's
fixture (whole, truncated, bit-flipped), a small Gemma-like GGUF with a vocabulary, scores,
token types and a chat template (gguf-py's GGUFWriter: `pip install gguf numpy`), the Gemma
fixture texts for the tokenizer, real chat templates, and a MiniLM-shaped config.json with a
small safetensors image. Deterministic; run from anywhere:

    python3 fuzz/make_seeds.py
"""
import json
import random
import struct
import tempfile
from pathlib import Path

import gguf
import numpy as np

FUZZ = Path(__file__).resolve().parent
ROOT = FUZZ.parent
FIXTURES = ROOT / "crates/metallic-models/tests/fixtures"
rng = random.Random(6)


def write(target, name, data):
    d = FUZZ / "seeds" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def mutations(target, name, data, cuts=8, flips=8):
    write(target, name, data)
    for i in range(cuts):
        write(target, f"{name}.cut{i}", data[: rng.randrange(len(data))])
    for i in range(flips):
        b = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        write(target, f"{name}.flip{i}", bytes(b))


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
GEMMA = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %}{% set role = 'model' %}"
         "{% else %}{% set role = m['role'] %}{% endif %}<start_of_turn>{{ role }}\n{{ m['content'] | trim }}"
         "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
LOOP = "{% for i in range(1000000) %}{% for j in range(1000000) %}x{% endfor %}{% endfor %}"
RAISE = "{% if messages|length > 1 %}{{ raise_exception('too many') }}{% endif %}{{ messages[0]['content'] }}"
# Templates that ask for far more memory than a prompt needs (each must fail within the output
# limit): huge widths and repetitions, and a list holding itself twice, 60 times over.
DOUBLED = "{% set ns = namespace(x=[1]) %}{% for i in range(60) %}{% set ns.x = [ns.x, ns.x] %}{% endfor %}"
HOSTILE = {
    "tojson_indent": "{{ messages|tojson(indent=3000000000) }}",
    "sizes": "{{ 'x' * 10**9 }}{{ range(10**5)|join('x' * 100) }}{{ messages[0].content|replace('', 'y' * 10**5) }}"
             "{{ '%1000000000s'|format(1) }}{{ messages[0].content|indent(100) }}",
    "doubled_list": DOUBLED + "{{ ns.x|tojson }}{{ ns.x|string }}{{ ns.x|join }}{{ ns.x }}",
    "doubled_list_operators": DOUBLED + "{{ ns.x ~ '' }}{{ ns.x == [ns.x] }}{{ ns.x in [[1]] }}{{ {ns.x: 1} }}"
                              "{{ [ns.x, [1]]|sort }}{% for i in [1, 2] %}{{ loop.changed(ns.x) }}{% endfor %}",
}


def small_gguf():
    """A Gemma-3-like file: metadata the decoder and tokenizer read, a tiny vocabulary."""
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "\n", "▁", "  "]
    tokens += [f"<0x{b:02X}>" for b in range(256)] + ["▁the", "he", "▁he", "llo", "▁hello", "wor", "ld"]
    types = [3, 3, 3, 2, 3, 3, 1, 1, 4] + [6] * 256 + [1] * 7
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "small.gguf"
        w = gguf.GGUFWriter(str(path), "gemma3")
        w.add_uint32("gemma3.embedding_length", 8)
        w.add_uint32("gemma3.block_count", 1)
        w.add_uint32("gemma3.attention.head_count", 2)
        w.add_uint32("gemma3.attention.head_count_kv", 1)
        w.add_uint32("gemma3.attention.key_length", 4)
        w.add_uint32("gemma3.feed_forward_length", 16)
        w.add_uint32("gemma3.context_length", 512)
        w.add_float32("gemma3.attention.layer_norm_rms_epsilon", 1e-6)
        w.add_uint32("gemma3.attention.sliding_window", 16)
        w.add_string("tokenizer.ggml.model", "llama")
        w.add_array("tokenizer.ggml.tokens", tokens)
        w.add_array("tokenizer.ggml.scores", [float(-i) for i in range(len(tokens))])
        w.add_array("tokenizer.ggml.token_type", types)
        w.add_uint32("tokenizer.ggml.bos_token_id", 2)
        w.add_uint32("tokenizer.ggml.eos_token_id", 1)
        w.add_bool("tokenizer.ggml.add_bos_token", True)
        w.add_bool("tokenizer.ggml.add_space_prefix", False)
        w.add_string("tokenizer.chat_template", GEMMA)
        w.add_tensor("token_embd.weight", np.ones((len(tokens), 8), dtype=np.float32))
        w.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return path.read_bytes()


def safetensors_image(tensors):
    header, data = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


mutations("gguf", "fixture", (FIXTURES / "gguf/fixture.gguf").read_bytes())
mutations("gguf", "small_gemma", small_gguf())

texts = json.loads((FIXTURES / "gemma3/tokenize.json").read_text())["texts"]
for i, t in enumerate(texts):
    for mode in (0, 2, 4, 6):
        write("tokenizer", f"text{i}.mode{mode}", bytes([mode]) + t["text"].encode())
    write("tokenizer", f"ids{i}", bytes([1]) + b"".join(struct.pack("<I", x) for x in t["ids_with_bos"]))

for name, tmpl in {"chatml": CHATML, "gemma": GEMMA, "loop": LOOP, "raise": RAISE, **HOSTILE}.items():
    write("chat_template", name, tmpl.encode() + b"\0hello\0hi there\0<end_of_turn>{{ 7*7 }}")

config = (Path.home() / ".cache/metallic/models/all-MiniLM-L6-v2/config.json")
config_text = config.read_bytes() if config.exists() else json.dumps({
    "model_type": "bert", "vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
    "num_attention_heads": 12, "intermediate_size": 1536, "max_position_embeddings": 512,
    "type_vocab_size": 2, "hidden_act": "gelu", "layer_norm_eps": 1e-12}).encode()
st = safetensors_image({
    "embeddings.word_embeddings.weight": ("F32", [4, 3], np.arange(12, dtype=np.float32).tobytes()),
    "pooler.dense.bias": ("F16", [3], np.ones(3, dtype=np.float16).tobytes()),
    "encoder.layer.0.output.LayerNorm.weight": ("BF16", [2], b"\x80\x3f\x00\x40"),
})
mutations("safetensors", "minilm", config_text + b"\0" + st)
