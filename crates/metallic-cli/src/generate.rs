//! `metallic generate`: text from a GGUF language model, streamed to stdout.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use crate::output::outln;
use metallic_models::chat::ChatMessage;
use metallic_models::sampling::SamplingOptions;
use metallic_models::{Error, Llm, Result};

/// How the result is printed.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GenerateFormat {
    /// The text, streamed as it is generated.
    Text,
    /// One JSON object at the end: prompt tokens, tokens, text.
    Json,
}

/// The element type of a KV cache (`--cache-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CacheType {
    /// Half the memory and attention reads of f32 (llama.cpp's default too).
    F16,
    /// Keys and values as computed.
    F32,
}

impl CacheType {
    /// Applies `cache_type` (none: the model's default, f16 where the device has f16 shaders).
    pub fn apply(cache_type: Option<CacheType>, llm: &mut Llm) -> Result<()> {
        match cache_type {
            None => Ok(()),
            Some(CacheType::F16) => Ok(llm.set_cache_dtype(metallic::DType::F16)?),
            Some(CacheType::F32) => Ok(llm.set_cache_dtype(metallic::DType::F32)?),
        }
    }
}

/// Arguments of `metallic generate`.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct GenerateArgs {
    /// A GGUF model file (`scripts/fetch-gemma.sh` fetches Gemma 3 270M).
    #[arg(long)]
    model: PathBuf,
    /// The prompt (special-token strings such as `<start_of_turn>` are parsed).
    #[arg(long, conflicts_with = "prompt_file")]
    prompt: Option<String>,
    /// Read the prompt from this file (`-`: standard input). One trailing newline is dropped,
    /// as llama.cpp's `-f` does. Without --prompt or --prompt-file, a prompt piped to standard
    /// input is read the same way.
    #[arg(long)]
    prompt_file: Option<PathBuf>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Most positions (prompt and generated tokens) the generation may use; the KV cache is
    /// sized for what the prompt and --max-tokens need. Default: the model's trained context,
    /// or less where the device cannot hold its KV cache.
    #[arg(long)]
    ctx_size: Option<usize>,
    /// Element type of the KV cache. Default: f16 where the device has f16 shaders, else f32.
    #[arg(long, value_enum)]
    cache_type: Option<CacheType>,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Keep the k most likely tokens (0: all).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Nucleus sampling threshold (1: off).
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Drop tokens below this fraction of the best one's probability (0: off).
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    /// Penalty for the last 64 tokens (1: off).
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0x5eed)]
    seed: u64,
    /// Do not prepend the BOS token.
    #[arg(long)]
    no_bos: bool,
    #[arg(long, value_enum, default_value_t = GenerateFormat::Text)]
    format: GenerateFormat,
    /// Treat the prompt as a user's chat message (the model's chat template, or its
    /// architecture's turn format); without a prompt and with a terminal on stdin, chat
    /// interactively.
    #[arg(long)]
    chat: bool,
}

/// The text of a prompt file (`-`: standard input) with one trailing newline (`\n` or `\r\n`)
/// dropped.
fn read_prompt(path: &Path) -> Result<String> {
    let mut text = String::new();
    let read = if path == Path::new("-") {
        std::io::stdin().lock().read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text))
    };
    let shown = if path == Path::new("-") { PathBuf::from("<stdin>") } else { path.to_path_buf() };
    read.map_err(|e| Error::Io { path: shown, source: e })?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

