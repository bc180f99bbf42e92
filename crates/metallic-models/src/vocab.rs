//! The vocabulary of a GGUF language model and its tokenizer, written to give the same ids as
//! llama.cpp. Two tokenizers, by `tokenizer.ggml.model`:
//!
//! - `llama`, SentencePiece style: special-token strings split out first, `▁` for spaces,
//!   then the highest-scoring adjacent pair merged repeatedly, and bytes (`<0xAB>` tokens) for
//!   anything left that is not in the vocabulary.
//! - `gpt2`, byte-level BPE (Llama 3, Qwen, SmolLM, Mistral-NeMo, DeepSeek, ...): special-token
//!   strings split out the same way, then the pre-tokenizer `tokenizer.ggml.pre` names, GPT-2's
//!   byte encoding and merges by rank (the source's `bpe.rs` explains each step).
//!
//! **Special tokens** are split out as llama.cpp's `tokenizer_st_partition` does: the longest
//! special string first (equal lengths: the lower id first), each one at every place where it
//! occurs left to right without overlapping a match already taken. An Aho–Corasick automaton
//! over the special strings finds them, so tokenizing takes time that grows with the text and
//! not with the number of special tokens (built once, in time linear in their total length).
//!
//! **Unknown characters:** a character that is neither a token nor representable by byte
//! tokens (a vocabulary without `<0xAB>` tokens) becomes the unknown token; a run of such
//! characters becomes one unknown token, as SentencePiece encodes it (llama.cpp throws an
//! exception there instead). Input is never dropped: [`Vocab::new`] refuses a vocabulary that
//! has no unknown token and cannot represent every byte of UTF-8 text. A byte-level BPE
//! vocabulary is taken as llama.cpp takes it: every real one has a token for each of the 256
//! byte stand-ins, and a byte it has no token for is dropped, as llama.cpp drops it.
//!
//! **Byte-level BPE, in llama.cpp's terms:** control and unknown tokens are split out of the
//! text only when special tokens are parsed, user-defined ones always (not implemented: the
//! lstrip/rstrip that llama.cpp gives the special tokens of models named Phi-3 and the mask
//! token of a few embedding models); a piece is the token's bytes with GPT-2's byte encoding
//! undone (control tokens print only when asked, user-defined ones as stored); `add_bos`
//! follows the pre-tokenizer (llama.cpp's defaults) unless `tokenizer.ggml.add_bos_token` says
//! otherwise. [`Vocab::decode`] joins pieces as they are: llama.cpp's
//! `clean_up_tokenization_spaces` pass (in its `llama_detokenize` only, not in
//! `token_to_piece`) is not applied.
//!
//! **Tokens that are not UTF-8:** a GGUF vocabulary may hold tokens whose bytes are not UTF-8
//! (llama.cpp loads them). [`Vocab::from_gguf`] loads them too: [`Vocab::text`] gives such a
//! token with U+FFFD in place of the invalid bytes, [`Vocab::piece`] (and so decoding) gives
//! its bytes as stored, and, as in llama.cpp, it never matches text (input text is UTF-8), except
//! that a one-byte token stands for its byte when there is no `<0xAB>` token for it.

use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};

use crate::bpe::{self, Bpe, PreError, PreTokenizer};
use crate::gguf::{GgufArray, GgufFile};
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

/// A vocabulary and its tokenizer: SentencePiece (GGUF `tokenizer.ggml.model` = `llama`) or
/// byte-level BPE (`gpt2`).
#[derive(Debug, Clone)]
pub struct Vocab {
    tokens: Vec<String>,
    scores: Vec<f32>,
    kinds: Vec<TokenKind>,
    ids: HashMap<String, u32>,
    /// The stored bytes of tokens that are not UTF-8 (`tokens` holds them with U+FFFD).
    raw: HashMap<u32, Box<[u8]>>,
    /// Control, user-defined and unknown tokens, matched as whole strings before the merge
    /// algorithm runs when special tokens are parsed.
    specials: Specials,
    /// The user-defined tokens alone, matched when special tokens are not parsed (`None`:
    /// the same set as `specials`).
    user_specials: Option<Specials>,
    bos: Option<u32>,
    eos: Option<u32>,
    unknown: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    /// Token of each byte value, from `<0xAB>` tokens (or the single-character token).
    bytes: [Option<u32>; 256],
    /// The end-of-generation tokens, in increasing order (see [`Vocab::end_tokens`]).
    ends: Vec<u32>,
    /// The byte-level BPE tokenizer (`None`: SentencePiece).
    bpe: Option<Box<Bpe>>,
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
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<\u{ff5c}end\u{2581}of\u{2581}sentence\u{ff5c}>",
    "[e~[",
];

