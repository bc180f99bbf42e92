//! One generation as the HTTP layer sees it: the engine's events turned into pieces of text a
//! response may send, with stop strings applied, log-probabilities kept with the text they
//! belong to, and the token latencies recorded.
//!
//! Both the streamed and the whole responses read a [`Run`]; the receiver of the engine's
//! events lives inside it, so dropping the run (a client that hung up drops the handler's
//! future or the stream's body) cancels the sequence in the engine.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use metallic_models::Llm;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::api::UsageOut;
use crate::engine::{Event, FinishReason, StepLogprobs};
use crate::error::ApiError;
use crate::metrics::Metrics;
use metallic_models::stop::{Scan, StopMatcher};

/// Why a response ended, as OpenAI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The model ended its turn, or a stop string appeared.
    Stop,
    /// `max_tokens`, or the context, was reached.
    Length,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// The log-probabilities of one generated token and where its text starts in the
/// completion (bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    pub offset: usize,
    pub step: StepLogprobs,
}

/// What a run produced next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Text to send, with the log-probabilities of the tokens it holds (when asked for).
    Text { text: String, logprobs: Vec<TokenLogprobs> },
    /// The end.
    Done { finish: Finish, usage: UsageOut },
    /// The generation failed after it started.
    Failed(ApiError),
}

/// Where a run's failures come from: the engine was cancelled at the end of a shutdown's
/// grace period (503), or it failed (500).
#[derive(Debug, Clone, Default)]
pub struct Cancelled(pub Arc<AtomicBool>);

/// A generation in flight (see the module docs).
#[derive(Debug)]
pub struct Run {
    events: Option<UnboundedReceiver<Event>>,
    stop: StopMatcher,
    prompt_tokens: usize,
    /// Tokens received.
    generated: usize,
    /// Bytes of text received, and of text released.
    seen: usize,
    released: usize,
    /// Log-probabilities whose text is not released yet.
    logprobs: VecDeque<TokenLogprobs>,
    ready: VecDeque<Step>,
    cancelled: Cancelled,
    metrics: Arc<Metrics>,
    started: Instant,
    last_token: Option<Instant>,
}

impl Run {
    /// A run reading `events`, for a prompt of `prompt_tokens` tokens; `started` is when the
    /// request arrived (time to first token counts from it).
    pub fn new(
        events: UnboundedReceiver<Event>,
        prompt_tokens: usize,
        stops: Vec<String>,
        cancelled: Cancelled,
        metrics: Arc<Metrics>,
        started: Instant,
    ) -> Self {
        Run {
            events: Some(events),
            stop: StopMatcher::new(stops),
            prompt_tokens,
            generated: 0,
            seen: 0,
            released: 0,
            logprobs: VecDeque::new(),
            ready: VecDeque::new(),
            cancelled,
            metrics,
            started,
            last_token: None,
        }
    }

    /// The next step; `None` after `Done` or `Failed`.
    pub async fn next(&mut self) -> Option<Step> {
        loop {
            if let Some(step) = self.ready.pop_front() {
                return Some(step);
            }
            let events = self.events.as_mut()?;
            match events.recv().await {
                Some(Event::Token { text, logprobs, .. }) => {
                    self.observe_token();
                    if let Some(step) = logprobs {
                        self.logprobs.push_back(TokenLogprobs { offset: self.seen, step });
                    }
                    self.seen += text.len();
                    self.scan(&text);
                }
                Some(Event::Done { reason, usage, text }) => {
                    self.seen += text.len();
                    if !self.scan(&text) {
                        let rest = self.stop.finish();
                        self.release(rest, usize::MAX);
                        let finish = match reason {
                            FinishReason::Stop => Finish::Stop,
                            FinishReason::Length => Finish::Length,
                        };
                        self.end(Step::Done { finish, usage: UsageOut::from_engine(usage) });
                    }
                }
                Some(Event::Failed(message)) => self.fail(message),
                None => self.fail("the engine stopped before the request finished".into()),
            }
        }
    }

    /// Runs `text` through the stop strings; `true` if one ended the generation.
    fn scan(&mut self, text: &str) -> bool {
        match self.stop.push(text) {
            Scan::Continue(text) => {
                let upto = self.released + text.len();
                self.release(text, upto);
                false
            }
            Scan::Stopped(text) => {
                let upto = self.released + text.len();
                self.release(text, upto);
                let usage = UsageOut::counted(self.prompt_tokens, self.generated);
                self.end(Step::Done { finish: Finish::Stop, usage });
                true
            }
        }
    }

