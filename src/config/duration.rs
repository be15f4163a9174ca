//! Duration strings in the config file: "30d", "12h", "10m", "45s", "500ms", "2w", "1h30m".
//!
//! A duration is one or more `<digits><unit>` parts, added together. Units: `w` (7 days), `d`,
//! `h`, `m`, `s`, `ms`. Resolution is one millisecond; there are no fractions ("1.5h" → "90m").

use std::time::Duration;

/// Units from largest to smallest, with their length in milliseconds.
const UNITS: [(&str, u64); 6] = [
    ("w", 7 * 24 * 3600 * 1000),
    ("d", 24 * 3600 * 1000),
    ("h", 3600 * 1000),
    ("m", 60 * 1000),
    ("s", 1000),
    ("ms", 1),
];

const UNIT_LIST: &str = "w, d, h, m, s, ms";

/// Parses "30d", "500ms", "1h30m" (surrounding whitespace ignored).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err("empty duration; expected something like \"30d\", \"12h\" or \"500ms\"".into());
    }
    if text.starts_with('-') {
        return Err(format!("{text:?} is negative; durations cannot be negative"));
    }
    let mut rest = text;
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(format!(
                "{text:?} is not a duration; expected a number followed by a unit ({UNIT_LIST}), e.g. \"30d\" or \"1h30m\""
            ));
        }
        let (digits, after) = rest.split_at(digits_end);
        let unit_end = after.find(|c: char| c.is_ascii_digit()).unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        if matches!(unit, "." | ",") && !next.is_empty() {
            return Err(fraction_error(text, digits, unit, next));
        }
        if unit.is_empty() {
            return Err(format!("{text:?} is missing a unit after {digits}; use one of {UNIT_LIST}"));
        }
        let Some(&(_, unit_ms)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(format!("{text:?} has an unknown unit {unit:?}; use one of {UNIT_LIST}"));
        };
        let too_long = || format!("{text:?} is too long a duration");
        let count: u64 = digits.parse().map_err(|_| too_long())?;
        let part = count.checked_mul(unit_ms).ok_or_else(too_long)?;
        total_ms = total_ms.checked_add(part).ok_or_else(too_long)?;
        rest = next;
    }
    Ok(Duration::from_millis(total_ms))
}

/// The error for a part with a fraction ("1.5h"): `digits` is the whole part ("1"), `sep` the
/// decimal separator, `after_sep` what follows it ("5h…"). Suggests the whole-unit spelling
/// when the part is a whole number of milliseconds ("1.5h" → "1h30m").
fn fraction_error(text: &str, digits: &str, sep: &str, after_sep: &str) -> String {
    let frac_end = after_sep.find(|c: char| !c.is_ascii_digit()).unwrap_or(after_sep.len());
    let (frac, after) = after_sep.split_at(frac_end);
    let unit_end = after.find(|c: char| c.is_ascii_digit()).unwrap_or(after.len());
    let unit = &after[..unit_end];
    let part = format!("{digits}{sep}{frac}{unit}");
    let whole = UNITS
        .iter()
        .position(|(name, _)| *name == unit)
        .and_then(|start| Some((start, whole_millis(digits, frac, UNITS[start].1)?)))
        .map(|(start, ms)| spell_from(ms, start));
    let lead = if part == text {
        format!("{text:?} has a fraction; fractions are not supported, use whole units instead")
    } else {
        format!("{text:?} has a fraction ({part}); fractions are not supported, use whole units instead")
    };
    match whole {
        Some(s) if part == text => format!("{lead}: \"{s}\""),
        Some(s) => format!("{lead}: \"{s}\" for {part}"),
        None => format!("{lead}, e.g. \"1h30m\" rather than \"1.5h\" (the smallest unit is ms)"),
    }
}

/// `digits.frac` units of `unit_ms` each, in whole milliseconds, or `None` when that is not a
/// whole number or too large.
fn whole_millis(digits: &str, frac: &str, unit_ms: u64) -> Option<u64> {
    if frac.len() > 18 {
        return None;
    }
    let scale = 10u128.pow(frac.len() as u32);
    let scaled: u128 = format!("{digits}{frac}").parse().ok()?;
    let total = scaled.checked_mul(u128::from(unit_ms))?;
    if total % scale != 0 {
        return None;
    }
    u64::try_from(total / scale).ok()
}

/// `ms` spelt greedily with the units from `UNITS[start]` down ("1h30m", not "90m").
fn spell_from(ms: u64, start: usize) -> String {
    let mut left = ms;
    let mut out = String::new();
    for &(name, unit_ms) in &UNITS[start..] {
        let count = left / unit_ms;
        if count > 0 {
            out.push_str(&format!("{count}{name}"));
            left -= count * unit_ms;
        }
    }
    if out.is_empty() {
        "0s".to_string()
    } else {
        out
    }
}

/// Deserialises a duration field of the file as its text, checked later by [`parse_duration`].
/// A bare number (`idle_timeout = 604800`) gets a message saying a unit is missing instead of
/// serde's "invalid type: integer, expected a string".
pub(super) fn deserialize_text<'de, D>(deserializer: D) -> Result<String, D::Error>
where
    D: serde::Deserializer<'de>,
{
    deserializer.deserialize_any(DurationTextVisitor)
}

const EXPECTED: &str = "a duration such as \"30d\", \"12h\" or \"90s\"";

struct DurationTextVisitor;

