//! `Operation` and `CommandBuffer`: recording GPU work.
//!
//! An [`Operation`] checks its inputs ([`Operation::validate`], a pure function) and encodes
//! its dispatches into a [`ComputeEncoder`] ([`Operation::encode`]). A [`CommandBuffer`]
//! records many operations into one compute pass and submits them together.

use std::sync::Arc;

use bytemuck::Pod;

use crate::cache::ResourceCache;
use crate::context::{Context, gpu_error};
use crate::error::{Error, Result};
use crate::kernel::{ComputeKernel, Kernel, Overrides, PipelineKey, ShaderVariant};
use crate::params::{MAX_PARAMS_BYTES, ParamArena, ParamMode, ParamsLayout};
use crate::pool::Allocation;
use crate::profile::{KernelProfiler, KernelTime, read_u64s};
use crate::tensor::{DType, Tensor};

/// A GPU operation: validates its inputs, then encodes its dispatches.
///
/// Implementations hold the tensors they read and write. Adding an op means one folder under
/// `kernels/` with a struct implementing this trait and its `.wgsl` file.
pub trait Operation {
    /// Short name for errors and labels.
    fn name(&self) -> &'static str;

    /// Checks shapes, dtypes and devices. Pure: no GPU work. Called before [`encode`](Self::encode).
    fn validate(&self) -> Result<()>;

    /// Records the op's dispatches. Fetches pipelines from `cache` (compiled once per key).
    fn encode(&self, encoder: &mut ComputeEncoder<'_>, cache: &ResourceCache) -> Result<()>;
}

/// A tensor as a kernel binds it: the buffer range, aligned down to the device's storage
/// offset alignment, and the tensor's first element within that range.
#[derive(Debug, Clone)]
pub struct TensorBinding {
    storage: Arc<Allocation>,
    offset: u64,
    size: u64,
    elem_offset: u32,
}

impl TensorBinding {
    /// Index of the tensor's first element in the bound range, in elements of its dtype.
    /// Kernels add it to every index (`a[params.a_off + i]`).
    pub fn elem_offset(&self) -> u32 {
        self.elem_offset
    }
}

/// Records dispatches into an open compute pass; handed to [`Operation::encode`].
pub struct ComputeEncoder<'a> {
    ctx: &'a Context,
    pass: &'a mut wgpu::ComputePass<'static>,
    arena: &'a mut ParamArena,
    retained: &'a mut Vec<Arc<Allocation>>,
    dispatches: &'a mut usize,
    profiler: Option<&'a mut KernelProfiler>,
}

/// One kernel launch: what [`ComputeEncoder::dispatch`] takes.
#[derive(Debug)]
pub struct Dispatch<'a, P: Pod> {
    /// The kernel.
    pub kernel: &'static Kernel,
    /// The storage type `T` the kernel is compiled for.
    pub dtype: DType,
    /// Override constants; `WG` sets the 1-D workgroup size.
    pub overrides: Overrides,
    /// Storage buffers, in binding order (`kernel.bindings` of them).
    pub bindings: &'a [&'a TensorBinding],
    /// The kernel's `Params` struct.
    pub params: P,
    /// Workgroups in x, y, z (from [`ComputeEncoder::linear_grid`] for 1-D kernels).
    pub workgroups: [u32; 3],
}

