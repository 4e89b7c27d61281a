//! Field splitting for `process_words`, as BuildKit's `wordsStruct` does it.
//!
//! Text that came from an unquoted `$` expansion, and plain unquoted text,
//! is split at Unicode whitespace. Quoted text and escaped characters are
//! added raw: they never split, and a quoted part marks the word as
//! started even when it is empty; but a word that is still empty at a
//! split or at the end is dropped, so `""` alone yields no word.

use super::chars::is_space;

#[derive(Debug, Default)]
pub(super) struct Words {
    done: Vec<String>,
    current: String,
    in_word: bool,
}

impl Words {
    /// An unquoted character: whitespace ends the current word.
    pub(super) fn add_char(&mut self, ch: char) {
        if is_space(ch) {
            if self.in_word && !self.current.is_empty() {
                self.done.push(std::mem::take(&mut self.current));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    /// An escaped character: always part of the word.
    pub(super) fn add_raw_char(&mut self, ch: char) {
        self.current.push(ch);
        self.in_word = true;
    }

    /// The value of an unquoted expansion: split like unquoted text.
    pub(super) fn add_str(&mut self, text: &str) {
        for ch in text.chars() {
            self.add_char(ch);
        }
    }

    /// The content of a quoted part: never split.
    pub(super) fn add_raw_str(&mut self, text: &str) {
        self.current.push_str(text);
        self.in_word = true;
    }

    /// The finished list of words.
    pub(super) fn finish(mut self) -> Vec<String> {
        if !self.current.is_empty() {
            self.done.push(self.current);
        }
        self.done
    }
}