pub fn generate(args: GenerateArgs) -> Result<()> {
    let stdin_is_terminal = std::io::stdin().is_terminal();
    let prompt = match (&args.prompt, &args.prompt_file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(path)) => Some(read_prompt(path)?),
        (None, None) if args.chat && stdin_is_terminal => None,
        (None, None) => {
            // A prompt piped in; none (a terminal, or nothing piped) is a usage error.
            let piped = if stdin_is_terminal { String::new() } else { read_prompt(Path::new("-"))? };
            if piped.is_empty() {
                return Err(Error::InvalidInput("give --prompt TEXT, --prompt-file FILE, or a prompt on stdin".into()));
            }
            Some(piped)
        }
    };
    let options = SamplingOptions {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        seed: args.seed,
        ..SamplingOptions::default()
    };
    // Requests that are wrong whatever the model: fail before spending seconds loading it.
    options.validate()?;
    if args.no_bos && prompt.as_deref() == Some("") {
        return Err(Error::InvalidInput("the prompt has no tokens (an empty prompt with --no-bos)".into()));
    }
    let loading = std::time::Instant::now();
    let bar = progress_bar("loading {bar:40} {pos}/{len} layers");
    if args.ctx_size == Some(0) {
        return Err(Error::InvalidInput("--ctx-size must be at least 1".into()));
    }
    let rt = metallic::Runtime::new()?;
    // The pipelines the last run on this model used build on every core while it loads.
    let scope = pipeline_scope("generate", &args.model);
    let precompiling = metallic::pipelines::precompile_saved(&rt, &scope);
    let mut llm = Llm::load_with_progress(&args.model, &rt, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    CacheType::apply(args.cache_type, &mut llm)?;
    set_context(&mut llm, args.ctx_size)?;
    let mib = |b: usize| b as f64 / f64::from(1u32 << 20);
    eprintln!(
        "loaded {} in {:.2} s: {:.0} MiB of weights on {}",
        args.model.display(),
        loading.elapsed().as_secs_f64(),
        mib(llm.decoder().weight_bytes()),
        rt.context().adapter_info().name,
    );
    // A pass that needs a pipeline still being built would build its own: wait for them.
    precompiling.join();
    let Some(prompt) = prompt else {
        let result = interactive(&llm, options, args.max_tokens);
        save_pipelines(&rt, &scope);
        return result;
    };
    let prompt = if args.chat {
        let (text, fallback) = llm.chat_prompt(&[ChatMessage::new("user", &prompt)])?;
        if fallback {
            eprintln!("chat: the file has no chat template; using the architecture's turn format");
        }
        text
    } else {
        prompt
    };
    let prompt_tokens = llm.tokenize(&prompt, !args.no_bos);
    let stdout = std::io::stdout();
    let mut failed: Option<std::io::Error> = None;
    let stream = matches!(args.format, GenerateFormat::Text);
    let prefill_bar = progress_bar("prompt {bar:40} {pos}/{len} tokens");
    // A reader that goes away (a closed pipe) ends the generation at once.
    let mut on_prefill = |done: usize, total: usize| {
        prefill_bar.set_length(total as u64);
        prefill_bar.set_position(done as u64);
    };
    let result = llm.generate_with_progress(&prompt_tokens, args.max_tokens, options, &mut on_prefill, |piece| {
        if !prefill_bar.is_finished() {
            prefill_bar.finish_and_clear();
        }
        if stream && failed.is_none() {
            let mut out = stdout.lock();
            if let Err(e) = out.write_all(piece.as_bytes()).and_then(|()| out.flush()) {
                failed = Some(e);
            }
        }
        failed.is_none()
    })?;
    if let Some(e) = failed {
        return Err(Error::Io { path: "<stdout>".into(), source: e });
    }
    let mut out = stdout.lock();
    let written = match args.format {
        GenerateFormat::Text => writeln!(out),
        GenerateFormat::Json => {
            let json = serde_json::json!({
                "prompt_tokens": result.prompt_tokens,
                "tokens": result.tokens,
                "text": result.text,
            });
            writeln!(out, "{json}")
        }
    };
    written.map_err(|e| Error::Io { path: "<stdout>".into(), source: e })?;
    prefill_bar.finish_and_clear();
    // What a cold start spends compiling shaders (pipelines built before and on first use).
    let built = rt.cache().stats();
    save_pipelines(&rt, &scope);
    eprintln!(
        "prompt: {}; generation: {}; KV cache {:.1} MiB ({}); {} GPU objects built ({:.2} s of building)",
        speed(result.prompt_tokens.len(), result.prompt_time),
        speed(result.tokens.len(), result.generation_time),
        llm.decoder().cache_bytes(result.prompt_tokens.len() + args.max_tokens) as f64 / f64::from(1u32 << 20),
        llm.decoder().cache_dtype(),
        built.misses,
        built.build_time.as_secs_f64(),
    );
    Ok(())
}

