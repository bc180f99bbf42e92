//! `scripts/common.sh`'s `ensure_adapter`: it finds an installed Vulkan driver (this machine and
//! CI have the loader and Mesa's lavapipe, installed before the tests run) without calling
//! apt-get, and keeps stdout clean. `apt-get` and `sudo` are replaced by scripts that record
//! being called and fail, so an install attempt shows and never happens.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary directory holding fake `apt-get` and `sudo` that append their name and
/// arguments to `calls.log` and exit 1.
struct FakeApt {
    dir: PathBuf,
}

impl FakeApt {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("metallic-setup-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for tool in ["apt-get", "sudo"] {
            let path = dir.join(tool);
            let log = dir.join("calls.log");
            std::fs::write(&path, format!("#!/bin/sh\necho \"{tool} $*\" >> '{}'\nexit 1\n", log.display())).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        FakeApt { dir }
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.dir.join("calls.log")).unwrap_or_default()
    }

    /// Runs `ensure_adapter` from the repository root with the fakes first on PATH and
    /// `env` (name, value) set; `VK_DRIVER_FILES` and `VK_ICD_FILENAMES` are cleared first.
    fn ensure_adapter(&self, env: &[(&str, &Path)]) -> Output {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![self.dir.clone()];
        paths.extend(std::env::split_paths(&path));
        let mut cmd = Command::new("bash");
        cmd.args(["-c", "set -euo pipefail; . scripts/common.sh; ensure_adapter"])
            .current_dir(root)
            .env("PATH", std::env::join_paths(paths).unwrap())
            .env_remove("VK_DRIVER_FILES")
            .env_remove("VK_ICD_FILENAMES");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }
}

impl Drop for FakeApt {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn ensure_adapter_finds_the_installed_driver_without_apt() {
    let fake = FakeApt::new("installed");
    let out = fake.ensure_adapter(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(fake.calls(), "", "ensure_adapter tried to install a driver; stderr: {err}");
    assert!(out.status.success(), "ensure_adapter failed: {err}");
    assert!(out.stdout.is_empty(), "stdout: {:?}", String::from_utf8_lossy(&out.stdout));
}

/// `VK_DRIVER_FILES` (and the older `VK_ICD_FILENAMES`) replace the standard directories, as
/// they do for the Vulkan loader: a manifest named there counts, and a variable naming nothing
/// that exists means no driver, so the install path runs — with its output off stdout.
#[test]
fn ensure_adapter_honours_the_driver_variables() {
    let fake = FakeApt::new("variables");
    let manifest = fake.dir.join("my_icd.json");
    std::fs::write(&manifest, "{}").unwrap();
    for var in ["VK_DRIVER_FILES", "VK_ICD_FILENAMES"] {
        for named in [manifest.as_path(), fake.dir.as_path()] {
            let out = fake.ensure_adapter(&[(var, named)]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(fake.calls(), "", "{var}={}: stderr: {err}", named.display());
            assert!(out.status.success(), "{var}={}: {err}", named.display());
        }
    }

    let missing = fake.dir.join("missing_icd.json");
    let out = fake.ensure_adapter(&[("VK_DRIVER_FILES", &missing)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(fake.calls().contains("apt-get") || fake.calls().contains("sudo"), "no install attempt: {err}");
    assert!(!out.status.success(), "the fake install failed, so must ensure_adapter: {err}");
    assert!(err.contains("no Vulkan driver found"), "{err}");
    assert!(out.stdout.is_empty(), "stdout: {:?}", String::from_utf8_lossy(&out.stdout));
}
