//! `metallic embed` and `metallic tokenize` as a user runs them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn minilm() -> PathBuf {
    let root = std::env::var_os("METALLIC_MODELS").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/metallic/models")
    });
    let dir = std::env::var_os("METALLIC_MINILM").map(PathBuf::from).unwrap_or_else(|| root.join("all-MiniLM-L6-v2"));
    assert!(dir.join("model.safetensors").exists(), "run ./scripts/fetch-model.sh first ({} missing)", dir.display());
    dir
}

fn metallic(args: &[&str], stdin: &[u8]) -> Output {
    common::with_stdin(args, stdin)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Reference embeddings by sentence-transformers, by case name.
fn reference(name: &str) -> (String, Vec<f32>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../metallic-models/tests/fixtures/minilm/reference.json");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let case = json["cases"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap();
    let embedding = case["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    (case["text"].as_str().unwrap().to_string(), embedding)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn embeds_lines_from_stdin_as_jsonl_in_input_order() {
    let model = minilm();
    let (short, want_short) = reference("short");
    let (sentence, want_sentence) = reference("sentence");
    let (_, want_empty) = reference("empty");
    // An empty line is a text (the empty string); a final newline is not.
    let input = format!("{sentence}\r\n{short}\n\n");
    let out = metallic(&["embed", "--model", model.to_str().unwrap()], input.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<Vec<f32>> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert!(max_diff(&lines[0], &want_sentence) < 1e-4);
    assert!(max_diff(&lines[1], &want_short) < 1e-4);
    assert!(max_diff(&lines[2], &want_empty) < 1e-4);
}

#[test]
fn jsonl_input_carries_newlines_and_npy_output_is_a_numpy_array() {
    let model = minilm();
    let (text, want) = reference("newline_tab");
    assert!(text.contains('\n'));
    let dir = std::env::temp_dir().join(format!("metallic-cli-npy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out_path = dir.join("out.npy");
    let input = format!("{}\n\"hello\"\n", serde_json::Value::from(text.as_str()));
    let args = ["embed", "--model", model.to_str().unwrap(), "--input-format", "jsonl", "--format", "npy"];
    let out = metallic(&[&args[..], &["--output", out_path.to_str().unwrap()]].concat(), input.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let bytes = std::fs::read(&out_path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + header_len) % 64, 0);
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(header.contains("'descr': '<f4'") && header.contains("'shape': (2, 384)"), "{header}");
    let values: Vec<f32> =
        bytes[10 + header_len..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(values.len(), 2 * 384);
    assert!(max_diff(&values[..384], &want) < 1e-4);
}

#[test]
fn tokenize_prints_the_ids_as_json() {
    let model = minilm();
    let out = metallic(&["tokenize", "--model", model.to_str().unwrap(), "Hello world"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "[101, 7592, 2088, 102]\n");
}

#[test]
fn bad_input_fails_cleanly_with_no_output() {
    let model = minilm();
    let m = model.to_str().unwrap();
    let cases: [(&[&str], &[u8], &str); 4] = [
        (&["embed", "--model", m], b"fine\n\xff\xfe bad\n", "invalid UTF-8 on line 2"),
        (&["embed", "--model", m, "--input-format", "jsonl"], b"\"ok\"\nnot json\n", "line 2: expected a JSON string"),
        (&["embed", "--model", "/nonexistent"], b"text\n", "/nonexistent: not a model directory"),
        (&["embed", "--model", m, "--input", "/nonexistent.txt"], b"", "/nonexistent.txt: No such file"),
    ];
    for (args, stdin, message) in cases {
        let out = metallic(args, stdin);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?} wrote output");
        let err = stderr(&out);
        assert!(err.starts_with("error: ") && err.contains(message), "{args:?}: {err}");
        assert!(!err.contains("panicked") && err.lines().count() == 1, "{args:?}: {err}");
    }
}

#[test]
fn empty_input_gives_empty_output() {
    let out = metallic(&["embed", "--model", minilm().to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}

/// `--output` is checked before the input, the model or any embedding: errors name the path as
/// given (not the temporary `.partial` file) and come first even when the model is missing.
#[test]
fn the_output_location_is_checked_before_any_work() {
    let model = minilm();
    let m = model.to_str().unwrap();
    let dir = std::env::temp_dir().join(format!("metallic-cli-output-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("file.txt");
    std::fs::write(&file, "").unwrap();
    let under_file = file.join("x.npy");
    let (d, u) = (dir.to_str().unwrap(), under_file.to_str().unwrap());
    let missing = "/nonexistent/dir/x.npy: cannot write the output here: the directory /nonexistent/dir does not exist";
    let is_dir = format!("{d}: cannot write the output here: it is a directory");
    let not_dir = format!("{u}: cannot write the output here: {} is not a directory", file.display());
    let cases: [(&[&str], &[u8], &str); 5] = [
        (&["embed", "--model", m, "--format", "npy", "--output", "/nonexistent/dir/x.npy"], b"text\n", missing),
        // The model and the input are bad too: the output is still the first thing checked.
        (&["embed", "--model", "/nonexistent/model", "--output", "/nonexistent/dir/x.npy"], b"text\n", missing),
        (&["embed", "--model", m, "--output", "/nonexistent/dir/x.npy"], b"\xff\xfe\n", missing),
        (&["embed", "--model", m, "--output", d], b"text\n", &is_dir),
        (&["embed", "--model", m, "--output", u], b"text\n", &not_dir),
    ];
    for (args, stdin, message) in cases {
        let out = metallic(args, stdin);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} wrote output");
        assert!(err.starts_with(&format!("error: {message}")) && err.lines().count() == 1, "{args:?}: {err}");
        assert!(!err.contains(".partial") && !err.contains("panicked"), "{args:?}: {err}");
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "only file.txt is left in {d}");
    // Nothing beside the refused directory either (once, `<dir>.partial` was left there).
    assert!(!Path::new(&format!("{d}.partial")).exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// `--output` writes the output and nothing else: a regular file is replaced whole (no other
/// file is touched, a `<out>.partial` included, and no temporary file stays), a link stays a
/// link and its target gets the output, a dangling link's target is created, and a character
/// device or FIFO is written directly, never replaced by a file.
#[cfg(unix)]
#[test]
fn the_output_is_written_in_place_of_nothing_else() {
    use std::os::unix::fs::{FileTypeExt, symlink};
    let model = minilm();
    let m = model.to_str().unwrap();
    let dir = std::env::temp_dir().join(format!("metallic-cli-in-place-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("real")).unwrap();
    let embed_to = |output: &Path| {
        let out = metallic(&["embed", "--model", m, "--output", output.to_str().unwrap()], b"one\ntwo\n");
        assert!(out.status.success(), "{}: {}", output.display(), stderr(&out));
        assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{}: {}", output.display(), stderr(&out));
    };
    let two_lines = |path: &Path| {
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(text.lines().count(), 2, "{}", path.display());
        assert!(text.lines().all(|l| serde_json::from_str::<Vec<f32>>(l).unwrap().len() == 384));
    };

    // A regular file, with an unrelated `<out>.partial` beside it.
    let file = dir.join("out.jsonl");
    std::fs::write(&file, "old\n").unwrap();
    std::fs::write(dir.join("out.jsonl.partial"), "not ours").unwrap();
    embed_to(&file);
    two_lines(&file);
    assert_eq!(std::fs::read_to_string(dir.join("out.jsonl.partial")).unwrap(), "not ours");
    assert_eq!(entries(&dir), ["out.jsonl", "out.jsonl.partial", "real"]);

    // A link to a file in another directory, and a dangling link.
    let target = dir.join("real/target.jsonl");
    std::fs::write(&target, "old\n").unwrap();
    let link = dir.join("link.jsonl");
    symlink("real/target.jsonl", &link).unwrap();
    embed_to(&link);
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("real/target.jsonl"));
    two_lines(&target);
    let dangling = dir.join("dangling.jsonl");
    symlink("real/new.jsonl", &dangling).unwrap();
    embed_to(&dangling);
    assert!(std::fs::symlink_metadata(&dangling).unwrap().file_type().is_symlink());
    two_lines(&dir.join("real/new.jsonl"));
    assert_eq!(entries(&dir.join("real")), ["new.jsonl", "target.jsonl"]);

    // A character device.
    embed_to(Path::new("/dev/null"));
    assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());

    // A FIFO, read by another thread.
    let fifo = dir.join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
    assert!(made.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    embed_to(&fifo);
    let text = reader.join().unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    assert_eq!(entries(&dir), ["dangling.jsonl", "fifo", "link.jsonl", "out.jsonl", "out.jsonl.partial", "real"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A write that fails (a full device) is a clear error after the work, naming the path; the
/// device stays a device.
#[cfg(target_os = "linux")]
#[test]
fn a_failing_write_is_an_error_and_leaves_the_device() {
    use std::os::unix::fs::FileTypeExt;
    let model = minilm();
    let out = metallic(&["embed", "--model", model.to_str().unwrap(), "--output", "/dev/full"], b"one\n");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: /dev/full: writing the output: No space left on device"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(std::fs::metadata("/dev/full").unwrap().file_type().is_char_device());
    assert!(!Path::new("/dev/full.partial").exists());
}

/// Embeddings written to a closed pipe (`metallic embed ... | head -c 1` once the reader has
/// gone): a quiet exit with status 141, as for a Unix tool killed by SIGPIPE.
#[test]
fn a_closed_stdout_ends_quietly() {
    let model = minilm();
    let mut child = common::piped(&["embed", "--model", model.to_str().unwrap()]).spawn().unwrap();
    drop(child.stdout.take());
    child.stdin.take().unwrap().write_all(b"one\ntwo\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(141), "{err}");
    assert!(err.is_empty(), "stderr: {err}");
}

/// Progress appears on a terminal for any number of texts once the work has run for the delay
/// (set to 0 here through `METALLIC_PROGRESS_DELAY_MS`, so the test does not depend on speed);
/// stderr that is not a terminal stays clean. `script` (util-linux) gives the run a terminal.
#[cfg(target_os = "linux")]
#[test]
fn progress_shows_on_a_terminal_for_few_texts() {
    let model = minilm();
    let dir = std::env::temp_dir().join(format!("metallic-cli-progress-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("texts.txt");
    std::fs::write(&input, "one\ntwo\nthree\n").unwrap();
    let output = dir.join("out.jsonl");
    let shell = |s: &Path| format!("'{}'", s.display().to_string().replace('\'', r"'\''"));
    let run = format!(
        "{} embed --model {} --input {} > {}",
        shell(Path::new(env!("CARGO_BIN_EXE_metallic"))),
        shell(&model),
        shell(&input),
        shell(&output)
    );
    let out = Command::new("script")
        .args(["-qec", &run, "/dev/null"])
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .env("METALLIC_PROGRESS_DELAY_MS", "0")
        .stdin(Stdio::null())
        .output()
        .expect("`script` (util-linux) runs the CLI on a terminal");
    // What the terminal showed: stderr of `embed` (stdout went to the file).
    let terminal = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{terminal}{}", stderr(&out));
    assert!(terminal.contains("/3 texts"), "no progress on the terminal: {terminal:?}");
    assert_eq!(std::fs::read_to_string(&output).unwrap().lines().count(), 3);

    // Not a terminal: nothing on stderr, however long the work.
    let out = Command::new(env!("CARGO_BIN_EXE_metallic"))
        .args(["embed", "--model", model.to_str().unwrap(), "--input", input.to_str().unwrap()])
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .env("METALLIC_PROGRESS_DELAY_MS", "0")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stderr.is_empty(), "stderr: {}", stderr(&out));
    std::fs::remove_dir_all(&dir).unwrap();
}
