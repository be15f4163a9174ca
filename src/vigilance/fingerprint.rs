//! A device's fingerprint: what stays the same about one browser on one machine from sign-in to
//! sign-in, as the gateway sees it. Browser family, OS family, the client-hint platform and the
//! device class; never versions (a browser update is not a new device) and never the IP (a
//! laptop moves). Two people's identical browsers share a fingerprint: it is a "have we seen
//! this kind of device for this person" signal, not a tracking identifier.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{cut, MAX_LABEL_LEN};
use crate::client_info::{ClientHints, ClientInfoResolver, Device};

/// What the device parser says when it cannot tell (see `client_info::device`).
const UNKNOWN_BROWSER: &str = "Unknown browser";
const UNKNOWN_OS: &str = "Unknown OS";
/// Longest client-hint platform kept (real ones are "macOS", "Chrome OS", …).
const MAX_PLATFORM_LEN: usize = 32;

/// Phone, tablet or computer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceClass {
    Desktop,
    Mobile,
    Tablet,
    /// Neither the User-Agent nor the hints say.
    Unknown,
}

impl DeviceClass {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceClass::Desktop => "desktop",
            DeviceClass::Mobile => "mobile",
            DeviceClass::Tablet => "tablet",
            DeviceClass::Unknown => "unknown",
        }
    }
}

/// A device's fingerprint and how to name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// 32 lower-case hex digits: the first 16 bytes of a SHA-256 of the parts.
    pub key: String,
    /// "Firefox on Windows"; "an unrecognised browser" when nothing could be parsed.
    pub label: String,
    pub class: DeviceClass,
}

impl Fingerprint {
    /// The fingerprint of a session's (or a request's) User-Agent and client hints. A missing or
    /// garbage User-Agent still gives one ("an unrecognised browser"): signing in with something
    /// unrecognisable is itself worth a `new_device` flag the first time.
    pub fn of(resolver: &ClientInfoResolver, user_agent: &str, hints: &ClientHints) -> Fingerprint {
        Self::from_device(&resolver.describe_device(user_agent, hints), user_agent, hints)
    }

    /// The same from an already parsed [`Device`].
    pub fn from_device(device: &Device, user_agent: &str, hints: &ClientHints) -> Fingerprint {
        let browser = device.browser.trim();
        let os = os_family(&device.os);
        let platform = platform(hints);
        let class = class(os, user_agent, hints);
        let mut digest = Sha256::new();
        for part in ["dalea-fingerprint-v1", browser, os, &platform, class.as_str()] {
            digest.update(part.as_bytes());
            digest.update([0u8]);
        }
        let key = digest.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect();
        let label = match (browser != UNKNOWN_BROWSER, os != UNKNOWN_OS) {
            (true, true) => format!("{browser} on {os}"),
            (true, false) => browser.to_string(),
            (false, true) => format!("an unrecognised browser on {os}"),
            (false, false) => "an unrecognised browser".to_string(),
        };
        // The class is part of the device: say it where one OS runs on both (an Android phone
        // and an Android tablet are two devices, and the reason must tell them apart).
        let label = match class {
            DeviceClass::Mobile => format!("{label} (phone)"),
            DeviceClass::Tablet => format!("{label} (tablet)"),
            DeviceClass::Desktop | DeviceClass::Unknown => label,
        };
        Fingerprint { key, label: cut(&label, MAX_LABEL_LEN), class }
    }
}

/// "macOS 14" → "macOS", "Windows 8.1" → "Windows", "Android 14" → "Android": the device
/// label's OS without its version words (those start with a digit).
pub fn os_family(os: &str) -> &str {
    let mut family = os.trim();
    while let Some((head, last)) = family.rsplit_once(' ') {
        if !last.starts_with(|c: char| c.is_ascii_digit()) {
            break;
        }
        family = head.trim_end();
    }
    family
}

/// `Sec-CH-UA-Platform`, lower case, printable ASCII only, bounded; "" when absent or odd.
fn platform(hints: &ClientHints) -> String {
    let Some(p) = hints.platform.as_deref().map(str::trim) else { return String::new() };
    if p.len() > MAX_PLATFORM_LEN || !p.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return String::new();
    }
    p.to_ascii_lowercase()
}

