//! WGSL kernels, their cache keys and compiled pipelines.
//!
//! A kernel is a `static` [`Kernel`]: a `.wgsl` file next to its op, an entry point and the
//! number of storage buffers it binds. The file is written against a small contract:
//!
//! - `T` is the storage element type (`f32`, `f16`, `u32`), substituted per dtype, and `KV`
//!   the element type of attention's key/value caches (`T`, or `f16` under `f32` queries);
//! - `WG` is the 1-D workgroup size, an `override` constant (default 256);
//! - storage buffers are `@group(0) @binding(i) var<storage, read_write>` (every binding is
//!   read-write so that sub-allocations of one pooled buffer can be bound together);
//! - the file declares `struct Params` and reads `params`, whose declaration is generated for
//!   the [`ParamMode`] in use;
//! - reductions across a workgroup call `workgroup_sum(v, lanes)` / `workgroup_max(v, lanes)`
//!   with `lanes: Lanes` taken as an entry-point argument; they use subgroup operations where
//!   the adapter has them and workgroup memory otherwise (`WG` must then be a power of two);
//!   `workgroup_sum4` reduces a `vec4<f32>` in one pass.
//!
//! [`compose_source`] produces the exact text compiled for a variant; the test suite runs
//! every `.wgsl` file under `src/kernels` through naga (WGSL → validation → MSL) with it.
//!
//! A kernel whose source starts with `// metallic: trusted` is compiled without wgpu's runtime
//! checks ([`Kernel::trusted`]); a kernel source may hold `enable` directives of its own
//! (`enable wgpu_cooperative_matrix;`, lines starting `enable `), which [`compose_source`]
//! moves to the top.

use std::fmt;
use std::hash::{Hash, Hasher};

use crate::cache::{Cacheable, ResourceCache};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::params::{MAX_PARAMS_BYTES, ParamMode, ParamsLayout};
use crate::tensor::DType;

/// Helpers every kernel may use; prepended after the dtype alias.
const PRELUDE: &str = include_str!("kernels/prelude/common.wgsl");
/// `workgroup_sum` / `workgroup_max` and the `Lanes` built-ins, with subgroup operations.
const REDUCE_SUBGROUP: &str = include_str!("kernels/prelude/reduce_subgroup.wgsl");
/// The same functions over workgroup memory only, for adapters without subgroups.
const REDUCE_WORKGROUP: &str = include_str!("kernels/prelude/reduce_workgroup.wgsl");

/// A WGSL compute kernel. Declare kernels as `static` items: the cache tells them apart by
/// address, so two kernels can never collide by name.
#[derive(Debug)]
pub struct Kernel {
    /// Name used in errors and labels.
    pub name: &'static str,
    /// The WGSL source (an `include_str!` of the op's `.wgsl` file).
    pub source: &'static str,
    /// The entry point.
    pub entry: &'static str,
    /// Number of storage buffers, bound at `@group(0) @binding(0..bindings)`.
    pub bindings: u32,
}

/// The first line of a kernel source that opts into compilation without wgpu's runtime checks
/// (bounds checks on every array access, loop bounding, guarded integer division): see
/// [`Kernel::trusted`].
///
/// Only a kernel that guards every storage access with its own index checks against sizes the
/// Rust side validated, indexes workgroup memory only with values in range by construction,
/// never divides by a runtime value that may be zero and whose loops all terminate may carry
/// it: without the checks an out-of-range access reads or writes memory outside the binding.
pub(crate) const TRUSTED_MARKER: &str = "// metallic: trusted";

impl Kernel {
    /// Whether the kernel is compiled without wgpu's runtime checks (bounds checks, loop
    /// bounding, guarded division): its source's first line is `// metallic: trusted`. Only a
    /// kernel that guards every storage access with its own index checks against sizes its op
    /// validated, indexes workgroup memory only in range by construction, has only bounded
    /// loops and no runtime divisor may carry it. The flag lives in the source because the claim it makes (every
    /// access guarded by the kernel's own checks) is about that text; a reviewer sees both in
    /// one file.
    pub fn trusted(&self) -> bool {
        self.source.starts_with(TRUSTED_MARKER)
    }
}