/// Texts of the fill-in-the-middle tokens llama.cpp looks for when the metadata does not name
/// them (`tokenizer.ggml.fim_{pre,suf,mid,pad,rep,sep}_token_id`), by role in that order. One
/// found by text becomes a control token; the pad, repository and file-separator ones also end
/// a generation. Where several texts of one role are present llama.cpp takes whichever its hash
/// map yields first; here the lowest id.
const FIM_TEXTS: [&[&str]; 6] = [
    &[
        "<|fim_prefix|>",
        "<fim-prefix>",
        "<fim_prefix>",
        "<\u{ff5c}fim\u{2581}begin\u{ff5c}>",
        "<PRE>",
        "\u{2581}<PRE>",
        "<|code_prefix|>",
        "<|prefix|>",
    ],
    &[
        "<|fim_suffix|>",
        "<fim-suffix>",
        "<fim_suffix>",
        "<\u{ff5c}fim\u{2581}hole\u{ff5c}>",
        "<SUF>",
        "\u{2581}<SUF>",
        "<|code_suffix|>",
        "<|suffix|>",
    ],
    &[
        "<|fim_middle|>",
        "<fim-middle>",
        "<fim_middle>",
        "<\u{ff5c}fim\u{2581}end\u{ff5c}>",
        "<MID>",
        "\u{2581}<MID>",
        "<|code_middle|>",
        "<|middle|>",
    ],
    &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    &["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"],
    &["<|file_sep|>"],
];

/// Token ids the metadata gives for roles beyond BOS, EOS, unknown and padding.
#[derive(Debug, Clone, Copy, Default)]
struct Roles {
    /// `tokenizer.ggml.eot_token_id`.
    eot: Option<u32>,
    /// `tokenizer.ggml.eom_token_id`.
    eom: Option<u32>,
    /// `tokenizer.ggml.fim_{pre,suf,mid,pad,rep,sep}_token_id` (the first three also under
    /// their older names `prefix`, `suffix`, `middle`).
    fim: [Option<u32>; 6],
}

/// What [`Vocab::build`] needs beyond [`VocabParts`] for a GGUF vocabulary.
#[derive(Default)]
struct Extra<'f> {
    roles: Roles,
    /// A byte-level BPE vocabulary: its pre-tokenizer and merge lines.
    bpe: Option<(PreTokenizer, Vec<&'f [u8]>)>,
}

/// The most tokens a vocabulary may hold (GGUF files from users are untrusted).
pub const MAX_TOKENS: usize = 1 << 22;

impl Vocab {
    /// Builds the vocabulary, checking that lengths agree and ids are in range. A vocabulary
    /// without an unknown token must be able to write every byte of UTF-8 text as a token
    /// (`<0xAB>`, or the one-character token for ASCII), so that no text is ever dropped.
    pub fn new(parts: VocabParts) -> Result<Self> {
        Self::build(parts, HashMap::new(), Extra::default())
    }

