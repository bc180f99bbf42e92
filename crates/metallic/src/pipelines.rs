//! The pipelines a program used, remembered for its next start: compiled there in parallel
//! before first use instead of one by one as the first passes record them.
//!
//! A process builds each compute pipeline the first time an op needs it: shader translation
//! (naga) and the driver's compile, one after another on the recording thread, in the middle
//! of the first prompt. [`save`] writes the keys of the pipelines built so far to a list in the
//! user's cache folder, one per adapter, driver and scope (what the program runs: a model file,
//! so that one model's start does not build another's pipelines); [`precompile_saved`] reads
//! that list at the next start and builds its pipelines on every core while the model loads. The list is only a
//! hint: a line that no longer names a kernel of this build (another version) or does not parse
//! (a damaged file) is skipped, a missing or unreadable file precompiles nothing, and a
//! pipeline the list lacks is still built on first use.
//!
//! Where the list lives: `$METALLIC_CACHE_DIR`, else `$XDG_CACHE_HOME/metallic`, else
//! `~/.cache/metallic` (`%LOCALAPPDATA%\metallic` on Windows), in `pipelines/`.
//! `METALLIC_PIPELINE_LIST=off` turns both reading and writing off.

use std::path::PathBuf;
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::kernel::PipelineKey;
use crate::runtime::Runtime;

/// Most keys a list keeps (a list only grows by what programs on this adapter used).
const MOST_KEYS: usize = 4096;

/// The list file for `rt`'s adapter and driver, this build's version and `scope`, or `None`
/// where lists are turned off or no cache folder is known.
pub fn list_path(rt: &Runtime, scope: &str) -> Option<PathBuf> {
    if std::env::var("METALLIC_PIPELINE_LIST").is_ok_and(|v| v == "off") {
        return None;
    }
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let dir = env("METALLIC_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("metallic")))
        .or_else(|| env("HOME").map(|d| d.join(".cache").join("metallic")))
        .or_else(|| env("LOCALAPPDATA").map(|d| d.join("metallic")))?;
    let info = rt.context().adapter_info();
    let identity = format!(
        "{} {:?} {} {} {} {}",
        info.name, info.backend, info.vendor, info.device, info.driver, info.driver_info,
    );
    // The same FNV-1a that names kernel sources: a short, stable file name.
    let hash = crate::kernel::source_hash;
    let file = format!("{}-{:016x}-{:016x}.txt", env!("CARGO_PKG_VERSION"), hash(&identity), hash(scope));
    Some(dir.join("pipelines").join(file))
}

/// The keys a list names (its unknown or damaged lines skipped); empty where there is none.
pub fn load(rt: &Runtime, scope: &str) -> Vec<PipelineKey> {
    let Some(text) = list_path(rt, scope).and_then(|p| std::fs::read(p).ok()) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&text);
    text.lines().take(MOST_KEYS).filter_map(|line| PipelineKey::from_line(line, crate::kernels::ALL)).collect()
}

/// Adds the pipelines `rt` has built so far to the list of `scope` (written whole to a temporary file,
/// then renamed over the list: a reader never sees half a list). Returns how many keys the
/// list holds; `Ok(0)` where lists are off.
pub fn save(rt: &Runtime, scope: &str) -> Result<usize> {
    let Some(path) = list_path(rt, scope) else { return Ok(0) };
    let mut lines: Vec<String> = load(rt, scope).iter().map(PipelineKey::to_line).collect();
    for key in rt.cache().pipeline_keys() {
        let line = key.to_line();
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
    lines.truncate(MOST_KEYS);
    let io = |e: std::io::Error| Error::Io(std::io::Error::new(e.kind(), format!("{}: {e}", path.display())));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let partial = path.with_extension(format!("{}.partial", std::process::id()));
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&partial, text).map_err(io)?;
    std::fs::rename(&partial, &path).map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        io(e)
    })?;
    Ok(lines.len())
}

/// Starts building the pipelines of `scope`'s list on a background thread that uses every core
/// (at most 16 compiles at once). [`Precompiling::join`] waits for them before the first pass
/// (a pass that needs a pipeline still being built would build its own); dropping the handle
/// waits too, so no GPU work outlives the caller (a process that exits on an error while the
/// thread still holds the device would tear the driver down under it).
pub fn precompile_saved(rt: &Runtime, scope: &str) -> Precompiling {
    let rt = rt.clone();
    let scope = scope.to_owned();
    let handle = std::thread::spawn(move || {
        let keys = load(&rt, &scope);
        if keys.is_empty() {
            return 0;
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(16);
        rt.cache().precompile(&keys, threads)
    });
    Precompiling { handle: Some(handle) }
}

/// A [`precompile_saved`] under way; joined when dropped.
#[derive(Debug)]
pub struct Precompiling {
    handle: Option<JoinHandle<usize>>,
}

impl Precompiling {
    /// Waits for the pipelines; returns how many it built (0 if the thread failed).
    pub fn join(mut self) -> usize {
        self.handle.take().map_or(0, |h| h.join().unwrap_or(0))
    }
}

impl Drop for Precompiling {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