impl ComputeEncoder<'_> {
    /// The context being recorded for.
    pub fn context(&self) -> &Context {
        self.ctx
    }

    /// How parameters travel on this device (part of every pipeline key).
    pub fn param_mode(&self) -> ParamMode {
        self.ctx.caps().params
    }

    /// How `tensor` binds: its whole allocation when that fits one binding (so every view of
    /// one allocation binds the same range, and a hot loop over fixed tensors reuses its bind
    /// groups), else the aligned range the tensor spans; and its first element within it.
    pub fn bind(&self, tensor: &Tensor) -> Result<TensorBinding> {
        if !tensor.context().same_device(self.ctx) {
            return Err(Error::invalid("bind", "tensor belongs to another device"));
        }
        let align = self.ctx.caps().storage_alignment();
        let limit = self.ctx.caps().limits.max_storage_buffer_binding_size;
        let storage = tensor.storage();
        let buffer_size = storage.buffer().size();
        // The range `[offset, end)` rounded up to whole words, inside the buffer.
        let words = |offset: u64, end: u64| end.next_multiple_of(4).min(buffer_size).saturating_sub(offset).max(4);
        let start = tensor.byte_offset();
        let whole = words(storage.offset(), storage.offset() + storage.size());
        let (offset, size) = if storage.offset().is_multiple_of(align) && whole <= limit {
            (storage.offset(), whole)
        } else {
            let offset = start - start % align;
            (offset, words(offset, start + tensor.size_in_bytes() as u64))
        };
        if size > limit {
            return Err(Error::BufferAllocation { requested: size, limit, what: "max_storage_buffer_binding_size" });
        }
        let elem = (start - offset) / tensor.dtype().size_in_bytes() as u64;
        let elem_offset = u32::try_from(elem)
            .ok()
            .filter(|e| u64::from(*e) + tensor.numel() as u64 <= u64::from(u32::MAX))
            .ok_or_else(|| Error::invalid("bind", "tensor too large for 32-bit indexing"))?;
        Ok(TensorBinding { storage: Arc::clone(storage), offset, size, elem_offset })
    }

    /// Workgroups covering `threads` invocations of a 1-D kernel with workgroup size `wg`,
    /// folded into y and z when x alone would exceed the device limit. Kernels recover the
    /// linear index with `linear_index(gid, nwg)` from the prelude.
    pub fn linear_grid(&self, threads: usize, wg: u32) -> Result<[u32; 3]> {
        let max = u64::from(self.ctx.caps().limits.max_compute_workgroups_per_dimension.max(1));
        let groups = (threads as u64).div_ceil(u64::from(wg.max(1)));
        let x = groups.min(max);
        let rest = groups.div_ceil(x.max(1));
        let y = rest.min(max);
        let z = rest.div_ceil(y.max(1));
        if z > max {
            return Err(Error::invalid("linear_grid", format!("{threads} invocations exceed the dispatch limit")));
        }
        Ok([x as u32, y as u32, z as u32])
    }

    /// Binds and launches one kernel. A grid with a zero dimension records nothing.
    pub fn dispatch<P: Pod>(&mut self, cache: &ResourceCache, d: Dispatch<'_, P>) -> Result<()> {
        let kv = d.dtype;
        self.dispatch_with_kv(cache, d, kv)
    }

    /// [`dispatch`](Self::dispatch) of a kernel compiled with `kv` as its key/value cache type
    /// `KV` (attention over an f16 cache with f32 queries).
    pub fn dispatch_with_kv<P: Pod>(&mut self, cache: &ResourceCache, d: Dispatch<'_, P>, kv: DType) -> Result<()> {
        let kernel = d.kernel;
        if d.bindings.len() != kernel.bindings as usize {
            return Err(Error::invalid(
                "dispatch",
                format!("kernel `{}` binds {} buffers, {} given", kernel.name, kernel.bindings, d.bindings.len()),
            ));
        }
        let bytes = bytemuck::bytes_of(&d.params);
        if !bytes.len().is_multiple_of(4) || bytes.len() > MAX_PARAMS_BYTES as usize {
            return Err(Error::invalid(
                "dispatch",
                format!(
                    "params of kernel `{}` are {} bytes; need a multiple of 4, at most {MAX_PARAMS_BYTES}",
                    kernel.name,
                    bytes.len()
                ),
            ));
        }
        if d.workgroups.contains(&0) {
            return Ok(());
        }
        let max = self.ctx.caps().limits.max_compute_workgroups_per_dimension;
        if d.workgroups.iter().any(|&w| w > max) {
            return Err(Error::invalid("dispatch", format!("{:?} workgroups exceed the limit {max}", d.workgroups)));
        }
        let mode = self.param_mode();
        let variant = ShaderVariant { dtype: d.dtype, kv, params: mode, subgroups: self.ctx.caps().subgroups() };
        let key = PipelineKey { kernel, variant, overrides: d.overrides };
        let compiled = cache.get::<ComputeKernel>(&key)?;
        let ranges: Vec<(&wgpu::Buffer, u64, u64)> =
            d.bindings.iter().map(|b| (b.storage.buffer(), b.offset, b.size)).collect();
        let group = cache.bind_group(&compiled.storage_layout.0, kernel.bindings, &ranges, kernel.name);
        self.pass.set_pipeline(&compiled.pipeline);
        self.pass.set_bind_group(0, &group, &[]);
        match mode {
            ParamMode::Immediates => self.pass.set_immediates(0, bytes),
            ParamMode::Uniform => {
                let layout = cache.get::<ParamsLayout>(&())?;
                let (group, offset) = self.arena.push(self.ctx, &layout, bytes)?;
                self.pass.set_bind_group(1, &group, &[offset]);
            }
        }
        let [x, y, z] = d.workgroups;
        self.pass.dispatch_workgroups(x, y, z);
        if let Some(profiler) = self.profiler.as_deref_mut() {
            profiler.mark(self.pass, Some((kernel.name, d.workgroups)));
        }
        self.retained.extend(d.bindings.iter().map(|b| Arc::clone(&b.storage)));
        *self.dispatches += 1;
        Ok(())
    }
}

