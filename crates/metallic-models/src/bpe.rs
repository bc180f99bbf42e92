//! Byte-level BPE (GGUF `tokenizer.ggml.model` = `gpt2`: Llama 3, Qwen 2/2.5/3, SmolLM2,
//! Mistral-NeMo, DeepSeek, StarCoder, ...), written to give the ids llama.cpp gives.
//!
//! A text piece (what is left between special tokens, see [`crate::vocab`]) goes through:
//!
//! 1. **Pre-tokenization**, chosen by `tokenizer.ggml.pre`: a list of steps, each cutting every
//!    piece the previous steps left into smaller ones. A step is one of llama.cpp's hand-written
//!    splitters (the GPT-2, Llama 3, Qwen 2 and Qwen 3.5 patterns, its digit grouping, its
//!    newline runs) or a regular expression. Like llama.cpp, a regular expression keeps the text
//!    it does not match as pieces of their own, and one that names Unicode categories
//!    (`\p{L}`, `\p{N}`, ...) runs on a *collapsed* copy of the text where every non-ASCII
//!    character stands for its category (see [`collapse_pattern`]); the others run on the text
//!    with non-ASCII whitespace read as `\v`. The categories are llama.cpp's own table
//!    ([`CATEGORY_RANGES`], generated from its `unicode-data.cpp`), so a character counts as a
//!    letter or a number exactly where it does for llama.cpp. Expressions follow ECMAScript
//!    (`std::regex`) semantics: they are translated (see [`translate`]) for `fancy-regex`, a
//!    backtracking engine with the same leftmost-first, greedy matching, with `\s` and `\d`
//!    kept to their ASCII meaning as in `std::regex`.
//! 2. **Byte encoding**: each piece's UTF-8 bytes become GPT-2's printable stand-ins
//!    ([`byte_char`]: a space is `Ġ`, a newline `Ċ`).
//! 3. **Merging** by rank: the adjacent pair whose merge (`tokenizer.ggml.merges`, "left right")
//!    comes first in the list is joined, leftmost first among equal ranks, until no pair has a
//!    merge. Pre-tokenizers that ask for it (`ignore_merges`: Llama 3, Tekken, ...) first look
//!    the whole piece up as a token. A piece that ends up as something that is not a token is
//!    written byte by byte as the tokens whose text is that single byte, and bytes with no such
//!    token are dropped, as llama.cpp drops them.
//!
//! Merges are kept as llama.cpp keeps them: a pair of strings, whether or not they are tokens.
//! A merge whose parts are not tokens still applies where the text spells them, and one whose
//! result is not a token still joins its parts (they come out byte by byte if nothing else
//! merges into a token). Only merge lines without a space after their first byte are ignored,
//! as llama.cpp reads them as a pair of empty strings that never matches; of repeated pairs
//! the first rank counts. Merges that are not UTF-8 can never match UTF-8 text and are skipped.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use fancy_regex::{Regex, RegexBuilder};

/// "No symbol": a character that is not one of the 256 byte stand-ins (never in an encoded
/// piece), which no merge can take.
const NO_SYMBOL: u32 = u32::MAX;

// ---------------------------------------------------------------------------------------------
// Pre-tokenizers (llama.cpp's `llm_tokenizer_bpe` regex lists, by `tokenizer.ggml.pre`).
// ---------------------------------------------------------------------------------------------

/// One step of a pre-tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// llama.cpp's splitter for GPT-2's pattern
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`.
    Gpt2,
    /// llama.cpp's splitter for Llama 3's pattern `(?i:'s|'t|'re|'ve|'m|'ll|'d)|
    /// [^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
    Llama3,
    /// Llama 3's splitter with single digits (`\p{N}` for `\p{N}{1,3}`): Qwen 2.
    Qwen2,
    /// Qwen 2's splitter with combining marks counted with letters (`[\p{L}\p{M}]+`).
    Qwen35,
    /// llama.cpp's digit grouping (AFMoE, Tiny Aya): runs of digits in groups of three from
    /// the right.
    DigitGroups,
    /// Runs of newlines and runs of anything else (`[^\n]+|[\n]+`).
    Newlines,
    /// A regular expression, in llama.cpp's syntax.
    Regex(&'static str),
}

/// The `tokenizer.ggml.pre` values that share one pre-tokenizer and one set of loading rules.
struct Family {
    names: &'static [&'static str],
    steps: &'static [Step],
    /// Look a whole piece up as a token before merging.
    ignore_merges: bool,
    /// Add BOS by default (`tokenizer.ggml.add_bos_token` still decides when present).
    add_bos: bool,
    /// No BOS token by default (`tokenizer.ggml.bos_token_id` still decides when present).
    no_bos: bool,
}

const fn family(names: &'static [&'static str], steps: &'static [Step]) -> Family {
    Family { names, steps, ignore_merges: false, add_bos: false, no_bos: false }
}