/// The scope of a saved pipeline list (`metallic::pipelines`): the command and the model file
/// (its full path and size), so that one model's start builds only what that model used.
pub(crate) fn pipeline_scope(command: &str, model: &Path) -> String {
    let path = std::fs::canonicalize(model).unwrap_or_else(|_| model.to_path_buf());
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
    format!("{command} {} {size}", path.display())
}

/// Adds the pipelines this run built to its list for the next start; a list that cannot be
/// written costs only that speed-up, so it is a warning.
pub(crate) fn save_pipelines(rt: &metallic::Runtime, scope: &str) {
    if let Err(e) = metallic::pipelines::save(rt, scope) {
        eprintln!("warning: the list of pipelines for the next start was not saved: {e}");
    }
}

/// A progress bar on stderr when it is a terminal (hidden otherwise), drawn with `template`.
fn progress_bar(template: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(1);
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// Applies `--ctx-size` (or keeps the default) and says on stderr what the context is and why.
fn set_context(llm: &mut Llm, ctx_size: Option<usize>) -> Result<()> {
    let trained = llm.decoder().config().n_ctx_train;
    let why = match ctx_size {
        Some(n) => {
            llm.set_context_size(n)?;
            if n > trained {
                format!("--ctx-size; beyond the model's trained context of {trained}")
            } else {
                "--ctx-size".into()
            }
        }
        None if llm.context_size() < trained => {
            format!("the most this device's KV cache holds; the model was trained for {trained}")
        }
        None => "the model's trained context".into(),
    };
    eprintln!("context: {} positions ({why})", llm.context_size());
    Ok(())
}

/// `N tokens in T (R tokens/s)`, the rate only when it means something (tokens, and time enough
/// to measure), to three significant digits.
fn speed(tokens: usize, time: std::time::Duration) -> String {
    let secs = time.as_secs_f64();
    let noun = if tokens == 1 { "token" } else { "tokens" };
    if tokens == 0 || secs < 1e-3 {
        return format!("{tokens} {noun}");
    }
    let rate = tokens as f64 / secs;
    let digits = |x: f64| {
        if x >= 100.0 {
            0
        } else if x >= 10.0 {
            1
        } else if x >= 1.0 {
            2
        } else {
            3
        }
    };
    format!(
        "{tokens} {noun} in {secs:.prec$} s ({rate:.rprec$} tokens/s)",
        prec = digits(secs).min(2),
        rprec = digits(rate)
    )
}

/// A conversation on the terminal: each line is a user turn; the whole conversation is the
/// next prompt. Ends at end of input.
fn interactive(llm: &Llm, options: SamplingOptions, max_tokens: usize) -> Result<()> {
    let mut messages: Vec<ChatMessage> = Vec::new();
    let mut announced = false;
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line).map_err(|e| Error::Io { path: "<stdin>".into(), source: e })? == 0 {
            eprintln!();
            return Ok(());
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            continue;
        }
        messages.push(ChatMessage::new("user", line));
        let (prompt, fallback) = llm.chat_prompt(&messages)?;
        if fallback && !announced {
            eprintln!("chat: the file has no chat template; using the architecture's turn format");
            announced = true;
        }
        let tokens = llm.tokenize(&prompt, true);
        let mut stdout = std::io::stdout();
        let reply = llm.generate_while(&tokens, max_tokens, options, |piece| {
            stdout.write_all(piece.as_bytes()).and_then(|()| stdout.flush()).is_ok()
        })?;
        outln!();
        messages.push(ChatMessage::new("assistant", &reply.text));
    }
}

