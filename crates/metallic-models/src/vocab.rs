//! The vocabulary of a GGUF language model and its SentencePiece-style tokenizer, written to
//! give the same ids as llama.cpp: special-token strings split out first, `▁` for spaces, then
//! the highest-scoring adjacent pair merged repeatedly, and bytes (`<0xAB>` tokens) for
//! anything left that is not in the vocabulary.

use std::collections::{BinaryHeap, HashMap};

use crate::gguf::GgufFile;
use crate::{Error, Result};

/// What a token is, from `tokenizer.ggml.token_type` (llama.cpp's numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Ordinary text (type 1, and unknown type numbers).
    Normal,
    /// The unknown-token placeholder (type 2).
    Unknown,
    /// A control token such as `<bos>` or `<start_of_turn>` (type 3).
    Control,
    /// A user-defined token, always matched as a whole in text (type 4).
    UserDefined,
    /// A reserved, unused slot (type 5).
    Unused,
    /// A raw byte `<0xAB>` (type 6).
    Byte,
}

impl TokenKind {
    /// The kind with llama.cpp's type number `t`.
    pub fn from_type(t: i32) -> Self {
        match t {
            2 => TokenKind::Unknown,
            3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            6 => TokenKind::Byte,
            _ => TokenKind::Normal,
        }
    }
}

/// The parts of a vocabulary a GGUF file stores.
#[derive(Debug, Clone, Default)]
pub struct VocabParts {
    /// Token texts (`tokenizer.ggml.tokens`).
    pub tokens: Vec<String>,
    /// Merge scores (`tokenizer.ggml.scores`); higher merges first. May be empty (all 0).
    pub scores: Vec<f32>,
    /// Token types (`tokenizer.ggml.token_type`). May be empty (all normal).
    pub types: Vec<i32>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unknown: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub padding: Option<u32>,
    /// `tokenizer.ggml.add_bos_token` (llama.cpp's default for SentencePiece vocabularies: true).
    pub add_bos: bool,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos: bool,
    /// `tokenizer.ggml.add_space_prefix` (default true): a space before the first text piece.
    pub add_space_prefix: bool,
}

/// A SentencePiece vocabulary (GGUF `tokenizer.ggml.model` = `llama`).
#[derive(Debug, Clone)]
pub struct Vocab {
    tokens: Vec<String>,
    scores: Vec<f32>,
    kinds: Vec<TokenKind>,
    ids: HashMap<String, u32>,
    /// Tokens matched as whole strings before the merge algorithm runs, longest first.
    specials: Vec<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    /// Token of each byte value, from `<0xAB>` tokens (or the single-character token).
    bytes: [Option<u32>; 256],
    /// EOS and the end-of-generation tokens ([`END_TOKEN_TEXTS`]) present.
    ends: Vec<u32>,
}

/// Texts of tokens that end a generation in the models llama.cpp knows (its end-of-generation
/// list). A vocabulary that marks one of them as anything but a control token has it treated
/// as a control token, as llama.cpp does: it then matches in text only when special tokens are
/// parsed and prints nothing unless special tokens are rendered.
pub const END_TOKEN_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<\u{ff5c}end\u{2581}of\u{2581}sentence\u{ff5c}>",
];

/// The most tokens a vocabulary may hold (GGUF files from users are untrusted).
pub const MAX_TOKENS: usize = 1 << 22;

