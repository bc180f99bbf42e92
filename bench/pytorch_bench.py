#!/usr/bin/env python3
"""Times the shapes of `metallic bench` with PyTorch on CUDA: the peer for bench/compare.py.

Takes the same arguments as `metallic bench <what>` (one case on the command line, or one case
per line of a file with --cases, the file run_on_device.sh also feeds to metallic), and prints
one JSON object per line with the field names metallic uses:

    python3 bench/pytorch_bench.py sdpa --batch 32 --seq-q 1024 --seq-k 1024 --dim 64
    python3 bench/pytorch_bench.py --graphs --ceiling-gbs 3000 --cases bench/cases.txt

Each case is timed with CUDA events around `iters` calls after `warmup` calls (`timer`
"cuda-events"). Flags that only mean something to metallic (--impl, --submit, --plain) are
accepted and ignored; a case already measured (same case, shape, dtype) is not run twice.
Extra rows, each labelled in `impl`:
  torch-tf32   f32 GEMM/GEMV with TF32 tensor cores allowed (the default row has TF32 off);
  torch-4d     3-D attention also as [B, 1, S, D] (PyTorch's fused attention kernels want 4-D);
  torch-graph  with --graphs: the `iters` calls captured in one CUDA graph and replayed once,
               which removes Python's launch overhead (metallic records its iterations into
               one command buffer, which is the closer match for small ops).
A case that fails prints a line on stderr and the run goes on.
"""

import argparse
import json
import shlex
import sys
import time


def common_args(p):
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--dtype", choices=["f32", "f16"], default="f32")
    p.add_argument("--json", action="store_true", help="accepted for symmetry; output is always JSON lines")
    p.add_argument("--ceiling-gbs", type=float, default=None)
    p.add_argument("--ceiling-tflops", type=float, default=None)


def case_parser():
    p = argparse.ArgumentParser(prog="pytorch_bench.py <case>", allow_abbrev=False)
    sub = p.add_subparsers(dest="case", required=True)

    s = sub.add_parser("sdpa", allow_abbrev=False)
    common_args(s)
    s.add_argument("--batch", type=int, default=32)
    s.add_argument("--heads", type=int, default=1)
    s.add_argument("--kv-heads", type=int, default=None)
    s.add_argument("--seq-q", type=int, default=1024)
    s.add_argument("--seq-k", type=int, default=1024)
    s.add_argument("--dim", type=int, default=64)
    s.add_argument("--causal", dest="causal", action="store_true", default=True)
    s.add_argument("--no-causal", dest="causal", action="store_false")
    s.add_argument("--rank3", action="store_true")
    s.add_argument("--rank4", action="store_true")
    s.add_argument("--impl", default="fused", help="metallic only; ignored")
    s.add_argument("--submit", default="whole", help="metallic only; ignored")

    g = sub.add_parser("gemm", allow_abbrev=False)
    common_args(g)
    g.add_argument("--m", type=int, default=4096)
    g.add_argument("--n", type=int, default=4096)
    g.add_argument("--k", type=int, default=4096)
    g.add_argument("--batch", type=int, default=1)
    g.add_argument("--transpose-b", action="store_true")

    v = sub.add_parser("gemv", allow_abbrev=False)
    common_args(v)
    v.add_argument("--n", type=int, default=4096)
    v.add_argument("--k", type=int, default=4096)

    for name in ("softmax", "layernorm"):
        r = sub.add_parser(name, allow_abbrev=False)
        common_args(r)
        r.add_argument("--rows", type=int, default=4096)
        r.add_argument("--cols", type=int, default=4096)
        r.add_argument("--plain", action="store_true", help="metallic only; ignored")
        if name == "layernorm":
            r.add_argument("--rms", action="store_true")

    c = sub.add_parser("copy", allow_abbrev=False)
    common_args(c)
    c.add_argument("--mb", type=int, default=1024)
    return p


def dims(d):
    """`[a,b,c]`, the shape notation metallic prints."""
    return "[" + ",".join(str(x) for x in d) + "]"


def elem(dtype):
    return 4 if dtype == "f32" else 2


