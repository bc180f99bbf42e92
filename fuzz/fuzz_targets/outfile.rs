//! `embed --output`'s path handling (`crates/metallic-cli/src/outfile.rs`, included as a module):
//! a sandbox directory is filled with files, directories and symbolic links (dangling, chained,
//! looping) the input describes, then an output path inside it is planned, opened and written.
//!
//! Checked: on success, reading the path gives exactly the bytes written, every other file
//! keeps its content, links stay links and no temporary file is left; on failure, the sandbox
//! is exactly as it was. Names come from a small alphabet and never contain `..` or a leading
//! `/`, so nothing outside the sandbox is touched. (FIFOs are left out: opening one for writing
//! waits for a reader.)
#![no_main]

#[path = "../../crates/metallic-cli/src/outfile.rs"]
#[allow(dead_code)]
mod outfile;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 8] = ["a", "b", "d", "d/a", "d/b", "d/e", "d/e/a", "x.npy"];
const OUTPUTS: [&str; 12] = ["a", "b", "d", "d/a", "d/e/a", "x.npy", "d/", "a/", "new", "d/new", "a/new", "zz/new"];

/// What is at each path of the sandbox: file contents, directories, link targets.
#[derive(Debug, PartialEq, Eq)]
enum Node {
    File(Vec<u8>),
    Dir,
    Link(PathBuf),
}

fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Node>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if meta.file_type().is_symlink() {
                out.insert(rel, Node::Link(std::fs::read_link(&path).unwrap_or_default()));
            } else if meta.is_dir() {
                out.insert(rel, Node::Dir);
                walk(root, &path, out);
            } else {
                out.insert(rel, Node::File(std::fs::read(&path).unwrap_or_default()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fuzz_target!(|data: &[u8]| {
    let root = std::env::temp_dir().join(format!("metallic-fuzz-outfile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let mut bytes = data.iter().copied();
    let mut next = || bytes.next().unwrap_or(0);
    // Up to six entries: (kind, name, link target).
    for _ in 0..next() % 7 {
        let (kind, name, target) = (next() % 3, NAMES[usize::from(next()) % NAMES.len()], next());
        let path = root.join(name);
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = match kind {
            0 => std::fs::write(&path, [target; 3]),
            1 => std::fs::create_dir_all(&path),
            // Relative to the link's directory, or absolute within the sandbox.
            _ => {
                let to = NAMES[usize::from(target) % NAMES.len()];
                let to = if target & 0x80 != 0 { root.join(to) } else { PathBuf::from(to) };
                std::os::unix::fs::symlink(to, &path)
            }
        };
    }
    let output = root.join(OUTPUTS[usize::from(next()) % OUTPUTS.len()]);
    let content: Vec<u8> = bytes.collect();
    let before = snapshot(&root);
    let result = outfile::plan_output(&output)
        .and_then(|plan| Ok((outfile::OutputFile::open(&plan)?, plan)))
        .and_then(|(file, plan)| file.write(&content).map(|()| plan));
    let after = snapshot(&root);
    match result {
        Ok(plan) => {
            assert_eq!(std::fs::read(&output).unwrap(), content, "{output:?} {plan:?}");
            // The file written, with every link on the way resolved (a directory on the way
            // may be a link too), relative to the sandbox.
            if let outfile::OutputPlan::Direct { path } = &plan {
                panic!("a direct write in the sandbox: {path:?}");
            }
            let written = std::fs::canonicalize(&output).unwrap();
            let target = written.strip_prefix(std::fs::canonicalize(&root).unwrap()).unwrap().to_path_buf();
            assert!(after.keys().all(|p| !p.to_string_lossy().ends_with(".tmp")), "{after:?}");
            for (path, node) in &before {
                if *path != target {
                    assert_eq!(after.get(path), Some(node), "{path:?} changed writing {output:?}");
                }
            }
        }
        Err(e) => assert_eq!(before, after, "{output:?} failed ({e}) but changed the sandbox"),
    }
    let _ = std::fs::remove_dir_all(&root);
});