impl Vocab {
    /// Builds the vocabulary, checking that lengths agree and ids are in range.
    pub fn new(parts: VocabParts) -> Result<Self> {
        let n = parts.tokens.len();
        let bad = |m: String| Error::Tokenizer(m);
        if n == 0 || n > MAX_TOKENS {
            return Err(bad(format!("vocabulary of {n} tokens (expected 1 to {MAX_TOKENS})")));
        }
        if !parts.scores.is_empty() && parts.scores.len() != n {
            return Err(bad(format!("{} scores for {n} tokens", parts.scores.len())));
        }
        if !parts.types.is_empty() && parts.types.len() != n {
            return Err(bad(format!("{} token types for {n} tokens", parts.types.len())));
        }
        for (what, id) in
            [("bos", parts.bos), ("eos", parts.eos), ("unknown", parts.unknown), ("padding", parts.padding)]
        {
            if let Some(id) = id
                && id as usize >= n
            {
                return Err(bad(format!("{what} token id {id} outside the vocabulary of {n}")));
            }
        }
        let scores = if parts.scores.is_empty() { vec![0.0; n] } else { parts.scores };
        let mut kinds: Vec<TokenKind> = if parts.types.is_empty() {
            vec![TokenKind::Normal; n]
        } else {
            parts.types.iter().map(|&t| TokenKind::from_type(t)).collect()
        };
        let mut ids = HashMap::with_capacity(n);
        for (id, text) in parts.tokens.iter().enumerate() {
            // The first of duplicate texts wins, as in llama.cpp's token_to_id map.
            ids.entry(text.clone()).or_insert(id as u32);
        }
        let mut ends: Vec<u32> = parts.eos.into_iter().collect();
        for text in END_TOKEN_TEXTS {
            if let Some(&id) = ids.get(*text) {
                if let Some(kind) = kinds.get_mut(id as usize) {
                    *kind = TokenKind::Control;
                }
                if !ends.contains(&id) {
                    ends.push(id);
                }
            }
        }
        let mut specials: Vec<u32> = kinds
            .iter()
            .enumerate()
            .filter(|(id, k)| {
                matches!(k, TokenKind::Control | TokenKind::UserDefined | TokenKind::Unknown)
                    && parts.tokens.get(*id).is_some_and(|t| !t.is_empty())
            })
            .map(|(id, _)| id as u32)
            .collect();
        specials.sort_by_key(|&id| std::cmp::Reverse(parts.tokens.get(id as usize).map_or(0, String::len)));
        let mut bytes = [None; 256];
        for (b, slot) in bytes.iter_mut().enumerate() {
            *slot = ids.get(&format!("<0x{b:02X}>")).copied().or_else(|| {
                // A vocabulary without byte tokens may hold the byte as a one-character token.
                char::from_u32(b as u32).filter(char::is_ascii).and_then(|c| ids.get(&c.to_string()).copied())
            });
        }
        Ok(Vocab {
            tokens: parts.tokens,
            scores,
            kinds,
            ids,
            specials,
            bos: parts.bos,
            eos: parts.eos,
            add_bos: parts.add_bos,
            add_eos: parts.add_eos,
            add_space_prefix: parts.add_space_prefix,
            bytes,
            ends,
        })
    }

    /// The vocabulary a GGUF file describes in its `tokenizer.ggml.*` metadata. Only
    /// SentencePiece vocabularies (`tokenizer.ggml.model` = `llama`) are implemented so far.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let model = file.get_str("tokenizer.ggml.model")?;
        if model != "llama" {
            return Err(Error::Unsupported {
                path: file.path().into(),
                what: "tokenizer.ggml.model",
                found: model.into(),
                supported: "llama (SentencePiece)",
            });
        }
        let optional_id = |key: &str| match file.get(key) {
            Some(_) => file.get_u32(key).map(Some),
            None => Ok(None),
        };
        let flag = |key: &str, default: bool| match file.get(key) {
            Some(_) => file.get_bool(key),
            None => Ok(default),
        };
        let tokens: Vec<String> = file.get_str_array("tokenizer.ggml.tokens")?.into_iter().map(String::from).collect();
        let scores = match file.get("tokenizer.ggml.scores") {
            Some(_) => file.get_f32_array("tokenizer.ggml.scores")?.to_vec(),
            None => Vec::new(),
        };
        let types = match file.get("tokenizer.ggml.token_type") {
            Some(_) => file.get_i32_array("tokenizer.ggml.token_type")?.to_vec(),
            None => Vec::new(),
        };
        Vocab::new(VocabParts {
            tokens,
            scores,
            types,
            // SentencePiece defaults, as llama.cpp assumes them when a key is missing.
            bos: optional_id("tokenizer.ggml.bos_token_id")?.or(Some(1)),
            eos: optional_id("tokenizer.ggml.eos_token_id")?.or(Some(2)),
            unknown: optional_id("tokenizer.ggml.unknown_token_id")?.or(Some(0)),
            padding: optional_id("tokenizer.ggml.padding_token_id")?,
            add_bos: flag("tokenizer.ggml.add_bos_token", true)?,
            add_eos: flag("tokenizer.ggml.add_eos_token", false)?,
            add_space_prefix: flag("tokenizer.ggml.add_space_prefix", true)?,
        })
        .map_err(|e| match e {
            Error::Tokenizer(message) => Error::format(file.path(), message),
            other => other,
        })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the vocabulary is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The beginning-of-sequence token.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// The end-of-sequence token.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// The tokens that end a generation: EOS and the end-of-turn tokens of [`END_TOKEN_TEXTS`]
    /// the vocabulary has.
    pub fn end_tokens(&self) -> &[u32] {
        &self.ends
    }

