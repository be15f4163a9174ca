//! "Chrome on macOS 14": browser and OS labels from the User-Agent, refined by client hints.
//!
//! The rules are uap-core's, embedded at build time (see `build.rs`) and compiled once per
//! process. The product contract is "never a made-up version", so the OS versions browsers
//! freeze in the UA are dropped unless a client hint gives the real one:
//! - `Intel Mac OS X 10_15_7` / Firefox's `10.15` are sent by every macOS since 10.15;
//! - `Windows NT 10.0` is both Windows 10 and 11;
//! - Chrome's reduced Android UA always says `Android 10; K`;
//! - WebKit on iOS 26 says `iPhone OS 18_6` (later `18_7`); Safari's `Version/26` gives it away,
//!   other iOS browsers carry no such token, so 18.6+ without it is treated as unknown too;
//! - ChromeOS's `CrOS x86_64 14541.0.0` is frozen; Linux UAs never carry a version.

use std::sync::OnceLock;

use serde::Serialize;
use ua_parser::{os, user_agent};

use super::hints::ClientHints;
use super::ClientInfoError;

const UNKNOWN_BROWSER: &str = "Unknown browser";
const UNKNOWN_OS: &str = "Unknown OS";
/// Longer User-Agents are cut here before parsing (real ones are a few hundred bytes).
const MAX_UA_LEN: usize = 1024;
/// Browser and OS names are cut here (uap fills some from the UA itself).
const MAX_NAME_LEN: usize = 64;

/// Browser/OS labels for the sessions page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    /// "Chrome", "Safari", "Headless Chrome", "curl"; "Unknown browser" when unparseable.
    pub browser: String,
    /// The browser's major version as the UA states it ("131"); None when absent.
    pub browser_version: Option<String>,
    /// "macOS 14", or "macOS" when the real version is unknown; "Unknown OS" when unparseable.
    pub os: String,
    /// "Chrome on macOS 14".
    pub device: String,
}

/// uap-core's browser and OS rules, compiled.
pub(super) struct UaRules {
    ua: user_agent::Extractor<'static>,
    os: os::Extractor<'static>,
}

/// The compiled rules, built on first use and shared by every resolver in the process.
pub(super) fn rules() -> Result<&'static UaRules, ClientInfoError> {
    static RULES: OnceLock<Result<UaRules, String>> = OnceLock::new();
    RULES.get_or_init(build_rules).as_ref().map_err(|e| ClientInfoError::UserAgentRules(e.clone()))
}

fn build_rules() -> Result<UaRules, String> {
    const JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/uap_regexes.json"));
    let regexes: ua_parser::Regexes<'static> =
        serde_json::from_str(JSON).map_err(|e| format!("embedded rules do not parse: {e}"))?;
    let ua = user_agent::Builder::new()
        .push_all(regexes.user_agent_parsers)
        .map_err(|e| format!("browser rules: {e}"))?
        .build()
        .map_err(|e| format!("browser rules: {e}"))?;
    let os = os::Builder::new()
        .push_all(regexes.os_parsers)
        .map_err(|e| format!("OS rules: {e}"))?
        .build()
        .map_err(|e| format!("OS rules: {e}"))?;
    Ok(UaRules { ua, os })
}

impl UaRules {
    /// uap's own answer, before any renaming (used to check the rules against uap's tests).
    #[cfg(test)]
    pub(super) fn raw(&self, ua: &str) -> (Option<user_agent::Value>, Option<os::Value>) {
        let ua = truncate(ua);
        (self.ua.extract(ua).map(|v| v.into_owned()), self.os.extract(ua).map(|v| v.into_owned()))
    }

    pub(super) fn describe(&self, user_agent: &str, hints: &ClientHints) -> Device {
        let ua = truncate(user_agent.trim());
        let (browser, browser_version) = match self.ua.extract(ua) {
            Some(b) if is_known(&b.family) => (browser_name(&b.family, hints), clean(b.major)),
            _ => (UNKNOWN_BROWSER.to_owned(), None),
        };
        let os = match self.os.extract(ua) {
            Some(o) if is_known(&o.os) => os_label(&o, ua, hints),
            _ => UNKNOWN_OS.to_owned(),
        };
        let device = format!("{browser} on {os}");
        Device { browser, browser_version, os, device }
    }
}

fn truncate(ua: &str) -> &str {
    cut(ua, MAX_UA_LEN)
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn is_known(family: &str) -> bool {
    !family.trim().is_empty() && family != "Other"
}

/// A version part fit for display: short, plain characters.
fn clean(v: Option<&str>) -> Option<String> {
    let v = v?.trim();
    let ok = !v.is_empty() && v.len() <= 16 && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == ' ');
    ok.then(|| v.to_owned())
}

/// uap's family, with the mobile variants folded into the browser people know: the OS
/// already says it is a phone.
fn browser_name(family: &str, hints: &ClientHints) -> String {
    let name = match family {
        "HeadlessChrome" => "Headless Chrome",
        "Chrome Mobile" | "Chrome Mobile iOS" => "Chrome",
        "Mobile Safari" => "Safari",
        "Firefox Mobile" | "Firefox iOS" => "Firefox",
        "Edge Mobile" => "Edge",
        "Opera Mobile" => "Opera",
        other => cut(other.trim(), MAX_NAME_LEN),
    };
    // Brave sends Chrome's UA; only its client hints name it.
    if name == "Chrome" && hints.has_brand("Brave") {
        return "Brave".to_owned();
    }
    name.to_owned()
}

