//! Where `embed --output PATH` writes, decided before any work, and the writing itself.
//!
//! - PATH absent, or a regular file: the output is written to a new temporary file in the same
//!   directory (`.<name>.<pid>.<random>.tmp`, created exclusively, so no other file is ever
//!   opened or replaced), then renamed onto PATH. A failure at any step removes the temporary
//!   file, so PATH holds either its old content or the whole new output. A replaced file keeps
//!   its permissions.
//! - PATH a symbolic link: followed deliberately. The link stays a link; its final target is
//!   written as above, in the target's directory (a dangling link's target is created).
//! - PATH a character device (`/dev/null`, a terminal) or a FIFO: written directly, as a
//!   shell's `>` does; the node is opened for writing, never created, truncated or replaced.
//! - PATH a directory, a block device, a socket, a read-only file, a file in a directory that
//!   does not exist, or a name that ends in `/`: refused before any work, leaving nothing
//!   behind.
//!
//! The module uses only `std`, and its errors are `std::io::Error`s whose message starts with
//! "cannot write the output here" when PATH is refused; callers name PATH.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};

/// How many symbolic links are followed before the path is taken as a loop (Linux's limit).
const MAX_LINKS: usize = 40;

/// How the output reaches PATH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OutputPlan {
    /// Write a temporary file in `target`'s directory and rename it onto `target`, a regular
    /// file or nothing yet (PATH itself, or the final target of the link PATH is).
    Replace {
        /// The path renamed onto (no symbolic link).
        target: PathBuf,
        /// Whether `target` exists now.
        exists: bool,
    },
    /// Open PATH for writing, without creating or truncating it: a character device or FIFO.
    Direct {
        /// The path as given.
        path: PathBuf,
    },
}

/// A refusal of `path` before any work: "cannot write the output here: {why}".
fn refuse(kind: ErrorKind, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(kind, format!("cannot write the output here: {why}"))
}

/// Decides how to write to `path` from what is there now. Reads metadata only: nothing is
/// created, opened or changed.
pub(crate) fn plan_output(path: &Path) -> io::Result<OutputPlan> {
    if path.as_os_str().is_empty() {
        return Err(refuse(ErrorKind::InvalidInput, "the path is empty"));
    }
    match std::fs::metadata(path) {
        // Something exists at the end of any links.
        Ok(meta) => plan_existing(path, &meta),
        // Nothing there, or a link (chain) whose final target does not exist yet; or a
        // component of the path is a file (`check_new_file` names it).
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            let target = resolve_dangling(path)?;
            check_new_file(&target)?;
            Ok(OutputPlan::Replace { target, exists: false })
        }
        Err(e) => Err(refuse(e.kind(), e)),
    }
}

fn plan_existing(path: &Path, meta: &std::fs::Metadata) -> io::Result<OutputPlan> {
    let file_type = meta.file_type();
    if file_type.is_dir() {
        return Err(refuse(ErrorKind::IsADirectory, "it is a directory; give a file name"));
    }
    if file_type.is_file() {
        if names_a_directory(path) {
            return Err(refuse(ErrorKind::NotADirectory, "it is a file, not a directory"));
        }
        if meta.permissions().readonly() {
            return Err(refuse(ErrorKind::PermissionDenied, "the file is read-only"));
        }
        let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        let target = if is_link { std::fs::canonicalize(path).map_err(|e| refuse(e.kind(), e))? } else { path.into() };
        return Ok(OutputPlan::Replace { target, exists: true });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_char_device() || file_type.is_fifo() {
            return Ok(OutputPlan::Direct { path: path.into() });
        }
        if file_type.is_block_device() {
            return Err(refuse(ErrorKind::InvalidInput, "it is a block device; give a file name"));
        }
        if file_type.is_socket() {
            return Err(refuse(ErrorKind::InvalidInput, "it is a socket; give a file name"));
        }
    }
    Err(refuse(ErrorKind::InvalidInput, "it is neither a file, a character device nor a FIFO; give a file name"))
}

/// Whether `path` as written can only name a directory: it ends with a separator (`out/`) or
/// its last part is `.` or `..` (which `Path::file_name` would skip or refuse).
fn names_a_directory(path: &Path) -> bool {
    let bytes = path.as_os_str().as_encoded_bytes();
    let is_separator = |b: &u8| std::path::is_separator(char::from(*b));
    let last = bytes.rsplit(is_separator).next().unwrap_or_default();
    bytes.last().is_some_and(is_separator) || last == b"." || last == b".."
}