    /// [`Vocab::new`] with `raw`: the stored bytes of the tokens that are not UTF-8, by id
    /// (`parts.tokens` holds them with U+FFFD replacements), and `extra` from the GGUF file.
    /// A byte-level BPE vocabulary needs no unknown token: like llama.cpp, it drops bytes it
    /// has no token for.
    fn build(parts: VocabParts, raw: HashMap<u32, Box<[u8]>>, extra: Extra<'_>) -> Result<Self> {
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
            // The first of duplicate texts wins. Tokens that are not UTF-8 never match text.
            if !raw.contains_key(&(id as u32)) {
                ids.entry(text.clone()).or_insert(id as u32);
            }
        }
        let ends = end_of_generation(&parts.tokens, &ids, &mut kinds, parts.eos, extra.roles);
        // A vocabulary without byte tokens may hold a byte as a one-byte token: ASCII text, or
        // a token that is not UTF-8 for bytes from 0x80 on.
        let mut single: [Option<u32>; 256] = [None; 256];
        for (&id, stored) in &raw {
            if let [b] = **stored
                && let Some(slot) = single.get_mut(b as usize)
            {
                *slot = Some(slot.map_or(id, |other| other.min(id)));
            }
        }
        let mut bytes = [None; 256];
        for (b, slot) in bytes.iter_mut().enumerate() {
            *slot = ids.get(&format!("<0x{b:02X}>")).copied().or_else(|| match char::from_u32(b as u32) {
                Some(c) if c.is_ascii() => ids.get(&c.to_string()).copied(),
                _ => single.get(b).copied().flatten(),
            });
        }
        if parts.unknown.is_none() && extra.bpe.is_none() {
            // Bytes that occur in UTF-8 text: all but 0xC0, 0xC1 and 0xF5 to 0xFF.
            let missing = (0..=0xF4u8)
                .filter(|&b| b != 0xC0 && b != 0xC1)
                .find(|&b| bytes.get(b as usize).copied().flatten().is_none());
            if let Some(b) = missing {
                return Err(bad(format!(
                    "no unknown token and no token for byte 0x{b:02X} (neither `<0x{b:02X}>` nor the byte itself): text holding it could not be tokenized"
                )));
            }
        }
        let bpe = extra.bpe.map(|(pre, merges)| {
            // The token whose text is exactly one byte: ASCII text, or a token that is not
            // UTF-8 for bytes from 0x80 on.
            let mut byte_tokens = single;
            for (b, slot) in byte_tokens.iter_mut().enumerate().take(0x80) {
                *slot = char::from_u32(b as u32).and_then(|c| ids.get(c.encode_utf8(&mut [0; 4]) as &str).copied());
            }
            Box::new(Bpe::new(pre, &merges, &ids, n as u32, byte_tokens))
        });
        let not_utf8 = &raw;
        let special = |parse_special: bool| {
            let strings = parts.tokens.iter().zip(&kinds).enumerate().filter(|(id, (text, kind))| {
                let wanted = match kind {
                    TokenKind::UserDefined => true,
                    TokenKind::Control | TokenKind::Unknown => parse_special,
                    _ => false,
                };
                wanted && !text.is_empty() && !not_utf8.contains_key(&(*id as u32))
            });
            Specials::build(strings.map(|(id, (text, _))| (text.as_bytes(), id as u32)).collect()).map_err(bad)
        };
        let specials = special(true)?;
        let has_control = kinds.iter().any(|k| matches!(k, TokenKind::Control | TokenKind::Unknown));
        let user_specials = if has_control { Some(special(false)?) } else { None };
        Ok(Vocab {
            tokens: parts.tokens,
            scores,
            kinds,
            ids,
            raw,
            specials,
            user_specials,
            bos: parts.bos,
            eos: parts.eos,
            unknown: parts.unknown,
            add_bos: parts.add_bos,
            add_eos: parts.add_eos,
            add_space_prefix: parts.add_space_prefix,
            bytes,
            ends,
            bpe,
        })
    }

    /// The vocabulary a GGUF file describes in its `tokenizer.ggml.*` metadata:
    /// SentencePiece (`tokenizer.ggml.model` = `llama`) or byte-level BPE (`gpt2`, with its
    /// `tokenizer.ggml.merges` and the pre-tokenizer `tokenizer.ggml.pre` names; a missing
    /// `pre` is `default`, as in llama.cpp, and a `pre` not implemented here is an error, as
    /// llama.cpp refuses names it does not know).
    ///
    /// Missing keys take llama.cpp's defaults: for SentencePiece BOS 1, EOS 2, unknown 0 and a
    /// BOS added; for BPE BOS and EOS 11 (when the vocabulary is that large), no unknown token,
    /// and a BOS added only for the pre-tokenizers llama.cpp adds one for (Llama 3, Tekken,
    /// Chameleon). A BPE vocabulary whose metadata names a token id past its end keeps the
    /// default instead, as llama.cpp does.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let model = file.get_str("tokenizer.ggml.model")?;
        let bpe = match model {
            "llama" => false,
            "gpt2" => true,
            _ => {
                return Err(Error::Unsupported {
                    path: file.path().into(),
                    what: "tokenizer.ggml.model",
                    found: model.into(),
                    supported: "llama (SentencePiece), gpt2 (byte-level BPE)",
                });
            }
        };
        let optional_id = |key: &str| match file.get(key) {
            Some(_) => file.get_u32(key).map(Some),
            None => Ok(None),
        };
        let flag = |key: &str, default: bool| match file.get(key) {
            Some(_) => file.get_bool(key),
            None => Ok(default),
        };
        let strings = |key: &str| match file.get_array(key)? {
            GgufArray::String(items) => Ok(items),
            other => Err(Error::format(
                file.path(),
                format!("metadata key `{key}` is array of {}, expected array of string", other.type_name()),
            )),
        };
        let stored = strings("tokenizer.ggml.tokens")?;
        let n = stored.len();
        let mut tokens = Vec::with_capacity(n);
        let mut raw = HashMap::new();
        for (id, token) in stored.iter().enumerate() {
            // A token that is not UTF-8 is kept (llama.cpp loads such vocabularies): its text
            // with U+FFFD, its bytes for decoding.
            if token.as_str().is_none() {
                raw.insert(id as u32, token.as_bytes().into());
            }
            if bpe && token.as_bytes().is_empty() {
                // llama.cpp's name for an empty token (it then matches that text).
                tokens.push(format!("[EMPTY_{id}]"));
            } else {
                tokens.push(token.to_string_lossy().into_owned());
            }
        }
        let scores = match file.get("tokenizer.ggml.scores") {
            Some(_) => file.get_f32_array("tokenizer.ggml.scores")?.to_vec(),
            None => Vec::new(),
        };
        let types = match file.get("tokenizer.ggml.token_type") {
            Some(_) => file.get_i32_array("tokenizer.ggml.token_type")?.to_vec(),
            None => Vec::new(),
        };
        // Role ids past the vocabulary are ignored, as llama.cpp ignores them.
        let role = |key: &str| Ok::<_, Error>(optional_id(key)?.filter(|&id| (id as usize) < n));
        let either = |key: &str, old: &str| Ok::<_, Error>(role(old)?.or(role(key)?));
        let roles = Roles {
            eot: role("tokenizer.ggml.eot_token_id")?,
            eom: role("tokenizer.ggml.eom_token_id")?,
            fim: [
                either("tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.prefix_token_id")?,
                either("tokenizer.ggml.fim_suf_token_id", "tokenizer.ggml.suffix_token_id")?,
                either("tokenizer.ggml.fim_mid_token_id", "tokenizer.ggml.middle_token_id")?,
                role("tokenizer.ggml.fim_pad_token_id")?,
                role("tokenizer.ggml.fim_rep_token_id")?,
                role("tokenizer.ggml.fim_sep_token_id")?,
            ],
        };
        let (parts, extra) = if bpe {
            let name = match file.get("tokenizer.ggml.pre") {
                Some(_) => file.get_str("tokenizer.ggml.pre")?,
                None => "",
            };
            let pre = PreTokenizer::new(name).map_err(|e| match e {
                PreError::Unknown => Error::Unsupported {
                    path: file.path().into(),
                    what: "tokenizer.ggml.pre",
                    found: name.into(),
                    supported: bpe::SUPPORTED_PRE,
                },
                PreError::NotImplemented => Error::format(
                    file.path(),
                    format!(
                        "tokenizer.ggml.pre `{name}` is a pre-tokenizer llama.cpp has that is not implemented here (supported: {})",
                        bpe::SUPPORTED_PRE
                    ),
                ),
                PreError::Pattern(message) => Error::Tokenizer(format!("pre-tokenizer `{name}`: {message}")),
            })?;
            let merges: Vec<&[u8]> = strings("tokenizer.ggml.merges")?.iter().map(|m| m.as_bytes()).collect();
            // A default that is not in the vocabulary is none, and so is a metadata id past
            // the end (it keeps the default).
            let in_range = |id: u32| Some(id).filter(|&id| (id as usize) < n);
            let default_bos = if pre.no_bos { None } else { in_range(11) };
            let parts = VocabParts {
                tokens,
                scores,
                types,
                bos: match optional_id("tokenizer.ggml.bos_token_id")? {
                    Some(id) => in_range(id).or(default_bos),
                    None => default_bos,
                },
                eos: optional_id("tokenizer.ggml.eos_token_id")?.and_then(in_range).or(in_range(11)),
                unknown: optional_id("tokenizer.ggml.unknown_token_id")?.and_then(in_range),
                padding: optional_id("tokenizer.ggml.padding_token_id")?.and_then(in_range),
                add_bos: flag("tokenizer.ggml.add_bos_token", pre.add_bos)?,
                add_eos: flag("tokenizer.ggml.add_eos_token", false)?,
                add_space_prefix: false,
            };
            (parts, Extra { roles, bpe: Some((pre, merges)) })
        } else {
            let parts = VocabParts {
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
            };
            (parts, Extra { roles, bpe: None })
        };
        Vocab::build(parts, raw, extra).map_err(|e| match e {
            Error::Tokenizer(message) => Error::format(file.path(), message),
            other => other,
        })
    }

    /// The byte-level BPE pre-tokenizer (`tokenizer.ggml.pre`, `default` when the file has
    /// none); `None` for a SentencePiece vocabulary.
    pub fn pre_tokenizer(&self) -> Option<&str> {
        self.bpe.as_deref().map(Bpe::pre_name)
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

    /// Whether [`encode`](Self::encode) puts the BOS token first when asked for special tokens.
    pub fn adds_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }

    /// The end-of-sequence token.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// The tokens that end a generation, in increasing order, as llama.cpp's list of them: EOS,
    /// the end-of-turn and end-of-message tokens the metadata names, the tokens of
    /// [`END_TOKEN_TEXTS`] the vocabulary has, and the fill-in-the-middle pad, repository and
    /// file-separator tokens (`<|fim_pad|>`, `<|repo_name|>`, `<|file_sep|>` and the other
    /// spellings llama.cpp knows). Like llama.cpp, `<|end|>` is left out where `<|return|>` or
    /// `<|flush|>` and `<|call|>` or `<|calls|>` are present (gpt-oss, Solar Open: it ends a
    /// message there, not the generation), and `</s>` where `<|tool_response>` or
    /// `<|plamo:eos|>` is (it is ordinary text there).
    pub fn end_tokens(&self) -> &[u32] {
        &self.ends
    }

    /// The id of the token whose text is exactly `text`.
    pub fn id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }

    /// The text of token `id` as stored (with `▁` for spaces; a token whose stored bytes are not
    /// UTF-8 has U+FFFD in place of the invalid sequences).
    pub fn text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The unknown token, which stands for text the vocabulary cannot otherwise represent.
    pub fn unknown(&self) -> Option<u32> {
        self.unknown
    }

    /// The kind of token `id`.
    pub fn kind(&self, id: u32) -> Option<TokenKind> {
        self.kinds.get(id as usize).copied()
    }

    /// Token ids for `text`, as llama.cpp's `llama_tokenize(text, add_special, parse_special)`:
    /// `add_special` adds BOS (and EOS) where the vocabulary asks for them; `parse_special`
    /// turns control-token strings such as `<start_of_turn>` in the text into those tokens
    /// (user-defined tokens are matched either way). Characters the vocabulary cannot represent
    /// become the unknown token (see the module docs).
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
                Piece::Text(raw) if self.bpe.is_some() => {
                    if let Some(bpe) = &self.bpe {
                        bpe.encode(raw, &self.ids, &mut out);
                    }
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

    /// `text` cut into plain text and special tokens (see the module docs for the order).
    fn split_specials<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Piece<'t>> {
        let specials = match &self.user_specials {
            Some(user) if !parse_special => user,
            _ => &self.specials,
        };
        let mut pieces = Vec::new();
        let mut at = 0;
        // Special strings are UTF-8, so they start and end on character boundaries of `text`.
        for (start, end, id) in specials.find(text.as_bytes()) {
            if let Some(before) = text.get(at..start).filter(|t| !t.is_empty()) {
                pieces.push(Piece::Text(before));
            }
            pieces.push(Piece::Token(id));
            at = end;
        }
        if let Some(rest) = text.get(at..).filter(|t| !t.is_empty()) {
            pieces.push(Piece::Text(rest));
        }
        pieces
    }

    /// The SentencePiece merge: start from UTF-8 characters, merge the best-scoring adjacent
    /// pair that is a token until none is, then emit each symbol. A merged symbol is always a
    /// token; a single character that is not becomes its UTF-8 bytes' tokens, or, when some
    /// byte has no token, the unknown token (one for a run of such characters).
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
        let mut after_unknown = false;
        while let Some(at) = i {
            let Some(s) = symbols.get(at) else { break };
            if let Some(piece) = text.get(s.start..s.start + s.len) {
                let known = match self.ids.get(piece) {
                    Some(&id) => {
                        out.push(id);
                        true
                    }
                    None => {
                        let bytes: Option<Vec<u32>> =
                            piece.bytes().map(|b| self.bytes.get(b as usize).copied().flatten()).collect();
                        bytes.map(|bytes| out.extend(bytes)).is_some()
                    }
                };
                if !known && !after_unknown {
                    // `new` refuses a vocabulary without an unknown token unless every byte of
                    // UTF-8 text has a token, so this is never `None` here.
                    out.extend(self.unknown);
                }
                after_unknown = !known;
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
        let stored = self.raw.get(&id).map_or(text.as_bytes(), |raw| raw);
        if self.bpe.is_some() {
            // llama.cpp's BPE rules: normal tokens with GPT-2's byte encoding undone; control
            // and unknown tokens as stored when `special`, else nothing; user-defined ones as
            // stored.
            return match kind {
                TokenKind::Normal => bpe::decode_token(stored),
                TokenKind::UserDefined => stored.to_vec(),
                TokenKind::Control | TokenKind::Unknown if special => stored.to_vec(),
                TokenKind::Byte => byte_of(text).map(|b| vec![b]).unwrap_or_default(),
                TokenKind::Control | TokenKind::Unknown | TokenKind::Unused => Vec::new(),
            };
        }
        match kind {
            TokenKind::Normal | TokenKind::UserDefined => unescape_spaces(stored),
            TokenKind::Unknown => "\u{2585}".as_bytes().to_vec(),
            TokenKind::Byte => byte_of(text).map(|b| vec![b]).unwrap_or_default(),
            TokenKind::Control if special => stored.to_vec(),
            TokenKind::Control | TokenKind::Unused => Vec::new(),
        }
    }

    /// The text of `ids`, control tokens left out (invalid UTF-8 replaced by U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| self.piece(id, false)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// llama.cpp's end-of-generation list (see [`Vocab::end_tokens`]), adjusting token kinds as it
/// does: the fill-in-the-middle tokens found by text and the end-of-generation tokens become
/// control tokens, gpt-oss's `<|channel|>`, `<|message|>`, `<|start|>` and `<|constrain|>`
/// user-defined ones (they are always printed), and a `<|end|>` or `</s>` left out of the list
/// becomes user-defined or normal again.
fn end_of_generation(
    tokens: &[String],
    ids: &HashMap<String, u32>,
    kinds: &mut [TokenKind],
    eos: Option<u32>,
    roles: Roles,
) -> Vec<u32> {
    let mut set_kind = |id: u32, kind: TokenKind| {
        if let Some(slot) = kinds.get_mut(id as usize) {
            *slot = kind;
        }
    };
    let mut fim = roles.fim;
    for (slot, texts) in fim.iter_mut().zip(FIM_TEXTS) {
        if slot.is_none() {
            *slot = texts.iter().filter_map(|t| ids.get(*t).copied()).min();
            if let Some(id) = *slot {
                set_kind(id, TokenKind::Control);
            }
        }
    }
    let mut ends: Vec<u32> = fim.iter().skip(3).flatten().copied().collect();
    for text in END_TOKEN_TEXTS {
        if let Some(&id) = ids.get(*text) {
            set_kind(id, TokenKind::Control);
            ends.push(id);
        }
    }
    for text in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
        if let Some(&id) = ids.get(text) {
            set_kind(id, TokenKind::UserDefined);
        }
    }
    ends.extend([eos, roles.eot, roles.eom].into_iter().flatten());
    ends.sort_unstable();
    ends.dedup();
    let find =
        |ends: &[u32], text: &str| ends.iter().copied().find(|&id| tokens.get(id as usize).is_some_and(|t| t == text));
    let has = |ends: &[u32], text: &str| find(ends, text).is_some();
    let call = has(&ends, "<|call|>") || has(&ends, "<|calls|>");
    if let Some(end) = find(&ends, "<|end|>")
        && call
        && (has(&ends, "<|return|>") || has(&ends, "<|flush|>"))
    {
        ends.retain(|&id| id != end);
        set_kind(end, TokenKind::UserDefined);
    }
    if let Some(s) = find(&ends, "</s>")
        && (has(&ends, "<|tool_response>") || has(&ends, "<|plamo:eos|>"))
    {
        ends.retain(|&id| id != s);
        set_kind(s, TokenKind::Normal);
    }
    ends
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

/// `bytes` with each `▁` (U+2581, SentencePiece's space mark) turned into a space.
fn unescape_spaces(bytes: &[u8]) -> Vec<u8> {
    const MARK: &[u8] = "\u{2581}".as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix(MARK) {
            out.push(b' ');
            rest = after;
        } else if let Some((&b, after)) = rest.split_first() {
            out.push(b);
            rest = after;
        }
    }
    out
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

/// "No node" / "no token" in [`Specials`].
const NONE: u32 = u32::MAX;

/// The special-token strings of a vocabulary in an Aho–Corasick automaton (a byte trie with
/// failure links), to find them in text as llama.cpp's `tokenizer_st_partition` does (see the
/// module docs) in time that grows with the text, not with the number of special tokens.
#[derive(Clone)]
struct Specials {
    /// Trie nodes; node 0 is the root (the empty string).
    nodes: Vec<Node>,
    /// The children of node `i` are `edge_nodes[edge_start[i]..edge_start[i + 1]]`, reached by
    /// the bytes at the same places of `edge_bytes`, which are in increasing order.
    edge_start: Vec<u32>,
    edge_bytes: Vec<u8>,
    edge_nodes: Vec<u32>,
}

#[derive(Debug, Clone, Copy)]
struct Node {
    /// Length in bytes of the string the node spells.
    depth: u32,
    /// The node of the longest proper suffix of that string that is in the trie.
    fail: u32,
    /// The nearest node, this one or one reached through `fail`, that ends a special string.
    out: u32,
    /// The token whose string ends at this node (`NONE`: no special string ends here).
    token: u32,
}

/// What a missing node reads as: the root, with no string ending there.
const NO_NODE: Node = Node { depth: 0, fail: 0, out: NONE, token: NONE };

impl std::fmt::Debug for Specials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let strings = self.nodes.iter().filter(|n| n.token != NONE).count();
        write!(f, "Specials {{ {strings} strings, {} trie nodes }}", self.nodes.len())
    }
}