    /// Queues `text` with the log-probabilities of the tokens whose text starts before byte
    /// `upto` (a token whose text is still held back waits for it).
    fn release(&mut self, text: String, upto: usize) {
        self.released += text.len();
        let mut logprobs = Vec::new();
        while let Some(lp) = self.logprobs.pop_front_if(|lp| lp.offset < upto) {
            logprobs.push(lp);
        }
        if !text.is_empty() || !logprobs.is_empty() {
            self.ready.push_back(Step::Text { text, logprobs });
        }
    }

    /// Queues the last step and lets the engine go: after a stop string, dropping the receiver
    /// cancels the sequence.
    fn end(&mut self, step: Step) {
        self.logprobs.clear();
        self.events = None;
        self.ready.push_back(step);
    }

    fn fail(&mut self, message: String) {
        let error = if self.cancelled.0.load(Ordering::SeqCst) {
            ApiError::unavailable(format!("the server is shutting down and cancelled this request ({message})"))
        } else {
            ApiError::internal(format!("generation failed: {message}"))
        };
        self.end(Step::Failed(error));
    }

    fn observe_token(&mut self) {
        let now = Instant::now();
        self.generated += 1;
        match self.last_token {
            None => self.metrics.time_to_first_token(now - self.started),
            Some(last) => self.metrics.inter_token_latency(now - last),
        }
        self.last_token = Some(now);
    }
}

/// A whole (not streamed) generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Collected {
    pub text: String,
    pub logprobs: Vec<TokenLogprobs>,
    pub finish: Finish,
    pub usage: UsageOut,
}

/// Reads `run` to its end.
pub async fn collect(mut run: Run) -> Result<Collected, ApiError> {
    let (mut text, mut logprobs) = (String::new(), Vec::new());
    loop {
        match run.next().await {
            Some(Step::Text { text: piece, logprobs: more }) => {
                text.push_str(&piece);
                logprobs.extend(more);
            }
            Some(Step::Done { finish, usage }) => return Ok(Collected { text, logprobs, finish, usage }),
            Some(Step::Failed(error)) => return Err(error),
            None => return Err(ApiError::internal("the generation ended without a result")),
        }
    }
}