/// Records operations into one compute pass and submits them together.
///
/// A command buffer is reusable: after [`commit`](Self::commit) it records into a fresh
/// encoder. Tensors bound by recorded operations stay allocated until the commit.
///
/// ```
/// use metallic::{kernels::elementwise::{Binary, BinaryOp}, Runtime, Tensor};
/// let rt = Runtime::new()?;
/// let a = Tensor::from_slice(&rt, [3], &[1.0f32, 2.0, 3.0])?;
/// let b = Tensor::from_slice(&rt, [3], &[10.0f32, 20.0, 30.0])?;
/// let out = a.empty_like()?;
/// let mut cb = rt.command_buffer()?;
/// cb.record(&Binary::new(BinaryOp::Add, &a, &b, &out)?)?;
/// cb.commit()?;
/// cb.wait()?;
/// assert_eq!(out.to_vec::<f32>()?, [11.0, 22.0, 33.0]);
/// # Ok::<(), metallic::Error>(())
/// ```
pub struct CommandBuffer {
    ctx: Context,
    cache: ResourceCache,
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    arena: ParamArena,
    retained: Vec<Arc<Allocation>>,
    ops: usize,
    dispatches: usize,
    submitted: Option<wgpu::SubmissionIndex>,
    timer: Option<GpuTimer>,
    profiler: Option<KernelProfiler>,
}

/// GPU timestamps around the compute passes of one recording: the first pass's start and the
/// last pass's end.
struct GpuTimer {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// Whether the current recording has written its start timestamp.
    started: bool,
    /// Whether the last commit carried timestamps.
    committed: bool,
}

impl CommandBuffer {
    /// An empty command buffer on `ctx`, compiling through `cache`.
    pub fn new(ctx: &Context, cache: &ResourceCache) -> Result<Self> {
        if !cache.context().same_device(ctx) {
            return Err(Error::invalid("CommandBuffer::new", "the cache belongs to another device"));
        }
        Ok(CommandBuffer {
            ctx: ctx.clone(),
            cache: cache.clone(),
            encoder: None,
            pass: None,
            arena: ParamArena::default(),
            retained: Vec::new(),
            ops: 0,
            dispatches: 0,
            submitted: None,
            timer: None,
            profiler: None,
        })
    }