impl Specials {
    /// The automaton of `strings` (bytes and token id; none empty). Of equal strings the lowest
    /// id is the one matched, as llama.cpp's stable order of equal lengths would match it first.
    fn build(mut strings: Vec<(&[u8], u32)>) -> std::result::Result<Self, String> {
        strings.retain(|(text, _)| !text.is_empty());
        strings.sort_unstable();
        strings.dedup_by(|later, first| later.0 == first.0);
        let total = strings.iter().fold(0usize, |sum, (text, _)| sum.saturating_add(text.len()));
        if total >= NONE as usize {
            return Err(format!("special tokens of {total} bytes in all (at most {} are supported)", NONE - 1));
        }
        // The trie, from the sorted strings: each shares a prefix with the one before, and a
        // node's children are created in increasing byte order.
        let mut nodes = vec![NO_NODE];
        let mut edges: Vec<(u32, u8, u32)> = Vec::new();
        let mut path: Vec<u32> = vec![0];
        let mut previous: &[u8] = &[];
        for &(text, id) in &strings {
            let common = previous.iter().zip(text).take_while(|(a, b)| a == b).count();
            path.truncate(common + 1);
            for &b in text.get(common..).unwrap_or_default() {
                let parent = path.last().copied().unwrap_or(0);
                let node = nodes.len() as u32;
                nodes.push(Node { depth: path.len() as u32, ..NO_NODE });
                edges.push((parent, b, node));
                path.push(node);
            }
            if let Some(end) = path.last().and_then(|&n| nodes.get_mut(n as usize)) {
                end.token = id;
            }
            previous = text;
        }
        // Children by parent (a stable counting sort keeps each node's bytes in order).
        let mut edge_start = vec![0u32; nodes.len() + 1];
        for &(parent, _, _) in &edges {
            if let Some(count) = edge_start.get_mut(parent as usize + 1) {
                *count += 1;
            }
        }
        for i in 1..edge_start.len() {
            let before = edge_start.get(i - 1).copied().unwrap_or(0);
            if let Some(start) = edge_start.get_mut(i) {
                *start += before;
            }
        }
        let mut fill = edge_start.clone();
        let (mut edge_bytes, mut edge_nodes) = (vec![0u8; edges.len()], vec![0u32; edges.len()]);
        for (parent, b, child) in edges {
            let Some(at) = fill.get_mut(parent as usize) else { continue };
            if let (Some(slot_b), Some(slot_n)) = (edge_bytes.get_mut(*at as usize), edge_nodes.get_mut(*at as usize)) {
                (*slot_b, *slot_n) = (b, child);
            }
            *at += 1;
        }
        let mut specials = Specials { nodes, edge_start, edge_bytes, edge_nodes };
        // Failure links and outputs, breadth first (a node's failure is shallower than it).
        let mut queue = VecDeque::from([0u32]);
        while let Some(node) = queue.pop_front() {
            for (b, child) in specials.children(node) {
                let fail = if node == 0 { 0 } else { specials.next(specials.node(node).fail, b) };
                let out = if specials.node(child).token != NONE { child } else { specials.node(fail).out };
                if let Some(c) = specials.nodes.get_mut(child as usize) {
                    (c.fail, c.out) = (fail, out);
                }
                queue.push_back(child);
            }
        }
        Ok(specials)
    }

