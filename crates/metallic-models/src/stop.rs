//! Stop strings matched on the generated text, not on tokens: a stop string may span several
//! tokens and end in the middle of one.
//!
//! Text is released as soon as it cannot be the start of a stop string; only a tail that
//! could still grow into one is held back. When a stop string appears, the text before it
//! is released and the rest (the stop string and whatever followed it) is dropped, as
//! OpenAI does.

/// What [`StopMatcher::push`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// No stop string yet; this text may be sent.
    Continue(String),
    /// A stop string begins after this text, which may still be sent; the generation ends.
    Stopped(String),
}

/// Finds stop strings in text that arrives a piece at a time.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text that may be the beginning of a stop string.
    held: String,
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored: they would stop before anything).
    pub fn new(stops: impl IntoIterator<Item = String>) -> Self {
        StopMatcher { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), held: String::new() }
    }

    /// Takes the next piece of text.
    pub fn push(&mut self, piece: &str) -> Scan {
        if self.stops.is_empty() {
            return Scan::Continue(piece.to_string());
        }
        let mut text = std::mem::take(&mut self.held);
        text.push_str(piece);
        if let Some(at) = self.first_stop(&text) {
            text.truncate(at);
            return Scan::Stopped(text);
        }
        let keep = self.partial_match(&text);
        self.held = text.split_off(keep);
        Scan::Continue(text)
    }

    /// The text held back when the generation ends without a stop string.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Where the stop string that is complete first begins: the one that ends earliest (the
    /// generation would have stopped there had the text arrived a character at a time), the
    /// longest of those that end together. Nothing after that end matters, so the result
    /// does not depend on how the text was cut into pieces.
    fn first_stop(&self, text: &str) -> Option<usize> {
        self.stops.iter().filter_map(|s| text.find(s.as_str()).map(|at| (at + s.len(), at))).min().map(|(_, at)| at)
    }

    /// Where the longest tail of `text` that begins some stop string starts (`text.len()`
    /// when none does). The caller has checked that no stop string occurs whole.
    fn partial_match(&self, text: &str) -> usize {
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        text.char_indices()
            .map(|(at, _)| at)
            .filter(|&at| text.len() - at < longest)
            .find(|&at| text.get(at..).is_some_and(|tail| self.stops.iter().any(|s| s.starts_with(tail))))
            .unwrap_or(text.len())
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Everything released for `pieces`, and whether a stop string was found.
    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()));
        let mut out = Vec::new();
        for piece in pieces {
            match m.push(piece) {
                Scan::Continue(text) => out.push(text),
                Scan::Stopped(text) => {
                    out.push(text);
                    return (out, true);
                }
            }
        }
        out.push(m.finish());
        (out, false)
    }

    #[test]
    fn a_stop_string_split_across_pieces_is_found_and_dropped() {
        let (out, stopped) = run(&["</answer>"], &["Paris", "</ans", "wer", "> more"]);
        assert!(stopped);
        assert_eq!(out, ["Paris", "", "", ""]);
    }

    #[test]
    fn only_a_possible_beginning_is_held_back() {
        // "a" may begin "ab!"; once "x" follows it cannot, and it is released with it.
        let (out, stopped) = run(&["ab!"], &["xa", "ax", "ab", "?"]);
        assert!(!stopped);
        assert_eq!(out, ["x", "aax", "", "ab?", ""]);
    }

    #[test]
    fn the_earliest_of_several_stop_strings_wins() {
        let (out, stopped) = run(&["world", "lo w"], &["hello world"]);
        assert!(stopped);
        assert_eq!(out, ["hel"]);
    }

    #[test]
    fn the_stop_string_complete_first_wins_however_the_text_is_cut() {
        // "é" is complete at the end of "aaaé", before "aéé" (which starts earlier) could be.
        for pieces in [&["aaaé", "é"][..], &["aaaéé"], &["a", "aa", "é", "é"]] {
            let (out, stopped) = run(&["é", "aéé"], pieces);
            assert!(stopped);
            assert_eq!(out.concat(), "aaa");
        }
        // Two stop strings that end together: the longer one is dropped whole.
        assert_eq!(run(&["b", "ab"], &["xab"]), (vec!["x".to_string()], true));
    }

    #[test]
    fn a_stop_string_at_the_very_start_releases_nothing() {
        assert_eq!(run(&["\n"], &["\nrest"]), (vec![String::new()], true));
    }

    #[test]
    fn held_text_is_released_at_the_end() {
        assert_eq!(run(&["STOP"], &["go ST"]), (vec!["go ".to_string(), "ST".to_string()], false));
    }

    #[test]
    fn multibyte_characters_are_never_split() {
        let (out, stopped) = run(&["é!"], &["caf", "é", "s"]);
        assert!(!stopped);
        assert_eq!(out, ["caf", "", "és", ""]);
        assert_eq!(run(&["é!"], &["café", "!"]).0, ["caf", ""]);
    }

    #[test]
    fn empty_stop_strings_are_ignored() {
        assert_eq!(run(&[""], &["a", "b"]), (vec!["a".into(), "b".into(), String::new()], false));
    }

    proptest! {
        /// However the text is cut into pieces, what is released is the text before the stop
        /// string that is complete first (read a character at a time), and nothing is released
        /// twice.
        #[test]
        fn released_text_is_the_text_before_the_first_stop(
            text in "[ab\u{e9}\n]{0,24}",
            stops in proptest::collection::vec("[ab\u{e9}\n]{1,3}", 0..3),
            cuts in proptest::collection::vec(0usize..32, 0..8),
        ) {
            let mut bounds: Vec<usize> = cuts.into_iter().filter_map(|c| {
                let at = c.min(text.len());
                text.is_char_boundary(at).then_some(at)
            }).collect();
            bounds.extend([0, text.len()]);
            bounds.sort_unstable();
            bounds.dedup();
            let pieces: Vec<&str> = bounds.windows(2).filter_map(|w| text.get(w[0]..w[1])).collect();
            let stop_refs: Vec<&str> = stops.iter().map(String::as_str).collect();
            let (out, stopped) = run(&stop_refs, &pieces);
            // Read the text a character at a time; stop at the first end of a stop string.
            let first = text
                .char_indices()
                .map(|(at, c)| at + c.len_utf8())
                .find_map(|end| {
                    let seen = &text[..end];
                    stops.iter().filter(|s| seen.ends_with(s.as_str())).map(|s| end - s.len()).min()
                });
            prop_assert_eq!(stopped, first.is_some());
            prop_assert_eq!(out.concat(), text.get(..first.unwrap_or(text.len())).unwrap_or_default());
        }
    }
}
