//! The GPU context: adapter choice, device, queue and what they can do.
//!
//! A [`Context`] holds the device, its queue and the capabilities that were negotiated —
//! nothing else. Compiled pipelines live in a [`ResourceCache`](crate::ResourceCache), memory
//! in a [`MemoryPool`](crate::MemoryPool); both are separate values.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{Error, Result};
use crate::params::ParamMode;

/// Features `metallic` uses when the adapter offers them.
const WANTED_FEATURES: wgpu::Features = wgpu::Features::SUBGROUP
    .union(wgpu::Features::SHADER_F16)
    .union(wgpu::Features::IMMEDIATES)
    .union(wgpu::Features::TIMESTAMP_QUERY)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES);

/// A GPU device and queue, plus what they can do.
///
/// Cheap to clone (an `Arc`); `Send + Sync`.
///
/// ```
/// let ctx = metallic::Context::new()?;
/// println!("{} ({:?})", ctx.adapter_info().name, ctx.adapter_info().backend);
/// # Ok::<(), metallic::Error>(())
/// ```
#[derive(Clone)]
pub struct Context {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    device: wgpu::Device,
    queue: wgpu::Queue,
    caps: Capabilities,
    /// Set by the device-lost callback.
    lost: Arc<Mutex<Option<String>>>,
    /// The first GPU error no error scope caught; surfaced at the next submission.
    uncaptured: Arc<Mutex<Option<wgpu::Error>>>,
    /// Host nanoseconds spent submitting command buffers (see [`Context::submit_time`]).
    submit_nanos: AtomicU64,
}

/// What the device offers, as negotiated when the [`Context`] was created.
#[derive(Debug, Clone)]
pub struct Capabilities {
    /// The adapter's identity (name, vendor, backend, driver).
    pub adapter: wgpu::AdapterInfo,
    /// Features enabled on the device.
    pub features: wgpu::Features,
    /// Limits of the device (the adapter's best).
    pub limits: wgpu::Limits,
    /// How kernel parameters travel: immediates (push constants) or a uniform buffer.
    pub params: ParamMode,
    /// Whether the adapter shares memory with the host (integrated GPU or CPU).
    pub unified_memory: bool,
}

impl Capabilities {
    /// Subgroup operations (`subgroupAdd`, ...) are available.
    pub fn subgroups(&self) -> bool {
        self.features.contains(wgpu::Features::SUBGROUP)
    }
    /// `f16` in shaders is available.
    pub fn shader_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }
    /// GPU timestamps can be written between passes.
    pub fn timestamps(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }
    /// Cooperative matrix (tensor core / `simdgroup_matrix`) operations are available.
    pub fn cooperative_matrix(&self) -> bool {
        self.features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
    }
    /// The adapter is a CPU (a software rasteriser such as llvmpipe): kernels that suit GPUs
    /// (wide workgroups, barriers, workgroup memory) may be slow there, and some ops pick
    /// other kernels.
    pub fn cpu(&self) -> bool {
        self.adapter.device_type == wgpu::DeviceType::Cpu
    }
    /// Alignment of storage-buffer binding offsets, in bytes.
    pub fn storage_alignment(&self) -> u64 {
        u64::from(self.limits.min_storage_buffer_offset_alignment.max(4))
    }
}

impl Context {
    /// A context on the best adapter, honouring the `METALLIC_*` environment variables
    /// (see [`ContextBuilder::with_env`]).
    pub fn new() -> Result<Self> {
        Self::builder().with_env()?.build()
    }

    /// A builder for choosing the adapter and the features to use.
    pub fn builder() -> ContextBuilder {
        ContextBuilder::default()
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// The negotiated capabilities.
    pub fn caps(&self) -> &Capabilities {
        &self.inner.caps
    }

    /// The adapter's identity.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.caps.adapter
    }