/// Most override constants one pipeline key can carry.
pub const MAX_OVERRIDES: usize = 8;

/// Values for a kernel's WGSL `override` constants. Part of the pipeline key; fixed-size so
/// that building a key per dispatch does not allocate.
#[derive(Clone, Copy, Default)]
pub struct Overrides {
    items: [(&'static str, f64); MAX_OVERRIDES],
    len: usize,
}

impl Overrides {
    /// Overrides from `(name, value)` pairs; fails on more than [`MAX_OVERRIDES`].
    pub fn new(items: &[(&'static str, f64)]) -> Result<Self> {
        let mut out = Overrides::default();
        if items.len() > MAX_OVERRIDES {
            return Err(Error::invalid(
                "Overrides::new",
                format!("{} overrides, at most {MAX_OVERRIDES}", items.len()),
            ));
        }
        for (slot, item) in out.items.iter_mut().zip(items) {
            *slot = *item;
        }
        out.len = items.len();
        Ok(out)
    }

    /// The pairs, as given.
    pub fn as_slice(&self) -> &[(&'static str, f64)] {
        self.items.get(..self.len).unwrap_or(&[])
    }
}

impl PartialEq for Overrides {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len
            && self.as_slice().iter().zip(other.as_slice()).all(|(a, b)| a.0 == b.0 && a.1.to_bits() == b.1.to_bits())
    }
}
impl Eq for Overrides {}

impl Hash for Overrides {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for (name, value) in self.as_slice() {
            name.hash(state);
            value.to_bits().hash(state);
        }
    }
}

impl fmt::Debug for Overrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.as_slice().iter().map(|(k, v)| (k, v))).finish()
    }
}

/// What [`compose_source`] substitutes into a kernel's WGSL: one source, many variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShaderVariant {
    /// The storage element type `T`.
    pub dtype: DType,
    /// The element type `KV` of key/value caches (attention kernels): `dtype`, or `F16` under
    /// `F32` queries.
    pub kv: DType,
    /// How `params` is declared.
    pub params: ParamMode,
    /// Whether `workgroup_sum` / `workgroup_max` use subgroup operations (else workgroup
    /// memory only).
    pub subgroups: bool,
}

/// Everything that changes a compiled compute pipeline.
#[derive(Clone, Copy)]
pub struct PipelineKey {
    /// The kernel (compared by address).
    pub kernel: &'static Kernel,
    /// Dtype, parameter mode and reduction flavour.
    pub variant: ShaderVariant,
    /// Override constants (workgroup size, op selector, ...).
    pub overrides: Overrides,
}

impl PartialEq for PipelineKey {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.kernel, other.kernel) && self.variant == other.variant && self.overrides == other.overrides
    }
}
impl Eq for PipelineKey {}

impl Hash for PipelineKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::ptr::hash(self.kernel, state);
        self.variant.hash(state);
        self.overrides.hash(state);
    }
}

impl PipelineKey {
    /// The key as one line of text for a saved list of pipelines (see [`crate::pipelines`]):
    /// the kernel's name and a hash of its source, the variant, and each override's name and
    /// value bits.
    pub fn to_line(&self) -> String {
        let v = self.variant;
        let params = match v.params {
            ParamMode::Immediates => "immediates",
            ParamMode::Uniform => "uniform",
        };
        let mut line = format!(
            "{} {:016x} {} {} {params} {}",
            self.kernel.name,
            source_hash(self.kernel.source),
            v.dtype,
            v.kv,
            v.subgroups
        );
        for (name, value) in self.overrides.as_slice() {
            line.push_str(&format!(" {name}={:016x}", value.to_bits()));
        }
        line
    }