impl serde::de::Visitor<'_> for DurationTextVisitor {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
        match u64::try_from(v) {
            Ok(n) => self.visit_u64(n),
            Err(_) => Err(E::custom(format!("expected {EXPECTED}, got the number {v} (durations cannot be negative)"))),
        }
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
        let as_secs = format!("{v}s");
        let shorter = format_duration(Duration::from_secs(v));
        let same = if shorter == as_secs { String::new() } else { format!(", the same as \"{shorter}\"") };
        Err(E::custom(format!(
            "expected {EXPECTED}, got the number {v} (add a unit: if seconds were meant, \
             write \"{as_secs}\"{same})"
        )))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
        Err(E::custom(format!(
            "expected {EXPECTED}, got the number {v} (write it as a quoted string with a unit; \
             fractions are not supported, so use whole units, e.g. \"1h30m\")"
        )))
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<String, E> {
        Err(E::custom(format!("expected {EXPECTED}, got {v}")))
    }
}

/// The shortest string [`parse_duration`] reads back as `d` ("30d", not "4w2d"; "90s", not
/// "1m30s"). Ties go to the larger unit. Anything below a millisecond is dropped.
pub fn format_duration(d: Duration) -> String {
    let Ok(total_ms) = u64::try_from(d.as_millis()) else {
        // Far beyond anything a config holds; the integer form still reads back.
        return format!("{}s", d.as_secs());
    };
    if total_ms == 0 {
        return "0s".to_string();
    }
    // Greedy decomposition starting from each unit in turn; keep the shortest.
    let mut best: Option<String> = None;
    for start in 0..UNITS.len() {
        let mut left = total_ms;
        let mut out = String::new();
        for &(name, unit_ms) in &UNITS[start..] {
            let count = left / unit_ms;
            if count > 0 {
                out.push_str(&count.to_string());
                out.push_str(name);
                left -= count * unit_ms;
            }
        }
        if best.as_ref().is_none_or(|b| out.len() < b.len()) {
            best = Some(out);
        }
    }
    best.unwrap_or_else(|| format!("{total_ms}ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn parses_single_units() {
        assert_eq!(parse_duration("30d").unwrap(), secs(30 * 86400));
        assert_eq!(parse_duration("12h").unwrap(), secs(12 * 3600));
        assert_eq!(parse_duration("10m").unwrap(), secs(600));
        assert_eq!(parse_duration("45s").unwrap(), secs(45));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2w").unwrap(), secs(14 * 86400));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn parses_compounds_and_trims() {
        assert_eq!(parse_duration("1h30m").unwrap(), secs(5400));
        assert_eq!(parse_duration("1d12h").unwrap(), secs(36 * 3600));
        assert_eq!(parse_duration("1s500ms").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("  5s\n").unwrap(), secs(5));
    }

    #[test]
    fn rejects_bad_input() {
        for bad in ["", "   ", "-5s", "5", "s", "5x", "5 s", "1h 30m", "1.5h", "5S", "h5", "5sm"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_duration("5x").unwrap_err().contains("unknown unit \"x\""));
        assert!(parse_duration("-5s").unwrap_err().contains("negative"));
        assert!(parse_duration("").unwrap_err().contains("empty"));
        assert!(parse_duration("5").unwrap_err().contains("missing a unit"));
    }

    #[test]
    fn fractions_get_the_whole_unit_spelling() {
        let err = parse_duration("1.5h").unwrap_err();
        assert!(err.contains("fractions are not supported"), "{err}");
        assert!(err.ends_with("use whole units instead: \"1h30m\""), "{err}");
        assert!(!err.contains("unknown unit"), "{err}");
        assert!(parse_duration("2.5d").unwrap_err().ends_with("\"2d12h\""));
        assert!(parse_duration("1,5h").unwrap_err().ends_with("\"1h30m\""));
        assert!(parse_duration("0.5s").unwrap_err().ends_with("\"500ms\""));
        let err = parse_duration("1h1.5m").unwrap_err();
        assert!(err.contains("(1.5m)"), "{err}");
        assert!(err.ends_with("\"1m30s\" for 1.5m"), "{err}");
        let err = parse_duration("0.0001s").unwrap_err();
        assert!(err.contains("fractions are not supported"), "{err}");
        assert!(err.contains("smallest unit is ms"), "{err}");
    }

    #[test]
    fn rejects_overflow() {
        let err = parse_duration("99999999999999999999s").unwrap_err();
        assert!(err.contains("too long"), "{err}");
        assert!(parse_duration("18446744073709551615w").unwrap_err().contains("too long"));
        assert!(parse_duration("18446744073709551615ms1ms").unwrap_err().contains("too long"));
    }

    #[test]
    fn formats_shortest() {
        let cases = [
            (secs(30 * 86400), "30d"),
            (secs(90 * 86400), "90d"),
            (secs(14 * 86400), "2w"),
            (secs(3600), "1h"),
            (secs(60), "1m"),
            (secs(90), "90s"),
            (secs(5400), "90m"),
            (secs(3600 + 1), "1h1s"),
            (secs(3600 + 60 + 1), "61m1s"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_millis(100), "100ms"),
            (secs(86400 + 3600), "25h"),
            (Duration::ZERO, "0s"),
        ];
        for (d, want) in cases {
            assert_eq!(format_duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn format_round_trips() {
        for ms in [1, 999, 1000, 61_000, 3_599_999, 86_400_000, 2_678_400_000, 7_776_000_123] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d, "{ms}ms");
        }
    }
}