    fn node(&self, i: u32) -> Node {
        self.nodes.get(i as usize).copied().unwrap_or(NO_NODE)
    }

    fn edges(&self, node: u32) -> (&[u8], &[u32]) {
        let start = self.edge_start.get(node as usize).copied().unwrap_or(0) as usize;
        let end = self.edge_start.get(node as usize + 1).copied().unwrap_or(0) as usize;
        (self.edge_bytes.get(start..end).unwrap_or_default(), self.edge_nodes.get(start..end).unwrap_or_default())
    }

    fn children(&self, node: u32) -> Vec<(u8, u32)> {
        let (bytes, nodes) = self.edges(node);
        bytes.iter().copied().zip(nodes.iter().copied()).collect()
    }

    /// The state after reading `b` in state `node`.
    fn next(&self, mut node: u32, b: u8) -> u32 {
        loop {
            let (bytes, nodes) = self.edges(node);
            if let Some(child) = bytes.binary_search(&b).ok().and_then(|i| nodes.get(i)) {
                return *child;
            }
            if node == 0 {
                return 0;
            }
            node = self.node(node).fail;
        }
    }

    /// The special strings llama.cpp's partition takes out of `text`, as (start, end, token),
    /// in text order.
    ///
    /// llama.cpp takes the strings one by one, longest first (equal lengths: lower id first),
    /// each at its occurrences left to right that overlap nothing taken before. Here every
    /// text position where strings end waits, with the longest string ending there not yet
    /// tried, in a queue by length; lengths are settled longest first, in that same order
    /// within a length. A position then moves on to its next shorter string only while its
    /// last byte is free, skipping strings that would start at or before a taken byte, so
    /// each position is tried once for most texts.
    fn find(&self, text: &[u8]) -> Vec<(usize, usize, u32)> {
        if self.nodes.len() <= 1 {
            return Vec::new();
        }
        let mut waiting: BTreeMap<u32, Vec<(usize, u32)>> = BTreeMap::new();
        let mut state = 0;
        for (i, &b) in text.iter().enumerate() {
            state = self.next(state, b);
            let out = self.node(state).out;
            if out != NONE {
                waiting.entry(self.node(out).depth).or_default().push((i + 1, out));
            }
        }
        // Taken ranges by start: (end, token).
        let mut taken: BTreeMap<usize, (usize, u32)> = BTreeMap::new();
        // The last taken byte before `at`.
        let last_taken_before = |taken: &BTreeMap<usize, (usize, u32)>, at: usize| {
            taken.range(..at).next_back().map(|(_, &(end, _))| end.min(at).saturating_sub(1))
        };
        while let Some((len, mut found)) = waiting.pop_last() {
            let len = len as usize;
            found.sort_unstable_by_key(|&(end, node)| (self.node(node).token, end));
            for &(end, node) in &found {
                let start = end.saturating_sub(len);
                if last_taken_before(&taken, end).is_none_or(|last| last < start) {
                    taken.insert(start, (end, self.node(node).token));
                }
            }
            for (end, node) in found {
                let last = last_taken_before(&taken, end);
                if last == Some(end.saturating_sub(1)) {
                    continue; // every string ending here holds that byte
                }
                let room = end - last.map_or(0, |last| last + 1);
                let mut next = self.node(self.node(node).fail).out;
                while next != NONE && self.node(next).depth as usize > room {
                    next = self.node(self.node(next).fail).out;
                }
                if next != NONE {
                    waiting.entry(self.node(next).depth).or_default().push((end, next));
                }
            }
        }
        taken.into_iter().map(|(start, (end, token))| (start, end, token)).collect()
    }
}