    /// The key a [`to_line`](Self::to_line) line names, its kernel looked up in `kernels` by
    /// name and source hash; `None` for a line that names no kernel there or does not parse
    /// (a list written by another version, or damaged).
    pub fn from_line(line: &str, kernels: &[&'static Kernel]) -> Option<PipelineKey> {
        let mut words = line.split_ascii_whitespace();
        let (name, hash) = (words.next()?, hex16(words.next()?)?);
        let kernel = *kernels.iter().find(|k| k.name == name && source_hash(k.source) == hash)?;
        let dtype = |w: &str| [DType::F32, DType::F16, DType::U32].into_iter().find(|d| d.to_string() == w);
        let dtype_word = words.next()?;
        let kv_word = words.next()?;
        let variant = ShaderVariant {
            dtype: dtype(dtype_word)?,
            kv: dtype(kv_word)?,
            params: match words.next()? {
                "immediates" => ParamMode::Immediates,
                "uniform" => ParamMode::Uniform,
                _ => return None,
            },
            subgroups: words.next()?.parse().ok()?,
        };
        let mut items = Vec::new();
        for word in words {
            let (name, bits) = word.split_once('=')?;
            items.push((override_name(name)?, f64::from_bits(hex16(bits)?)));
        }
        Some(PipelineKey { kernel, variant, overrides: Overrides::new(&items).ok()? })
    }
}

/// A u64 written as exactly 16 hex digits (as [`PipelineKey::to_line`] writes them): a cut-off
/// value (`WG=4040` of `WG=4040000000000000`) is damage, not a smaller number.
fn hex16(word: &str) -> Option<u64> {
    if word.len() != 16 || !word.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(word, 16).ok()
}

/// FNV-1a over a kernel's source: a saved key names the source it was compiled from.
pub(crate) fn source_hash(source: &str) -> u64 {
    source.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// `name` as a `'static` override name: one leaked copy per distinct name (a WGSL identifier
/// of at most 64 characters), so a damaged list cannot make it grow without bound.
fn override_name(name: &str) -> Option<&'static str> {
    static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    const MOST: usize = 256;
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !valid {
        return None;
    }
    let mut names = NAMES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(&known) = names.iter().find(|&&n| n == name) {
        return Some(known);
    }
    if names.len() >= MOST {
        return None;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.push(leaked);
    Some(leaked)
}

impl fmt::Debug for PipelineKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineKey")
            .field("kernel", &self.kernel.name)
            .field("variant", &self.variant)
            .field("overrides", &self.overrides)
            .finish()
    }
}

/// The WGSL text compiled for one variant of a kernel source.
///
/// ```
/// use metallic::{compose_source, DType, ParamMode, ShaderVariant};
/// let src = "struct Params { n: u32 }\n@compute @workgroup_size(WG) fn main() {}";
/// let variant = ShaderVariant { dtype: DType::F16, kv: DType::F16, params: ParamMode::Immediates, subgroups: true };
/// let text = compose_source(src, variant);
/// assert!(text.starts_with("enable f16;"));
/// assert!(text.contains("var<immediate> params: Params;"));
/// assert!(text.contains("subgroupAdd"));
/// ```
pub fn compose_source(source: &str, variant: ShaderVariant) -> String {
    let f16 = if variant.dtype == DType::F16 || variant.kv == DType::F16 { "enable f16;\n" } else { "" };
    // The kernel's own `enable` directives (lines starting `enable `) go first: WGSL wants
    // them before every declaration.
    let mut enable = String::from(f16);
    let mut body = String::with_capacity(source.len());
    for line in source.lines() {
        let target = if line.starts_with("enable ") { &mut enable } else { &mut body };
        target.push_str(line);
        target.push('\n');
    }
    let source = body;
    let reduce = if variant.subgroups { REDUCE_SUBGROUP } else { REDUCE_WORKGROUP };
    let declaration = match variant.params {
        ParamMode::Immediates => "var<immediate> params: Params;",
        ParamMode::Uniform => "@group(1) @binding(0) var<uniform> params: Params;",
    };
    let (t, kv) = (variant.dtype.wgsl(), variant.kv.wgsl());
    format!("{enable}alias T = {t};\nalias KV = {kv};\n{PRELUDE}\n{reduce}\n{source}\n{declaration}\n")
}