    /// The id of the token whose text is exactly `text`.
    pub fn id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }

    /// The text of token `id` as stored (with `▁` for spaces).
    pub fn text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The kind of token `id`.
    pub fn kind(&self, id: u32) -> Option<TokenKind> {
        self.kinds.get(id as usize).copied()
    }

    /// Token ids for `text`, as llama.cpp's `llama_tokenize(text, add_special, parse_special)`:
    /// `add_special` adds BOS (and EOS) where the vocabulary asks for them; `parse_special`
    /// turns control-token strings such as `<start_of_turn>` in the text into those tokens
    /// (user-defined tokens are matched either way).
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::new();
        if add_special
            && self.add_bos
            && let Some(bos) = self.bos
        {
            out.push(bos);
        }
        let mut prev_special = true;
        for piece in self.split_specials(text, parse_special) {
            match piece {
                Piece::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Piece::Text(raw) => {
                    let mut text = String::with_capacity(raw.len() + 3);
                    if self.add_space_prefix && prev_special {
                        text.push(' ');
                    }
                    text.push_str(raw);
                    let escaped = text.replace(' ', "\u{2581}");
                    self.merge(&escaped, &mut out);
                    prev_special = false;
                }
            }
        }
        if add_special
            && self.add_eos
            && let Some(eos) = self.eos
        {
            out.push(eos);
        }
        out
    }

    /// `text` cut into plain text and special tokens (longest special first, leftmost match).
    fn split_specials<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Piece<'t>> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut pieces = vec![Piece::Text(text)];
        for &id in &self.specials {
            let kind = self.kind(id).unwrap_or(TokenKind::Normal);
            if !parse_special && matches!(kind, TokenKind::Control | TokenKind::Unknown) {
                continue;
            }
            let Some(needle) = self.text(id) else { continue };
            let mut next = Vec::with_capacity(pieces.len());
            for piece in pieces {
                let Piece::Text(mut rest) = piece else {
                    next.push(piece);
                    continue;
                };
                while let Some(at) = rest.find(needle) {
                    let (before, after) = (&rest[..at], &rest[at + needle.len()..]);
                    if !before.is_empty() {
                        next.push(Piece::Text(before));
                    }
                    next.push(Piece::Token(id));
                    rest = after;
                }
                if !rest.is_empty() {
                    next.push(Piece::Text(rest));
                }
            }
            pieces = next;
        }
        pieces
    }

    /// The SentencePiece merge: start from UTF-8 characters, merge the best-scoring adjacent
    /// pair that is a token until none is, then emit each symbol. A merged symbol is always a
    /// token; a single character that is not becomes its UTF-8 bytes' tokens.
    fn merge(&self, text: &str, out: &mut Vec<u32>) {
        let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
        for (start, c) in text.char_indices() {
            let i = symbols.len();
            symbols.push(Symbol { start, len: c.len_utf8(), prev: i.checked_sub(1), next: None });
            if let Some(p) = i.checked_sub(1).and_then(|p| symbols.get_mut(p)) {
                p.next = Some(i);
            }
        }
        let mut queue = BinaryHeap::new();
        for i in 1..symbols.len() {
            self.try_pair(text, &symbols, i - 1, i, &mut queue);
        }
        while let Some(pair) = queue.pop() {
            let (Some(left), Some(right)) = (symbols.get(pair.left).copied(), symbols.get(pair.right).copied()) else {
                continue;
            };
            if left.len == 0 || right.len == 0 || left.len + right.len != pair.len {
                continue;
            }
            if let Some(l) = symbols.get_mut(pair.left) {
                l.len += right.len;
                l.next = right.next;
            }
            if let Some(r) = symbols.get_mut(pair.right) {
                r.len = 0;
            }
            if let Some(n) = right.next.and_then(|n| symbols.get_mut(n)) {
                n.prev = Some(pair.left);
            }
            if let Some(p) = left.prev {
                self.try_pair(text, &symbols, p, pair.left, &mut queue);
            }
            if let Some(n) = right.next {
                self.try_pair(text, &symbols, pair.left, n, &mut queue);
            }
        }
        let mut i = if symbols.is_empty() { None } else { Some(0) };
        while let Some(at) = i {
            let Some(s) = symbols.get(at) else { break };
            if let Some(piece) = text.get(s.start..s.start + s.len) {
                match self.ids.get(piece) {
                    Some(&id) => out.push(id),
                    None => out.extend(piece.bytes().filter_map(|b| self.bytes.get(b as usize).copied().flatten())),
                }
            }
            i = s.next;
        }
    }

    fn try_pair(&self, text: &str, symbols: &[Symbol], left: usize, right: usize, queue: &mut BinaryHeap<Pair>) {
        let (Some(l), Some(r)) = (symbols.get(left), symbols.get(right)) else { return };
        let Some(joined) = text.get(l.start..r.start + r.len) else { return };
        let Some(&id) = self.ids.get(joined) else { return };
        let score = self.scores.get(id as usize).copied().unwrap_or(0.0);
        queue.push(Pair { score, left, right, len: joined.len() });
    }

    /// The bytes token `id` stands for when printed, as llama.cpp's `token_to_piece` with
    /// `special` deciding whether control tokens print their text.
    pub fn piece(&self, id: u32, special: bool) -> Vec<u8> {
        let (Some(text), Some(kind)) = (self.text(id), self.kind(id)) else { return Vec::new() };
        match kind {
            TokenKind::Normal | TokenKind::UserDefined => text.replace('\u{2581}', " ").into_bytes(),
            TokenKind::Unknown => "\u{2585}".as_bytes().to_vec(),
            TokenKind::Byte => byte_of(text).map(|b| vec![b]).unwrap_or_default(),
            TokenKind::Control if special => text.as_bytes().to_vec(),
            TokenKind::Control | TokenKind::Unused => Vec::new(),
        }
    }

    /// The text of `ids`, control tokens left out (invalid UTF-8 replaced by U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| self.piece(id, false)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Turns a stream of token ids into text without ever splitting a UTF-8 character: bytes of an
