//! Go's `unicode` predicates, which BuildKit's parser, lexer and dump rely on.
//!
//! Rust's `char` methods use slightly different definitions (`is_alphabetic`
//! is the Alphabetic property, `is_numeric` covers Nd, Nl and No), so the
//! exact Go rules are rebuilt here from the Unicode general category.

use unicode_properties::{GeneralCategory, GeneralCategoryGroup as Group, UnicodeGeneralCategory};

/// Go `unicode.IsSpace`: the Unicode White_Space property (same set as Rust's).
pub(crate) fn is_space(c: char) -> bool {
    c.is_whitespace()
}

/// Go `unicode.IsLetter`: general category L.
pub(crate) fn is_letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    c.general_category_group() == Group::Letter
}

/// Go `unicode.IsDigit`: general category Nd.
pub(crate) fn is_digit(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    c.general_category() == GeneralCategory::DecimalNumber
}

/// Go `strconv.IsPrint`: categories L, M, N, P, S, plus the ASCII space.
pub(crate) fn is_print(c: char) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    matches!(
        c.general_category_group(),
        Group::Letter | Group::Mark | Group::Number | Group::Punctuation | Group::Symbol
    )
}

/// Go `strings.ToLower`: the simple (one-to-one) lower-case mapping per
/// character, with no context rules (a final `Σ` becomes `σ`, `İ` becomes `i`).
pub(crate) fn to_lower(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    s.chars()
        .map(|c| {
            let mut lower = c.to_lowercase();
            match (lower.next(), lower.next()) {
                (Some(l), None) => l,
                // Only U+0130 has a multi-character full mapping; its simple
                // mapping is a plain `i`.
                (Some(l), Some(_)) => l,
                (None, _) => c,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn print_table_matches_go_for_samples() {
        for c in ['a', ' ', '♥', '☃', 'é', '한', '\u{FFFD}', '~'] {
            assert!(is_print(c), "{c:?} should be printable");
        }
        for c in [
            '\0', '\u{7f}', '\u{a0}', '\u{2028}', '\u{200b}', '\u{feff}', '\u{e000}', '\u{3000}',
        ] {
            assert!(!is_print(c), "{c:?} should not be printable");
        }
    }

    #[test]
    fn lower_uses_simple_mapping() {
        assert_eq!(to_lower("FROM"), "from");
        assert_eq!(to_lower("ΣΑΣ"), "σασ");
        assert_eq!(to_lower("\u{130}"), "i");
    }

    #[test]
    fn letters_and_digits_follow_categories() {
        assert!(is_letter('한') && is_letter('é') && !is_letter('_') && !is_letter('1'));
        assert!(is_digit('٣') && !is_digit('Ⅷ') && !is_digit('a'));
    }
}
