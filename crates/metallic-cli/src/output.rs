//! Writing to stdout without panicking: `println!` panics when stdout is gone (a closed pipe,
//! `metallic info | head -1`); these return an `Error` naming `<stdout>` instead. A closed pipe
//! (`BrokenPipe`) makes `main` exit quietly with status 141, as a tool killed by SIGPIPE does;
//! any other write error is printed as one line.

use std::io::{BufWriter, Write};

use metallic_models::{Error, Result};

/// Writes `bytes` to stdout and flushes.
pub(crate) fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    out.write_all(bytes).and_then(|()| out.flush()).map_err(|e| Error::Io { path: "<stdout>".into(), source: e })
}

/// `println!` that returns an error when stdout is gone.
macro_rules! outln {
    () => {
        $crate::output::write_stdout(b"\n")?
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format!("{}\n", format_args!($($arg)*)).as_bytes())?
    };
}
pub(crate) use outln;