/// incomplete character wait for the next token.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// A decoder with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// The text that token `id` completes (possibly empty).
    pub fn push(&mut self, vocab: &Vocab, id: u32) -> String {
        self.pending.extend(vocab.piece(id, false));
        // Everything up to the last byte whose fate is known: whole characters, and byte
        // sequences that can never become valid (they come out as U+FFFD, as decoding the
        // whole stream at once would give them); an incomplete character at the end waits.
        let mut done = 0;
        while let Some(rest) = self.pending.get(done..) {
            match std::str::from_utf8(rest) {
                Ok(_) => {
                    done = self.pending.len();
                    break;
                }
                Err(e) => match e.error_len() {
                    None => {
                        done += e.valid_up_to();
                        break;
                    }
                    Some(bad) => done += e.valid_up_to() + bad,
                },
            }
        }
        let done: Vec<u8> = self.pending.drain(..done).collect();
        String::from_utf8_lossy(&done).into_owned()
    }

    /// Whatever is still pending (an incomplete character at the end of the stream).
    pub fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.pending);
        String::from_utf8_lossy(&rest).into_owned()
    }
}

/// `<0xAB>` → 0xAB.
fn byte_of(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

enum Piece<'t> {
    Text(&'t str),
    Token(u32),
}

#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge: ordered by score, then leftmost first (as llama.cpp's queue).
#[derive(Debug)]
struct Pair {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl PartialEq for Pair {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for Pair {}
impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pair {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.score.total_cmp(&other.score).then_with(|| other.left.cmp(&self.left))
    }
}