    /// Whether two handles refer to the same device.
    pub fn same_device(&self, other: &Context) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// An [`Error::Unsupported`] for `op` missing `feature` on this adapter.
    pub(crate) fn unsupported(&self, op: &'static str, feature: &'static str) -> Error {
        Error::Unsupported { op, feature, adapter: self.adapter_info().name.clone() }
    }

    /// Runs `f` inside error scopes for validation, out-of-memory and internal errors, and
    /// returns what it produced with the first error the GPU reported, if any.
    pub(crate) fn capture<T>(&self, f: impl FnOnce() -> T) -> (T, Option<wgpu::Error>) {
        let device = self.device();
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
        let value = f();
        let errors =
            [pollster::block_on(internal.pop()), pollster::block_on(validation.pop()), pollster::block_on(oom.pop())];
        (value, errors.into_iter().flatten().next())
    }

    /// Host time spent so far in submissions (finishing the encoder, uploading parameters,
    /// `Queue::submit` and the error scopes around it): what tells a host bound on recording
    /// from one on submitting, for measurements.
    #[doc(hidden)]
    pub fn submit_time(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.inner.submit_nanos.load(Ordering::Relaxed))
    }

    /// Adds `spent` to [`submit_time`](Self::submit_time).
    pub(crate) fn add_submit_time(&self, spent: std::time::Duration) {
        let nanos = u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX);
        self.inner.submit_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Fails if the device is lost or an earlier GPU error went uncaught.
    pub(crate) fn check_health(&self, context: &str) -> Result<()> {
        if let Some(reason) = lock(&self.inner.lost).clone() {
            return Err(Error::DeviceLost { reason });
        }
        match lock(&self.inner.uncaptured).take() {
            Some(err) => Err(gpu_error(err, context)),
            None => Ok(()),
        }
    }

    /// Blocks until `submission` (or all work, if `None`) has finished on the GPU.
    pub(crate) fn wait_for(&self, submission: Option<wgpu::SubmissionIndex>) -> Result<()> {
        let polled = self.device().poll(wgpu::PollType::Wait { submission_index: submission, timeout: None });
        if polled.is_err() || lock(&self.inner.uncaptured).is_some() {
            // A lost device drops submissions and buffers without errors of their own (waiting
            // then fails as a wrong index, mapping as an invalid buffer), and its lost callback
            // may run only at the next poll: give it that poll, so the loss is what is reported.
            let _ = self.device().poll(wgpu::PollType::Poll);
        }
        self.check_health("waiting for the GPU")?;
        polled.map_err(|e| match e {
            wgpu::PollError::Timeout => Error::DeviceLost { reason: e.to_string() },
            other => Error::Validation { context: "waiting for the GPU".into(), message: other.to_string() },
        })?;
        Ok(())
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let info = self.adapter_info();
        f.debug_struct("Context")
            .field("adapter", &info.name)
            .field("backend", &info.backend)
            .field("params", &self.inner.caps.params)
            .finish_non_exhaustive()
    }
}