/// Compiles a shader module without wgpu's runtime checks, for kernels marked
/// [`TRUSTED_MARKER`].
#[allow(unsafe_code)]
fn create_trusted_module(device: &wgpu::Device, desc: wgpu::ShaderModuleDescriptor<'_>) -> wgpu::ShaderModule {
    // SAFETY: `create_shader_module_trusted` is unsafe because, without the checks, a shader
    // that indexes out of range reads or writes outside its bindings, a loop that never ends
    // is undefined behaviour, and an integer division by zero is undefined. Only kernels whose
    // source starts with `TRUSTED_MARKER` come here, and that marker is a promise, reviewed
    // with the kernel's source, that every storage access is guarded by the kernel's own index
    // checks against sizes the op's Rust side validated (`Operation::validate` runs before
    // every encode), that workgroup-memory indices are in range by construction, that every
    // loop is bounded and that no division has a runtime divisor. The matmul tests run those
    // kernels at odd sizes, offsets and batches with NaN guards around every operand.
    unsafe { device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
}

/// The bind-group layout for `n` read-write storage buffers at group 0.
pub(crate) struct StorageLayout(pub(crate) wgpu::BindGroupLayout);

impl Cacheable for StorageLayout {
    type Key = u32;
    fn create(bindings: &u32, ctx: &Context, _cache: &ResourceCache) -> Result<Self> {
        let entries: Vec<_> = (0..*bindings)
            .map(|binding| wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: false },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let (layout, err) = ctx.capture(|| {
            ctx.device().create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("metallic storage"),
                entries: &entries,
            })
        });
        match err {
            Some(err) => {
                Err(crate::context::gpu_error(err, &format!("creating a layout of {bindings} storage buffers")))
            }
            None => Ok(StorageLayout(layout)),
        }
    }
}

/// A compiled compute pipeline and the layout its storage bind group must follow.
pub struct ComputeKernel {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) storage_layout: std::sync::Arc<StorageLayout>,
    pub(crate) kernel: &'static Kernel,
}

impl fmt::Debug for ComputeKernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComputeKernel").field("kernel", &self.kernel.name).finish_non_exhaustive()
    }
}

impl Cacheable for ComputeKernel {
    type Key = PipelineKey;

    fn create(key: &PipelineKey, ctx: &Context, cache: &ResourceCache) -> Result<Self> {
        let kernel = key.kernel;
        let variant = key.variant;
        if (variant.dtype == DType::F16 || variant.kv == DType::F16) && !ctx.caps().shader_f16() {
            return Err(ctx.unsupported(kernel.name, "SHADER_F16"));
        }
        if variant.subgroups && !ctx.caps().subgroups() {
            return Err(ctx.unsupported(kernel.name, "SUBGROUP"));
        }
        let storage_layout = cache.get::<StorageLayout>(&kernel.bindings)?;
        let params_layout = match variant.params {
            ParamMode::Uniform => Some(cache.get::<ParamsLayout>(&())?),
            ParamMode::Immediates => None,
        };
        let source = compose_source(kernel.source, variant);
        let label = if variant.kv == variant.dtype {
            format!("{}<{}>", kernel.name, variant.dtype)
        } else {
            format!("{}<{}, kv {}>", kernel.name, variant.dtype, variant.kv)
        };
        let (pipeline, err) = ctx.capture(|| {
            let desc = wgpu::ShaderModuleDescriptor {
                label: Some(&label),
                source: wgpu::ShaderSource::Wgsl(source.as_str().into()),
            };
            let module = if kernel.trusted() {
                create_trusted_module(ctx.device(), desc)
            } else {
                ctx.device().create_shader_module(desc)
            };
            let layouts = [Some(&storage_layout.0), params_layout.as_ref().map(|l| &l.0)];
            let layout = ctx.device().create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(&label),
                bind_group_layouts: if params_layout.is_some() { &layouts } else { &layouts[..1] },
                immediate_size: if variant.params == ParamMode::Immediates { MAX_PARAMS_BYTES } else { 0 },
            });
            ctx.device().create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: Some(&layout),
                module: &module,
                entry_point: Some(kernel.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: key.overrides.as_slice(),
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            })
        });
        match err {
            Some(wgpu::Error::OutOfMemory { .. }) => {
                Err(Error::OutOfMemory { context: format!("compiling kernel `{}`", kernel.name) })
            }
            Some(wgpu::Error::Validation { description, .. } | wgpu::Error::Internal { description, .. }) => {
                Err(Error::ShaderCompilation { kernel: kernel.name.to_string(), message: description })
            }
            None => Ok(ComputeKernel { pipeline, storage_layout, kernel }),
        }
    }
}