/// Batched decoding of `n` sequences after `prompt` (each in its own KV slot): `steps` steps of
/// all of them, each fed the previous step's argmax on the GPU and recorded while the GPU runs
/// the one before (as `metallic serve` runs greedy streams), after a warm-up round; the wall
/// clock from the first step to the last one's tokens read back. With `profile`, a per-kernel
/// split of one more round, per step.
fn batch_decode(
    rt: &metallic::Runtime,
    llm: &Llm,
    prompt: &[u32],
    n: usize,
    steps: usize,
    profile: bool,
) -> Result<serde_json::Value> {
    use metallic::kernels::topk::TopK;
    let decoder = llm.decoder();
    // The prompt but its last token, prefilled; the last token is each sequence's first step.
    let (&last, before) = prompt.split_last().ok_or_else(|| Error::InvalidInput("an empty prompt".into()))?;
    let mut kv = decoder.new_slots(n, prompt.len() + 2 * steps + 1)?;
    let slots: Vec<usize> = (0..n).collect();
    let values = metallic::Tensor::empty(rt, [n, 1], metallic::DType::F32)?;
    let ids = metallic::Tensor::empty(rt, [n, 1], metallic::DType::U32)?;
    // (wall clock, host time spent recording and submitting the steps, of it submitting)
    let mut run = |profiled: bool| -> Result<(std::time::Duration, std::time::Duration, std::time::Duration)> {
        for slot in 0..n {
            kv.truncate(slot, 0);
            if !before.is_empty() {
                decoder.prefill_slot(before, &mut kv, slot, metallic_models::decoder::PREFILL_CHUNK)?;
            }
        }
        let first: Vec<(usize, u32)> = slots.iter().map(|&s| (s, last)).collect();
        rt.synchronize()?;
        if profiled {
            rt.kernel_profile()?;
            rt.enable_kernel_profiling()?;
        }
        let start = std::time::Instant::now();
        let logits = decoder.step(&first, &mut kv)?;
        let argmax = TopK::new(&logits, 1, &values, &ids)?;
        rt.record(&argmax)?;
        rt.flush()?;
        let mut recording = std::time::Duration::ZERO;
        let submitted = rt.context().submit_time();
        for _ in 1..steps {
            let at = std::time::Instant::now();
            decoder.step_on_gpu(&slots, &ids, &mut kv)?;
            rt.record(&argmax)?;
            // Submitted step by step, as the server's read-backs submit them.
            rt.flush()?;
            recording += at.elapsed();
        }
        let submitting = rt.context().submit_time().saturating_sub(submitted);
        rt.read_tensors(&[&ids])?;
        Ok((start.elapsed(), recording, submitting))
    };
    run(false)?;
    let (elapsed, recording, submitting) = run(false)?;
    let per_loop_step = |d: std::time::Duration| d.as_secs_f64() * 1e3 / steps.saturating_sub(1).max(1) as f64;
    let mut kernels = Vec::new();
    if profile {
        run(true)?;
        kernels = kernel_split(rt, steps, "step")?;
    }
    Ok(serde_json::json!({
        "sequences": n,
        "tensor_cores": decoder.step_on_tensor_cores(n),
        "steps": steps,
        "batch_decode_tokens_per_s": (n * steps) as f64 / elapsed.as_secs_f64(),
        "batch_step_ms": elapsed.as_secs_f64() * 1e3 / steps as f64,
        // Host time recording and submitting a step (the steps after the first): where it
        // reaches batch_step_ms, the steps are bound by the host, not the GPU.
        "batch_record_ms_per_step": per_loop_step(recording),
        "batch_submit_ms_per_step": per_loop_step(submitting),
        "batch_kernels": kernels,
    }))
}

/// The runtime's kernel profile (read and cleared) per `unit` of `count`: each kernel and grid
/// with its dispatches and GPU microseconds per unit. Profiling stops here: it makes every
/// submission wait for its work, which later timed runs must not (the batched step's timings
/// with --profile were the profiled solo runs' until session 17).
fn kernel_split(rt: &metallic::Runtime, count: usize, unit: &str) -> Result<Vec<serde_json::Value>> {
    let per = count.max(1) as f64;
    let profile = rt.kernel_profile()?;
    rt.disable_kernel_profiling()?;
    Ok(profile
        .into_iter()
        .map(|k| {
            let mut entry = serde_json::Map::new();
            entry.insert("kernel".into(), k.kernel.into());
            entry.insert("workgroups".into(), serde_json::json!(k.workgroups));
            entry.insert(format!("dispatches_per_{unit}"), (k.dispatches as f64 / per).into());
            entry.insert(format!("us_per_{unit}"), (k.total.as_secs_f64() * 1e6 / per).into());
            serde_json::Value::Object(entry)
        })
        .collect())
}

