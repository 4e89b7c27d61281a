//! Go's character classes, which BuildKit's lexer uses for variable names
//! and word splitting. Rust's `char::is_alphabetic`/`is_numeric` are wider
//! (they include marks and letter-like numbers), so names would differ.

use unicode_general_category::{get_general_category, GeneralCategory as Gc};

/// Go's `unicode.IsLetter`: general category L (Lu, Ll, Lt, Lm, Lo).
pub(super) fn is_letter(ch: char) -> bool {
    if ch.is_ascii() {
        return ch.is_ascii_alphabetic();
    }
    matches!(
        get_general_category(ch),
        Gc::UppercaseLetter
            | Gc::LowercaseLetter
            | Gc::TitlecaseLetter
            | Gc::ModifierLetter
            | Gc::OtherLetter
    )
}

/// Go's `unicode.IsDigit`: general category Nd.
pub(super) fn is_digit(ch: char) -> bool {
    if ch.is_ascii() {
        return ch.is_ascii_digit();
    }
    get_general_category(ch) == Gc::DecimalNumber
}

/// A character that continues a parameter name: letter, digit or `_`.
pub(super) fn is_name_char(ch: char) -> bool {
    ch == '_' || is_letter(ch) || is_digit(ch)
}

/// Go's `unicode.IsSpace`; it is the Unicode White_Space property, exactly
/// what `char::is_whitespace` tests.
pub(super) fn is_space(ch: char) -> bool {
    ch.is_whitespace()
}

/// The special parameters of POSIX sh (2.5.2), which BuildKit reads as a
/// one-character name. `0` is listed for completeness; the digit rule
/// catches it first.
pub(super) fn is_special_param(ch: char) -> bool {
    matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_follow_go_not_rust() {
        assert!(is_letter('한'));
        assert!(is_letter('ª'));
        // U+093E DEVANAGARI VOWEL SIGN AA is Alphabetic in Rust but Mc in Go.
        assert!('\u{93e}'.is_alphabetic());
        assert!(!is_letter('\u{93e}'));
        // U+2167 ROMAN NUMERAL EIGHT is Nl: neither a letter nor a digit in Go.
        assert!(!is_letter('\u{2167}'));
        assert!(!is_digit('\u{2167}'));
    }

    #[test]
    fn digits_are_decimal_numbers() {
        assert!(is_digit('7'));
        assert!(is_digit('\u{663}')); // ARABIC-INDIC DIGIT THREE
        assert!(!is_digit('\u{b2}')); // SUPERSCRIPT TWO is No
    }
}