const GPT2: &[Step] = &[Step::Gpt2];
const LLAMA3: &[Step] = &[Step::Llama3];
const QWEN2: &[Step] = &[Step::Qwen2];
const DIGITS_THEN_GPT2: &[Step] = &[Step::Regex("\\p{N}"), Step::Gpt2];
const DEEPSEEK_V3: &[Step] = &[
    Step::Regex("\\p{N}{1,3}"),
    Step::Regex("[一-龥\u{3040}-ゟ゠-ヿ]+"),
    Step::Regex(
        "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
    ),
];
const PORO: &str = " ?[^(\\s|.,!?…。，、।۔،)]+";
const GPT4O: &str = "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/// Every `tokenizer.ggml.pre` value this module implements, with llama.cpp's rules for it.
/// llama.cpp refuses to load a vocabulary whose `pre` it does not know, and so does
/// [`PreTokenizer::new`].
const FAMILIES: &[Family] = &[
    family(
        &["default"],
        &[Step::Regex("[\\p{P}\\$\\+<=>\\^~\\|]+"), Step::Gpt2, Step::Regex("\\p{N}+"), Step::Regex("[0-9][0-9][0-9]")],
    ),
    Family {
        ignore_merges: true,
        ..family(
            &["minicpm5"],
            &[
                Step::Regex("\\p{N}{1,3}"),
                Step::Regex(
                    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}+| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
                ),
            ],
        )
    },
    Family {
        ignore_merges: true,
        add_bos: true,
        ..family(
            &["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano"],
            LLAMA3,
        )
    },
    family(
        &["deepseek-llm"],
        &[
            Step::Regex("[\r\n]"),
            Step::Regex(
                "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\u{1F7D}ᾀ-ᾴᾶ-ᾼ\u{1FBE}ῂ-ῄῆ-ῌῐ-\u{1FD3}ῖ-\u{1FDB}ῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u{2126}ℨ\u{212A}-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
            ),
            Step::Regex("\\s?[!-/:-~！-／：-～‘-‟\u{3000}-。]+"),
            Step::Regex("\\s+$"),
            Step::Regex("[一-龥ࠀ-一가-\u{D7FF}]+"),
            Step::Regex("\\p{N}+"),
        ],
    ),
    family(
        &["deepseek-coder"],
        &[
            Step::Regex("[\r\n]"),
            Step::Regex("\\s?\\p{L}+"),
            Step::Regex("\\s?\\p{P}+"),
            Step::Regex("[一-龥ࠀ-一가-\u{D7FF}]+"),
            Step::Regex("\\p{N}"),
        ],
    ),
    family(&["deepseek-v3", "hunyuan-dense", "hy_v4", "joyai-llm"], DEEPSEEK_V3),
    family(
        &["spark2_5"],
        &[
            Step::Regex("\\p{N}{1,3}"),
            Step::Regex("[一-龥\u{3040}-ゟ゠-ヿ]+"),
            Step::Regex(
                "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+|[\r\n]|\\s+(?!\\S)|\\s+",
            ),
            Step::Regex("\\p{N}"),
        ],
    ),
    Family {
        ignore_merges: true,
        ..family(
            &["youtu"],
            &[
                Step::Regex("[가-힣ㄱ-ㆎ]+|[！…“”‘’—：；，、-〿︰-﹏]+|[ㄅ-ㄯ]+|[一-龥\u{3040}-ゟ゠-ヿ]+"),
                Step::Regex(
                    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
                ),
            ],
        )
    },
    family(&["falcon"], &[Step::Regex("[\\p{P}\\$\\+<=>\\^~\\|`]+"), Step::Gpt2, Step::Regex("[0-9][0-9][0-9]")]),
    family(&["mpt"], GPT2),
    family(&["starcoder"], DIGITS_THEN_GPT2),
    family(
        &[
            "gpt-2",
            "phi-2",
            "jina-es",
            "jina-de",
            "gigachat",
            "jina-v2-es",
            "jina-v2-de",
            "a.x-4.0",
            "mellum",
            "modern-bert",
            "exaone4",
            "jina-v1-en",
            "jina-v2-code",
            "roberta-bpe",
        ],
        GPT2,
    ),
    family(
        &["jais-2"],
        &[Step::Regex(
            "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s{512}(?!\\S)|\\s{256}(?!\\S)|\\s{128}(?!\\S)|\\s{64}(?!\\S)|\\s{32}(?!\\S)|\\s{16}(?!\\S)|\\s{8}(?!\\S)|\\s{4}(?!\\S)|\\s{1,2}(?!\\S)|\\s{1}",
        )],
    ),
    family(&["refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b", "mellum2"], DIGITS_THEN_GPT2),
    family(
        &["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "stablelm2", "megrez", "hunyuan", "solar-open", "grok-2"],
        QWEN2,
    ),
    family(&["qwen35"], &[Step::Qwen35]),
    family(&["olmo", "jais", "trillion", "granite-docling"], GPT2),
    family(&["dbrx", "smaug-bpe"], LLAMA3),
    family(&["poro-chat", "bloom", "gpt3-finnish"], &[Step::Regex(PORO)]),
    Family { no_bos: true, ..family(&["chatglm-bpe"], LLAMA3) },
    Family { no_bos: true, ignore_merges: true, ..family(&["glm4", "glm5"], LLAMA3) },
    family(&["viking"], &[Step::Regex(PORO), Step::Regex("\\p{N}")]),
    Family {
        ignore_merges: true,
        add_bos: true,
        ..family(
            &["tekken"],
            &[Step::Regex(
                "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
            )],
        )
    },
    Family {
        add_bos: true,
        ..family(
            &["chameleon"],
            &[
                Step::Regex("<sentinel:[0-9]+>"),
                Step::Regex("(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z"),
                Step::Regex("([\\t\\n]|    |  )"),
                Step::Regex("\\p{N}"),
                Step::Regex("[\\p{P}!-/:-@\\[-`{-~]"),
                Step::Gpt2,
            ],
        )
    },
    family(&["gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"], &[Step::Regex(GPT4O)]),
    Family {
        ignore_merges: true,
        ..family(
            &["granite-embed-multi-97m"],
            &[Step::Regex(
                "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])([^a-z]))*((?=[\\p{L}\\p{M}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}\\p{M}])([^a-z]))+((?=[\\p{L}\\p{M}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
            )],
        )
    },
    family(
        &["tiny_aya", "cohere2moe"],
        &[
            Step::DigitGroups,
            Step::Regex(
                "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
            ),
        ],
    ),
    family(
        &["bailingmoe", "bailingmoe2", "llada-moe"],
        &[Step::Regex(
            "'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+",
        )],
    ),
    family(
        &["seed-coder"],
        &[Step::Regex(
            "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        )],
    ),
    family(
        &["ufakzeka"],
        &[Step::Regex(
            "[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        )],
    ),
    family(
        &["afmoe"],
        &[
            Step::DigitGroups,
            Step::Regex(
                "[一-鿿㐀-䶿豈-\u{FAFF}\u{3040}-ゟ゠-ヿ･-ﾟ⼀-\u{2FDF}เ-\u{E7F}\u{E80}-\u{EFF}ក-\u{17FF}က-႟ꩠ-ꩿꧠ-\u{A9FF}가-\u{D7AF}ᄀ-ᇿ]+",
            ),
            Step::Regex(
                "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
            ),
        ],
    ),
    family(&["laguna"], &[Step::Newlines, Step::Qwen2]),
    family(
        &["exaone-moe"],
        &[Step::Regex(
            "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?(?:\\p{L}\\p{M}*(?: \\p{L}\\p{M}*)*)+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]?|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+",
        )],
    ),
];

/// The `tokenizer.ggml.pre` values implemented here (the names in [`FAMILIES`]), for error
/// messages; a unit test keeps the two in step.
pub(crate) const SUPPORTED_PRE: &str = "default, minicpm5, llama3, llama-v3, llama-bpe, falcon3, falcon-h1, pixtral, \
midm-2.0, lfm2, jina-v5-nano, deepseek-llm, deepseek-coder, deepseek-v3, hunyuan-dense, hy_v4, joyai-llm, spark2_5, \
youtu, falcon, mpt, starcoder, gpt-2, phi-2, jina-es, jina-de, gigachat, jina-v2-es, jina-v2-de, a.x-4.0, mellum, \
modern-bert, exaone4, jina-v1-en, jina-v2-code, roberta-bpe, jais-2, refact, command-r, smollm, codeshell, exaone, \
minerva-7b, mellum2, qwen2, deepseek-r1-qwen, kormo, f2llmv2, stablelm2, megrez, hunyuan, solar-open, grok-2, qwen35, \
olmo, jais, trillion, granite-docling, dbrx, smaug-bpe, poro-chat, bloom, gpt3-finnish, chatglm-bpe, glm4, glm5, \
viking, tekken, chameleon, gpt-4o, llama4, kanana2, talkie, minimax-m2, granite-embed-multi-97m, tiny_aya, cohere2moe, \
bailingmoe, bailingmoe2, llada-moe, seed-coder, ufakzeka, afmoe, laguna, exaone-moe";

/// Pre-tokenizers llama.cpp knows that are not implemented here: Kimi-K2's and SuperBPE's
/// own splitters, and the ones that skip the byte encoding (SentencePiece-style BPE).
const NOT_IMPLEMENTED_PRE: &[&str] =
    &["kimi-k2", "superbpe", "gemma4", "granite-embed-multi-311m", "sarvam-moe", "whitespace"];

/// Most backtracking steps one regular-expression search may take. The expressions are fixed
/// and none backtracks more than linearly, so this is only a guard against a runaway search;
/// a search that hits it leaves the rest of its piece whole (no pre-tokenizer here comes near).
const BACKTRACK_LIMIT: usize = 1 << 30;

/// A compiled step.
#[derive(Debug, Clone)]
enum Compiled {
    Custom(Step),
    Regex {
        regex: Regex,
        /// Runs on the collapsed text (the expression names Unicode categories).
        collapsed: bool,
    },
}

/// A pre-tokenizer: the steps of one `tokenizer.ggml.pre` value, compiled, and the loading
/// rules llama.cpp attaches to that value.
#[derive(Debug, Clone)]
pub(crate) struct PreTokenizer {
    name: String,
    steps: Vec<Compiled>,
    /// Look each piece up as a whole token first.
    pub(crate) ignore_merges: bool,
    /// llama.cpp's default for `tokenizer.ggml.add_bos_token`.
    pub(crate) add_bos: bool,
    /// No BOS token unless `tokenizer.ggml.bos_token_id` names one.
    pub(crate) no_bos: bool,
}

/// Why a pre-tokenizer could not be built.
#[derive(Debug)]
pub(crate) enum PreError {
    /// The name is not one llama.cpp knows (llama.cpp refuses it too).
    Unknown,
    /// A name llama.cpp knows that is not implemented here ([`NOT_IMPLEMENTED_PRE`]).
    NotImplemented,
    /// A pattern did not compile (a bug here, not in the file).
    Pattern(String),
}

impl PreTokenizer {
    /// The pre-tokenizer llama.cpp uses for `tokenizer.ggml.pre` = `name` (an empty name is
    /// `default`, as llama.cpp reads a missing key).
    pub(crate) fn new(name: &str) -> Result<Self, PreError> {
        let name = if name.is_empty() { "default" } else { name };
        let Some(family) = FAMILIES.iter().find(|f| f.names.contains(&name)) else {
            return Err(if NOT_IMPLEMENTED_PRE.contains(&name) { PreError::NotImplemented } else { PreError::Unknown });
        };
        let steps = family
            .steps
            .iter()
            .map(|&step| match step {
                Step::Regex(pattern) => {
                    let (translated, collapsed) = translate(pattern).map_err(PreError::Pattern)?;
                    let regex = RegexBuilder::new(&translated)
                        .backtrack_limit(BACKTRACK_LIMIT)
                        .build()
                        .map_err(|e| PreError::Pattern(format!("{pattern:?}: {e}")))?;
                    Ok(Compiled::Regex { regex, collapsed })
                }
                custom => Ok(Compiled::Custom(custom)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PreTokenizer {
            name: name.to_string(),
            steps,
            ignore_merges: family.ignore_merges,
            add_bos: family.add_bos,
            no_bos: family.no_bos,
        })
    }

    /// The `tokenizer.ggml.pre` value.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// `text` cut into pieces, as llama.cpp's `unicode_regex_split` cuts it (before the byte
    /// encoding). The pieces cover the text, in order.
    pub(crate) fn split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let flags: Vec<Flags> = chars.iter().map(|&(_, c)| flags_of(c)).collect();
        let cps: Vec<char> = chars.iter().map(|&(_, c)| c).collect();
        let mut pieces = vec![cps.len()];
        let mut collapsed: Option<Mapped> = None;
        let mut plain: Option<Mapped> = None;
        for step in &self.steps {
            pieces = match step {
                Compiled::Custom(step) => {
                    let mut out = Vec::with_capacity(pieces.len());
                    for_each_piece(&pieces, |ini, end| {
                        let mut run = Run { cps: &cps, flags: &flags, ini, end, prev: ini, out: &mut out };
                        match step {
                            Step::Gpt2 => run.gpt2(),
                            Step::Llama3 => run.llama3(3, false),
                            Step::Qwen2 => run.llama3(1, false),
                            Step::Qwen35 => run.llama3(1, true),
                            Step::DigitGroups => run.digit_groups(),
                            Step::Newlines => run.newlines(),
                            Step::Regex(_) => run.whole(),
                        }
                    });
                    out
                }
                Compiled::Regex { regex, collapsed: true } => {
                    let mapped = collapsed.get_or_insert_with(|| Mapped::new(&cps, &flags, true));
                    mapped.split(regex, &pieces)
                }
                Compiled::Regex { regex, collapsed: false } => {
                    let mapped = plain.get_or_insert_with(|| Mapped::new(&cps, &flags, false));
                    mapped.split(regex, &pieces)
                }
            };
        }
        let byte = |i: usize| chars.get(i).map_or(text.len(), |&(b, _)| b);
        let mut words = Vec::with_capacity(pieces.len());
        let mut at = 0;
        for len in pieces {
            words.extend(text.get(byte(at)..byte(at + len)));
            at += len;
        }
        words
    }
}

/// Calls `f(ini, end)` with the character range of each piece.
fn for_each_piece(pieces: &[usize], mut f: impl FnMut(usize, usize)) {
    let mut start = 0;
    for &len in pieces {
        f(start, start + len);
        start += len;
    }
}

/// The text as a regular expression sees it: collapsed (ASCII as is, other characters by
/// category) or plain (non-ASCII whitespace as `\v`), with the byte offset of each character.
struct Mapped {
    text: String,
    /// Byte offset in `text` of each character, and `text.len()` last.
    offsets: Vec<usize>,
}

impl Mapped {
    fn new(cps: &[char], flags: &[Flags], collapsed: bool) -> Self {
        let mut text = String::with_capacity(cps.len() * 2);
        let mut offsets = Vec::with_capacity(cps.len() + 1);
        for (&c, &f) in cps.iter().zip(flags) {
            offsets.push(text.len());
            text.push(if c.is_ascii() {
                c
            } else if f.whitespace() {
                '\u{b}'
            } else if collapsed {
                category_stand_in(f)
            } else {
                c
            });
        }
        offsets.push(text.len());
        Mapped { text, offsets }
    }

    /// The character index of byte offset `byte` (always a character boundary).
    fn index(&self, byte: usize) -> usize {
        self.offsets.partition_point(|&o| o < byte)
    }

    /// Each piece cut into the matches of `regex` and the text between them (llama.cpp's
    /// `unicode_regex_split_stl`).
    fn split(&self, regex: &Regex, pieces: &[usize]) -> Vec<usize> {
        let mut out = Vec::with_capacity(pieces.len());
        for_each_piece(pieces, |ini, end| {
            let (Some(&b0), Some(&b1)) = (self.offsets.get(ini), self.offsets.get(end)) else { return };
            let Some(haystack) = self.text.get(b0..b1) else { return };
            let mut last = ini;
            for found in regex.find_iter(haystack) {
                // A search past the backtracking limit leaves the rest of the piece whole.
                let Ok(found) = found else { break };
                let (start, stop) = (self.index(b0 + found.start()), self.index(b0 + found.end()));
                if start > last {
                    out.push(start - last);
                }
                out.push(stop - start);
                last = stop;
            }
            if end > last {
                out.push(end - last);
            }
        });
        out
    }
}

/// The splitters llama.cpp writes by hand, over the characters `ini..end` of one piece.
/// `prev` is where the last emitted piece ended; every branch emits up to the position it
/// moved to, so `prev == pos` at the top of each loop.
struct Run<'a> {
    cps: &'a [char],
    flags: &'a [Flags],
    ini: usize,
    end: usize,
    prev: usize,
    out: &'a mut Vec<usize>,
}

impl Run<'_> {
    /// The character at `pos`, `None` outside the piece.
    fn cpt(&self, pos: usize) -> Option<char> {
        if (self.ini..self.end).contains(&pos) { self.cps.get(pos).copied() } else { None }
    }

    /// The flags at `pos`, none (all clear) outside the piece.
    fn flags(&self, pos: usize) -> Flags {
        if (self.ini..self.end).contains(&pos) { self.flags.get(pos).copied().unwrap_or_default() } else { Flags(0) }
    }

    /// Ends a piece at `end` (an empty one is not kept).
    fn emit(&mut self, end: usize) {
        if end > self.prev {
            self.out.push(end - self.prev);
        }
        self.prev = end;
    }

    fn whole(&mut self) {
        self.emit(self.end);
    }

    /// The length of the English contraction (`'s`, `'t`, `'m`, `'d`, `'re`, `'ve`, `'ll`) at
    /// `pos`, its letters in either case when `any_case`.
    fn contraction(&self, pos: usize, any_case: bool) -> Option<usize> {
        if self.cpt(pos) != Some('\'') || pos + 1 >= self.end {
            return None;
        }
        let letter = |p: usize| self.cpt(p).map(|c| if any_case { c.to_ascii_lowercase() } else { c });
        let next = letter(pos + 1);
        if matches!(next, Some('s' | 't' | 'm' | 'd')) {
            return Some(2);
        }
        if pos + 2 < self.end
            && matches!(
                (next, letter(pos + 2)),
                (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l'))
            )
        {
            return Some(3);
        }
        None
    }

    /// GPT-2's pattern (see [`Step::Gpt2`]).
    fn gpt2(&mut self) {
        let mut pos = self.ini;
        while pos < self.end {
            let c = self.cpt(pos);
            let f = self.flags(pos);
            if let Some(n) = self.contraction(pos, false) {
                pos += n;
                self.emit(pos);
                continue;
            }
            let space = c == Some(' ');
            let mut f2 = if space { self.flags(pos + 1) } else { f };
            // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`
            let class: Option<fn(Flags) -> bool> = if f2.letter() {
                Some(Flags::letter)
            } else if f2.number() {
                Some(Flags::number)
            } else if !(f2.whitespace() || f2.letter() || f2.number()) && f2.any() {
                Some(|g: Flags| !(g.whitespace() || g.letter() || g.number()) && g.any())
            } else {
                None
            };
            if let Some(class) = class {
                pos += usize::from(space);
                while class(f2) {
                    pos += 1;
                    f2 = self.flags(pos);
                }
                self.emit(pos);
                continue;
            }
            pos = self.whitespace(pos, false);
        }
    }

    /// Llama 3's pattern with digit groups of `digits`, and combining marks counted as letters
    /// when `marks` (see [`Step::Llama3`], [`Step::Qwen2`], [`Step::Qwen35`]).
    fn llama3(&mut self, digits: usize, marks: bool) {
        let word = |g: Flags| g.letter() || (marks && g.mark());
        let other = |g: Flags| !(g.whitespace() || word(g) || g.number());
        let mut pos = self.ini;
        while pos < self.end {
            let c = self.cpt(pos);
            let f = self.flags(pos);
            if let Some(n) = self.contraction(pos, true) {
                pos += n;
                self.emit(pos);
                continue;
            }
            // `[^\r\n\p{L}\p{N}]?\p{L}+`: llama.cpp takes any one character that is not CR, LF
            // or a number before letters (a letter itself included).
            if !(c == Some('\r') || c == Some('\n') || f.number()) && (word(f) || word(self.flags(pos + 1))) {
                pos += 1;
                while word(self.flags(pos)) {
                    pos += 1;
                }
                self.emit(pos);
                continue;
            }
            // `\p{N}{1,3}` (or `\p{N}`)
            if f.number() {
                let mut group = pos;
                while self.flags(pos).number() {
                    pos += 1;
                    if pos - group >= digits {
                        self.emit(pos);
                        group = pos;
                    }
                }
                self.emit(pos);
                continue;
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*`: note that llama.cpp checks the character after a
            // space but requires the space itself to be in the piece, so a space at the very
            // end of a piece comes out alone here.
            let space = c == Some(' ');
            let mut f2 = if space { self.flags(pos + 1) } else { f };
            if other(f2) && f.any() {
                pos += usize::from(space);
                while other(f2) && f2.any() {
                    pos += 1;
                    f2 = self.flags(pos);
                }
                while matches!(self.cpt(pos), Some('\r' | '\n')) {
                    pos += 1;
                }
                self.emit(pos);
                continue;
            }
            pos = self.whitespace(pos, true);
        }
    }

    /// The whitespace alternatives at `pos`: `\s*[\r\n]+` (when `newlines`), `\s+(?!\S)`, `\s+`,
    /// else one character on its own. Returns where the piece it emits ends.
    fn whitespace(&mut self, pos: usize, newlines: bool) -> usize {
        let mut n = 0;
        let mut after_newline = None;
        while self.flags(pos + n).whitespace() {
            if newlines && matches!(self.cpt(pos + n), Some('\r' | '\n')) {
                after_newline = Some(pos + n + 1);
            }
            n += 1;
        }
        let next = match after_newline {
            Some(end) => end,
            // `\s+(?!\S)`: all but the last whitespace character when a character follows.
            None if n > 1 && self.cpt(pos + n).is_some() => pos + n - 1,
            None if n > 0 => pos + n,
            None => pos + 1,
        };
        self.emit(next);
        next
    }

    /// llama.cpp's digit grouping: a run of digits is cut into groups of three from the right.
    /// Whatever precedes a run since the last cut joins the run's first group, as in llama.cpp
    /// (the next step cuts it off again).
    fn digit_groups(&mut self) {
        let mut pos = self.ini;
        while pos < self.end {
            if !self.flags(pos).number() {
                pos += 1;
                continue;
            }
            let start = pos;
            while pos < self.end && self.flags(pos).number() {
                pos += 1;
            }
            let mut cut = start + (pos - start) % 3;
            if cut > start {
                self.emit(cut);
            }
            while cut < pos {
                cut += 3;
                self.emit(cut);
            }
        }
        self.emit(self.end);
    }

    /// Runs of newlines and runs of other characters.
    fn newlines(&mut self) {
        let mut pos = self.ini;
        while pos < self.end {
            let newline = self.cpt(pos) == Some('\n');
            while pos < self.end && (self.cpt(pos) == Some('\n')) == newline {
                pos += 1;
            }
            self.emit(pos);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Regular expressions: llama.cpp's category collapse, and ECMAScript syntax for fancy-regex.
// ---------------------------------------------------------------------------------------------

/// The category names llama.cpp collapses, with the category each stands for (`\p{Lu}` and
/// the other letter classes all stand for every letter).
const CATEGORY_NAMES: &[(&str, u8)] = &[
    ("\\p{N}", NUMBER),
    ("\\p{L}", LETTER),
    ("\\p{P}", PUNCTUATION),
    ("\\p{M}", MARK),
    ("\\p{S}", SYMBOL),
    ("\\p{Lu}", LETTER),
    ("\\p{Ll}", LETTER),
    ("\\p{Lt}", LETTER),
    ("\\p{Lm}", LETTER),
    ("\\p{Lo}", LETTER),
];

/// The character that stands for a non-ASCII, non-whitespace character of flags `f` in the
/// collapsed text: one per collapsed category (llama.cpp's bytes 0xD1 to 0xD5, here the
/// characters U+00D1 to U+00D5), and U+00D0 for the rest (separators, controls, unassigned).
fn category_stand_in(f: Flags) -> char {
    match f.category() {
        NUMBER => '\u{d1}',
        LETTER => '\u{d2}',
        PUNCTUATION => '\u{d3}',
        MARK => '\u{d4}',
        SYMBOL => '\u{d5}',
        _ => '\u{d0}',
    }
}

/// The ASCII characters of each collapsed category, written as llama.cpp writes them into a
/// class next to the category's stand-in.
fn category_ascii(category: u8) -> &'static str {
    match category {
        NUMBER => "0-9",
        LETTER => "A-Za-z",
        PUNCTUATION => "!-#%-*,-/:-;?-@\\[-\\]_\\{\\}",
        SYMBOL => "\\$\\+<->^`\\|\\~",
        _ => "",
    }
}

/// llama.cpp's collapsed form of an ASCII pattern: each known `\p{..}` becomes the class of
/// its stand-in and its ASCII characters (inside a class: just those, without brackets). A
/// `[` or `]` right after a backslash does not open or close a class, as in llama.cpp.
fn collapse_pattern(pattern: &[char]) -> Vec<char> {
    let mut out = Vec::with_capacity(pattern.len() * 2);
    let mut inside = false;
    let mut i = 0;
    while let Some(&c) = pattern.get(i) {
        let escaped = i > 0 && pattern.get(i - 1) == Some(&'\\');
        if c == '[' && !escaped {
            inside = true;
        } else if c == ']' && inside && !escaped {
            inside = false;
        } else if c == '\\'
            && pattern.get(i + 1) == Some(&'p')
            && pattern.get(i + 2) == Some(&'{')
            && i + 3 < pattern.len()
        {
            let close = (i + 3..pattern.len().min(i + 11)).find(|&j| pattern.get(j) == Some(&'}'));
            let name: Option<String> = close.map(|j| pattern.get(i..=j).unwrap_or_default().iter().collect());
            if let (Some(close), Some(&(_, category))) =
                (close, name.and_then(|n| CATEGORY_NAMES.iter().find(|(known, _)| *known == n)))
            {
                if !inside {
                    out.push('[');
                }
                out.push(category_stand_in(Flags(u16::from(category))));
                out.extend(category_ascii(category).chars());
                if !inside {
                    out.push(']');
                }
                i = close + 1;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// A llama.cpp pattern as a fancy-regex pattern, and whether it runs on the collapsed text.
/// Every literal becomes `\x{..}` (so nothing in a class can read as fancy-regex's class set
/// operations), groups do not capture, and `\s`, `\S`, `\d`, `\w` keep their `std::regex`
/// meaning in the C locale (ASCII only; non-ASCII whitespace reaches the engine as `\v`).
fn translate(pattern: &str) -> Result<(String, bool), String> {
    let collapsed = CATEGORY_NAMES.iter().any(|(name, _)| pattern.contains(name));
    let chars: Vec<char> = pattern.chars().collect();
    let chars = if collapsed {
        if !pattern.is_ascii() {
            return Err(format!("{pattern:?}: Unicode categories together with non-ASCII characters"));
        }
        collapse_pattern(&chars)
    } else {
        chars
    };
    let fail = |what: &str| format!("{pattern:?}: {what} is not supported");
    let mut out = String::with_capacity(chars.len() * 6);
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        i += 1;
        match c {
            '\\' => {
                let e = chars.get(i).copied().ok_or_else(|| fail("a trailing backslash"))?;
                i += 1;
                match e {
                    's' => out.push_str("[\\x{9}-\\x{D}\\x{20}]"),
                    'S' => out.push_str("[^\\x{9}-\\x{D}\\x{20}]"),
                    'd' => out.push_str("[\\x{30}-\\x{39}]"),
                    'D' => out.push_str("[^\\x{30}-\\x{39}]"),
                    'w' => out.push_str("[\\x{30}-\\x{39}\\x{41}-\\x{5A}\\x{5F}\\x{61}-\\x{7A}]"),
                    'W' => out.push_str("[^\\x{30}-\\x{39}\\x{41}-\\x{5A}\\x{5F}\\x{61}-\\x{7A}]"),
                    _ => push_literal(&mut out, escape_char(e, false).ok_or_else(|| fail(&format!("`\\{e}`")))?),
                }
            }
            '[' => {
                out.push('[');
                if chars.get(i) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                let mut items = 0;
                loop {
                    let (first, next) = class_atom(&chars, i).ok_or_else(|| fail("an unterminated class"))?;
                    i = next;
                    let Some(first) = first else { break };
                    items += 1;
                    match first {
                        ClassAtom::Char(lo) => {
                            let range_end = if chars.get(i) == Some(&'-') && chars.get(i + 1) != Some(&']') {
                                match class_atom(&chars, i + 1).ok_or_else(|| fail("an unterminated class"))? {
                                    (Some(ClassAtom::Char(hi)), next) => Some((hi, next)),
                                    _ => return Err(fail("a range ending in a class escape")),
                                }
                            } else {
                                None
                            };
                            push_literal(&mut out, lo);
                            if let Some((hi, next)) = range_end {
                                if hi < lo {
                                    return Err(fail("a reversed range"));
                                }
                                out.push('-');
                                push_literal(&mut out, hi);
                                i = next;
                            }
                        }
                        ClassAtom::Set(set) => out.push_str(set),
                    }
                }
                if items == 0 {
                    return Err(fail("an empty class"));
                }
                out.push(']');
            }
            '(' => {
                if chars.get(i) == Some(&'?') {
                    match chars.get(i + 1) {
                        Some(&k @ (':' | '=' | '!')) => {
                            out.push_str("(?");
                            out.push(k);
                            i += 2;
                        }
                        _ => return Err(fail("this group kind")),
                    }
                } else {
                    out.push_str("(?:");
                }
            }
            ')' | '|' | '*' | '+' | '?' | '^' | '$' => out.push(c),
            '{' => {
                let close = (i..chars.len()).find(|&j| chars.get(j) == Some(&'}')).ok_or_else(|| fail("a lone `{`"))?;
                let body: String = chars.get(i..close).unwrap_or_default().iter().collect();
                let valid = !body.is_empty()
                    && body.split(',').count() <= 2
                    && body.split(',').next().is_some_and(|n| !n.is_empty())
                    && body.chars().all(|c| c.is_ascii_digit() || c == ',');
                if !valid {
                    return Err(fail(&format!("the quantifier {{{body}}}")));
                }
                out.push('{');
                out.push_str(&body);
                out.push('}');
                i = close + 1;
            }
            '.' => out.push_str("[^\\x{A}\\x{D}\\x{2028}\\x{2029}]"),
            _ => push_literal(&mut out, c),
        }
    }
    Ok((out, collapsed))
}

enum ClassAtom {
    Char(char),
    /// A class escape (`\s`, `\d`, `\w`) as the ranges to put in the class.
    Set(&'static str),
}

/// The class item at `i`: `(None, after ])` at the closing bracket, `None` past the end.
fn class_atom(chars: &[char], i: usize) -> Option<(Option<ClassAtom>, usize)> {
    match *chars.get(i)? {
        ']' => Some((None, i + 1)),
        '\\' => {
            let e = *chars.get(i + 1)?;
            let atom = match e {
                's' => ClassAtom::Set("\\x{9}-\\x{D}\\x{20}"),
                'd' => ClassAtom::Set("\\x{30}-\\x{39}"),
                'w' => ClassAtom::Set("\\x{30}-\\x{39}\\x{41}-\\x{5A}\\x{5F}\\x{61}-\\x{7A}"),
                _ => ClassAtom::Char(escape_char(e, true)?),
            };
            Some((Some(atom), i + 2))
        }
        c => Some((Some(ClassAtom::Char(c)), i + 1)),
    }
}

/// The character an ECMAScript escape `\e` stands for (`\b` is a backspace only in a class);
/// `None` for escapes not supported here (negated class escapes in a class, word boundaries,
/// back-references, hex and control escapes, `\p` outside the collapsed categories).
fn escape_char(e: char, in_class: bool) -> Option<char> {
    Some(match e {
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'f' => '\u{c}',
        'v' => '\u{b}',
        '0' => '\0',
        'b' if in_class => '\u{8}',
        'b' | 'B' | 'S' | 'D' | 'W' | 'c' | 'x' | 'u' | 'p' | 'P' | 'k' => return None,
        d if d.is_ascii_digit() => return None,
        other => other,
    })
}

fn push_literal(out: &mut String, c: char) {
    out.push_str(&format!("\\x{{{:X}}}", c as u32));
}

// ---------------------------------------------------------------------------------------------
// GPT-2's byte encoding.
// ---------------------------------------------------------------------------------------------

/// GPT-2's stand-in for byte `b`: printable Latin-1 bytes (`!`..`~`, `¡`..`¬`, `®`..`ÿ`) stand
/// for themselves, the other 68 bytes, in order, for U+0100 onwards (a space is `Ġ`, U+0120).
fn byte_char(b: u8) -> char {
    let n = match b {
        0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF => return char::from(b),
        0x00..=0x20 => u32::from(b),
        0x7F..=0xA0 => 33 + u32::from(b - 0x7F),
        _ => 67, // 0xAD
    };
    char::from_u32(0x100 + n).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// The byte `c` stands for in GPT-2's encoding.
fn char_byte(c: char) -> Option<u8> {
    let u = c as u32;
    match u {
        0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF => u8::try_from(u).ok(),
        0x100..=0x120 => u8::try_from(u - 0x100).ok(),
        0x121..=0x142 => u8::try_from(u - 0x121 + 0x7F).ok(),
        0x143 => Some(0xAD),
        _ => None,
    }
}

/// `word`'s UTF-8 bytes in GPT-2's encoding.
fn byte_encode(word: &str) -> String {
    word.bytes().map(byte_char).collect()
}

/// The bytes a normal token stands for: its text with GPT-2's encoding undone. A character
/// outside the encoding comes out as llama.cpp writes it, `[UNK_BYTE_0x` + its UTF-8 bytes in
/// hex + the whole token text + `]`. Token text that is not UTF-8 is read as llama.cpp reads
/// it, each byte that does not start a well-formed sequence as U+FFFD.
pub(crate) fn decode_token(stored: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stored.len());
    for cp in llama_code_points(stored) {
        match char::from_u32(cp).and_then(char_byte) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                for b in code_point_utf8(cp) {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(stored);
                out.push(b']');
            }
        }
    }
    out
}

/// Code points as llama.cpp's `unicode_cpts_from_utf8` reads them: the length from the lead
/// byte, continuation bytes checked, nothing else (no overlong or surrogate checks); a byte
/// that does not start a well-formed sequence is U+FFFD.
fn llama_code_points(bytes: &[u8]) -> Vec<u32> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&lead) = bytes.get(i) {
        let (len, bits) = match lead {
            0x00..=0x7F => (1, u32::from(lead)),
            0xC0..=0xDF => (2, u32::from(lead & 0x1F)),
            0xE0..=0xEF => (3, u32::from(lead & 0x0F)),
            0xF0..=0xF7 => (4, u32::from(lead & 0x07)),
            _ => (0, 0),
        };
        let tail = bytes.get(i + 1..i + len.max(1)).filter(|t| len > 0 && t.iter().all(|&b| b & 0xC0 == 0x80));
        match tail {
            Some(tail) => {
                out.push(tail.iter().fold(bits, |cp, &b| (cp << 6) | u32::from(b & 0x3F)));
                i += len;
            }
            None => {
                out.push(0xFFFD);
                i += 1;
            }
        }
    }
    out
}

/// The UTF-8 bytes of code point `cp` (surrogates too, as llama.cpp writes them).
fn code_point_utf8(cp: u32) -> Vec<u8> {
    let b = |x: u32| (x & 0xFF) as u8;
    match cp {
        0..=0x7F => vec![b(cp)],
        0x80..=0x7FF => vec![b(0xC0 | (cp >> 6)), b(0x80 | (cp & 0x3F))],
        0x800..=0xFFFF => vec![b(0xE0 | (cp >> 12)), b(0x80 | ((cp >> 6) & 0x3F)), b(0x80 | (cp & 0x3F))],
        0x10000..=0x10FFFF => vec![
            b(0xF0 | (cp >> 18)),
            b(0x80 | ((cp >> 12) & 0x3F)),
            b(0x80 | ((cp >> 6) & 0x3F)),
            b(0x80 | (cp & 0x3F)),
        ],
        _ => "\u{fffd}".as_bytes().to_vec(),
    }
}

// ---------------------------------------------------------------------------------------------
// The merges.
// ---------------------------------------------------------------------------------------------

/// The byte-level BPE part of a vocabulary: the pre-tokenizer and the merges.
#[derive(Debug, Clone)]
pub(crate) struct Bpe {
    pre: PreTokenizer,
    /// (left, right) symbol → (rank, merged symbol). A symbol is a string: a token's id for
    /// the text of a token, an id from the number of tokens on for other strings that merges
    /// name.
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// The symbol of each byte's stand-in character.
    byte_symbols: [u32; 256],
    /// The token whose text is exactly that one byte (for bytes from 0x80 on, a token that is
    /// not UTF-8).
    byte_tokens: [Option<u32>; 256],
    tokens: u32,
}

impl Bpe {
    /// The merges of `merges` ("left right" lines, in rank order) over the tokens `ids` (text
    /// → id, of `tokens` tokens), `byte_tokens` being the tokens of single bytes.
    pub(crate) fn new(
        pre: PreTokenizer,
        merges: &[&[u8]],
        ids: &HashMap<String, u32>,
        tokens: u32,
        byte_tokens: [Option<u32>; 256],
    ) -> Self {
        let mut others: HashMap<String, u32> = HashMap::new();
        let mut symbol = |s: &str| match ids.get(s) {
            Some(&id) => id,
            None => {
                let next = tokens.saturating_add(u32::try_from(others.len()).unwrap_or(u32::MAX));
                *others.entry(s.to_string()).or_insert(next)
            }
        };
        let mut table = HashMap::with_capacity(merges.len());
        let mut joined = String::new();
        for (rank, line) in merges.iter().enumerate() {
            // Split at the first space after the first byte, as llama.cpp does.
            let Some(at) = line.iter().skip(1).position(|&b| b == b' ').map(|p| p + 1) else { continue };
            let (Some(left), Some(right)) = (line.get(..at), line.get(at + 1..)) else { continue };
            let (Ok(left), Ok(right)) = (std::str::from_utf8(left), std::str::from_utf8(right)) else { continue };
            let (l, r) = (symbol(left), symbol(right));
            joined.clear();
            joined.push_str(left);
            joined.push_str(right);
            let merged = symbol(&joined);
            table.entry((l, r)).or_insert((u32::try_from(rank).unwrap_or(u32::MAX), merged));
        }
        let mut byte_symbols = [NO_SYMBOL; 256];
        for (b, slot) in (0..=255u8).zip(byte_symbols.iter_mut()) {
            *slot = symbol(byte_char(b).encode_utf8(&mut [0; 4]));
        }
        Bpe { pre, merges: table, byte_symbols, byte_tokens, tokens }
    }

    /// The pre-tokenizer's `tokenizer.ggml.pre` name.
    pub(crate) fn pre_name(&self) -> &str {
        self.pre.name()
    }

    /// Appends the tokens of `text` (plain text, no special tokens) to `out`.
    pub(crate) fn encode(&self, text: &str, ids: &HashMap<String, u32>, out: &mut Vec<u32>) {
        let mut symbols = Vec::new();
        let mut queue = BinaryHeap::new();
        for word in self.pre.split(text) {
            let encoded = byte_encode(word);
            if self.pre.ignore_merges
                && let Some(&id) = ids.get(&encoded)
            {
                out.push(id);
                continue;
            }
            self.merge(&encoded, &mut symbols, &mut queue, out);
        }
    }

    /// The lowest-ranked merge first, the leftmost among equal ranks (llama.cpp's queue
    /// order), until no adjacent pair has a merge; then each symbol as its token, or byte by
    /// byte.
    fn merge(
        &self,
        word: &str,
        symbols: &mut Vec<Symbol>,
        queue: &mut BinaryHeap<Reverse<Candidate>>,
        out: &mut Vec<u32>,
    ) {
        symbols.clear();
        queue.clear();
        let count = word.chars().count();
        for (i, (start, c)) in word.char_indices().enumerate() {
            let symbol = char_byte(c).and_then(|b| self.byte_symbols.get(usize::from(b)).copied()).unwrap_or(NO_SYMBOL);
            symbols.push(Symbol {
                start,
                len: c.len_utf8(),
                symbol,
                prev: i.checked_sub(1),
                next: Some(i + 1).filter(|&n| n < count),
            });
        }
        for i in 1..symbols.len() {
            self.candidate(symbols, i - 1, i, queue);
        }
        while let Some(Reverse(c)) = queue.pop() {
            let (Some(left), Some(right)) = (symbols.get(c.left).copied(), symbols.get(c.right).copied()) else {
                continue;
            };
            // Stale: a side was merged away or has grown since the pair was queued.
            if left.len == 0 || right.len == 0 || left.symbol != c.left_symbol || right.symbol != c.right_symbol {
                continue;
            }
            if let Some(l) = symbols.get_mut(c.left) {
                l.len += right.len;
                l.symbol = c.merged;
                l.next = right.next;
            }
            if let Some(r) = symbols.get_mut(c.right) {
                r.len = 0;
            }
            if let Some(n) = right.next.and_then(|n| symbols.get_mut(n)) {
                n.prev = Some(c.left);
            }
            if let Some(p) = left.prev {
                self.candidate(symbols, p, c.left, queue);
            }
            if let Some(n) = right.next {
                self.candidate(symbols, c.left, n, queue);
            }
        }
        let mut at = if symbols.is_empty() { None } else { Some(0) };
        while let Some(s) = at.and_then(|i| symbols.get(i)) {
            if s.symbol < self.tokens {
                out.push(s.symbol);
            } else {
                let bytes = word.as_bytes().get(s.start..s.start + s.len).unwrap_or_default();
                out.extend(bytes.iter().filter_map(|&b| self.byte_tokens.get(usize::from(b)).copied().flatten()));
            }
            at = s.next;
        }
    }

    fn candidate(&self, symbols: &[Symbol], left: usize, right: usize, queue: &mut BinaryHeap<Reverse<Candidate>>) {
        let (Some(l), Some(r)) = (symbols.get(left), symbols.get(right)) else { return };
        if let Some(&(rank, merged)) = self.merges.get(&(l.symbol, r.symbol)) {
            queue.push(Reverse(Candidate { rank, left, right, left_symbol: l.symbol, right_symbol: r.symbol, merged }));
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    symbol: u32,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A queued merge; ordered by rank, then position (fields in that order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    rank: u32,
    left: usize,
    right: usize,
    left_symbol: u32,
    right_symbol: u32,
    merged: u32,
}

// ---------------------------------------------------------------------------------------------
// llama.cpp's Unicode categories.
// ---------------------------------------------------------------------------------------------

/// A character's categories as llama.cpp's `unicode_cpt_flags`: one category bit, and
/// [`WHITESPACE`]. All clear only outside a piece (every code point has a category).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Flags(u16);

const UNDEFINED: u8 = 0x01;
const NUMBER: u8 = 0x02;
const LETTER: u8 = 0x04;
const SEPARATOR: u8 = 0x08;
const MARK: u8 = 0x10;
const PUNCTUATION: u8 = 0x20;
const SYMBOL: u8 = 0x40;
const CONTROL: u8 = 0x80;
const WHITESPACE: u16 = 0x100;

impl Flags {
    fn category(self) -> u8 {
        (self.0 & 0xFF) as u8
    }
    fn letter(self) -> bool {
        self.category() & LETTER != 0
    }
    fn number(self) -> bool {
        self.category() & NUMBER != 0
    }
    fn mark(self) -> bool {
        self.category() & MARK != 0
    }
    fn whitespace(self) -> bool {
        self.0 & WHITESPACE != 0
    }
    fn any(self) -> bool {
        self.0 != 0
    }
}

/// llama.cpp's flags of `c`: its category from [`CATEGORY_RANGES`], and whitespace for the 25
/// characters with Unicode's White_Space property (llama.cpp's `unicode_set_whitespace`).
fn flags_of(c: char) -> Flags {
    let cp = c as u32;
    let at = CATEGORY_RANGES.partition_point(|&(start, _)| start <= cp);
    let category = at.checked_sub(1).and_then(|i| CATEGORY_RANGES.get(i)).map_or(UNDEFINED, |&(_, f)| f);
    let white = matches!(
        cp,
        0x09..=0x0D | 0x20 | 0x85 | 0xA0 | 0x1680 | 0x2000..=0x200A | 0x2028 | 0x2029 | 0x202F | 0x205F | 0x3000
    );
    Flags(u16::from(category) | if white { WHITESPACE } else { 0 })
}

use table::CATEGORY_RANGES;

/// The category of every code point as ranges (first code point, category; each range runs to
/// the next one's start), from llama.cpp's `unicode-data.cpp` (`unicode_ranges_flags`, which
/// its `scripts/gen-unicode-data.py` generates from UnicodeData.txt): the data that decides
/// what llama.cpp's pre-tokenizers count as a letter, a number, and so on.
mod table {
    use super::{
        CONTROL as C, LETTER as L, MARK as M, NUMBER as N, PUNCTUATION as P, SEPARATOR as Z, SYMBOL as S,
        UNDEFINED as U,
    };

    #[rustfmt::skip]
    pub(super) static CATEGORY_RANGES: [(u32, u8); 2272] = [
        (0x0, C), (0x20, Z), (0x21, P), (0x24, S), (0x25, P), (0x2B, S), (0x2C, P), (0x30, N), (0x3A, P), (0x3C, S),
        (0x3F, P), (0x41, L), (0x5B, P), (0x5E, S), (0x5F, P), (0x60, S), (0x61, L), (0x7B, P), (0x7C, S),
        (0x7D, P), (0x7E, S), (0x7F, C), (0xA0, Z), (0xA1, P), (0xA2, S), (0xA7, P), (0xA8, S), (0xAA, L),
        (0xAB, P), (0xAC, S), (0xAD, C), (0xAE, S), (0xB2, N), (0xB4, S), (0xB5, L), (0xB6, P), (0xB8, S),
        (0xB9, N), (0xBA, L), (0xBB, P), (0xBC, N), (0xBF, P), (0xC0, L), (0xD7, S), (0xD8, L), (0xF7, S),
        (0xF8, L), (0x2C2, S), (0x2C6, L), (0x2D2, S), (0x2E0, L), (0x2E5, S), (0x2EC, L), (0x2ED, S), (0x2EE, L),
        (0x2EF, S), (0x300, M), (0x370, L), (0x375, S), (0x376, L), (0x378, U), (0x37A, L), (0x37E, P), (0x37F, L),
        (0x380, U), (0x384, S), (0x386, L), (0x387, P), (0x388, L), (0x38B, U), (0x38C, L), (0x38D, U), (0x38E, L),
        (0x3A2, U), (0x3A3, L), (0x3F6, S), (0x3F7, L), (0x482, S), (0x483, M), (0x48A, L), (0x530, U), (0x531, L),
        (0x557, U), (0x559, L), (0x55A, P), (0x560, L), (0x589, P), (0x58B, U), (0x58D, S), (0x590, U), (0x591, M),
        (0x5BE, P), (0x5BF, M), (0x5C0, P), (0x5C1, M), (0x5C3, P), (0x5C4, M), (0x5C6, P), (0x5C7, M), (0x5C8, U),
        (0x5D0, L), (0x5EB, U), (0x5EF, L), (0x5F3, P), (0x5F5, U), (0x600, C), (0x606, S), (0x609, P), (0x60B, S),
        (0x60C, P), (0x60E, S), (0x610, M), (0x61B, P), (0x61C, C), (0x61D, P), (0x620, L), (0x64B, M), (0x660, N),
        (0x66A, P), (0x66E, L), (0x670, M), (0x671, L), (0x6D4, P), (0x6D5, L), (0x6D6, M), (0x6DD, C), (0x6DE, S),
        (0x6DF, M), (0x6E5, L), (0x6E7, M), (0x6E9, S), (0x6EA, M), (0x6EE, L), (0x6F0, N), (0x6FA, L), (0x6FD, S),
        (0x6FF, L), (0x700, P), (0x70E, U), (0x70F, C), (0x710, L), (0x711, M), (0x712, L), (0x730, M), (0x74B, U),
        (0x74D, L), (0x7A6, M), (0x7B1, L), (0x7B2, U), (0x7C0, N), (0x7CA, L), (0x7EB, M), (0x7F4, L), (0x7F6, S),
        (0x7F7, P), (0x7FA, L), (0x7FB, U), (0x7FD, M), (0x7FE, S), (0x800, L), (0x816, M), (0x81A, L), (0x81B, M),
        (0x824, L), (0x825, M), (0x828, L), (0x829, M), (0x82E, U), (0x830, P), (0x83F, U), (0x840, L), (0x859, M),
        (0x85C, U), (0x85E, P), (0x85F, U), (0x860, L), (0x86B, U), (0x870, L), (0x888, S), (0x889, L), (0x88F, U),
        (0x890, C), (0x892, U), (0x898, M), (0x8A0, L), (0x8CA, M), (0x8E2, C), (0x8E3, M), (0x904, L), (0x93A, M),
        (0x93D, L), (0x93E, M), (0x950, L), (0x951, M), (0x958, L), (0x962, M), (0x964, P), (0x966, N), (0x970, P),
        (0x971, L), (0x981, M), (0x984, U), (0x985, L), (0x98D, U), (0x98F, L), (0x991, U), (0x993, L), (0x9A9, U),
        (0x9AA, L), (0x9B1, U), (0x9B2, L), (0x9B3, U), (0x9B6, L), (0x9BA, U), (0x9BC, M), (0x9BD, L), (0x9BE, M),
        (0x9C5, U), (0x9C7, M), (0x9C9, U), (0x9CB, M), (0x9CE, L), (0x9CF, U), (0x9D7, M), (0x9D8, U), (0x9DC, L),
        (0x9DE, U), (0x9DF, L), (0x9E2, M), (0x9E4, U), (0x9E6, N), (0x9F0, L), (0x9F2, S), (0x9F4, N), (0x9FA, S),
        (0x9FC, L), (0x9FD, P), (0x9FE, M), (0x9FF, U), (0xA01, M), (0xA04, U), (0xA05, L), (0xA0B, U), (0xA0F, L),
        (0xA11, U), (0xA13, L), (0xA29, U), (0xA2A, L), (0xA31, U), (0xA32, L), (0xA34, U), (0xA35, L), (0xA37, U),
        (0xA38, L), (0xA3A, U), (0xA3C, M), (0xA3D, U), (0xA3E, M), (0xA43, U), (0xA47, M), (0xA49, U), (0xA4B, M),
        (0xA4E, U), (0xA51, M), (0xA52, U), (0xA59, L), (0xA5D, U), (0xA5E, L), (0xA5F, U), (0xA66, N), (0xA70, M),
        (0xA72, L), (0xA75, M), (0xA76, P), (0xA77, U), (0xA81, M), (0xA84, U), (0xA85, L), (0xA8E, U), (0xA8F, L),
        (0xA92, U), (0xA93, L), (0xAA9, U), (0xAAA, L), (0xAB1, U), (0xAB2, L), (0xAB4, U), (0xAB5, L), (0xABA, U),
        (0xABC, M), (0xABD, L), (0xABE, M), (0xAC6, U), (0xAC7, M), (0xACA, U), (0xACB, M), (0xACE, U), (0xAD0, L),
        (0xAD1, U), (0xAE0, L), (0xAE2, M), (0xAE4, U), (0xAE6, N), (0xAF0, P), (0xAF1, S), (0xAF2, U), (0xAF9, L),
        (0xAFA, M), (0xB00, U), (0xB01, M), (0xB04, U), (0xB05, L), (0xB0D, U), (0xB0F, L), (0xB11, U), (0xB13, L),
        (0xB29, U), (0xB2A, L), (0xB31, U), (0xB32, L), (0xB34, U), (0xB35, L), (0xB3A, U), (0xB3C, M), (0xB3D, L),
        (0xB3E, M), (0xB45, U), (0xB47, M), (0xB49, U), (0xB4B, M), (0xB4E, U), (0xB55, M), (0xB58, U), (0xB5C, L),
        (0xB5E, U), (0xB5F, L), (0xB62, M), (0xB64, U), (0xB66, N), (0xB70, S), (0xB71, L), (0xB72, N), (0xB78, U),
        (0xB82, M), (0xB83, L), (0xB84, U), (0xB85, L), (0xB8B, U), (0xB8E, L), (0xB91, U), (0xB92, L), (0xB96, U),
        (0xB99, L), (0xB9B, U), (0xB9C, L), (0xB9D, U), (0xB9E, L), (0xBA0, U), (0xBA3, L), (0xBA5, U), (0xBA8, L),
        (0xBAB, U), (0xBAE, L), (0xBBA, U), (0xBBE, M), (0xBC3, U), (0xBC6, M), (0xBC9, U), (0xBCA, M), (0xBCE, U),
        (0xBD0, L), (0xBD1, U), (0xBD7, M), (0xBD8, U), (0xBE6, N), (0xBF3, S), (0xBFB, U), (0xC00, M), (0xC05, L),
        (0xC0D, U), (0xC0E, L), (0xC11, U), (0xC12, L), (0xC29, U), (0xC2A, L), (0xC3A, U), (0xC3C, M), (0xC3D, L),
        (0xC3E, M), (0xC45, U), (0xC46, M), (0xC49, U), (0xC4A, M), (0xC4E, U), (0xC55, M), (0xC57, U), (0xC58, L),
        (0xC5B, U), (0xC5D, L), (0xC5E, U), (0xC60, L), (0xC62, M), (0xC64, U), (0xC66, N), (0xC70, U), (0xC77, P),
        (0xC78, N), (0xC7F, S), (0xC80, L), (0xC81, M), (0xC84, P), (0xC85, L), (0xC8D, U), (0xC8E, L), (0xC91, U),
        (0xC92, L), (0xCA9, U), (0xCAA, L), (0xCB4, U), (0xCB5, L), (0xCBA, U), (0xCBC, M), (0xCBD, L), (0xCBE, M),
        (0xCC5, U), (0xCC6, M), (0xCC9, U), (0xCCA, M), (0xCCE, U), (0xCD5, M), (0xCD7, U), (0xCDD, L), (0xCDF, U),
        (0xCE0, L), (0xCE2, M), (0xCE4, U), (0xCE6, N), (0xCF0, U), (0xCF1, L), (0xCF3, M), (0xCF4, U), (0xD00, M),
        (0xD04, L), (0xD0D, U), (0xD0E, L), (0xD11, U), (0xD12, L), (0xD3B, M), (0xD3D, L), (0xD3E, M), (0xD45, U),
        (0xD46, M), (0xD49, U), (0xD4A, M), (0xD4E, L), (0xD4F, S), (0xD50, U), (0xD54, L), (0xD57, M), (0xD58, N),
        (0xD5F, L), (0xD62, M), (0xD64, U), (0xD66, N), (0xD79, S), (0xD7A, L), (0xD80, U), (0xD81, M), (0xD84, U),
        (0xD85, L), (0xD97, U), (0xD9A, L), (0xDB2, U), (0xDB3, L), (0xDBC, U), (0xDBD, L), (0xDBE, U), (0xDC0, L),
        (0xDC7, U), (0xDCA, M), (0xDCB, U), (0xDCF, M), (0xDD5, U), (0xDD6, M), (0xDD7, U), (0xDD8, M), (0xDE0, U),
        (0xDE6, N), (0xDF0, U), (0xDF2, M), (0xDF4, P), (0xDF5, U), (0xE01, L), (0xE31, M), (0xE32, L), (0xE34, M),
        (0xE3B, U), (0xE3F, S), (0xE40, L), (0xE47, M), (0xE4F, P), (0xE50, N), (0xE5A, P), (0xE5C, U), (0xE81, L),
        (0xE83, U), (0xE84, L), (0xE85, U), (0xE86, L), (0xE8B, U), (0xE8C, L), (0xEA4, U), (0xEA5, L), (0xEA6, U),
        (0xEA7, L), (0xEB1, M), (0xEB2, L), (0xEB4, M), (0xEBD, L), (0xEBE, U), (0xEC0, L), (0xEC5, U), (0xEC6, L),
        (0xEC7, U), (0xEC8, M), (0xECF, U), (0xED0, N), (0xEDA, U), (0xEDC, L), (0xEE0, U), (0xF00, L), (0xF01, S),
        (0xF04, P), (0xF13, S), (0xF14, P), (0xF15, S), (0xF18, M), (0xF1A, S), (0xF20, N), (0xF34, S), (0xF35, M),
        (0xF36, S), (0xF37, M), (0xF38, S), (0xF39, M), (0xF3A, P), (0xF3E, M), (0xF40, L), (0xF48, U), (0xF49, L),
        (0xF6D, U), (0xF71, M), (0xF85, P), (0xF86, M), (0xF88, L), (0xF8D, M), (0xF98, U), (0xF99, M), (0xFBD, U),
        (0xFBE, S), (0xFC6, M), (0xFC7, S), (0xFCD, U), (0xFCE, S), (0xFD0, P), (0xFD5, S), (0xFD9, P), (0xFDB, U),
        (0x1000, L), (0x102B, M), (0x103F, L), (0x1040, N), (0x104A, P), (0x1050, L), (0x1056, M), (0x105A, L),
        (0x105E, M), (0x1061, L), (0x1062, M), (0x1065, L), (0x1067, M), (0x106E, L), (0x1071, M), (0x1075, L),
        (0x1082, M), (0x108E, L), (0x108F, M), (0x1090, N), (0x109A, M), (0x109E, S), (0x10A0, L), (0x10C6, U),
        (0x10C7, L), (0x10C8, U), (0x10CD, L), (0x10CE, U), (0x10D0, L), (0x10FB, P), (0x10FC, L), (0x1249, U),
        (0x124A, L), (0x124E, U), (0x1250, L), (0x1257, U), (0x1258, L), (0x1259, U), (0x125A, L), (0x125E, U),
        (0x1260, L), (0x1289, U), (0x128A, L), (0x128E, U), (0x1290, L), (0x12B1, U), (0x12B2, L), (0x12B6, U),
        (0x12B8, L), (0x12BF, U), (0x12C0, L), (0x12C1, U), (0x12C2, L), (0x12C6, U), (0x12C8, L), (0x12D7, U),
        (0x12D8, L), (0x1311, U), (0x1312, L), (0x1316, U), (0x1318, L), (0x135B, U), (0x135D, M), (0x1360, P),
        (0x1369, N), (0x137D, U), (0x1380, L), (0x1390, S), (0x139A, U), (0x13A0, L), (0x13F6, U), (0x13F8, L),
        (0x13FE, U), (0x1400, P), (0x1401, L), (0x166D, S), (0x166E, P), (0x166F, L), (0x1680, Z), (0x1681, L),
        (0x169B, P), (0x169D, U), (0x16A0, L), (0x16EB, P), (0x16EE, N), (0x16F1, L), (0x16F9, U), (0x1700, L),
        (0x1712, M), (0x1716, U), (0x171F, L), (0x1732, M), (0x1735, P), (0x1737, U), (0x1740, L), (0x1752, M),
        (0x1754, U), (0x1760, L), (0x176D, U), (0x176E, L), (0x1771, U), (0x1772, M), (0x1774, U), (0x1780, L),
        (0x17B4, M), (0x17D4, P), (0x17D7, L), (0x17D8, P), (0x17DB, S), (0x17DC, L), (0x17DD, M), (0x17DE, U),
        (0x17E0, N), (0x17EA, U), (0x17F0, N), (0x17FA, U), (0x1800, P), (0x180B, M), (0x180E, C), (0x180F, M),
        (0x1810, N), (0x181A, U), (0x1820, L), (0x1879, U), (0x1880, L), (0x1885, M), (0x1887, L), (0x18A9, M),
        (0x18AA, L), (0x18AB, U), (0x18B0, L), (0x18F6, U), (0x1900, L), (0x191F, U), (0x1920, M), (0x192C, U),
        (0x1930, M), (0x193C, U), (0x1940, S), (0x1941, U), (0x1944, P), (0x1946, N), (0x1950, L), (0x196E, U),
        (0x1970, L), (0x1975, U), (0x1980, L), (0x19AC, U), (0x19B0, L), (0x19CA, U), (0x19D0, N), (0x19DB, U),
        (0x19DE, S), (0x1A00, L), (0x1A17, M), (0x1A1C, U), (0x1A1E, P), (0x1A20, L), (0x1A55, M), (0x1A5F, U),
        (0x1A60, M), (0x1A7D, U), (0x1A7F, M), (0x1A80, N), (0x1A8A, U), (0x1A90, N), (0x1A9A, U), (0x1AA0, P),
        (0x1AA7, L), (0x1AA8, P), (0x1AAE, U), (0x1AB0, M), (0x1ACF, U), (0x1B00, M), (0x1B05, L), (0x1B34, M),
        (0x1B45, L), (0x1B4D, U), (0x1B50, N), (0x1B5A, P), (0x1B61, S), (0x1B6B, M), (0x1B74, S), (0x1B7D, P),
        (0x1B7F, U), (0x1B80, M), (0x1B83, L), (0x1BA1, M), (0x1BAE, L), (0x1BB0, N), (0x1BBA, L), (0x1BE6, M),
        (0x1BF4, U), (0x1BFC, P), (0x1C00, L), (0x1C24, M), (0x1C38, U), (0x1C3B, P), (0x1C40, N), (0x1C4A, U),
        (0x1C4D, L), (0x1C50, N), (0x1C5A, L), (0x1C7E, P), (0x1C80, L), (0x1C89, U), (0x1C90, L), (0x1CBB, U),
        (0x1CBD, L), (0x1CC0, P), (0x1CC8, U), (0x1CD0, M), (0x1CD3, P), (0x1CD4, M), (0x1CE9, L), (0x1CED, M),
        (0x1CEE, L), (0x1CF4, M), (0x1CF5, L), (0x1CF7, M), (0x1CFA, L), (0x1CFB, U), (0x1D00, L), (0x1DC0, M),
        (0x1E00, L), (0x1F16, U), (0x1F18, L), (0x1F1E, U), (0x1F20, L), (0x1F46, U), (0x1F48, L), (0x1F4E, U),
        (0x1F50, L), (0x1F58, U), (0x1F59, L), (0x1F5A, U), (0x1F5B, L), (0x1F5C, U), (0x1F5D, L), (0x1F5E, U),
        (0x1F5F, L), (0x1F7E, U), (0x1F80, L), (0x1FB5, U), (0x1FB6, L), (0x1FBD, S), (0x1FBE, L), (0x1FBF, S),
        (0x1FC2, L), (0x1FC5, U), (0x1FC6, L), (0x1FCD, S), (0x1FD0, L), (0x1FD4, U), (0x1FD6, L), (0x1FDC, U),
        (0x1FDD, S), (0x1FE0, L), (0x1FED, S), (0x1FF0, U), (0x1FF2, L), (0x1FF5, U), (0x1FF6, L), (0x1FFD, S),
        (0x1FFF, U), (0x2000, Z), (0x200B, C), (0x2010, P), (0x2028, Z), (0x202A, C), (0x202F, Z), (0x2030, P),
        (0x2044, S), (0x2045, P), (0x2052, S), (0x2053, P), (0x205F, Z), (0x2060, C), (0x2065, U), (0x2066, C),
        (0x2070, N), (0x2071, L), (0x2072, U), (0x2074, N), (0x207A, S), (0x207D, P), (0x207F, L), (0x2080, N),
        (0x208A, S), (0x208D, P), (0x208F, U), (0x2090, L), (0x209D, U), (0x20A0, S), (0x20C1, U), (0x20D0, M),
        (0x20F1, U), (0x2100, S), (0x2102, L), (0x2103, S), (0x2107, L), (0x2108, S), (0x210A, L), (0x2114, S),
        (0x2115, L), (0x2116, S), (0x2119, L), (0x211E, S), (0x2124, L), (0x2125, S), (0x2126, L), (0x2127, S),
        (0x2128, L), (0x2129, S), (0x212A, L), (0x212E, S), (0x212F, L), (0x213A, S), (0x213C, L), (0x2140, S),
        (0x2145, L), (0x214A, S), (0x214E, L), (0x214F, S), (0x2150, N), (0x2183, L), (0x2185, N), (0x218A, S),
        (0x218C, U), (0x2190, S), (0x2308, P), (0x230C, S), (0x2329, P), (0x232B, S), (0x2427, U), (0x2440, S),
        (0x244B, U), (0x2460, N), (0x249C, S), (0x24EA, N), (0x2500, S), (0x2768, P), (0x2776, N), (0x2794, S),
        (0x27C5, P), (0x27C7, S), (0x27E6, P), (0x27F0, S), (0x2983, P), (0x2999, S), (0x29D8, P), (0x29DC, S),
        (0x29FC, P), (0x29FE, S), (0x2B74, U), (0x2B76, S), (0x2B96, U), (0x2B97, S), (0x2C00, L), (0x2CE5, S),
        (0x2CEB, L), (0x2CEF, M), (0x2CF2, L), (0x2CF4, U), (0x2CF9, P), (0x2CFD, N), (0x2CFE, P), (0x2D00, L),
        (0x2D26, U), (0x2D27, L), (0x2D28, U), (0x2D2D, L), (0x2D2E, U), (0x2D30, L), (0x2D68, U), (0x2D6F, L),
        (0x2D70, P), (0x2D71, U), (0x2D7F, M), (0x2D80, L), (0x2D97, U), (0x2DA0, L), (0x2DA7, U), (0x2DA8, L),
        (0x2DAF, U), (0x2DB0, L), (0x2DB7, U), (0x2DB8, L), (0x2DBF, U), (0x2DC0, L), (0x2DC7, U), (0x2DC8, L),
        (0x2DCF, U), (0x2DD0, L), (0x2DD7, U), (0x2DD8, L), (0x2DDF, U), (0x2DE0, M), (0x2E00, P), (0x2E2F, L),
        (0x2E30, P), (0x2E50, S), (0x2E52, P), (0x2E5E, U), (0x2E80, S), (0x2E9A, U), (0x2E9B, S), (0x2EF4, U),
        (0x2F00, S), (0x2FD6, U), (0x2FF0, S), (0x3000, Z), (0x3001, P), (0x3004, S), (0x3005, L), (0x3007, N),
        (0x3008, P), (0x3012, S), (0x3014, P), (0x3020, S), (0x3021, N), (0x302A, M), (0x3030, P), (0x3031, L),
        (0x3036, S), (0x3038, N), (0x303B, L), (0x303D, P), (0x303E, S), (0x3040, U), (0x3041, L), (0x3097, U),
        (0x3099, M), (0x309B, S), (0x309D, L), (0x30A0, P), (0x30A1, L), (0x30FB, P), (0x30FC, L), (0x3100, U),
        (0x3105, L), (0x3130, U), (0x3131, L), (0x318F, U), (0x3190, S), (0x3192, N), (0x3196, S), (0x31A0, L),
        (0x31C0, S), (0x31E4, U), (0x31EF, S), (0x31F0, L), (0x3200, S), (0x321F, U), (0x3220, N), (0x322A, S),
        (0x3248, N), (0x3250, S), (0x3251, N), (0x3260, S), (0x3280, N), (0x328A, S), (0x32B1, N), (0x32C0, S),
        (0x3400, L), (0x4DC0, S), (0x4E00, L), (0xA48D, U), (0xA490, S), (0xA4C7, U), (0xA4D0, L), (0xA4FE, P),
        (0xA500, L), (0xA60D, P), (0xA610, L), (0xA620, N), (0xA62A, L), (0xA62C, U), (0xA640, L), (0xA66F, M),
        (0xA673, P), (0xA674, M), (0xA67E, P), (0xA67F, L), (0xA69E, M), (0xA6A0, L), (0xA6E6, N), (0xA6F0, M),
        (0xA6F2, P), (0xA6F8, U), (0xA700, S), (0xA717, L), (0xA720, S), (0xA722, L), (0xA789, S), (0xA78B, L),
        (0xA7CB, U), (0xA7D0, L), (0xA7D2, U), (0xA7D3, L), (0xA7D4, U), (0xA7D5, L), (0xA7DA, U), (0xA7F2, L),
        (0xA802, M), (0xA803, L), (0xA806, M), (0xA807, L), (0xA80B, M), (0xA80C, L), (0xA823, M), (0xA828, S),
        (0xA82C, M), (0xA82D, U), (0xA830, N), (0xA836, S), (0xA83A, U), (0xA840, L), (0xA874, P), (0xA878, U),
        (0xA880, M), (0xA882, L), (0xA8B4, M), (0xA8C6, U), (0xA8CE, P), (0xA8D0, N), (0xA8DA, U), (0xA8E0, M),
        (0xA8F2, L), (0xA8F8, P), (0xA8FB, L), (0xA8FC, P), (0xA8FD, L), (0xA8FF, M), (0xA900, N), (0xA90A, L),
        (0xA926, M), (0xA92E, P), (0xA930, L), (0xA947, M), (0xA954, U), (0xA95F, P), (0xA960, L), (0xA97D, U),
        (0xA980, M), (0xA984, L), (0xA9B3, M), (0xA9C1, P), (0xA9CE, U), (0xA9CF, L), (0xA9D0, N), (0xA9DA, U),
        (0xA9DE, P), (0xA9E0, L), (0xA9E5, M), (0xA9E6, L), (0xA9F0, N), (0xA9FA, L), (0xA9FF, U), (0xAA00, L),
        (0xAA29, M), (0xAA37, U), (0xAA40, L), (0xAA43, M), (0xAA44, L), (0xAA4C, M), (0xAA4E, U), (0xAA50, N),
        (0xAA5A, U), (0xAA5C, P), (0xAA60, L), (0xAA77, S), (0xAA7A, L), (0xAA7B, M), (0xAA7E, L), (0xAAB0, M),
        (0xAAB1, L), (0xAAB2, M), (0xAAB5, L), (0xAAB7, M), (0xAAB9, L), (0xAABE, M), (0xAAC0, L), (0xAAC1, M),
        (0xAAC2, L), (0xAAC3, U), (0xAADB, L), (0xAADE, P), (0xAAE0, L), (0xAAEB, M), (0xAAF0, P), (0xAAF2, L),
        (0xAAF5, M), (0xAAF7, U), (0xAB01, L), (0xAB07, U), (0xAB09, L), (0xAB0F, U), (0xAB11, L), (0xAB17, U),
        (0xAB20, L), (0xAB27, U), (0xAB28, L), (0xAB2F, U), (0xAB30, L), (0xAB5B, S), (0xAB5C, L), (0xAB6A, S),
        (0xAB6C, U), (0xAB70, L), (0xABE3, M), (0xABEB, P), (0xABEC, M), (0xABEE, U), (0xABF0, N), (0xABFA, U),
        (0xAC00, L), (0xD7A4, U), (0xD7B0, L), (0xD7C7, U), (0xD7CB, L), (0xD7FC, U), (0xD800, C), (0xF900, L),
        (0xFA6E, U), (0xFA70, L), (0xFADA, U), (0xFB00, L), (0xFB07, U), (0xFB13, L), (0xFB18, U), (0xFB1D, L),
        (0xFB1E, M), (0xFB1F, L), (0xFB29, S), (0xFB2A, L), (0xFB37, U), (0xFB38, L), (0xFB3D, U), (0xFB3E, L),
        (0xFB3F, U), (0xFB40, L), (0xFB42, U), (0xFB43, L), (0xFB45, U), (0xFB46, L), (0xFBB2, S), (0xFBC3, U),
        (0xFBD3, L), (0xFD3E, P), (0xFD40, S), (0xFD50, L), (0xFD90, U), (0xFD92, L), (0xFDC8, U), (0xFDCF, S),
        (0xFDD0, U), (0xFDF0, L), (0xFDFC, S), (0xFE00, M), (0xFE10, P), (0xFE1A, U), (0xFE20, M), (0xFE30, P),
        (0xFE53, U), (0xFE54, P), (0xFE62, S), (0xFE63, P), (0xFE64, S), (0xFE67, U), (0xFE68, P), (0xFE69, S),
        (0xFE6A, P), (0xFE6C, U), (0xFE70, L), (0xFE75, U), (0xFE76, L), (0xFEFD, U), (0xFEFF, C), (0xFF00, U),
        (0xFF01, P), (0xFF04, S), (0xFF05, P), (0xFF0B, S), (0xFF0C, P), (0xFF10, N), (0xFF1A, P), (0xFF1C, S),
        (0xFF1F, P), (0xFF21, L), (0xFF3B, P), (0xFF3E, S), (0xFF3F, P), (0xFF40, S), (0xFF41, L), (0xFF5B, P),
        (0xFF5C, S), (0xFF5D, P), (0xFF5E, S), (0xFF5F, P), (0xFF66, L), (0xFFBF, U), (0xFFC2, L), (0xFFC8, U),
        (0xFFCA, L), (0xFFD0, U), (0xFFD2, L), (0xFFD8, U), (0xFFDA, L), (0xFFDD, U), (0xFFE0, S), (0xFFE7, U),
        (0xFFE8, S), (0xFFEF, U), (0xFFF9, C), (0xFFFC, S), (0xFFFE, U), (0x10000, L), (0x1000C, U), (0x1000D, L),
        (0x10027, U), (0x10028, L), (0x1003B, U), (0x1003C, L), (0x1003E, U), (0x1003F, L), (0x1004E, U),
        (0x10050, L), (0x1005E, U), (0x10080, L), (0x100FB, U), (0x10100, P), (0x10103, U), (0x10107, N),
        (0x10134, U), (0x10137, S), (0x10140, N), (0x10179, S), (0x1018A, N), (0x1018C, S), (0x1018F, U),
        (0x10190, S), (0x1019D, U), (0x101A0, S), (0x101A1, U), (0x101D0, S), (0x101FD, M), (0x101FE, U),
        (0x10280, L), (0x1029D, U), (0x102A0, L), (0x102D1, U), (0x102E0, M), (0x102E1, N), (0x102FC, U),
        (0x10300, L), (0x10320, N), (0x10324, U), (0x1032D, L), (0x10341, N), (0x10342, L), (0x1034A, N),
        (0x1034B, U), (0x10350, L), (0x10376, M), (0x1037B, U), (0x10380, L), (0x1039E, U), (0x1039F, P),
        (0x103A0, L), (0x103C4, U), (0x103C8, L), (0x103D0, P), (0x103D1, N), (0x103D6, U), (0x10400, L),
        (0x1049E, U), (0x104A0, N), (0x104AA, U), (0x104B0, L), (0x104D4, U), (0x104D8, L), (0x104FC, U),
        (0x10500, L), (0x10528, U), (0x10530, L), (0x10564, U), (0x1056F, P), (0x10570, L), (0x1057B, U),
        (0x1057C, L), (0x1058B, U), (0x1058C, L), (0x10593, U), (0x10594, L), (0x10596, U), (0x10597, L),
        (0x105A2, U), (0x105A3, L), (0x105B2, U), (0x105B3, L), (0x105BA, U), (0x105BB, L), (0x105BD, U),
        (0x10600, L), (0x10737, U), (0x10740, L), (0x10756, U), (0x10760, L), (0x10768, U), (0x10780, L),
        (0x10786, U), (0x10787, L), (0x107B1, U), (0x107B2, L), (0x107BB, U), (0x10800, L), (0x10806, U),
        (0x10808, L), (0x10809, U), (0x1080A, L), (0x10836, U), (0x10837, L), (0x10839, U), (0x1083C, L),
        (0x1083D, U), (0x1083F, L), (0x10856, U), (0x10857, P), (0x10858, N), (0x10860, L), (0x10877, S),
        (0x10879, N), (0x10880, L), (0x1089F, U), (0x108A7, N), (0x108B0, U), (0x108E0, L), (0x108F3, U),
        (0x108F4, L), (0x108F6, U), (0x108FB, N), (0x10900, L), (0x10916, N), (0x1091C, U), (0x1091F, P),
        (0x10920, L), (0x1093A, U), (0x1093F, P), (0x10940, U), (0x10980, L), (0x109B8, U), (0x109BC, N),
        (0x109BE, L), (0x109C0, N), (0x109D0, U), (0x109D2, N), (0x10A00, L), (0x10A01, M), (0x10A04, U),
        (0x10A05, M), (0x10A07, U), (0x10A0C, M), (0x10A10, L), (0x10A14, U), (0x10A15, L), (0x10A18, U),
        (0x10A19, L), (0x10A36, U), (0x10A38, M), (0x10A3B, U), (0x10A3F, M), (0x10A40, N), (0x10A49, U),
        (0x10A50, P), (0x10A59, U), (0x10A60, L), (0x10A7D, N), (0x10A7F, P), (0x10A80, L), (0x10A9D, N),
        (0x10AA0, U), (0x10AC0, L), (0x10AC8, S), (0x10AC9, L), (0x10AE5, M), (0x10AE7, U), (0x10AEB, N),
        (0x10AF0, P), (0x10AF7, U), (0x10B00, L), (0x10B36, U), (0x10B39, P), (0x10B40, L), (0x10B56, U),
        (0x10B58, N), (0x10B60, L), (0x10B73, U), (0x10B78, N), (0x10B80, L), (0x10B92, U), (0x10B99, P),
        (0x10B9D, U), (0x10BA9, N), (0x10BB0, U), (0x10C00, L), (0x10C49, U), (0x10C80, L), (0x10CB3, U),
        (0x10CC0, L), (0x10CF3, U), (0x10CFA, N), (0x10D00, L), (0x10D24, M), (0x10D28, U), (0x10D30, N),
        (0x10D3A, U), (0x10E60, N), (0x10E7F, U), (0x10E80, L), (0x10EAA, U), (0x10EAB, M), (0x10EAD, P),
        (0x10EAE, U), (0x10EB0, L), (0x10EB2, U), (0x10EFD, M), (0x10F00, L), (0x10F1D, N), (0x10F27, L),
        (0x10F28, U), (0x10F30, L), (0x10F46, M), (0x10F51, N), (0x10F55, P), (0x10F5A, U), (0x10F70, L),
        (0x10F82, M), (0x10F86, P), (0x10F8A, U), (0x10FB0, L), (0x10FC5, N), (0x10FCC, U), (0x10FE0, L),
        (0x10FF7, U), (0x11000, M), (0x11003, L), (0x11038, M), (0x11047, P), (0x1104E, U), (0x11052, N),
        (0x11070, M), (0x11071, L), (0x11073, M), (0x11075, L), (0x11076, U), (0x1107F, M), (0x11083, L),
        (0x110B0, M), (0x110BB, P), (0x110BD, C), (0x110BE, P), (0x110C2, M), (0x110C3, U), (0x110CD, C),
        (0x110CE, U), (0x110D0, L), (0x110E9, U), (0x110F0, N), (0x110FA, U), (0x11100, M), (0x11103, L),
        (0x11127, M), (0x11135, U), (0x11136, N), (0x11140, P), (0x11144, L), (0x11145, M), (0x11147, L),
        (0x11148, U), (0x11150, L), (0x11173, M), (0x11174, P), (0x11176, L), (0x11177, U), (0x11180, M),
        (0x11183, L), (0x111B3, M), (0x111C1, L), (0x111C5, P), (0x111C9, M), (0x111CD, P), (0x111CE, M),
        (0x111D0, N), (0x111DA, L), (0x111DB, P), (0x111DC, L), (0x111DD, P), (0x111E0, U), (0x111E1, N),
        (0x111F5, U), (0x11200, L), (0x11212, U), (0x11213, L), (0x1122C, M), (0x11238, P), (0x1123E, M),
        (0x1123F, L), (0x11241, M), (0x11242, U), (0x11280, L), (0x11287, U), (0x11288, L), (0x11289, U),
        (0x1128A, L), (0x1128E, U), (0x1128F, L), (0x1129E, U), (0x1129F, L), (0x112A9, P), (0x112AA, U),
        (0x112B0, L), (0x112DF, M), (0x112EB, U), (0x112F0, N), (0x112FA, U), (0x11300, M), (0x11304, U),
        (0x11305, L), (0x1130D, U), (0x1130F, L), (0x11311, U), (0x11313, L), (0x11329, U), (0x1132A, L),
        (0x11331, U), (0x11332, L), (0x11334, U), (0x11335, L), (0x1133A, U), (0x1133B, M), (0x1133D, L),
        (0x1133E, M), (0x11345, U), (0x11347, M), (0x11349, U), (0x1134B, M), (0x1134E, U), (0x11350, L),
        (0x11351, U), (0x11357, M), (0x11358, U), (0x1135D, L), (0x11362, M), (0x11364, U), (0x11366, M),
        (0x1136D, U), (0x11370, M), (0x11375, U), (0x11400, L), (0x11435, M), (0x11447, L), (0x1144B, P),
        (0x11450, N), (0x1145A, P), (0x1145C, U), (0x1145D, P), (0x1145E, M), (0x1145F, L), (0x11462, U),
        (0x11480, L), (0x114B0, M), (0x114C4, L), (0x114C6, P), (0x114C7, L), (0x114C8, U), (0x114D0, N),
        (0x114DA, U), (0x11580, L), (0x115AF, M), (0x115B6, U), (0x115B8, M), (0x115C1, P), (0x115D8, L),
        (0x115DC, M), (0x115DE, U), (0x11600, L), (0x11630, M), (0x11641, P), (0x11644, L), (0x11645, U),
        (0x11650, N), (0x1165A, U), (0x11660, P), (0x1166D, U), (0x11680, L), (0x116AB, M), (0x116B8, L),
        (0x116B9, P), (0x116BA, U), (0x116C0, N), (0x116CA, U), (0x11700, L), (0x1171B, U), (0x1171D, M),
        (0x1172C, U), (0x11730, N), (0x1173C, P), (0x1173F, S), (0x11740, L), (0x11747, U), (0x11800, L),
        (0x1182C, M), (0x1183B, P), (0x1183C, U), (0x118A0, L), (0x118E0, N), (0x118F3, U), (0x118FF, L),
        (0x11907, U), (0x11909, L), (0x1190A, U), (0x1190C, L), (0x11914, U), (0x11915, L), (0x11917, U),
        (0x11918, L), (0x11930, M), (0x11936, U), (0x11937, M), (0x11939, U), (0x1193B, M), (0x1193F, L),
        (0x11940, M), (0x11941, L), (0x11942, M), (0x11944, P), (0x11947, U), (0x11950, N), (0x1195A, U),
        (0x119A0, L), (0x119A8, U), (0x119AA, L), (0x119D1, M), (0x119D8, U), (0x119DA, M), (0x119E1, L),
        (0x119E2, P), (0x119E3, L), (0x119E4, M), (0x119E5, U), (0x11A00, L), (0x11A01, M), (0x11A0B, L),
        (0x11A33, M), (0x11A3A, L), (0x11A3B, M), (0x11A3F, P), (0x11A47, M), (0x11A48, U), (0x11A50, L),
        (0x11A51, M), (0x11A5C, L), (0x11A8A, M), (0x11A9A, P), (0x11A9D, L), (0x11A9E, P), (0x11AA3, U),
        (0x11AB0, L), (0x11AF9, U), (0x11B00, P), (0x11B0A, U), (0x11C00, L), (0x11C09, U), (0x11C0A, L),
        (0x11C2F, M), (0x11C37, U), (0x11C38, M), (0x11C40, L), (0x11C41, P), (0x11C46, U), (0x11C50, N),
        (0x11C6D, U), (0x11C70, P), (0x11C72, L), (0x11C90, U), (0x11C92, M), (0x11CA8, U), (0x11CA9, M),
        (0x11CB7, U), (0x11D00, L), (0x11D07, U), (0x11D08, L), (0x11D0A, U), (0x11D0B, L), (0x11D31, M),
        (0x11D37, U), (0x11D3A, M), (0x11D3B, U), (0x11D3C, M), (0x11D3E, U), (0x11D3F, M), (0x11D46, L),
        (0x11D47, M), (0x11D48, U), (0x11D50, N), (0x11D5A, U), (0x11D60, L), (0x11D66, U), (0x11D67, L),
        (0x11D69, U), (0x11D6A, L), (0x11D8A, M), (0x11D8F, U), (0x11D90, M), (0x11D92, U), (0x11D93, M),
        (0x11D98, L), (0x11D99, U), (0x11DA0, N), (0x11DAA, U), (0x11EE0, L), (0x11EF3, M), (0x11EF7, P),
        (0x11EF9, U), (0x11F00, M), (0x11F02, L), (0x11F03, M), (0x11F04, L), (0x11F11, U), (0x11F12, L),
        (0x11F34, M), (0x11F3B, U), (0x11F3E, M), (0x11F43, P), (0x11F50, N), (0x11F5A, U), (0x11FB0, L),
        (0x11FB1, U), (0x11FC0, N), (0x11FD5, S), (0x11FF2, U), (0x11FFF, P), (0x12000, L), (0x1239A, U),
        (0x12400, N), (0x1246F, U), (0x12470, P), (0x12475, U), (0x12480, L), (0x12544, U), (0x12F90, L),
        (0x12FF1, P), (0x12FF3, U), (0x13000, L), (0x13430, C), (0x13440, M), (0x13441, L), (0x13447, M),
        (0x13456, U), (0x14400, L), (0x14647, U), (0x16800, L), (0x16A39, U), (0x16A40, L), (0x16A5F, U),
        (0x16A60, N), (0x16A6A, U), (0x16A6E, P), (0x16A70, L), (0x16ABF, U), (0x16AC0, N), (0x16ACA, U),
        (0x16AD0, L), (0x16AEE, U), (0x16AF0, M), (0x16AF5, P), (0x16AF6, U), (0x16B00, L), (0x16B30, M),
        (0x16B37, P), (0x16B3C, S), (0x16B40, L), (0x16B44, P), (0x16B45, S), (0x16B46, U), (0x16B50, N),
        (0x16B5A, U), (0x16B5B, N), (0x16B62, U), (0x16B63, L), (0x16B78, U), (0x16B7D, L), (0x16B90, U),
        (0x16E40, L), (0x16E80, N), (0x16E97, P), (0x16E9B, U), (0x16F00, L), (0x16F4B, U), (0x16F4F, M),
        (0x16F50, L), (0x16F51, M), (0x16F88, U), (0x16F8F, M), (0x16F93, L), (0x16FA0, U), (0x16FE0, L),
        (0x16FE2, P), (0x16FE3, L), (0x16FE4, M), (0x16FE5, U), (0x16FF0, M), (0x16FF2, U), (0x17000, L),
        (0x187F8, U), (0x18800, L), (0x18CD6, U), (0x18D00, L), (0x18D09, U), (0x1AFF0, L), (0x1AFF4, U),
        (0x1AFF5, L), (0x1AFFC, U), (0x1AFFD, L), (0x1AFFF, U), (0x1B000, L), (0x1B123, U), (0x1B132, L),
        (0x1B133, U), (0x1B150, L), (0x1B153, U), (0x1B155, L), (0x1B156, U), (0x1B164, L), (0x1B168, U),
        (0x1B170, L), (0x1B2FC, U), (0x1BC00, L), (0x1BC6B, U), (0x1BC70, L), (0x1BC7D, U), (0x1BC80, L),
        (0x1BC89, U), (0x1BC90, L), (0x1BC9A, U), (0x1BC9C, S), (0x1BC9D, M), (0x1BC9F, P), (0x1BCA0, C),
        (0x1BCA4, U), (0x1CF00, M), (0x1CF2E, U), (0x1CF30, M), (0x1CF47, U), (0x1CF50, S), (0x1CFC4, U),
        (0x1D000, S), (0x1D0F6, U), (0x1D100, S), (0x1D127, U), (0x1D129, S), (0x1D165, M), (0x1D16A, S),
        (0x1D16D, M), (0x1D173, C), (0x1D17B, M), (0x1D183, S), (0x1D185, M), (0x1D18C, S), (0x1D1AA, M),
        (0x1D1AE, S), (0x1D1EB, U), (0x1D200, S), (0x1D242, M), (0x1D245, S), (0x1D246, U), (0x1D2C0, N),
        (0x1D2D4, U), (0x1D2E0, N), (0x1D2F4, U), (0x1D300, S), (0x1D357, U), (0x1D360, N), (0x1D379, U),
        (0x1D400, L), (0x1D455, U), (0x1D456, L), (0x1D49D, U), (0x1D49E, L), (0x1D4A0, U), (0x1D4A2, L),
        (0x1D4A3, U), (0x1D4A5, L), (0x1D4A7, U), (0x1D4A9, L), (0x1D4AD, U), (0x1D4AE, L), (0x1D4BA, U),
        (0x1D4BB, L), (0x1D4BC, U), (0x1D4BD, L), (0x1D4C4, U), (0x1D4C5, L), (0x1D506, U), (0x1D507, L),
        (0x1D50B, U), (0x1D50D, L), (0x1D515, U), (0x1D516, L), (0x1D51D, U), (0x1D51E, L), (0x1D53A, U),
        (0x1D53B, L), (0x1D53F, U), (0x1D540, L), (0x1D545, U), (0x1D546, L), (0x1D547, U), (0x1D54A, L),
        (0x1D551, U), (0x1D552, L), (0x1D6A6, U), (0x1D6A8, L), (0x1D6C1, S), (0x1D6C2, L), (0x1D6DB, S),
        (0x1D6DC, L), (0x1D6FB, S), (0x1D6FC, L), (0x1D715, S), (0x1D716, L), (0x1D735, S), (0x1D736, L),
        (0x1D74F, S), (0x1D750, L), (0x1D76F, S), (0x1D770, L), (0x1D789, S), (0x1D78A, L), (0x1D7A9, S),
        (0x1D7AA, L), (0x1D7C3, S), (0x1D7C4, L), (0x1D7CC, U), (0x1D7CE, N), (0x1D800, S), (0x1DA00, M),
        (0x1DA37, S), (0x1DA3B, M), (0x1DA6D, S), (0x1DA75, M), (0x1DA76, S), (0x1DA84, M), (0x1DA85, S),
        (0x1DA87, P), (0x1DA8C, U), (0x1DA9B, M), (0x1DAA0, U), (0x1DAA1, M), (0x1DAB0, U), (0x1DF00, L),
        (0x1DF1F, U), (0x1DF25, L), (0x1DF2B, U), (0x1E000, M), (0x1E007, U), (0x1E008, M), (0x1E019, U),
        (0x1E01B, M), (0x1E022, U), (0x1E023, M), (0x1E025, U), (0x1E026, M), (0x1E02B, U), (0x1E030, L),
        (0x1E06E, U), (0x1E08F, M), (0x1E090, U), (0x1E100, L), (0x1E12D, U), (0x1E130, M), (0x1E137, L),
        (0x1E13E, U), (0x1E140, N), (0x1E14A, U), (0x1E14E, L), (0x1E14F, S), (0x1E150, U), (0x1E290, L),
        (0x1E2AE, M), (0x1E2AF, U), (0x1E2C0, L), (0x1E2EC, M), (0x1E2F0, N), (0x1E2FA, U), (0x1E2FF, S),
        (0x1E300, U), (0x1E4D0, L), (0x1E4EC, M), (0x1E4F0, N), (0x1E4FA, U), (0x1E7E0, L), (0x1E7E7, U),
        (0x1E7E8, L), (0x1E7EC, U), (0x1E7ED, L), (0x1E7EF, U), (0x1E7F0, L), (0x1E7FF, U), (0x1E800, L),
        (0x1E8C5, U), (0x1E8C7, N), (0x1E8D0, M), (0x1E8D7, U), (0x1E900, L), (0x1E944, M), (0x1E94B, L),
        (0x1E94C, U), (0x1E950, N), (0x1E95A, U), (0x1E95E, P), (0x1E960, U), (0x1EC71, N), (0x1ECAC, S),
        (0x1ECAD, N), (0x1ECB0, S), (0x1ECB1, N), (0x1ECB5, U), (0x1ED01, N), (0x1ED2E, S), (0x1ED2F, N),
        (0x1ED3E, U), (0x1EE00, L), (0x1EE04, U), (0x1EE05, L), (0x1EE20, U), (0x1EE21, L), (0x1EE23, U),
        (0x1EE24, L), (0x1EE25, U), (0x1EE27, L), (0x1EE28, U), (0x1EE29, L), (0x1EE33, U), (0x1EE34, L),
        (0x1EE38, U), (0x1EE39, L), (0x1EE3A, U), (0x1EE3B, L), (0x1EE3C, U), (0x1EE42, L), (0x1EE43, U),
        (0x1EE47, L), (0x1EE48, U), (0x1EE49, L), (0x1EE4A, U), (0x1EE4B, L), (0x1EE4C, U), (0x1EE4D, L),
        (0x1EE50, U), (0x1EE51, L), (0x1EE53, U), (0x1EE54, L), (0x1EE55, U), (0x1EE57, L), (0x1EE58, U),
        (0x1EE59, L), (0x1EE5A, U), (0x1EE5B, L), (0x1EE5C, U), (0x1EE5D, L), (0x1EE5E, U), (0x1EE5F, L),
        (0x1EE60, U), (0x1EE61, L), (0x1EE63, U), (0x1EE64, L), (0x1EE65, U), (0x1EE67, L), (0x1EE6B, U),
        (0x1EE6C, L), (0x1EE73, U), (0x1EE74, L), (0x1EE78, U), (0x1EE79, L), (0x1EE7D, U), (0x1EE7E, L),
        (0x1EE7F, U), (0x1EE80, L), (0x1EE8A, U), (0x1EE8B, L), (0x1EE9C, U), (0x1EEA1, L), (0x1EEA4, U),
        (0x1EEA5, L), (0x1EEAA, U), (0x1EEAB, L), (0x1EEBC, U), (0x1EEF0, S), (0x1EEF2, U), (0x1F000, S),
        (0x1F02C, U), (0x1F030, S), (0x1F094, U), (0x1F0A0, S), (0x1F0AF, U), (0x1F0B1, S), (0x1F0C0, U),
        (0x1F0C1, S), (0x1F0D0, U), (0x1F0D1, S), (0x1F0F6, U), (0x1F100, N), (0x1F10D, S), (0x1F1AE, U),
        (0x1F1E6, S), (0x1F203, U), (0x1F210, S), (0x1F23C, U), (0x1F240, S), (0x1F249, U), (0x1F250, S),
        (0x1F252, U), (0x1F260, S), (0x1F266, U), (0x1F300, S), (0x1F6D8, U), (0x1F6DC, S), (0x1F6ED, U),
        (0x1F6F0, S), (0x1F6FD, U), (0x1F700, S), (0x1F777, U), (0x1F77B, S), (0x1F7DA, U), (0x1F7E0, S),
        (0x1F7EC, U), (0x1F7F0, S), (0x1F7F1, U), (0x1F800, S), (0x1F80C, U), (0x1F810, S), (0x1F848, U),
        (0x1F850, S), (0x1F85A, U), (0x1F860, S), (0x1F888, U), (0x1F890, S), (0x1F8AE, U), (0x1F8B0, S),
        (0x1F8B2, U), (0x1F900, S), (0x1FA54, U), (0x1FA60, S), (0x1FA6E, U), (0x1FA70, S), (0x1FA7D, U),
        (0x1FA80, S), (0x1FA89, U), (0x1FA90, S), (0x1FABE, U), (0x1FABF, S), (0x1FAC6, U), (0x1FACE, S),
        (0x1FADC, U), (0x1FAE0, S), (0x1FAE9, U), (0x1FAF0, S), (0x1FAF9, U), (0x1FB00, S), (0x1FB93, U),
        (0x1FB94, S), (0x1FBCB, U), (0x1FBF0, N), (0x1FBFA, U), (0x20000, L), (0x2A6E0, U), (0x2A700, L),
        (0x2B73A, U), (0x2B740, L), (0x2B81E, U), (0x2B820, L), (0x2CEA2, U), (0x2CEB0, L), (0x2EBE1, U),
        (0x2EBF0, L), (0x2EE5E, U), (0x2F800, L), (0x2FA1E, U), (0x30000, L), (0x3134B, U), (0x31350, L),
        (0x323B0, U), (0xE0001, C), (0xE0002, U), (0xE0020, C), (0xE0080, U), (0xE0100, M), (0xE01F0, U),
        (0xF0000, C), (0xFFFFE, U), (0x100000, C), (0x10FFFE, U),
    ];
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn split<'t>(pre: &str, text: &'t str) -> Vec<&'t str> {
        PreTokenizer::new(pre).unwrap().split(text)
    }

    /// A BPE over `tokens` (ids in order) with `merges`, pre-tokenized by `pre`.
    fn bpe(pre: &str, tokens: &[&str], merges: &[&str]) -> (Bpe, HashMap<String, u32>) {
        let ids: HashMap<String, u32> = tokens.iter().enumerate().map(|(i, t)| (t.to_string(), i as u32)).collect();
        let mut byte_tokens = [None; 256];
        for (b, slot) in byte_tokens.iter_mut().enumerate().take(0x80) {
            *slot = ids.get(&char::from(b as u8).to_string()).copied();
        }
        let merges: Vec<&[u8]> = merges.iter().map(|m| m.as_bytes()).collect();
        let bpe = Bpe::new(PreTokenizer::new(pre).unwrap(), &merges, &ids, tokens.len() as u32, byte_tokens);
        (bpe, ids)
    }

    fn encode(pre: &str, tokens: &[&str], merges: &[&str], text: &str) -> Vec<u32> {
        let (bpe, ids) = bpe(pre, tokens, merges);
        let mut out = Vec::new();
        bpe.encode(text, &ids, &mut out);
        out
    }

    #[test]
    fn the_byte_map_is_gpt2s_and_round_trips() {
        for b in 0..=255u8 {
            assert_eq!(char_byte(byte_char(b)), Some(b), "byte {b:#04x}");
        }
        let distinct: std::collections::HashSet<char> = (0..=255u8).map(byte_char).collect();
        assert_eq!(distinct.len(), 256);
        // Printable bytes stand for themselves; the 68 others take U+0100.. in byte order.
        assert_eq!(byte_char(b'A'), 'A');
        assert_eq!(byte_char(0xE9), '\u{e9}');
        assert_eq!(byte_char(0x00), '\u{100}');
        assert_eq!(byte_char(b'\n'), '\u{10a}'); // Ċ
        assert_eq!(byte_char(b' '), '\u{120}'); // Ġ
        assert_eq!(byte_char(0x7F), '\u{121}');
        assert_eq!(byte_char(0xA0), '\u{142}');
        assert_eq!(byte_char(0xAD), '\u{143}');
        assert_eq!(char_byte('\u{144}'), None);
        assert_eq!(char_byte('\u{4e2d}'), None);
        assert_eq!(byte_encode("a b\u{e9}"), "a\u{120}b\u{c3}\u{a9}");
    }

    #[test]
    fn normal_tokens_decode_through_the_byte_map_with_llama_cpps_marker_for_strangers() {
        assert_eq!(decode_token("\u{120}hello\u{10a}".as_bytes()), b" hello\n");
        assert_eq!(decode_token("\u{c3}\u{a9}".as_bytes()), "\u{e9}".as_bytes());
        // U+4E2D is no byte's stand-in: llama.cpp writes its UTF-8 in hex and the whole token.
        assert_eq!(decode_token("a\u{4e2d}".as_bytes()), "a[UNK_BYTE_0xe4b8ada\u{4e2d}]".as_bytes());
        // Bytes that are not UTF-8 read as U+FFFD, one per byte that starts nothing valid.
        assert_eq!(decode_token(b"\xFFa"), b"[UNK_BYTE_0xefbfbd\xFFa]a");
        assert_eq!(llama_code_points(b"\xE4\xB8"), [0xFFFD, 0xFFFD]);
        assert_eq!(llama_code_points("\u{4e2d}x".as_bytes()), [0x4E2D, 0x78]);
    }

    #[test]
    fn the_lowest_rank_merges_first() {
        let tokens = ["a", "b", "c", "ab", "bc", "abc"];
        assert_eq!(encode("gpt-2", &tokens, &["b c", "a b"], "abc"), [0, 4]);
        assert_eq!(encode("gpt-2", &tokens, &["a b", "b c"], "abc"), [3, 2]);
        assert_eq!(encode("gpt-2", &tokens, &["b c", "a b", "a bc"], "abc"), [5]);
        assert_eq!(encode("gpt-2", &tokens, &["a b", "b c", "ab c"], "abc"), [5]);
        // A later line repeating a pair does not change its rank.
        assert_eq!(encode("gpt-2", &tokens, &["a b", "b c", "a b"], "abc"), [3, 2]);
        // A line without a space after its first byte is no merge.
        assert_eq!(encode("gpt-2", &tokens, &["ab", "b c"], "abc"), [0, 4]);
    }

    #[test]
    fn equal_ranks_merge_leftmost_first() {
        let tokens = ["a", "aa", "aaa"];
        assert_eq!(encode("gpt-2", &tokens, &["a a"], "aaa"), [1, 0]);
        assert_eq!(encode("gpt-2", &tokens, &["a a"], "aaaa"), [1, 1]);
        // aa·aa·a first (rank 0, left to right); then only "aa a" on the right is a merge.
        assert_eq!(encode("gpt-2", &tokens, &["a a", "aa a"], "aaaaa"), [1, 2]);
    }

    #[test]
    fn merges_apply_to_strings_whether_or_not_they_are_tokens() {
        // "ab" is no token, yet the merge joins a and b, and "ab c" then makes a token.
        let tokens = ["a", "b", "c", "abc"];
        assert_eq!(encode("gpt-2", &tokens, &["a b", "ab c"], "abc"), [3]);
        // Without the second merge "ab" stays a non-token and comes out byte by byte.
        assert_eq!(encode("gpt-2", &tokens, &["a b"], "abc"), [0, 1, 2]);
        // Parts that are not tokens: neither x nor y is a token, "xy" is.
        assert_eq!(encode("gpt-2", &["xy"], &["x y"], "xy"), [0]);
        // Bytes without a token of their own are dropped, as in llama.cpp.
        assert_eq!(encode("gpt-2", &["a"], &[], "a\u{e9}a"), [0, 0]);
    }

    #[test]
    fn ignore_merges_looks_the_whole_piece_up_first() {
        let tokens = ["a", "b", "ab", "\u{120}a"];
        assert_eq!(encode("gpt-2", &tokens, &[], "ab"), [0, 1]);
        assert_eq!(encode("llama-bpe", &tokens, &[], "ab"), [2]);
        assert_eq!(encode("llama-bpe", &tokens, &[], "ab a"), [2, 3]);
    }

    #[test]
    fn gpt2_splits_words_numbers_and_keeps_one_space_before_a_word() {
        assert_eq!(split("gpt-2", "Hello world's  test 123"), ["Hello", " world", "'s", " ", " test", " 123"]);
        // Contractions are lowercase only; an apostrophe otherwise goes with the punctuation.
        assert_eq!(split("gpt-2", "I'M ok!!"), ["I", "'", "M", " ok", "!!"]);
        // Trailing whitespace stays together; a newline run before a word loses its last one.
        assert_eq!(split("gpt-2", "a \n\n b  "), ["a", " \n\n", " b", "  "]);
        // Non-ASCII letters and numbers count by llama.cpp's table.
        assert_eq!(split("gpt-2", "\u{e9}t\u{e9} \u{663}\u{664}"), ["\u{e9}t\u{e9}", " \u{663}\u{664}"]);
    }

    #[test]
    fn llama3_groups_digits_by_three_and_takes_newline_runs() {
        assert_eq!(split("llama-bpe", "  abc1234567"), [" ", " abc", "123", "456", "7"]);
        assert_eq!(split("llama-bpe", "I'M\n\n  x"), ["I", "'M", "\n\n", " ", " x"]);
        // Any one character but CR, LF or a digit starts a word: here "(" and a tab.
        assert_eq!(split("llama-bpe", "(ab\tcd"), ["(ab", "\tcd"]);
        // Punctuation takes the newlines after it.
        assert_eq!(split("llama-bpe", "x.\n\ny"), ["x", ".\n\n", "y"]);
        // Qwen 2: single digits; Qwen 3.5: combining marks stay with their letters.
        assert_eq!(split("qwen2", "a12"), ["a", "1", "2"]);
        // (a combining mark is no letter for Qwen 2: it is the one character before "x")
        assert_eq!(split("qwen2", "e\u{301}x"), ["e", "\u{301}x"]);
        assert_eq!(split("qwen35", "e\u{301}x"), ["e\u{301}x"]);
    }

    #[test]
    fn regular_expressions_keep_what_they_do_not_match_and_see_categories() {
        // starcoder: each number character on its own first (`\p{N}`, Arabic-Indic digits
        // included), then GPT-2's splitter inside each piece.
        assert_eq!(split("starcoder", "a\u{661}\u{662} 12"), ["a", "\u{661}", "\u{662}", " ", "1", "2"]);
        // falcon: punctuation and symbols first, GPT-2 next, then digits by three (the
        // remainder left as the unmatched end of its piece).
        assert_eq!(split("falcon", "x=12345!"), ["x", "=", "123", "45", "!"]);
        // deepseek-coder: `[\r\n]` cuts off the newline; `\s?\p{L}+` takes the ideographic
        // space (whitespace, collapsed to `\v`) with the CJK letters; then the CJK range of the
        // fourth expression leaves the space as unmatched text of its own.
        assert_eq!(split("deepseek-coder", "a\u{3000}\u{4e2d}\u{6587}\n"), ["a", "\u{3000}", "\u{4e2d}\u{6587}", "\n"]);
    }

    #[test]
    fn digit_groups_count_from_the_right() {
        let mut out = Vec::new();
        let cps: Vec<char> = "ab1234567".chars().collect();
        let flags: Vec<Flags> = cps.iter().map(|&c| flags_of(c)).collect();
        Run { cps: &cps, flags: &flags, ini: 0, end: cps.len(), prev: 0, out: &mut out }.digit_groups();
        // The letters before the run join its first group, as in llama.cpp.
        assert_eq!(out, [3, 3, 3]);
    }

    #[test]
    fn categories_are_llama_cpps() {
        assert!(flags_of('a').letter() && flags_of('\u{4e2d}').letter() && flags_of('\u{2b0}').letter());
        assert!(flags_of('7').number() && flags_of('\u{663}').number() && flags_of('\u{2167}').number());
        assert!(flags_of('\u{301}').mark() && !flags_of('\u{301}').letter());
        assert!(flags_of('\u{3000}').whitespace() && flags_of('\u{85}').whitespace() && flags_of('\t').whitespace());
        assert!(!flags_of('\u{200b}').whitespace() && !flags_of('\u{1c}').whitespace());
        assert_eq!(flags_of('\u{378}').category(), UNDEFINED);
        assert_eq!(flags_of('\u{10ffff}').category(), UNDEFINED);
        assert_eq!(flags_of('$').category(), SYMBOL);
        assert_eq!(flags_of('\u{e000}').category(), CONTROL);
        assert_eq!(flags_of('\u{a0}').category(), SEPARATOR);
        assert_eq!(CATEGORY_RANGES.first(), Some(&(0, CONTROL)));
        assert!(CATEGORY_RANGES.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 != w[1].1));
    }

    #[test]
    fn patterns_collapse_and_translate_as_llama_cpp_reads_them() {
        let collapse = |p: &str| collapse_pattern(&p.chars().collect::<Vec<_>>()).into_iter().collect::<String>();
        assert_eq!(collapse("\\p{N}+"), "[\u{d1}0-9]+");
        assert_eq!(collapse("[^\\s\\p{L}\\p{N}]"), "[^\\s\u{d2}A-Za-z\u{d1}0-9]");
        assert_eq!(collapse("\\p{Lu}\\p{M}"), "[\u{d2}A-Za-z][\u{d4}]");
        assert_eq!(collapse("\\[\\p{P}"), "\\[[\u{d3}!-#%-*,-/:-;?-@\\[-\\]_\\{\\}]");
        assert_eq!(translate("\\s+$").unwrap(), ("[\\x{9}-\\x{D}\\x{20}]+$".to_string(), false));
        assert_eq!(translate("a(?!\\S)").unwrap().0, "\\x{61}(?![^\\x{9}-\\x{D}\\x{20}])");
        assert_eq!(translate("[^\\s-]").unwrap().0, "[^\\x{9}-\\x{D}\\x{20}\\x{2D}]");
        assert_eq!(translate("(x|y){1,3}").unwrap().0, "(?:\\x{78}|\\x{79}){1,3}");
        assert!(translate("\\p{N}\u{e9}").is_err());
        assert!(translate("(a)\\1").is_err());
        assert!(translate("\\p{Han}").is_err());
        assert!(translate("[z-a]").is_err());
    }

    #[test]
    fn the_supported_list_names_every_family() {
        let names: Vec<&str> = FAMILIES.iter().flat_map(|f| f.names.iter().copied()).collect();
        assert_eq!(SUPPORTED_PRE, names.join(", "));
        let unique: std::collections::HashSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len());
        assert!(NOT_IMPLEMENTED_PRE.iter().all(|n| !unique.contains(n)));
        for name in &names {
            PreTokenizer::new(name).unwrap();
        }
        assert!(matches!(PreTokenizer::new("kimi-k2"), Err(PreError::NotImplemented)));
        assert!(matches!(PreTokenizer::new("gpt2"), Err(PreError::Unknown)));
        assert_eq!(PreTokenizer::new("").unwrap().name(), "default");
    }
}