/// Arguments of `metallic bench generate`.
#[derive(Debug, Args)]
pub struct GenerateBenchArgs {
    /// A GGUF model file.
    #[arg(long)]
    model: PathBuf,
    /// Prompt length for the prefill measurement (token ids cycled from a fixed text).
    #[arg(long, default_value_t = 512)]
    prompt_tokens: usize,
    /// Prompt length before the decode measurement.
    #[arg(long, default_value_t = 16)]
    decode_prompt_tokens: usize,
    /// Tokens decoded (greedy) for the decode measurement.
    #[arg(long, default_value_t = 128)]
    gen_tokens: usize,
    /// Element type of the KV cache. Default: f16 where the device has f16 shaders, else f32.
    #[arg(long, value_enum)]
    cache_type: Option<CacheType>,
    /// Also run the prefill and the decode once more with a GPU timestamp after every dispatch
    /// and report the GPU time per kernel and prompt (`prefill_kernels`) and per token
    /// (`decode_kernels`; with --batch, `batch_kernels` per step).
    #[arg(long)]
    profile: bool,
    /// Also time batched decoding as `metallic serve` runs it: this many sequences, each after
    /// the decode prompt, --gen-tokens steps of all of them together, each step fed the
    /// previous one's argmax on the GPU (`batch_decode_tokens_per_s`: tokens of all sequences
    /// per second; `batch_step_ms`).
    #[arg(long)]
    batch: Option<usize>,
    /// With --batch: keep every product of the batched steps on the one-row kernel (as
    /// `metallic serve --exact-batches`), not the tensor cores above 8 sequences.
    #[arg(long)]
    exact_batches: bool,
    /// Solo decode steps multiply x rounded to 8-bit blocks of 32 on the integer-dot GEMV
    /// (Q4_K, Q5_K, Q6_K, Q8_0, Q4_0 matrices; norms unfused), whatever the model's width
    /// (by default: on GPUs, for models 2048 or more wide).
    #[arg(long, conflicts_with = "no_q8_gemv")]
    q8_gemv: bool,
    /// Solo decode steps on the f32 GEMV, whatever the model's width.
    #[arg(long)]
    no_q8_gemv: bool,
    /// Experimental: products on the cooperative GEMM (GPUs with tensor cores) split K across
    /// workgroups where their output tiles are few (short prompts, batched steps); for
    /// measuring.
    #[arg(long)]
    coop_split_k: bool,
}