    /// Records GPU timestamps around the compute work of every later commit, read with
    /// [`gpu_time`](Self::gpu_time). Needs the adapter's `TIMESTAMP_QUERY`.
    pub fn enable_gpu_timing(&mut self) -> Result<()> {
        if !self.ctx.caps().timestamps() {
            return Err(self.ctx.unsupported("CommandBuffer::enable_gpu_timing", "TIMESTAMP_QUERY"));
        }
        if self.timer.is_some() {
            return Ok(());
        }
        let device = self.ctx.device();
        let (timer, err) = self.ctx.capture(|| {
            let buffer = |label, usage| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: 16,
                    usage,
                    mapped_at_creation: false,
                })
            };
            GpuTimer {
                queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("metallic timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2,
                }),
                resolve: buffer(
                    "metallic timestamps",
                    wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                ),
                readback: buffer(
                    "metallic timestamps read-back",
                    wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                ),
                started: false,
                committed: false,
            }
        });
        if let Some(err) = err {
            return Err(gpu_error(err, "creating GPU timestamp queries"));
        }
        self.timer = Some(timer);
        Ok(())
    }

    /// GPU time from the start of the first compute pass to the end of the last one in the last
    /// commit (waits for it), or `None` if that commit was not timed.
    pub fn gpu_time(&self) -> Result<Option<std::time::Duration>> {
        let Some(timer) = self.timer.as_ref().filter(|t| t.committed) else { return Ok(None) };
        self.wait()?;
        let ticks = read_u64s(&self.ctx, &timer.readback, 2)?;
        let (Some(&start), Some(&end)) = (ticks.first(), ticks.get(1)) else { return Ok(None) };
        let nanos = end.saturating_sub(start) as f64 * f64::from(self.ctx.queue().get_timestamp_period());
        Ok(Some(std::time::Duration::from_nanos(nanos as u64)))
    }

    /// Times every later dispatch on the GPU (a timestamp after each), summed by kernel and
    /// read with [`kernel_profile`](Self::kernel_profile). Each commit then waits for its
    /// work, so profile where the time goes, not throughput. Needs the adapter's
    /// `TIMESTAMP_QUERY_INSIDE_PASSES`.
    pub fn enable_kernel_profiling(&mut self) -> Result<()> {
        if self.profiler.is_none() {
            self.profiler = Some(KernelProfiler::new(&self.ctx)?);
        }
        Ok(())
    }

    /// Stops timing dispatches (what was recorded so far is committed first, and its times
    /// are dropped): commits no longer wait for their work.
    pub fn disable_kernel_profiling(&mut self) -> Result<()> {
        if self.profiler.is_some() {
            self.commit()?;
            self.profiler = None;
        }
        Ok(())
    }

    /// GPU time per kernel over the commits since profiling began or since the last call
    /// (which clears it), longest first; empty without
    /// [`enable_kernel_profiling`](Self::enable_kernel_profiling).
    pub fn kernel_profile(&mut self) -> Vec<KernelTime> {
        self.profiler.as_mut().map(KernelProfiler::take).unwrap_or_default()
    }

    /// Validates `op` and records its dispatches.
    pub fn record(&mut self, op: &dyn Operation) -> Result<()> {
        op.validate()?;
        if self.pass.is_none() {
            let encoder = self.encoder.get_or_insert_with(|| {
                self.ctx.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("metallic") })
            });
            let timestamp_writes = self.timer.as_mut().map(|t| {
                let start = (!t.started).then_some(0);
                t.started = true;
                wgpu::ComputePassTimestampWrites {
                    query_set: &t.queries,
                    beginning_of_pass_write_index: start,
                    end_of_pass_write_index: Some(1),
                }
            });
            let pass =
                encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("metallic"), timestamp_writes });
            let mut pass = pass.forget_lifetime();
            if let Some(profiler) = self.profiler.as_mut() {
                profiler.mark(&mut pass, None);
            }
            self.pass = Some(pass);
        }
        let Some(pass) = self.pass.as_mut() else {
            return Err(Error::invalid("CommandBuffer::record", "no open compute pass"));
        };
        let mut encoder = ComputeEncoder {
            ctx: &self.ctx,
            pass,
            arena: &mut self.arena,
            retained: &mut self.retained,
            dispatches: &mut self.dispatches,
            profiler: self.profiler.as_mut(),
        };
        op.encode(&mut encoder, &self.cache)?;
        self.ops += 1;
        Ok(())
    }

    /// Records a buffer-to-buffer copy (ends the open compute pass; the next op opens another).
    /// Offsets and size must be multiples of 4.
    pub(crate) fn copy_buffer(
        &mut self,
        src: &wgpu::Buffer,
        src_offset: u64,
        dst: &wgpu::Buffer,
        dst_offset: u64,
        size: u64,
    ) {
        self.pass = None;
        let encoder = self.encoder.get_or_insert_with(|| {
            self.ctx.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("metallic") })
        });
        encoder.copy_buffer_to_buffer(src, src_offset, dst, dst_offset, size);
        self.ops += 1;
    }

    /// Operations recorded since the last commit.
    pub fn len(&self) -> usize {
        self.ops
    }

    /// Whether nothing was recorded since the last commit.
    pub fn is_empty(&self) -> bool {
        self.ops == 0
    }

    /// Dispatches recorded since the last commit.
    pub fn dispatches(&self) -> usize {
        self.dispatches
    }

    /// Submits what was recorded. GPU validation errors come back here as [`Error`]s.
    pub fn commit(&mut self) -> Result<()> {
        self.ctx.check_health("recording")?;
        self.pass = None;
        let Some(mut encoder) = self.encoder.take() else {
            return Ok(());
        };
        let ops = std::mem::take(&mut self.ops);
        if let Some(timer) = self.timer.as_mut() {
            timer.committed = timer.started;
            if timer.started {
                encoder.resolve_query_set(&timer.queries, 0..2, &timer.resolve, 0);
                encoder.copy_buffer_to_buffer(&timer.resolve, 0, &timer.readback, 0, 16);
            }
            timer.started = false;
        }
        if let Some(profiler) = self.profiler.as_ref() {
            profiler.resolve(&mut encoder);
        }
        self.dispatches = 0;
        let submitting = std::time::Instant::now();
        let (index, err) = self.ctx.capture(|| {
            let commands = encoder.finish();
            self.arena.upload(self.ctx.queue());
            self.ctx.queue().submit([commands])
        });
        self.ctx.add_submit_time(submitting.elapsed());
        // The queue now orders every later use of these regions after this work.
        self.retained.clear();
        if let Some(err) = err {
            return Err(gpu_error(err, &format!("submitting {ops} operations")));
        }
        self.submitted = Some(index);
        if let Some(profiler) = self.profiler.as_mut() {
            profiler.collect(&self.ctx)?;
        }
        Ok(())
    }

    /// Blocks until the last commit has finished on the GPU.
    pub fn wait(&self) -> Result<()> {
        match &self.submitted {
            Some(index) => self.ctx.wait_for(Some(index.clone())),
            None => Ok(()),
        }
    }

    /// The index of the last submission, if any.
    pub(crate) fn last_submission(&self) -> Option<wgpu::SubmissionIndex> {
        self.submitted.clone()
    }
}

impl std::fmt::Debug for CommandBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandBuffer")
            .field("ops", &self.ops)
            .field("dispatches", &self.dispatches)
            .finish_non_exhaustive()
    }
}
