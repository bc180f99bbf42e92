//! The prelude's `workgroup_sum` / `workgroup_max`, in both flavours (subgroups and workgroup
//! memory), through a user kernel that reduces each row of a matrix.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::*;
use metallic::{ComputeEncoder, DType, Dispatch, Kernel, Operation, Overrides, ResourceCache, Tensor};

static ROW_REDUCE: Kernel = Kernel {
    name: "test_row_reduce",
    source: "struct Params { cols: u32, x_off: u32, out_off: u32 }\n\
             @group(0) @binding(0) var<storage, read_write> x: array<T>;\n\
             @group(0) @binding(1) var<storage, read_write> out: array<T>;\n\
             @compute @workgroup_size(WG)\n\
             fn main(@builtin(workgroup_id) wid: vec3<u32>, lanes: Lanes) {\n\
                 let row = params.x_off + wid.x * params.cols;\n\
                 var s = 0.0;\n\
                 var m = -3.0e38;\n\
                 for (var c = lanes.index; c < params.cols; c += WG) {\n\
                     let v = f32(x[row + c]);\n\
                     s += v;\n\
                     m = max(m, v);\n\
                 }\n\
                 let total = workgroup_sum(s, lanes);\n\
                 let best = workgroup_max(m, lanes);\n\
                 if lanes.index == 0u {\n\
                     out[params.out_off + 2u * wid.x] = T(total);\n\
                     out[params.out_off + 2u * wid.x + 1u] = T(best);\n\
                 }\n\
             }",
    entry: "main",
    bindings: 2,
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    cols: u32,
    x_off: u32,
    out_off: u32,
}

struct RowReduce {
    x: Tensor,
    out: Tensor,
    wg: u32,
}

impl Operation for RowReduce {
    fn name(&self) -> &'static str {
        "row_reduce"
    }
    fn validate(&self) -> metallic::Result<()> {
        Ok(())
    }
    fn encode(&self, enc: &mut ComputeEncoder<'_>, cache: &ResourceCache) -> metallic::Result<()> {
        let x = enc.bind(&self.x)?;
        let out = enc.bind(&self.out)?;
        let (rows, cols) = (self.x.dims()[0] as u32, self.x.dims()[1] as u32);
        let params = Params { cols, x_off: x.elem_offset(), out_off: out.elem_offset() };
        let overrides = Overrides::new(&[("WG", f64::from(self.wg))])?;
        enc.dispatch(
            cache,
            Dispatch {
                kernel: &ROW_REDUCE,
                dtype: DType::F32,
                overrides,
                bindings: &[&x, &out],
                params,
                workgroups: [rows, 1, 1],
            },
        )
    }
}

#[test]
fn workgroup_sum_and_max_agree_with_the_host_in_both_flavours() {
    let flavours = reduction_runtimes();
    assert!(!flavours[0].context().caps().subgroups(), "the first runtime must take the workgroup-memory path");
    for rt in flavours {
        let mut rng = Rng::new(3);
        for wg in [32u32, 64, 256] {
            for cols in [1usize, 7, 63, 257, 4099] {
                let rows = 5;
                let (x, xv) = upload(&rt, &[rows, cols], DType::F32, &rng.vec(rows * cols, -1.0, 1.0));
                let out = poisoned(&rt, &[rows, 2], DType::F32);
                rt.record(&RowReduce { x: x.clone(), out: out.clone(), wg }).unwrap();
                let got = out.to_vec::<f32>().unwrap();
                for r in 0..rows {
                    let row = &xv[r * cols..(r + 1) * cols];
                    let sum: f64 = row.iter().sum();
                    let max = row.iter().cloned().fold(f64::MIN, f64::max);
                    let what = format!("subgroups={} wg={wg} cols={cols} row {r}", rt.context().caps().subgroups());
                    assert_close(&got[2 * r..2 * r + 1], &[sum], 1e-5 * (cols as f64).sqrt().max(1.0), &what);
                    assert_eq!(f64::from(got[2 * r + 1]), max, "{what}: max");
                }
            }
        }
    }
}
