//! Names people give things (API keys, passkeys): what may be in one. Control characters, and
//! invisible or direction-changing ones that could make one name look like another in a list or
//! the audit log, are refused.

/// Whether `c` must not be in a name: control characters, and characters that show as nothing
/// or change the text's direction (format characters, Hangul and halfwidth fillers, variation
/// selectors, tags).
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E0FFF}'
        )
}

/// `raw` trimmed, if it is 1 to `max_chars` characters with nothing hidden.
pub fn clean(raw: &str, max_chars: usize) -> Option<String> {
    let name = raw.trim();
    let ok = !name.is_empty() && name.chars().count() <= max_chars && !name.chars().any(is_hidden);
    ok.then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_names_pass_trimmed() {
        assert_eq!(clean("  Work laptop ", 64).as_deref(), Some("Work laptop"));
        assert_eq!(clean("Clé de secours 🔑", 64).as_deref(), Some("Clé de secours 🔑"));
        assert_eq!(clean("日本語のキー", 64).as_deref(), Some("日本語のキー"));
    }

    #[test]
    fn empty_long_control_and_invisible_names_are_refused() {
        let long = "x".repeat(65);
        for bad in [
            "",
            "   ",
            &long,
            "tab\there",
            "new\nline",
            "a\u{0085}b",
            "a\u{202E}b",
            "a\u{2066}b",
            "\u{3164}",
            "a\u{115F}",
            "a\u{061C}b",
            "soft\u{00AD}hyphen",
            "tag\u{E0041}",
            "zero\u{200B}width",
            "a\u{FE0F}",
            "\u{FFA0}",
        ] {
            assert_eq!(clean(bad, 64), None, "{bad:?}");
        }
    }
}