fn class(os_family: &str, user_agent: &str, hints: &ClientHints) -> DeviceClass {
    let ua = user_agent;
    let android = os_family == "Android";
    // Android tablets send no "Mobile" token (phones do, even in Chrome's reduced UA).
    if ua.contains("iPad") || ua.contains("Tablet") || (android && !ua.contains("Mobile") && hints.mobile != Some(true))
    {
        return DeviceClass::Tablet;
    }
    let mobile_os = matches!(os_family, "iOS" | "Android" | "Windows Phone" | "BlackBerry OS" | "KaiOS");
    if hints.mobile == Some(true) || mobile_os || ua.contains("Mobi") {
        return DeviceClass::Mobile;
    }
    if os_family != UNKNOWN_OS {
        return DeviceClass::Desktop;
    }
    DeviceClass::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIREFOX_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0";
    const FIREFOX_WINDOWS_OLDER: &str =
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0";
    const CHROME_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) \
                              Chrome/131.0.0.0 Safari/537.36";
    const CHROME_ANDROID_PHONE: &str = "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) \
                                        Chrome/131.0.0.0 Mobile Safari/537.36";
    const CHROME_ANDROID_TABLET: &str = "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) \
                                         Chrome/131.0.0.0 Safari/537.36";
    const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 \
                                 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
    const SAFARI_IPAD: &str = "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) \
                               Version/17.5 Mobile/15E148 Safari/604.1";

    fn resolver() -> ClientInfoResolver {
        ClientInfoResolver::new(Vec::new(), None).expect("resolver")
    }

    fn fp(ua: &str, hints: &ClientHints) -> Fingerprint {
        Fingerprint::of(&resolver(), ua, hints)
    }

    fn hints(platform: &str, version: &str, mobile: bool) -> ClientHints {
        ClientHints {
            platform: Some(platform.into()),
            platform_version: Some(version.into()),
            mobile: Some(mobile),
            ..ClientHints::default()
        }
    }

    #[test]
    fn labels_name_browser_and_os_family_without_versions() {
        let none = ClientHints::default();
        let f = fp(FIREFOX_WINDOWS, &none);
        assert_eq!((f.label.as_str(), f.class), ("Firefox on Windows", DeviceClass::Desktop));
        assert_eq!(f.key.len(), 32);
        assert!(f.key.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{}", f.key);
        assert_eq!(fp(CHROME_MAC, &none).label, "Chrome on macOS");
        assert_eq!(fp(SAFARI_IPHONE, &none).label, "Safari on iOS (phone)");
        assert_eq!(fp(CHROME_ANDROID_PHONE, &none).label, "Chrome on Android (phone)");
        assert_eq!(fp(CHROME_ANDROID_TABLET, &none).label, "Chrome on Android (tablet)");
        assert_eq!(fp(SAFARI_IPHONE, &none).class, DeviceClass::Mobile);
        assert_eq!(fp(SAFARI_IPAD, &none).class, DeviceClass::Tablet);
        assert_eq!(fp(CHROME_ANDROID_PHONE, &none).class, DeviceClass::Mobile);
        assert_eq!(fp(CHROME_ANDROID_TABLET, &none).class, DeviceClass::Tablet);
    }

    #[test]
    fn browser_and_os_updates_keep_the_fingerprint() {
        let none = ClientHints::default();
        assert_eq!(fp(FIREFOX_WINDOWS, &none), fp(FIREFOX_WINDOWS_OLDER, &none));
        // The same Chrome before and after the OS update the hints reveal (macOS 14 → 15).
        assert_eq!(fp(CHROME_MAC, &hints("macOS", "14.6.1", false)), fp(CHROME_MAC, &hints("macOS", "15.1.0", false)));
    }

    #[test]
    fn different_browsers_platforms_and_classes_differ() {
        let none = ClientHints::default();
        let keys = [
            fp(FIREFOX_WINDOWS, &none).key,
            fp(CHROME_MAC, &none).key,
            fp(CHROME_MAC, &hints("macOS", "14.6.1", false)).key,
            fp(CHROME_ANDROID_PHONE, &none).key,
            fp(CHROME_ANDROID_TABLET, &none).key,
            fp(SAFARI_IPHONE, &none).key,
            fp(SAFARI_IPAD, &none).key,
            fp("", &none).key,
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // A UA claiming Windows from a browser whose hints say Linux is another device.
        assert_ne!(fp(FIREFOX_WINDOWS, &none).key, fp(FIREFOX_WINDOWS, &hints("Linux", "", false)).key);
    }

    #[test]
    fn missing_and_garbage_user_agents_are_an_unrecognised_browser() {
        let none = ClientHints::default();
        for ua in ["", "   ", "\u{0}\u{1}garbage\u{7f}", "Mozilla/5.0 (;;;)", &"x".repeat(10_000)] {
            let f = fp(ua, &none);
            assert_eq!((f.label.as_str(), f.class), ("an unrecognised browser", DeviceClass::Unknown), "{ua:?}");
        }
        // All unrecognisable UAs are one device: the garbage itself carries no identity.
        assert_eq!(fp("", &none), fp("garbage", &none));
        assert_eq!(fp("curl/8.5.0", &none).label, "curl");
        let odd_hint = ClientHints { platform: Some("\u{1b}[31m".into()), ..ClientHints::default() };
        assert_eq!(fp("", &odd_hint), fp("", &none), "control characters in a hint are dropped");
    }

    #[test]
    fn os_family_drops_version_words() {
        for (label, family) in [
            ("macOS 14", "macOS"),
            ("macOS 10.14", "macOS"),
            ("Windows 11", "Windows"),
            ("Windows 8.1", "Windows"),
            ("Android 14", "Android"),
            ("Ubuntu", "Ubuntu"),
            ("Windows Phone 10", "Windows Phone"),
            ("Unknown OS", "Unknown OS"),
            ("", ""),
        ] {
            assert_eq!(os_family(label), family, "{label}");
        }
    }
}
