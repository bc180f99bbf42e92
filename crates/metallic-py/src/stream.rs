//! `TextStream`: a generation on a thread of its own, read as a Python iterator of text pieces.
//!
//! The generation thread sends pieces through a bounded channel, so it runs at most a few
//! pieces ahead of the reader. Closing the stream (`close()`, leaving a `with` block, or the
//! object being dropped — a `for` loop left with `break` drops it once nothing refers to it)
//! sets a cancel flag that the generation checks at every piece, then waits for the thread to
//! end: no generation outlives its stream.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use metallic_models::Llm;
use pyo3::prelude::*;

use crate::device::Release;
use crate::errors::{Kind, model_error};
use crate::generation::{GenerationResult, Request, run};

/// Pieces the generation may run ahead of the reader.
const AHEAD: usize = 16;

/// How often a reader waiting for the next piece checks for Python signals (Ctrl-C).
const SIGNAL_POLL: Duration = Duration::from_millis(100);

/// What the generation thread sends.
enum Event {
    Piece(String),
    Done(Result<GenerationResult, Failure>),
}

/// Why a generation failed.
enum Failure {
    Model(metallic_models::Error),
    Panic(String),
}

#[derive(Default)]
struct State {
    events: Option<Receiver<Event>>,
    worker: Option<JoinHandle<()>>,
    result: Option<GenerationResult>,
}

impl State {
    /// Lets the thread go (a blocked send fails) and waits for it to end.
    fn finish(&mut self) {
        self.events = None;
        if let Some(worker) = self.worker.take() {
            // The thread catches its own panics, so joining cannot fail in practice.
            let _ = worker.join();
        }
    }
}

/// An iterator over the text of a generation, piece by piece, as the model produces it
/// (`Llm.stream`, `Llm.stream_chat`).
///
/// The pieces concatenate to what `Llm.generate` returns for the same arguments. Iteration
/// ends at an end-of-generation token, a stop string or `max_tokens`; then `result` holds the
/// `GenerationResult` (tokens, finish reason, timings). Stopping early — `close()`, leaving a
/// `with` block, or dropping the iterator (e.g. `break` out of a `for` loop) — cancels the
/// generation and waits for its thread to end; `result.finish_reason` is then `"cancelled"`.
/// A failure during generation is raised by the `next()` call that meets it.
#[pyclass(module = "metallic", frozen)]
pub struct TextStream {
    state: Mutex<State>,
    cancel: Arc<AtomicBool>,
    /// The stream may hold the last reference to its model.
    _release: Release,
}

impl TextStream {
    /// Starts `request` on `llm` on a new thread.
    pub fn start(llm: Arc<Llm>, request: Request, release: Release) -> PyResult<Self> {
        let (tx, rx) = sync_channel(AHEAD);
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cancel);
        let worker = std::thread::Builder::new()
            .name("metallic-generate".into())
            .spawn(move || generate(&llm, &request, &flag, &tx))
            .map_err(|e| Kind::Device.err(format!("could not start the generation thread: {e}")))?;
        let state = State { events: Some(rx), worker: Some(worker), result: None };
        Ok(TextStream { state: Mutex::new(state), cancel, _release: release })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The generation thread's body.
fn generate(llm: &Llm, request: &Request, cancel: &AtomicBool, tx: &SyncSender<Event>) {
    let outcome =
        catch_unwind(AssertUnwindSafe(|| run(llm, request, cancel, |piece| tx.send(Event::Piece(piece)).is_ok())));
    let done = match outcome {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(err)) => Err(Failure::Model(err)),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(Failure::Panic(what))
        }
    };
    // The reader may be gone (a dropped stream): nobody to tell.
    let _ = tx.send(Event::Done(done));
}

/// What one wait for the next event found.
enum Next {
    Piece(String),
    Waiting,
    Ended,
    Failed(Failure),
    Lost,
}

#[pymethods]
impl TextStream {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<String>> {
        loop {
            let next = py.detach(|| {
                let mut state = self.state();
                let Some(events) = state.events.as_ref() else { return Next::Ended };
                match events.recv_timeout(SIGNAL_POLL) {
                    Ok(Event::Piece(piece)) => Next::Piece(piece),
                    Ok(Event::Done(done)) => {
                        state.finish();
                        match done {
                            Ok(result) => {
                                state.result = Some(result);
                                Next::Ended
                            }
                            Err(failure) => Next::Failed(failure),
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => Next::Waiting,
                    Err(RecvTimeoutError::Disconnected) => {
                        state.finish();
                        Next::Lost
                    }
                }
            });
            match next {
                Next::Piece(piece) => return Ok(Some(piece)),
                Next::Waiting => py.check_signals()?,
                Next::Ended => return Ok(None),
                Next::Failed(Failure::Model(err)) => return Err(model_error(err)),
                Next::Failed(Failure::Panic(what)) => {
                    return Err(Kind::Device.err(format!("internal error in metallic (a Rust panic): {what}")));
                }
                Next::Lost => return Err(Kind::Device.err("the generation thread ended without a result")),
            }
        }
    }

    /// Stops the generation if it is still running and waits for its thread to end. Pieces
    /// not yet read are dropped; `result` then says `"cancelled"` (or how the generation ended,
    /// if it had already). Closing twice does nothing.
    fn close(&self, py: Python<'_>) {
        self.cancel.store(true, Ordering::SeqCst);
        py.detach(|| {
            let mut state = self.state();
            while let Some(events) = state.events.as_ref() {
                match events.recv() {
                    Ok(Event::Piece(_)) => continue,
                    Ok(Event::Done(Ok(result))) => state.result = Some(result),
                    Ok(Event::Done(Err(_))) | Err(_) => {}
                }
                state.finish();
            }
        });
    }

    /// The `GenerationResult` once the generation has ended (iteration finished or the stream
    /// closed), else `None`.
    #[getter]
    fn result(&self, py: Python<'_>) -> Option<GenerationResult> {
        py.detach(|| self.state().result.clone())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let state = py.detach(|| match &self.state().result {
            Some(result) => format!("finished: {}", result.finish_reason),
            None => "running".to_string(),
        });
        format!("<metallic.TextStream ({state})>")
    }
}

impl Drop for TextStream {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::SeqCst);
        // Dropping the receiver first fails a send the thread may be blocked in; the thread
        // needs no GIL, so waiting for it here cannot deadlock.
        self.state.get_mut().unwrap_or_else(PoisonError::into_inner).finish();
    }
}