/// `path` with every symbolic link along its last component followed, for a path whose final
/// target does not exist: `path` itself when it is no link. Relative link targets are taken
/// relative to the link's directory.
fn resolve_dangling(path: &Path) -> io::Result<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let next = std::fs::read_link(&current).map_err(|e| refuse(e.kind(), e))?;
                current = match current.parent() {
                    Some(dir) if next.is_relative() => dir.join(next),
                    _ => next,
                };
            }
            Ok(_) => {
                // It appeared meanwhile; `check_new_file` reports what it is.
                return Ok(current);
            }
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => return Ok(current),
            Err(e) => return Err(refuse(e.kind(), e)),
        }
    }
    Err(refuse(ErrorKind::InvalidInput, "too many levels of symbolic links"))
}

/// Checks that a file can be created at `target` (which does not exist): it has a file name
/// and its directory exists.
fn check_new_file(target: &Path) -> io::Result<()> {
    if names_a_directory(target) || target.file_name().is_none() {
        return Err(refuse(ErrorKind::InvalidInput, "the path names a directory; give a file name"));
    }
    let dir = parent_dir(target);
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(refuse(ErrorKind::NotADirectory, format!("{} is not a directory", dir.display()))),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            Err(refuse(e.kind(), format!("the directory {} does not exist", dir.display())))
        }
        Err(e) => Err(refuse(e.kind(), format!("{}: {e}", dir.display()))),
    }
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// An output being written: opened by [`OutputFile::open`] before the work (so that a
/// directory without write permission fails first), then [`write`](Self::write)n once.
/// Dropping it without a successful write removes its temporary file.
#[derive(Debug)]
pub(crate) struct OutputFile {
    file: File,
    /// The temporary file and the path it is renamed onto, for [`OutputPlan::Replace`].
    temp: Option<TempFile>,
}

/// A temporary file that is removed when dropped unless it was renamed onto its target.
#[derive(Debug)]
struct TempFile {
    path: PathBuf,
    target: PathBuf,
    renamed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl OutputFile {
    /// Opens the output `plan` describes: creates the temporary file, or opens the device or
    /// FIFO for writing (which waits for a reader, as a shell's `>` does).
    pub(crate) fn open(plan: &OutputPlan) -> io::Result<Self> {
        match plan {
            OutputPlan::Direct { path } => {
                let file = OpenOptions::new().write(true).open(path)?;
                // The node could have been replaced since the plan: never write into a regular
                // file in place.
                if file.metadata()?.is_file() {
                    return Err(io::Error::new(ErrorKind::InvalidInput, "the output changed into a regular file"));
                }
                Ok(OutputFile { file, temp: None })
            }
            OutputPlan::Replace { target, exists } => {
                let (file, temp) = create_temp(target)?;
                let temp = TempFile { path: temp, target: target.clone(), renamed: false };
                if *exists {
                    // The new file gets the old one's permissions (it may be private).
                    if let Ok(meta) = std::fs::metadata(target) {
                        file.set_permissions(meta.permissions())?;
                    }
                }
                Ok(OutputFile { file, temp: Some(temp) })
            }
        }
    }

    /// The temporary file, while there is one (tests).
    #[cfg(test)]
    fn temp_path(&self) -> Option<&Path> {
        self.temp.as_ref().map(|t| t.path.as_path())
    }

    /// Writes `bytes` as the whole output and puts it in place: renamed onto the target, or
    /// written to the device. On error the temporary file is removed and the target is as it
    /// was.
    pub(crate) fn write(mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.file.flush()?;
        if let Some(temp) = &mut self.temp {
            self.file.sync_all()?;
            std::fs::rename(&temp.path, &temp.target)?;
            temp.renamed = true;
        }
        Ok(())
    }
}

/// A new file `.<name>.<pid>.<random>.tmp` beside `target`, created exclusively (an existing
/// file of that name is never opened); a few names are tried.
fn create_temp(target: &Path) -> io::Result<(File, PathBuf)> {
    let dir = parent_dir(target);
    // At most 64 characters of the name, so the temporary name stays within NAME_MAX.
    let name: String = target.file_name().map(|n| n.to_string_lossy()).unwrap_or_default().chars().take(64).collect();
    let mut last = io::Error::new(ErrorKind::AlreadyExists, "no free temporary name");
    for _ in 0..16 {
        let mut temp = OsString::from(".");
        temp.push(format!("{name}.{}.{:016x}.tmp", std::process::id(), random()));
        let path = dir.join(temp);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => last = e,
            Err(e) => {
                return Err(io::Error::new(e.kind(), format!("creating a temporary file in {}: {e}", dir.display())));
            }
        }
    }
    Err(last)
}