class Case:
    """One shape: what it is worth, and the callables (variants) that compute it."""

    def __init__(self, case, shape, dtype, flops, nbytes, bound, note=""):
        self.case, self.shape, self.dtype = case, shape, dtype
        self.flops, self.bytes, self.bound, self.note = flops, nbytes, bound, note
        self.variants = []  # (impl, fn, tf32, note)

    def add(self, impl, fn, tf32=False, note=""):
        self.variants.append((impl, fn, tf32, note))


def build(args, torch, dev):
    F = torch.nn.functional
    tdt = torch.float32 if args.dtype == "f32" else torch.float16
    e = elem(args.dtype)

    def rand(shape, lo=-1.0, hi=1.0):
        return torch.rand(shape, device=dev, dtype=tdt) * (hi - lo) + lo

    if args.case == "sdpa":
        a = args
        kv = a.kv_heads if a.kv_heads is not None else a.heads
        if min(a.batch, a.heads, kv, a.seq_q, a.seq_k, a.dim) < 1 or a.heads % kv:
            raise ValueError("bad attention shape")
        rank3 = a.rank3 or (not a.rank4 and a.heads == 1)
        if rank3 and (a.heads != 1 or kv != 1):
            raise ValueError("--rank3 needs --heads 1 and --kv-heads 1")
        if rank3:
            qd, kd = [a.batch, a.seq_q, a.dim], [a.batch, a.seq_k, a.dim]
        else:
            qd, kd = [a.batch, a.heads, a.seq_q, a.dim], [a.batch, kv, a.seq_k, a.dim]
        full = 4.0 * a.batch * a.heads * a.seq_q * a.seq_k * a.dim
        flops = full / 2 if a.causal else full
        nbytes = (2.0 * a.batch * a.heads * a.seq_q * a.dim + 2.0 * a.batch * kv * a.seq_k * a.dim) * e
        bound = "memory" if flops / nbytes < 32 else "compute"
        note = "FLOPs = 4*B*H*Sq*Sk*D halved for causal" if a.causal else ""
        mask = "causal" if a.causal else "non-causal"
        c = Case("sdpa", "q%s kv%s %s" % (dims(qd), dims(kd), mask), a.dtype, flops, nbytes, bound, note)
        q, k, v = rand(qd), rand(kd), rand(kd)
        gqa = kv != a.heads
        kwargs = {"enable_gqa": True} if gqa else {}
        extra = ""
        attn_mask = None
        is_causal = a.causal
        if a.causal and a.seq_q != a.seq_k:
            # metallic's causal rule is bottom-right aligned (KV-cache decoding); is_causal is top-left.
            from torch.nn.attention.bias import causal_lower_right

            attn_mask, is_causal, extra = causal_lower_right(a.seq_q, a.seq_k), False, "causal_lower_right"

        def call(q, k, v):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, **kwargs)

        c.add("torch", lambda: call(q, k, v), note=extra)
        if rank3:
            q4, k4, v4 = q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)
            c.add("torch-4d", lambda: call(q4, k4, v4), note=extra)
        return c

    if args.case == "gemm":
        g = args
        if min(g.m, g.n, g.k, g.batch) < 1:
            raise ValueError("bad GEMM shape")

        def lead(d):
            return [g.batch] + d if g.batch > 1 else d

        ad = lead([g.m, g.k])
        bd = lead([g.n, g.k]) if g.transpose_b else lead([g.k, g.n])
        cd = lead([g.m, g.n])
        t = "^T" if g.transpose_b else ""
        c = Case(
            "gemm",
            "%sx%s%s" % (dims(ad), dims(bd), t),
            g.dtype,
            2.0 * g.batch * g.m * g.n * g.k,
            g.batch * (g.m * g.k + g.k * g.n + g.m * g.n) * e,
            "compute",
        )
        A, B, C = rand(ad), rand(bd), torch.empty(cd, device=dev, dtype=tdt)
        Bop = B.transpose(-1, -2) if g.transpose_b else B
        fn = lambda: torch.matmul(A, Bop, out=C)  # noqa: E731
        c.add("torch", fn)
        if g.dtype == "f32":
            c.add("torch-tf32", fn, tf32=True)
        return c

    if args.case == "gemv":
        n, k = args.n, args.k
        if min(n, k) < 1:
            raise ValueError("bad GEMV shape")
        c = Case(
            "gemv",
            "%sx%s^T" % (dims([1, k]), dims([n, k])),
            args.dtype,
            2.0 * n * k,
            (n * k + k + n) * e,
            "memory",
        )
        x, w, y = rand([1, k]), rand([n, k]), torch.empty([1, n], device=dev, dtype=tdt)
        wt = w.t()
        fn = lambda: torch.matmul(x, wt, out=y)  # noqa: E731
        c.add("torch", fn)
        if args.dtype == "f32":
            c.add("torch-tf32", fn, tf32=True)
        return c

    if args.case == "softmax":
        r = args
        c = Case("softmax", dims([r.rows, r.cols]), r.dtype, None, 2.0 * r.rows * r.cols * e, "memory")
        x = rand([r.rows, r.cols], -4.0, 4.0)
        c.add("torch", lambda: F.softmax(x, dim=-1))
        return c

    if args.case == "layernorm":
        r = args
        x = rand([r.rows, r.cols])
        w = rand([r.cols], 0.5, 1.5)
        eps = 1e-5
        if r.rms:
            c = Case("rmsnorm", dims([r.rows, r.cols]), r.dtype, None, (2 * r.rows * r.cols + r.cols) * e, "memory")
            if hasattr(F, "rms_norm"):
                c.add("torch", lambda: F.rms_norm(x, (r.cols,), w, eps))
            else:

                def rms():
                    xf = x.float()
                    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w

                c.add("torch", rms, note="composed rms norm (no F.rms_norm)")
        else:
            c = Case("layernorm", dims([r.rows, r.cols]), r.dtype, None, (2 * r.rows * r.cols + 2 * r.cols) * e, "memory")
            b = rand([r.cols], -0.5, 0.5)
            c.add("torch", lambda: F.layer_norm(x, (r.cols,), w, b, eps))
        return c

    if args.case == "copy":
        n = args.mb * (1 << 20) // e
        c = Case("copy", dims([n]), args.dtype, None, 2.0 * n * e, "memory", "bytes = read + write")
        src = rand([n])
        dst = torch.empty_like(src)
        c.add("torch", lambda: dst.copy_(src))
        return c

    raise ValueError("unknown case " + str(args.case))