/// Converts a GPU error into an [`Error`], naming what was being done.
pub(crate) fn gpu_error(err: wgpu::Error, context: &str) -> Error {
    match err {
        wgpu::Error::OutOfMemory { .. } => Error::OutOfMemory { context: context.to_string() },
        wgpu::Error::Validation { description, .. } | wgpu::Error::Internal { description, .. } => {
            Error::Validation { context: context.to_string(), message: description }
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Chooses an adapter and creates a [`Context`].
///
/// ```
/// use metallic::{Context, ParamMode};
/// let ctx = Context::builder()
///     .backends(metallic::wgpu::Backends::PRIMARY)
///     .adapter("0") // the first adapter `metallic info` lists; or part of its name
///     .params(ParamMode::Uniform)
///     .build()?;
/// assert_eq!(ctx.caps().params, ParamMode::Uniform);
/// # Ok::<(), metallic::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ContextBuilder {
    backends: wgpu::Backends,
    adapter: Option<String>,
    params: Option<ParamMode>,
    disabled: wgpu::Features,
    experimental: bool,
}

impl Default for ContextBuilder {
    fn default() -> Self {
        ContextBuilder {
            backends: wgpu::Backends::PRIMARY,
            adapter: None,
            params: None,
            disabled: wgpu::Features::empty(),
            experimental: true,
        }
    }
}

impl ContextBuilder {
    /// Reads the environment overrides:
    /// - `METALLIC_BACKEND`: comma list of `vulkan`, `metal`, `dx12`, `gl`;
    /// - `METALLIC_ADAPTER`: an adapter index (as `metallic info` lists them) or a
    ///   case-insensitive part of its name;
    /// - `METALLIC_PARAMS`: `immediates` or `uniform`;
    /// - `METALLIC_DISABLE`: comma list of `subgroup`, `f16`, `immediates`, `timestamps`,
    ///   `coopmat` — features not to use even where offered.
    pub fn with_env(mut self) -> Result<Self> {
        if let Ok(v) = std::env::var("METALLIC_BACKEND") {
            self.backends = wgpu::Backends::from_comma_list(&v);
            if self.backends.is_empty() {
                return Err(Error::invalid("METALLIC_BACKEND", format!("no known backend in {v:?}")));
            }
        }
        if let Ok(v) = std::env::var("METALLIC_ADAPTER") {
            self.adapter = Some(v);
        }
        if let Ok(v) = std::env::var("METALLIC_PARAMS") {
            self.params = Some(match v.to_ascii_lowercase().as_str() {
                "immediates" | "immediate" | "push" => ParamMode::Immediates,
                "uniform" => ParamMode::Uniform,
                _ => {
                    return Err(Error::invalid(
                        "METALLIC_PARAMS",
                        format!("expected `immediates` or `uniform`, got {v:?}"),
                    ));
                }
            });
        }
        if let Ok(v) = std::env::var("METALLIC_DISABLE") {
            for name in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                self.disabled |= match name {
                    "subgroup" | "subgroups" => wgpu::Features::SUBGROUP,
                    "f16" => wgpu::Features::SHADER_F16,
                    "immediates" => wgpu::Features::IMMEDIATES,
                    "timestamps" => wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES,
                    "coopmat" => wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX,
                    _ => {
                        return Err(Error::invalid("METALLIC_DISABLE", format!("unknown feature {name:?}")));
                    }
                };
            }
        }
        Ok(self)
    }

    /// Restricts the backends searched.
    pub fn backends(mut self, backends: wgpu::Backends) -> Self {
        self.backends = backends;
        self
    }

    /// Picks the adapter by index (as listed by [`adapters`]) or by part of its name.
    pub fn adapter(mut self, selector: impl Into<String>) -> Self {
        self.adapter = Some(selector.into());
        self
    }

    /// Forces how kernel parameters travel (default: immediates where available).
    pub fn params(mut self, mode: ParamMode) -> Self {
        self.params = Some(mode);
        self
    }

    /// Never enables these features, even where offered.
    pub fn disable(mut self, features: wgpu::Features) -> Self {
        self.disabled |= features;
        self
    }

    /// Whether to enable wgpu's experimental features (cooperative matrix) where offered.
    pub fn experimental(mut self, enabled: bool) -> Self {
        self.experimental = enabled;
        self
    }

    /// Chooses the adapter and creates the device.
    pub fn build(self) -> Result<Context> {
        let instance = instance(self.backends);
        let candidates = pollster::block_on(instance.enumerate_adapters(self.backends));
        let adapter = choose(candidates, self.adapter.as_deref())?;
        let info = adapter.get_info();
        let mut wanted = WANTED_FEATURES;
        let unified = matches!(info.device_type, wgpu::DeviceType::IntegratedGpu | wgpu::DeviceType::Cpu);
        if unified {
            wanted |= wgpu::Features::MAPPABLE_PRIMARY_BUFFERS;
        }
        if self.experimental {
            wanted |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        }
        let features = adapter.features() & wanted & !self.disabled;
        let limits = adapter.limits();
        let immediates_ok = features.contains(wgpu::Features::IMMEDIATES)
            && limits.max_immediate_size >= crate::params::MAX_PARAMS_BYTES;
        let params = match self.params {
            Some(ParamMode::Immediates) if !immediates_ok => {
                return Err(Error::Unsupported {
                    op: "Context",
                    feature: "IMMEDIATES (128 bytes)",
                    adapter: info.name,
                });
            }
            Some(mode) => mode,
            None if immediates_ok => ParamMode::Immediates,
            None => ParamMode::Uniform,
        };
        let desc = wgpu::DeviceDescriptor {
            label: Some("metallic"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: experimental_token(features),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc))
            .map_err(|e| Error::DeviceRequest { adapter: info.name.clone(), message: e.to_string() })?;

        let lost = Arc::new(Mutex::new(None));
        let lost_slot = Arc::clone(&lost);
        device.set_device_lost_callback(move |reason, message| {
            *lock(&lost_slot) = Some(format!("{reason:?}: {message}"));
        });
        let uncaptured: Arc<Mutex<Option<wgpu::Error>>> = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&uncaptured);
        device.on_uncaptured_error(Arc::new(move |err| {
            lock(&slot).get_or_insert(err);
        }));

        let caps = Capabilities { adapter: info, features, limits, params, unified_memory: unified };
        Ok(Context {
            inner: Arc::new(ContextInner { device, queue, caps, lost, uncaptured, submit_nanos: Default::default() }),
        })
    }
}

