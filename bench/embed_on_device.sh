#!/usr/bin/env bash
# Embedding throughput of metallic and sentence-transformers on the same GPU, same weights, same
# texts, in one run; then the agreement of the two engines' embeddings. From the repository root:
#
#     bash bench/embed_on_device.sh [path/to/metallic] [MODEL_DIR]
#
# Defaults: .devbin/metallic and ~/.cache/metallic/models/all-MiniLM-L6-v2. Writes
# metallic_embed.jsonl, st_embed.jsonl and embed_table.md to $OUT if set, else /tmp.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${1:-.devbin/metallic}
model=${2:-$HOME/.cache/metallic/models/all-MiniLM-L6-v2}
out=${OUT:-/tmp}
texts=bench/embed_texts.txt
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp} PYTHONUNBUFFERED=1
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
    for f in .gl/*.deb; do [ -f "$f" ] && dpkg -x "$f" /; done
    ldconfig
fi
if ! "$bin" info 2>/dev/null | grep '^chosen:' | grep -qv 'Cpu)'; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
"$bin" info | grep '^chosen:'
"$bin" bench embed --model "$model" --texts "$texts" ${EMBED_ARGS:-} | tee "$out/metallic_embed.jsonl"
python3 bench/embed_bench.py --model "$model" --texts "$texts" | tee "$out/st_embed.jsonl"

# Agreement on the first 256 texts: both engines' f32 embeddings, cosine per text.
head -n 256 "$texts" >"$out/agree_texts.txt"
"$bin" embed --model "$model" --input "$out/agree_texts.txt" --format npy --output "$out/metallic_embed.npy"
python3 - "$model" "$out" <<'PY' | tee "$out/embed_table.md"
import json, sys
import numpy as np
from sentence_transformers import SentenceTransformer
model_dir, out = sys.argv[1:]
ours = {(r["dtype"], r["batch"]): r for r in map(json.loads, open(f"{out}/metallic_embed.jsonl"))}
peer = {(r["dtype"], r["batch"]): r for r in map(json.loads, open(f"{out}/st_embed.jsonl"))}
device = next(iter(peer.values()))["device"] if peer else "?"
print(f"| dtype | batch | metallic sent/s | sentence-transformers sent/s | ratio (ours/peer) |  ({device})")
print("|---|---|---|---|---|")
for key in sorted(ours, key=lambda k: (k[0], k[1])):
    o, p = ours[key], peer.get(key)
    ratio = f"{o['sentences_per_s'] / p['sentences_per_s']:.2f}" if p else "-"
    print(f"| {key[0]} | {key[1]} | {o['sentences_per_s']:.0f} | {p['sentences_per_s'] if p else float('nan'):.0f} | {ratio} |")
texts = open(f"{out}/agree_texts.txt").read().split("\n")[:256]
st = SentenceTransformer(model_dir, device="cuda").float()
ref = st.encode(texts, batch_size=32, convert_to_numpy=True)
got = np.load(f"{out}/metallic_embed.npy")
cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
print(f"\nagreement on {len(texts)} texts (f32): lowest cosine {cos.min():.7f}, max |diff| {np.abs(ref - got).max():.2e}")
PY