def set_tf32(torch, on):
    """TF32 for float32 matrix products: off (IEEE) unless `on`. Uses the fp32_precision API
    where this PyTorch has it (mixing it with the legacy allow_tf32 flags is an error there)."""
    m = torch.backends.cuda.matmul
    if hasattr(m, "fp32_precision"):
        m.fp32_precision = "tf32" if on else "ieee"
        return "matmul.fp32_precision=" + m.fp32_precision
    m.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on
    return "matmul.allow_tf32=" + str(m.allow_tf32)


def time_events(torch, fn, iters, warmup):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t0 = time.perf_counter()
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    wall = (time.perf_counter() - t0) * 1e3
    return start.elapsed_time(end), wall


def time_graph(torch, fn, iters, warmup):
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(max(warmup, 3)):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(iters):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t0 = time.perf_counter()
    start.record()
    graph.replay()
    end.record()
    end.synchronize()
    wall = (time.perf_counter() - t0) * 1e3
    del graph
    return start.elapsed_time(end), wall


def time_cpu(fn, iters, warmup):
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    wall = (time.perf_counter() - t0) * 1e3
    return wall, wall


def record(c, impl, timer, iters, warmup, total_ms, wall_ms, ceil_gbs, ceil_tflops, note, device):
    ms = total_ms / iters
    secs = max(ms / 1e3, 1e-300)
    tflops = c.flops / secs / 1e12 if c.flops is not None else None
    gbs = c.bytes / secs / 1e9
    if c.bound == "compute" and tflops is not None:
        unit, thr, ceil = "TFLOP/s", tflops, ceil_tflops
    else:
        unit, thr, ceil = "GB/s", gbs, ceil_gbs
    notes = "; ".join(x for x in (c.note, note) if x)
    return {
        "tool": "pytorch",
        "case": c.case,
        "impl": impl,
        "shape": c.shape,
        "dtype": c.dtype,
        "iters": iters,
        "warmup": warmup,
        "timer": timer,
        "ms": ms,
        "total_ms": total_ms,
        "wall_total_ms": wall_ms,
        "flops": c.flops,
        "bytes": c.bytes,
        "tflops": tflops,
        "gbs": gbs,
        "unit": unit,
        "throughput": thr,
        "ceiling": ceil,
        "pct_ceiling": 100.0 * thr / ceil if ceil else None,
        "note": notes,
        "device": device,
    }