/// The token that lets the device enable wgpu's experimental features.
#[allow(unsafe_code)]
fn experimental_token(features: wgpu::Features) -> wgpu::ExperimentalFeatures {
    if features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
        // SAFETY: the only experimental feature we enable is cooperative matrix, used solely by
        // kernels that are tested against CPU references; wgpu asks us to acknowledge that the
        // feature's validation is incomplete, which we do, and `ContextBuilder::experimental`
        // and `METALLIC_DISABLE=coopmat` turn it off.
        unsafe { wgpu::ExperimentalFeatures::enabled() }
    } else {
        wgpu::ExperimentalFeatures::disabled()
    }
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// Every adapter wgpu finds on these backends, in the order `METALLIC_ADAPTER` indexes.
pub fn adapters(backends: wgpu::Backends) -> Vec<wgpu::AdapterInfo> {
    let instance = instance(backends);
    pollster::block_on(instance.enumerate_adapters(backends)).iter().map(wgpu::Adapter::get_info).collect()
}

/// Rank of a device type: lower is preferred (high-performance first).
fn preference(ty: wgpu::DeviceType) -> u8 {
    match ty {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

fn choose(candidates: Vec<wgpu::Adapter>, selector: Option<&str>) -> Result<wgpu::Adapter> {
    let hint = "install a Vulkan driver (on Debian: `apt-get install mesa-vulkan-drivers libvulkan1` \
                gives the software adapter lavapipe), or check METALLIC_BACKEND / METALLIC_ADAPTER";
    if candidates.is_empty() {
        return Err(Error::NoAdapter { requested: selector.map(str::to_string), hint: hint.to_string() });
    }
    let found = candidates.len();
    let names: Vec<String> = candidates.iter().map(|a| a.get_info().name).collect();
    let picked = match selector {
        Some(sel) => match sel.trim().parse::<usize>() {
            Ok(i) => candidates.into_iter().nth(i),
            Err(_) => {
                let needle = sel.to_lowercase();
                candidates.into_iter().find(|a| a.get_info().name.to_lowercase().contains(&needle))
            }
        },
        None => candidates.into_iter().min_by_key(|a| preference(a.get_info().device_type)),
    };
    picked.ok_or_else(|| Error::NoAdapter {
        requested: selector.map(str::to_string),
        hint: format!("{found} adapter(s) found: {}", names.join(", ")),
    })
}
