#!/usr/bin/env python3
"""Experiment switches for a measurement build (never committed in the sources):
`switches.py on` adds them, `switches.py off` takes them out again.

METALLIC_COOP_TILE=RxC   the cooperative GEMM's tile for every product (Auto: chosen from M, N)
METALLIC_FUSED_WIDTH=N   the widest residual stream whose decode steps fuse the norms (1024)
METALLIC_BATCH_GEMM=1    batched decode steps of more than 8 rows take QMatmul's own choice
                         (the GEMM on cooperative matrices) instead of the one-row GEMV
"""
import sys

EDITS = [
    ("crates/metallic/src/kernels/qmatmul/mod.rs",
     "let (bm, bn) = self.coop_tile.unwrap_or_else(|| coop_tile(m));",
     "let (bm, bn) = self.coop_tile.or_else(|| std::env::var(\"METALLIC_COOP_TILE\").ok().and_then(|v| { let (a, b) = v.split_once('x')?; Some((a.parse().ok()?, b.parse().ok()?)) })).unwrap_or_else(|| coop_tile(m)); // SWITCH"),
    ("crates/metallic-models/src/decoder.rs",
     "let fuse_norms = norms_fusable(&layers) && c.n_embd <= FUSED_NORMS_MAX_WIDTH;",
     "let fuse_norms = norms_fusable(&layers) && c.n_embd <= std::env::var(\"METALLIC_FUSED_WIDTH\").ok().and_then(|v| v.parse().ok()).unwrap_or(FUSED_NORMS_MAX_WIDTH); // SWITCH"),
    ("crates/metallic-models/src/decoder.rs",
     "            op = op.path(self.row_path(w));",
     "            if input.x.dims().first().copied().unwrap_or(1) <= 8 || std::env::var(\"METALLIC_BATCH_GEMM\").is_err() { op = op.path(self.row_path(w)); } // SWITCH"),
    ("crates/metallic-models/src/decoder.rs",
     "            Products::OneRow { .. } => self.row_path(&layer.down) == QMatmulPath::Gemv,",
     "            Products::OneRow { .. } => self.row_path(&layer.down) == QMatmulPath::Gemv && (s.gate_up.dims().first().copied().unwrap_or(1) <= 8 || std::env::var(\"METALLIC_BATCH_GEMM\").is_err()), // SWITCH"),
]

on = sys.argv[1] == "on"
for path, plain, switched in EDITS:
    s = open(path).read()
    a, b = (plain, switched) if on else (switched, plain)
    assert a in s, (path, a)
    open(path, "w").write(s.replace(a, b, 1))