/// 64 random bits from the standard library's per-process hash keys.
fn random() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    hasher.finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// A fresh directory under the temporary directory, removed when dropped.
    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("metallic-outfile-{tag}-{}-{:x}", std::process::id(), random()));
            std::fs::create_dir(&dir).unwrap();
            Dir(dir)
        }

        fn entries(&self) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn message(err: io::Error) -> String {
        err.to_string()
    }

    #[test]
    fn a_new_file_is_written_through_a_temporary_file_that_disappears() {
        let dir = Dir::new("new");
        let out = dir.0.join("out.jsonl");
        let plan = plan_output(&out).unwrap();
        assert_eq!(plan, OutputPlan::Replace { target: out.clone(), exists: false });
        let file = OutputFile::open(&plan).unwrap();
        let temp = file.temp_path().unwrap().to_path_buf();
        let temp_name = temp.file_name().unwrap().to_string_lossy().into_owned();
        assert!(temp_name.starts_with(".out.jsonl.") && temp_name.ends_with(".tmp"), "{temp_name}");
        assert_eq!(dir.entries(), [temp_name]);
        file.write(b"data").unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"data");
        assert_eq!(dir.entries(), ["out.jsonl"]);
    }

    #[test]
    fn an_unfinished_output_leaves_nothing_and_keeps_the_old_file() {
        let dir = Dir::new("unfinished");
        let out = dir.0.join("out.npy");
        std::fs::write(&out, "old").unwrap();
        let plan = plan_output(&out).unwrap();
        assert_eq!(plan, OutputPlan::Replace { target: out.clone(), exists: true });
        drop(OutputFile::open(&plan).unwrap());
        assert_eq!(dir.entries(), ["out.npy"]);
        assert_eq!(std::fs::read(&out).unwrap(), b"old");
    }

    #[test]
    fn other_files_are_never_touched() {
        let dir = Dir::new("others");
        let out = dir.0.join("out.npy");
        std::fs::write(dir.0.join("out.npy.partial"), "keep").unwrap();
        OutputFile::open(&plan_output(&out).unwrap()).unwrap().write(b"new").unwrap();
        assert_eq!(std::fs::read(dir.0.join("out.npy.partial")).unwrap(), b"keep");
        assert_eq!(std::fs::read(&out).unwrap(), b"new");
        assert_eq!(dir.entries(), ["out.npy", "out.npy.partial"]);
    }

    #[cfg(unix)]
    #[test]
    fn a_replaced_file_keeps_its_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = Dir::new("mode");
        let out = dir.0.join("private.jsonl");
        std::fs::write(&out, "old").unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o600)).unwrap();
        OutputFile::open(&plan_output(&out).unwrap()).unwrap().write(b"new").unwrap();
        assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[cfg(unix)]
    #[test]
    fn links_are_followed_to_their_target() {
        let dir = Dir::new("links");
        let target = dir.0.join("target.jsonl");
        std::fs::write(&target, "old").unwrap();
        let link = dir.0.join("link.jsonl");
        std::os::unix::fs::symlink("target.jsonl", &link).unwrap();
        let plan = plan_output(&link).unwrap();
        let canonical = std::fs::canonicalize(&target).unwrap();
        assert_eq!(plan, OutputPlan::Replace { target: canonical, exists: true });
        OutputFile::open(&plan).unwrap().write(b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");

        // A dangling link (through a second link, relative to its directory) creates its target.
        std::fs::create_dir(dir.0.join("sub")).unwrap();
        std::os::unix::fs::symlink("sub/created.jsonl", dir.0.join("hop")).unwrap();
        let dangling = dir.0.join("dangling");
        std::os::unix::fs::symlink("hop", &dangling).unwrap();
        let plan = plan_output(&dangling).unwrap();
        assert_eq!(plan, OutputPlan::Replace { target: dir.0.join("sub/created.jsonl"), exists: false });
        OutputFile::open(&plan).unwrap().write(b"made").unwrap();
        assert_eq!(std::fs::read(dir.0.join("sub/created.jsonl")).unwrap(), b"made");
        assert!(std::fs::symlink_metadata(&dangling).unwrap().file_type().is_symlink());

        // A loop is refused.
        std::os::unix::fs::symlink("loop-b", dir.0.join("loop-a")).unwrap();
        std::os::unix::fs::symlink("loop-a", dir.0.join("loop-b")).unwrap();
        let err = message(plan_output(&dir.0.join("loop-a")).unwrap_err());
        assert!(err.starts_with("cannot write the output here: "), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn devices_are_written_directly() {
        let null = Path::new("/dev/null");
        let plan = plan_output(null).unwrap();
        assert_eq!(plan, OutputPlan::Direct { path: null.into() });
        OutputFile::open(&plan).unwrap().write(b"gone").unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::symlink_metadata(null).unwrap().file_type().is_char_device());

        let full = Path::new("/dev/full");
        if full.exists() {
            let err = OutputFile::open(&plan_output(full).unwrap()).unwrap().write(b"x").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::StorageFull, "{err}");
            assert!(std::fs::symlink_metadata(full).unwrap().file_type().is_char_device());
        }
    }

    #[test]
    fn unusable_paths_are_refused_and_nothing_is_created() {
        let dir = Dir::new("refused");
        let file = dir.0.join("file.txt");
        std::fs::write(&file, "").unwrap();
        let cases: Vec<(PathBuf, String)> = vec![
            (PathBuf::new(), "the path is empty".into()),
            (dir.0.clone(), "it is a directory; give a file name".into()),
            (
                dir.0.join("missing/out.npy"),
                format!("the directory {} does not exist", dir.0.join("missing").display()),
            ),
            (file.join("out.npy"), format!("{} is not a directory", file.display())),
            (dir.0.join("new/"), "the path names a directory".into()),
            (dir.0.join("new/."), "the path names a directory".into()),
            (dir.0.join("new/.."), "the path names a directory".into()),
            (PathBuf::from(format!("{}/", file.display())), "the path names a directory".into()),
        ];
        for (path, want) in cases {
            let err = message(plan_output(&path).unwrap_err());
            assert!(err.starts_with(&format!("cannot write the output here: {want}")), "{path:?}: {err}");
        }
        assert_eq!(dir.entries(), ["file.txt"]);
    }

    #[cfg(unix)]
    #[test]
    fn a_read_only_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = Dir::new("readonly");
        let out = dir.0.join("locked.jsonl");
        std::fs::write(&out, "old").unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o444)).unwrap();
        let err = message(plan_output(&out).unwrap_err());
        assert_eq!(err, "cannot write the output here: the file is read-only");
    }

    /// Arbitrary names (generated, not hand-picked) under a scratch directory: the plan never
    /// panics, a refusal creates nothing, and an accepted plan writes exactly its target.
    #[test]
    fn arbitrary_names_never_leave_anything_but_the_output() {
        let dir = Dir::new("names");
        let pieces = ["a", "..", ".", "/", "b.npy", "", "//", "é", ".partial", "x/"];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for round in 0..200 {
            let mut name = String::new();
            for _ in 0..(round % 4 + 1) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                name.push_str(pieces[(seed % pieces.len() as u64) as usize]);
            }
            let sub = Dir(dir.0.join(format!("r{round}")));
            std::fs::create_dir(&sub.0).unwrap();
            std::fs::create_dir(sub.0.join("d")).unwrap();
            // Paths stay inside the round's directory: `..` is taken from a level below it.
            let path = sub.0.join("d").join(&name);
            let before = sub.entries();
            match plan_output(&path) {
                Err(e) => {
                    assert!(e.to_string().starts_with("cannot write the output here: "), "{path:?}: {e}");
                    assert_eq!(sub.entries(), before, "{path:?}");
                }
                Ok(OutputPlan::Direct { path }) => panic!("no device here: {path:?}"),
                Ok(OutputPlan::Replace { target, exists }) => {
                    let file = OutputFile::open(&OutputPlan::Replace { target: target.clone(), exists });
                    file.and_then(|f| f.write(b"ok")).unwrap_or_else(|e| panic!("{path:?} → {target:?}: {e}"));
                    assert_eq!(std::fs::read(&target).unwrap(), b"ok", "{path:?}");
                    let stray = std::fs::read_dir(parent_dir(&target))
                        .unwrap()
                        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".tmp"))
                        .count();
                    assert_eq!(stray, 0, "{path:?}");
                }
            }
        }
    }
}
