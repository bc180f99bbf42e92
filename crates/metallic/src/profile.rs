//! Per-kernel GPU time: a timestamp written after every dispatch of a command buffer
//! (`TIMESTAMP_QUERY_INSIDE_PASSES`), read back at each commit and summed by kernel name.
//!
//! The time charged to a dispatch runs from the previous timestamp of its compute pass (the
//! pass start or the previous dispatch's end) to its own end, so it includes the barrier and
//! launch gap before it: on a GPU running many small dependent dispatches that gap is much
//! of the cost, and it belongs to the dispatch that waited for it. Reading back at every
//! commit blocks the host, so a profiled run measures where GPU time goes, not throughput.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::context::{Context, gpu_error};
use crate::error::{Error, Result};

/// A kernel and its grid.
type Launch = (&'static str, [u32; 3]);

/// Timestamps one command buffer can hold; dispatches past it go untimed.
const SLOTS: u32 = 4096;

/// GPU time of one kernel at one grid size, summed over its dispatches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelTime {
    /// The kernel's name.
    pub kernel: &'static str,
    /// Workgroups in x, y and z: tells the shapes one kernel runs at apart.
    pub workgroups: [u32; 3],
    /// Dispatches timed.
    pub dispatches: u64,
    /// Their GPU time, each from the previous timestamp in its pass to its own end.
    pub total: Duration,
}

pub(crate) struct KernelProfiler {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// What each written timestamp ends: `Some((kernel, grid))` after a dispatch, `None` at a
    /// pass start.
    slots: Vec<Option<Launch>>,
    totals: BTreeMap<Launch, (u64, f64)>,
    /// Dispatches not timed because the slots ran out.
    pub(crate) untimed: u64,
}

impl KernelProfiler {
    pub(crate) fn new(ctx: &Context) -> Result<Self> {
        let inside = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
        if !ctx.caps().features.contains(inside) {
            return Err(ctx.unsupported("kernel profiling", "TIMESTAMP_QUERY_INSIDE_PASSES"));
        }
        let device = ctx.device();
        let bytes = u64::from(SLOTS) * 8;
        let (profiler, err) = ctx.capture(|| {
            let buffer = |label, usage| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: bytes,
                    usage,
                    mapped_at_creation: false,
                })
            };
            KernelProfiler {
                queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("metallic kernel timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count: SLOTS,
                }),
                resolve: buffer(
                    "metallic kernel timestamps",
                    wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                ),
                readback: buffer(
                    "metallic kernel timestamps read-back",
                    wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                ),
                slots: Vec::new(),
                totals: BTreeMap::new(),
                untimed: 0,
            }
        });
        match err {
            Some(err) => Err(gpu_error(err, "creating kernel timestamp queries")),
            None => Ok(profiler),
        }
    }

    /// Writes a timestamp into `pass` that ends `what` (`None`: the pass start).
    pub(crate) fn mark(&mut self, pass: &mut wgpu::ComputePass<'static>, what: Option<Launch>) {
        let Ok(index) = u32::try_from(self.slots.len()) else { return };
        if index >= SLOTS {
            self.untimed += u64::from(what.is_some());
            return;
        }
        pass.write_timestamp(&self.queries, index);
        self.slots.push(what);
    }

    /// Resolves the timestamps written so far into the read-back buffer (call before `finish`).
    pub(crate) fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        let n = self.slots.len() as u32;
        if n > 0 {
            encoder.resolve_query_set(&self.queries, 0..n, &self.resolve, 0);
            encoder.copy_buffer_to_buffer(&self.resolve, 0, &self.readback, 0, u64::from(n) * 8);
        }
    }

    /// After the submission that carried [`resolve`](Self::resolve): waits for it, reads the
    /// timestamps and adds each dispatch's time to its kernel.
    pub(crate) fn collect(&mut self, ctx: &Context) -> Result<()> {
        if self.slots.is_empty() {
            return Ok(());
        }
        let ticks = read_u64s(ctx, &self.readback, self.slots.len())?;
        let period = f64::from(ctx.queue().get_timestamp_period());
        for (i, slot) in self.slots.iter().enumerate().skip(1) {
            let (Some(launch), Some(&end), Some(&start)) = (slot, ticks.get(i), ticks.get(i - 1)) else { continue };
            let entry = self.totals.entry(*launch).or_insert((0, 0.0));
            entry.0 += 1;
            entry.1 += end.saturating_sub(start) as f64 * period;
        }
        self.slots.clear();
        Ok(())
    }

    /// The totals so far, longest first; clears them.
    pub(crate) fn take(&mut self) -> Vec<KernelTime> {
        let mut out: Vec<KernelTime> = std::mem::take(&mut self.totals)
            .into_iter()
            .map(|((kernel, workgroups), (dispatches, nanos))| KernelTime {
                kernel,
                workgroups,
                dispatches,
                total: Duration::from_nanos(nanos as u64),
            })
            .collect();
        out.sort_by(|a, b| b.total.cmp(&a.total).then(a.kernel.cmp(b.kernel)));
        out
    }
}

/// Maps `buffer` (a `MAP_READ` buffer no submission still writes) and reads its first `n`
/// u64 values.
pub(crate) fn read_u64s(ctx: &Context, buffer: &wgpu::Buffer, n: usize) -> Result<Vec<u64>> {
    let (tx, rx) = std::sync::mpsc::channel();
    buffer.map_async(wgpu::MapMode::Read, .., move |result| {
        // The receiver waits below; a send fails only if it is gone.
        let _ = tx.send(result);
    });
    ctx.wait_for(None)?;
    rx.recv()
        .map_err(|_| Error::BufferMap { message: "the map callback never ran".into() })?
        .map_err(|e| Error::BufferMap { message: e.to_string() })?;
    let values: Vec<u64> = {
        let view = buffer.get_mapped_range(..).map_err(|e| Error::BufferMap { message: e.to_string() })?;
        let bytes = view.get(..n * 8).ok_or_else(|| Error::BufferMap { message: "short read-back".into() })?;
        bytemuck::pod_collect_to_vec(bytes)
    };
    buffer.unmap();
    Ok(values)
}