/// Prefill tokens/s (one forward pass over `prompt_tokens`) and decode tokens/s (greedy, one
/// token per step after a short prompt), wall clock with the result read back, after a warm-up
/// run: the best of three runs of each, all three listed; one JSON line.
pub fn bench(args: GenerateBenchArgs) -> Result<()> {
    if args.prompt_tokens == 0 || args.decode_prompt_tokens == 0 || args.gen_tokens == 0 || args.batch == Some(0) {
        return Err(Error::InvalidInput("token counts and --batch must be at least 1".into()));
    }
    let rt = metallic::Runtime::new()?;
    let mut llm = Llm::load_with(&args.model, &rt)?;
    CacheType::apply(args.cache_type, &mut llm)?;
    llm.set_exact_batches(args.exact_batches);
    if args.q8_gemv || args.no_q8_gemv {
        llm.set_q8_products(args.q8_gemv)?;
    }
    llm.set_coop_split_k(args.coop_split_k);
    let text = "The quick brown fox jumps over the lazy dog while the river runs past the old mill. ";
    let ids = llm.tokenize(text, false);
    let prompt = |n: usize| -> Vec<u32> {
        let mut p = llm.tokenize("", true);
        p.extend(ids.iter().cycle().take(n.saturating_sub(p.len())));
        p
    };
    let decoder = llm.decoder();
    let prefill = |n: usize| -> Result<f64> {
        let tokens = prompt(n);
        let mut cache = decoder.new_cache(tokens.len())?;
        let start = std::time::Instant::now();
        decoder.forward(&tokens, &mut cache)?.argmax()?.to_vec::<u32>()?;
        Ok(tokens.len() as f64 / start.elapsed().as_secs_f64())
    };
    prefill(args.prompt_tokens)?;
    let prefill_runs = (0..3).map(|_| prefill(args.prompt_tokens)).collect::<Result<Vec<f64>>>()?;
    let prefill_rate = prefill_runs.iter().copied().fold(0.0, f64::max);
    // A run's generation and the host time it spent submitting (its prompt's few submissions
    // included).
    let decode = || -> Result<(metallic_models::Generation, std::time::Duration)> {
        let tokens = prompt(args.decode_prompt_tokens);
        let submitted = rt.context().submit_time();
        let generation = llm.generate(&tokens, args.gen_tokens, SamplingOptions::greedy(), |_| {})?;
        Ok((generation, rt.context().submit_time().saturating_sub(submitted)))
    };
    decode()?;
    let runs = (0..3).map(|_| decode()).collect::<Result<Vec<_>>>()?;
    let rate = |g: &metallic_models::Generation| g.tokens.len() as f64 / g.generation_time.as_secs_f64();
    let decode_runs: Vec<f64> = runs.iter().map(|(g, _)| rate(g)).collect();
    let best = runs.iter().max_by(|a, b| rate(&a.0).total_cmp(&rate(&b.0)));
    let Some((result, submit_time)) = best else { return Err(Error::InvalidInput("no decode run".into())) };
    let generated = result.tokens.len();
    let decode_rate = rate(result);
    let per_token_ms = |d: std::time::Duration| d.as_secs_f64() * 1e3 / generated.max(1) as f64;
    let mut kernels = Vec::new();
    let mut prefill_kernels = Vec::new();
    if args.profile {
        // One prefill of the prompt, profiled on its own.
        let tokens = prompt(args.prompt_tokens);
        let mut cache = decoder.new_cache(tokens.len())?;
        rt.kernel_profile()?;
        rt.enable_kernel_profiling()?;
        decoder.forward(&tokens, &mut cache)?.argmax()?.to_vec::<u32>()?;
        prefill_kernels = kernel_split(&rt, 1, "prompt")?;
        // Prefill outside the profile, then profile the decode steps only.
        let tokens = prompt(args.decode_prompt_tokens);
        let mut cache = decoder.new_cache(tokens.len() + args.gen_tokens)?;
        let mut logits = decoder.forward(&tokens, &mut cache)?;
        rt.kernel_profile()?;
        rt.enable_kernel_profiling()?;
        let mut steps = 0usize;
        for _ in 0..args.gen_tokens {
            let next = logits.argmax()?.to_vec::<u32>()?.first().copied().unwrap_or(0);
            logits = decoder.forward(&[next], &mut cache)?;
            steps += 1;
        }
        kernels = kernel_split(&rt, steps, "token")?;
    }
    let batch = match args.batch {
        Some(n) => Some(batch_decode(&rt, &llm, &prompt(args.decode_prompt_tokens), n, args.gen_tokens, args.profile)?),
        None => None,
    };
    outln!(
        "{}",
        serde_json::json!({
            "batch": batch,
            "engine": "metallic",
            "model": args.model.display().to_string(),
            "device": rt.context().adapter_info().name,
            "kv_cache": decoder.cache_dtype().to_string(),
            "q8_gemv": llm.decoder().q8_products(),
            "coop_split_k": args.coop_split_k,
            "prompt_tokens": args.prompt_tokens,
            "prefill_tokens_per_s": prefill_rate,
            "prefill_runs": prefill_runs,
            "gen_tokens": generated,
            "decode_tokens_per_s": decode_rate,
            "decode_runs": decode_runs,
            "decode_record_ms_per_token": per_token_ms(result.record_time),
            // The part of recording spent submitting (the same run).
            "decode_submit_ms_per_token": per_token_ms(*submit_time),
            "decode_sample_ms_per_token": per_token_ms(result.sample_time),
            "decode_kernels": kernels,
            "prefill_kernels": prefill_kernels,
        })
    );
    Ok(())
}
