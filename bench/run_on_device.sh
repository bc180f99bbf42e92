#!/usr/bin/env bash
# Times metallic and PyTorch on the same shapes on an NVIDIA GPU, in one run, and prints a
# Markdown comparison table. Run from the repository root on the GPU machine:
#
#     bash bench/run_on_device.sh [path/to/metallic]      # default .devbin/metallic
#
# The binary is a release build made elsewhere (no cargo on the GPU machine). Writes
# metallic.jsonl, pytorch.jsonl and table.md to $OUT if set, else /tmp. Cases: bench/cases.txt
# (or $CASES). Needs python3 with CUDA PyTorch, and the Vulkan loader (.gl/*.deb) where the
# machine has none. To try the script without an NVIDIA GPU (lavapipe, PyTorch on the CPU; the
# figures then mean nothing): BENCH_ALLOW_CPU=1 COPY_MB=16 CASES=<a file of small cases>.
set -uo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
bin=${1:-.devbin/metallic}
out=${OUT:-/tmp}
cases=${CASES:-bench/cases.txt}
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp} PYTHONUNBUFFERED=1
mkdir -p "$out"

if [ ! -f "$bin" ]; then
    echo "run_on_device: no metallic binary at $bin (build one with cargo build --release -p metallic-cli)" >&2
    exit 1
fi
if [ ! -x "$bin" ]; then
    cp "$bin" /tmp/metallic-bench && chmod +x /tmp/metallic-bench && bin=/tmp/metallic-bench
fi

# Vulkan loader, then NVIDIA's ICD if the loader finds no GPU on its own.
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
    for f in .gl/*.deb; do [ -f "$f" ] && dpkg -x "$f" /; done
    ldconfig
fi
allow_cpu=${BENCH_ALLOW_CPU:-0}
torch_device=cuda
[ "$allow_cpu" = 1 ] && torch_device=cpu
gpu_adapter() { "$bin" info 2>/dev/null | grep '^chosen:' | { [ "$allow_cpu" = 1 ] && cat || grep -v 'Cpu)'; }; }
if ! gpu_adapter >/dev/null; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
if ! gpu_adapter; then
    echo "run_on_device: metallic finds no GPU adapter:" >&2
    "$bin" info >&2
    exit 1
fi
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || echo "run_on_device: nvidia-smi failed" >&2
if [ "$torch_device" = cuda ]; then
    python3 -c 'import torch; print("PyTorch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name())' ||
        { echo "run_on_device: python3 has no CUDA PyTorch" >&2; exit 1; }
fi
pybench=(python3 bench/pytorch_bench.py --device "$torch_device")

m_out=$out/metallic.jsonl
t_out=$out/pytorch.jsonl
: >"$m_out"
: >"$t_out"

# 1. Copy bandwidth first: the memory ceiling of every GB/s figure (the faster of the two).
mb=${COPY_MB:-1024}
if ! "$bin" bench copy --mb "$mb" --iters 50 --json >>"$m_out" </dev/null; then
    mb=$((mb / 4))
    echo "run_on_device: the $((mb * 4)) MiB copy failed; measuring $mb MiB" >&2
    "$bin" bench copy --mb "$mb" --iters 50 --json >>"$m_out" </dev/null
fi
"${pybench[@]}" copy --mb "$mb" --iters 50 >>"$t_out"
ceiling=$(python3 - "$m_out" "$t_out" <<'PY'
import json, sys
best = 0.0
for path in sys.argv[1:]:
    for line in open(path):
        if line.startswith("{"):
            r = json.loads(line)
            if r.get("case") == "copy" and r.get("gbs"):
                best = max(best, r["gbs"])
print("%.1f" % best if best else "")
PY
)
echo "copy ceiling: ${ceiling:-none} GB/s (read + write)"
ceil_args=()
[ -n "$ceiling" ] && ceil_args=(--ceiling-gbs "$ceiling")

# 2. metallic, one process per case.
failed=0
while IFS= read -r raw; do
    line=${raw%%#*}
    [ -z "${line// /}" ] && continue
    read -ra words <<<"$line"
    if timeout 240 "$bin" bench "${words[@]}" --json "${ceil_args[@]}" >>"$m_out" </dev/null; then
        echo "metallic ok   ($((SECONDS - start)) s): $line" >&2
    else
        failed=$((failed + 1))
        echo "metallic FAIL ($((SECONDS - start)) s): $line" >&2
    fi
done <"$cases"

# 3. PyTorch, one process for every case (plus TF32 and CUDA-graph rows).
graphs=()
[ "$torch_device" = cuda ] && graphs=(--graphs)
"${pybench[@]}" "${graphs[@]}" "${ceil_args[@]}" --cases "$cases" >>"$t_out" ||
    echo "run_on_device: pytorch_bench.py failed" >&2

# 4. The table.
python3 bench/compare.py "$m_out" "$t_out" | tee "$out/table.md"
echo
echo "run_on_device: $(wc -l <"$m_out") metallic and $(wc -l <"$t_out") PyTorch records, $failed metallic failures, $((SECONDS - start)) s; files in $out"