def main(argv):
    top = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    top.add_argument("--cases", help="file of `metallic bench` argument lines (# comments)")
    top.add_argument("--graphs", action="store_true", help="also time each case captured in a CUDA graph")
    top.add_argument("--device", default="cuda", help="cuda (default) or cpu (wall clock; for trying the script)")
    top.add_argument("--ceiling-gbs", type=float, default=None, help="default for every case")
    top.add_argument("--ceiling-tflops", type=float, default=None, help="default for every case")
    opts, rest = top.parse_known_args(argv)

    lines = []
    if opts.cases:
        with open(opts.cases) as f:
            for raw in f:
                line = raw.split("#", 1)[0].strip()
                if line:
                    lines.append(shlex.split(line))
        if rest:
            top.error("give either --cases or one case on the command line, not both")
    elif rest:
        lines.append(rest)
    else:
        top.error("no case: give `sdpa|gemm|gemv|softmax|layernorm|copy [flags]` or --cases FILE")

    parser = case_parser()
    parsed = []
    for words in lines:
        try:
            parsed.append(parser.parse_args(words))
        except SystemExit:
            print("pytorch_bench: bad case line: %s" % " ".join(words), file=sys.stderr)
            return 2

    import torch

    cuda = opts.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("pytorch_bench: CUDA is not available", file=sys.stderr)
        return 1
    dev = torch.device(opts.device)
    device = torch.cuda.get_device_name() if cuda else "cpu"
    device = "%s (PyTorch %s)" % (device, torch.__version__)

    seen = set()
    failures = 0
    for args in parsed:
        if args.iters < 1:
            print("pytorch_bench: --iters must be at least 1", file=sys.stderr)
            return 2
        ceil_gbs = args.ceiling_gbs if args.ceiling_gbs is not None else opts.ceiling_gbs
        ceil_tflops = args.ceiling_tflops if args.ceiling_tflops is not None else opts.ceiling_tflops
        try:
            c = build(args, torch, dev)
        except Exception as err:  # noqa: BLE001 - one failing case must not end the run
            failures += 1
            print("pytorch_bench: %s: %s" % (args.case, err), file=sys.stderr)
            continue
        key = (c.case, c.shape, c.dtype)
        if key in seen:
            continue
        seen.add(key)
        for impl, fn, tf32, vnote in c.variants:
            modes = [("cuda-events", impl)] if cuda else [("wall", impl)]
            if cuda and opts.graphs:
                modes.append(("cuda-graph", impl.replace("torch", "torch-graph", 1)))
            for timer, label in modes:
                try:
                    note = vnote
                    if cuda:
                        setting = set_tf32(torch, tf32)
                        if c.case in ("gemm", "gemv") and c.dtype == "f32":
                            note = "; ".join(x for x in (note, setting) if x)
                        if timer == "cuda-graph":
                            total, wall = time_graph(torch, fn, args.iters, args.warmup)
                        else:
                            total, wall = time_events(torch, fn, args.iters, args.warmup)
                    else:
                        total, wall = time_cpu(fn, args.iters, args.warmup)
                    rec = record(
                        c, label, timer, args.iters, args.warmup, total, wall, ceil_gbs, ceil_tflops, note, device
                    )
                    print(json.dumps(rec), flush=True)
                except Exception as err:  # noqa: BLE001
                    failures += 1
                    print("pytorch_bench: %s %s %s %s: %s" % (c.case, c.shape, c.dtype, label, err), file=sys.stderr)
                finally:
                    if cuda:
                        set_tf32(torch, False)
        del c
        if cuda:
            torch.cuda.empty_cache()
    return 1 if failures and not seen else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
