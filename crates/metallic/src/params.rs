//! Kernel parameters: the typed, safe replacement for Metal's `setBytes`.
//!
//! An op passes a `#[repr(C)]` [`bytemuck::Pod`] struct; the
//! [`ComputeEncoder`](crate::ComputeEncoder) delivers it either as immediates (push
//! constants) or, on adapters without them, through a per-command-buffer uniform arena bound
//! with a dynamic offset. The WGSL side declares `struct Params` and uses `params`; the
//! declaration of `params` itself is generated for the chosen mode
//! (see [`compose_source`](crate::compose_source)).

use std::sync::Arc;

use crate::cache::{Cacheable, ResourceCache};
use crate::context::{Context, gpu_error};
use crate::error::{Error, Result};

/// Largest parameter struct, in bytes (Vulkan guarantees this much push-constant space).
pub const MAX_PARAMS_BYTES: u32 = 128;

/// How kernel parameters reach the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamMode {
    /// `var<immediate>`: push constants on Vulkan, `setBytes` on Metal. No buffer writes.
    Immediates,
    /// A uniform buffer slot per dispatch, written once when the command buffer commits.
    Uniform,
}

/// Bytes per uniform slot (a multiple of every adapter's uniform offset alignment).
const SLOT_BYTES: u64 = 256;
/// Slots per arena block.
const SLOTS_PER_BLOCK: u64 = 256;

/// The bind-group layout of the parameter uniform (group 1, binding 0, dynamic offset).
pub(crate) struct ParamsLayout(pub(crate) wgpu::BindGroupLayout);

impl Cacheable for ParamsLayout {
    type Key = ();
    fn create(_key: &(), ctx: &Context, _cache: &ResourceCache) -> Result<Self> {
        let layout = ctx.device().create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("metallic params"),
            entries: &[wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: true,
                    min_binding_size: None,
                },
                count: None,
            }],
        });
        Ok(ParamsLayout(layout))
    }
}

/// Uniform slots for one command buffer's dispatches, uploaded in one write per block at commit.
#[derive(Default)]
pub(crate) struct ParamArena {
    blocks: Vec<Block>,
}

struct Block {
    buffer: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
    staged: Vec<u8>,
}

impl ParamArena {
    /// Stages `bytes` in a fresh slot; returns the bind group and dynamic offset to use.
    pub(crate) fn push(
        &mut self,
        ctx: &Context,
        layout: &Arc<ParamsLayout>,
        bytes: &[u8],
    ) -> Result<(wgpu::BindGroup, u32)> {
        let slot = SLOT_BYTES.max(u64::from(ctx.caps().limits.min_uniform_buffer_offset_alignment));
        let needs_block = self.blocks.last().is_none_or(|b| b.staged.len() as u64 + slot > slot * SLOTS_PER_BLOCK);
        if needs_block {
            self.blocks.push(Block::new(ctx, layout, slot)?);
        }
        let block = self.blocks.last_mut().ok_or_else(|| Error::invalid("ParamArena", "no block"))?;
        let offset = block.staged.len();
        block.staged.extend_from_slice(bytes);
        block.staged.resize(offset + slot as usize, 0);
        let offset = u32::try_from(offset).map_err(|_| Error::invalid("ParamArena", "offset overflow"))?;
        Ok((block.bind_group.clone(), offset))
    }

    /// Writes every staged block to the GPU (ordered before the next submission) and empties
    /// the arena.
    pub(crate) fn upload(&mut self, queue: &wgpu::Queue) {
        for block in self.blocks.drain(..) {
            queue.write_buffer(&block.buffer, 0, &block.staged);
        }
    }
}

impl Block {
    fn new(ctx: &Context, layout: &Arc<ParamsLayout>, slot: u64) -> Result<Self> {
        let ((buffer, bind_group), err) = ctx.capture(|| {
            let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("metallic params arena"),
                size: slot * SLOTS_PER_BLOCK,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let bind_group = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("metallic params"),
                layout: &layout.0,
                entries: &[wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &buffer,
                        offset: 0,
                        size: wgpu::BufferSize::new(u64::from(MAX_PARAMS_BYTES)),
                    }),
                }],
            });
            (buffer, bind_group)
        });
        if let Some(err) = err {
            return Err(gpu_error(err, "allocating the parameter arena"));
        }
        Ok(Block { buffer, bind_group, staged: Vec::with_capacity((slot * SLOTS_PER_BLOCK) as usize) })
    }
}