fn os_label(o: &os::ValueRef<'_>, ua: &str, hints: &ClientHints) -> String {
    let family: &str = &o.os;
    let major = o.major.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let minor = o.minor.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let name = match family {
        "Mac OS X" => "macOS",
        "Chrome OS" => "ChromeOS",
        other => cut(other.trim(), MAX_NAME_LEN),
    };
    if let Some(refined) = refine_from_hints(family, hints) {
        return refined;
    }
    let version = match family {
        "Mac OS X" => macos_version(major, minor),
        // `Windows NT 10.0` is Windows 10 or 11; older NT versions are what they say.
        "Windows" => match major {
            Some("10") | None => None,
            Some(m) => clean(Some(m)).map(|m| match clean(minor) {
                Some(minor) => format!("{m}.{minor}"),
                None => m,
            }),
        },
        "Android" if ua.contains("Android 10; K)") => None,
        "iOS" => ios_version(major, minor, ua),
        "Linux" | "Chrome OS" => None,
        _ => clean(major),
    };
    match version {
        Some(v) => format!("{name} {v}"),
        None => name.to_owned(),
    }
}

/// Versions below 10.15 are real (UAs from before the freeze); 10.15 is the frozen value.
fn macos_version(major: Option<&str>, minor: Option<&str>) -> Option<String> {
    let major: u32 = major?.parse().ok()?;
    match major {
        10 => {
            let minor: u32 = minor?.parse().ok()?;
            (minor < 15).then(|| format!("10.{minor}"))
        }
        11..=99 => Some(major.to_string()),
        _ => None,
    }
}

fn ios_version(major: Option<&str>, minor: Option<&str>, ua: &str) -> Option<String> {
    let major_n: u32 = major?.parse().ok()?;
    let frozen = match safari_version(ua) {
        Some(safari) => safari >= 26,
        None => major_n == 18 && minor.and_then(|m| m.parse::<u32>().ok()).is_some_and(|m| m >= 6),
    };
    (!frozen).then(|| major_n.to_string())
}

/// The major of the `Version/NN` token WebKit browsers send.
fn safari_version(ua: &str) -> Option<u32> {
    let rest = &ua[ua.find("Version/")? + "Version/".len()..];
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The OS label from `Sec-CH-UA-Platform(-Version)`, when the hint's platform agrees with the
/// UA's OS family and its version says something real.
fn refine_from_hints(ua_family: &str, hints: &ClientHints) -> Option<String> {
    let platform = hints.platform.as_deref()?;
    let agrees = matches!(
        (platform, ua_family),
        ("macOS", "Mac OS X")
            | ("Windows", "Windows")
            | ("Android", "Android")
            | ("Linux", "Linux")
            | ("Chrome OS" | "ChromeOS", "Chrome OS")
    );
    if !agrees {
        return None;
    }
    let version = hints.platform_version.as_deref().and_then(parse_version);
    match platform {
        "macOS" => match version? {
            (10, minor) => Some(format!("macOS 10.{minor}")),
            (major @ 11.., _) => Some(format!("macOS {major}")),
            _ => None,
        },
        // Microsoft's mapping: 0.0.0 is 7/8/8.1 (keep what the UA says), 1–10 are Windows 10
        // releases, 13 and up Windows 11.
        "Windows" => match version?.0 {
            1..=10 => Some("Windows 10".to_owned()),
            13.. => Some("Windows 11".to_owned()),
            _ => None,
        },
        "Android" => match version?.0 {
            0 => None,
            major => Some(format!("Android {major}")),
        },
        "Linux" => Some("Linux".to_owned()),
        _ => Some("ChromeOS".to_owned()),
    }
}

/// `"14.6.1"` → (14, 6); every part must be digits. None for `""` and anything odd.
fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.trim().split('.');
    let num = |p: &str| -> Option<u32> {
        (!p.is_empty() && p.len() <= 6 && p.bytes().all(|b| b.is_ascii_digit())).then(|| p.parse().ok())?
    };
    let major = num(parts.next()?)?;
    let minor = match parts.next() {
        Some(p) => num(p)?,
        None => 0,
    };
    parts.all(|p| num(p).is_some()).then_some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_parsing_is_strict() {
        assert_eq!(parse_version("14.6.1"), Some((14, 6)));
        assert_eq!(parse_version("13"), Some((13, 0)));
        assert_eq!(parse_version(" 0.0.0 "), Some((0, 0)));
        for odd in ["", "14.", ".1", "14.6a", "1e3", "-1", "9999999.0", "14..1"] {
            assert_eq!(parse_version(odd), None, "{odd:?}");
        }
    }

    #[test]
    fn names_and_versions_are_cut_and_cleaned() {
        assert_eq!(cut("ééé", 3), "é");
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(browser_name(&"x".repeat(500), &ClientHints::default()).len(), MAX_NAME_LEN);
        assert_eq!(clean(Some(" 131 ")).as_deref(), Some("131"));
        assert_eq!(clean(Some("<script>")), None);
        assert_eq!(clean(Some(&"1".repeat(17))), None);
        assert_eq!(clean(Some("")), None);
    }
}