/// The text of token `id` as log-probability entries show it, and its bytes (a token may
/// hold part of a UTF-8 character: the text then has U+FFFD, the bytes are exact).
pub fn token_text(llm: &Llm, id: u32) -> (String, Vec<u8>) {
    let bytes = llm.vocab().piece(id, true);
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

/// A server-sent-events chunk of a streamed response, before the endpoint renders it.
#[derive(Debug)]
pub enum Chunk<'a> {
    /// Before any text (chat sends the assistant's role).
    Start,
    Text {
        text: &'a str,
        logprobs: &'a [TokenLogprobs],
    },
    Finish(Finish),
    /// After the finish, when `stream_options.include_usage` asked for it.
    Usage(&'a UsageOut),
}

/// Where a streamed response is.
enum Phase {
    Start,
    Running,
    Usage(UsageOut),
    Done,
    End,
}

/// A streamed response: `data: {chunk}` events rendered by `render` (`None`: nothing to send
/// for this chunk), then `data: [DONE]`. A failure after the headers went out is sent as
/// `data: {"error": ...}` and ends the stream without `[DONE]`.
pub fn stream<R>(run: Run, include_usage: bool, render: R) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>>
where
    R: FnMut(Chunk<'_>) -> Option<Value> + Send + 'static,
{
    let events =
        futures_util::stream::unfold((run, render, Phase::Start), move |(mut run, mut render, mut phase)| async move {
            loop {
                let value = match phase {
                    Phase::Start => {
                        phase = Phase::Running;
                        render(Chunk::Start)
                    }
                    Phase::Running => match run.next().await {
                        Some(Step::Text { text, logprobs }) => render(Chunk::Text { text: &text, logprobs: &logprobs }),
                        Some(Step::Done { finish, usage }) => {
                            phase = if include_usage { Phase::Usage(usage) } else { Phase::Done };
                            render(Chunk::Finish(finish))
                        }
                        Some(Step::Failed(error)) => {
                            phase = Phase::End;
                            Some(error.to_json())
                        }
                        None => {
                            phase = Phase::Done;
                            None
                        }
                    },
                    Phase::Usage(usage) => {
                        phase = Phase::Done;
                        render(Chunk::Usage(&usage))
                    }
                    Phase::Done => {
                        let done = SseEvent::default().data("[DONE]");
                        return Some((Ok(done), (run, render, Phase::End)));
                    }
                    Phase::End => return None,
                };
                if let Some(value) = value {
                    let event = SseEvent::default().data(value.to_string());
                    return Some((Ok(event), (run, render, phase)));
                }
            }
        });
    Sse::new(events).keep_alive(KeepAlive::default())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::engine::{TokenLogprob, Usage};
    use tokio::sync::mpsc::unbounded_channel;

    fn token(text: &str, id: u32) -> Event {
        let chosen = TokenLogprob { id, logprob: -0.5 };
        Event::Token { id, text: text.into(), logprobs: Some(StepLogprobs { chosen, top: vec![chosen] }) }
    }

    fn done(reason: FinishReason, n: usize) -> Event {
        Event::Done {
            reason,
            usage: Usage { prompt_tokens: 3, completion_tokens: n, cached_tokens: 1 },
            text: String::new(),
        }
    }

    /// Every step of a run over `events`, with the engine's receiver state at the end.
    async fn steps(stops: &[&str], events: Vec<Event>) -> (Vec<Step>, bool) {
        let (tx, rx) = unbounded_channel();
        for e in events {
            tx.send(e).unwrap();
        }
        let stops = stops.iter().map(|s| s.to_string()).collect();
        let mut run = Run::new(rx, 3, stops, Cancelled::default(), Arc::new(Metrics::new()), Instant::now());
        let mut out = Vec::new();
        while let Some(step) = run.next().await {
            out.push(step);
        }
        (out, tx.is_closed())
    }

    fn texts(steps: &[Step]) -> Vec<(String, Vec<u32>)> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Text { text, logprobs } => {
                    Some((text.clone(), logprobs.iter().map(|lp| lp.step.chosen.id).collect()))
                }
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn without_stop_strings_every_token_is_text_and_the_engine_usage_is_reported() {
        let (out, _) = steps(&[], vec![token("Hel", 1), token("lo", 2), done(FinishReason::Length, 2)]).await;
        assert_eq!(texts(&out), [("Hel".into(), vec![1]), ("lo".into(), vec![2])]);
        let Some(Step::Done { finish, usage }) = out.last() else { panic!("{out:?}") };
        assert_eq!(*finish, Finish::Length);
        assert_eq!(usage.prompt_tokens_details.map(|d| d.cached_tokens), Some(1));
        assert_eq!(usage.total_tokens, 5);
    }

    #[tokio::test]
    async fn a_stop_string_ends_the_run_cancels_the_engine_and_drops_the_tokens_after_it() {
        let events = vec![token("Paris", 1), token(".\n", 2), token("Q:", 3), token(" more", 4)];
        let (out, closed) = steps(&["\nQ:"], events).await;
        // "." is released with token 2; "\n" waits (it may begin "\nQ:"), then the stop is
        // found: token 3's text lies after it.
        assert_eq!(texts(&out), [("Paris".into(), vec![1]), (".".into(), vec![2])]);
        let Some(Step::Done { finish, usage }) = out.last() else { panic!("{out:?}") };
        assert_eq!((*finish, usage.completion_tokens, usage.prompt_tokens_details), (Finish::Stop, 3, None));
        assert!(closed, "the receiver must be dropped so that the engine frees the sequence");
    }

    #[tokio::test]
    async fn a_token_with_no_text_yet_keeps_its_logprobs_for_the_next_text() {
        let events = vec![token("", 1), token("é", 2), done(FinishReason::Stop, 2)];
        let (out, _) = steps(&[], events).await;
        assert_eq!(texts(&out), [("é".into(), vec![1, 2])]);
    }

    #[tokio::test]
    async fn held_back_text_is_released_when_the_generation_ends() {
        let (out, _) = steps(&["STOP"], vec![token("go ST", 1), done(FinishReason::Stop, 1)]).await;
        assert_eq!(texts(&out), [("go ".into(), vec![1]), ("ST".into(), vec![])]);
        assert!(matches!(out.last(), Some(Step::Done { finish: Finish::Stop, .. })));
    }

    #[tokio::test]
    async fn a_failure_is_a_500_or_a_503_when_the_shutdown_cancelled_it() {
        let (out, _) = steps(&[], vec![token("a", 1), Event::Failed("device lost".into())]).await;
        let Some(Step::Failed(e)) = out.last() else { panic!("{out:?}") };
        assert_eq!(e.status, axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        assert!(e.message.contains("device lost"));
        let (tx, rx) = unbounded_channel::<Event>();
        drop(tx);
        let cancelled = Cancelled::default();
        cancelled.0.store(true, Ordering::SeqCst);
        let mut run = Run::new(rx, 1, Vec::new(), cancelled, Arc::new(Metrics::new()), Instant::now());
        let Some(Step::Failed(e)) = run.next().await else { panic!() };
        assert_eq!(e.status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
    }
}
