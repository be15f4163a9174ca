//! Tests of the resolver as other modules use it: device labels for real User-Agents and
//! client hint refinement.

use std::sync::OnceLock;

use super::*;

/// One resolver for the whole test binary (compiling the UA rules is the slow part).
fn resolver() -> &'static ClientInfoResolver {
    static R: OnceLock<ClientInfoResolver> = OnceLock::new();
    R.get_or_init(|| ClientInfoResolver::new(vec!["10.0.0.0/8".parse().unwrap()], None).unwrap())
}

fn label(ua: &str) -> Device {
    resolver().describe_device(ua, &ClientHints::default())
}

fn hinted(ua: &str, platform: &str, version: &str) -> String {
    let hints = ClientHints {
        platform: Some(platform.to_owned()),
        platform_version: Some(version.to_owned()),
        ..ClientHints::default()
    };
    resolver().describe_device(ua, &hints).device
}

const CHROME_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const FIREFOX_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:133.0) Gecko/20100101 Firefox/133.0";
const SAFARI_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15";
const EDGE_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0";
const CHROME_WIN: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const CHROME_ANDROID_REDUCED: &str =
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36";
const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1";
const FIREFOX_LINUX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";

fn assert_device(ua: &str, browser: &str, version: Option<&str>, os: &str) {
    let d = label(ua);
    assert_eq!((d.browser.as_str(), d.browser_version.as_deref(), d.os.as_str()), (browser, version, os), "for {ua}");
    assert_eq!(d.device, format!("{browser} on {os}"));
}

#[test]
fn desktop_browsers_with_frozen_os_versions() {
    assert_device(CHROME_MAC, "Chrome", Some("131"), "macOS");
    assert_device(FIREFOX_MAC, "Firefox", Some("133"), "macOS");
    assert_device(SAFARI_MAC, "Safari", Some("18"), "macOS");
    assert_device(EDGE_WIN, "Edge", Some("131"), "Windows");
    assert_device(CHROME_WIN, "Chrome", Some("131"), "Windows");
    assert_eq!(label(CHROME_MAC).device, "Chrome on macOS");
}

#[test]
fn mobile_browsers() {
    assert_device(CHROME_ANDROID_REDUCED, "Chrome", Some("131"), "Android");
    let firefox_android = "Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0";
    assert_device(firefox_android, "Firefox", Some("133"), "Android 14");
    let old_chrome_android = "Mozilla/5.0 (Linux; Android 9; SM-G960F) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/99.0.4844.88 Mobile Safari/537.36";
    assert_device(old_chrome_android, "Chrome", Some("99"), "Android 9");
    assert_device(SAFARI_IPHONE, "Safari", Some("18"), "iOS 18");
    assert_eq!(label(SAFARI_IPHONE).device, "Safari on iOS 18");
}

#[test]
fn ios_26_frozen_version_is_not_shown() {
    let safari_26 = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/26.0 Mobile/15E148 Safari/604.1";
    assert_device(safari_26, "Safari", Some("26"), "iOS");
    let safari_18_6 = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.6 Mobile/15E148 Safari/604.1";
    assert_device(safari_18_6, "Safari", Some("18"), "iOS 18");
    // Other iOS browsers carry no Version/ token: 18.6+ may be iOS 26 in disguise.
    let chrome_ios = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/140.0.7339.101 Mobile/15E148 Safari/604.1";
    assert_device(chrome_ios, "Chrome", Some("140"), "iOS");
    let chrome_ios_17 = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/126.0.6478.54 Mobile/15E148 Safari/604.1";
    assert_device(chrome_ios_17, "Chrome", Some("126"), "iOS 17");
}

#[test]
fn linux_chromeos_and_unfrozen_old_versions() {
    assert_device(FIREFOX_LINUX, "Firefox", Some("133"), "Linux");
    let headless =
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36";
    assert_device(headless, "Headless Chrome", Some("156"), "Linux");
    let chromeos = "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    assert_device(chromeos, "Chrome", Some("131"), "ChromeOS");
    let win7 = "Mozilla/5.0 (Windows NT 6.1; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/109.0.0.0 Safari/537.36";
    assert_device(win7, "Chrome", Some("109"), "Windows 7");
    let win81 = "Mozilla/5.0 (Windows NT 6.3; Win64; x64; rv:115.0) Gecko/20100101 Firefox/115.0";
    assert_device(win81, "Firefox", Some("115"), "Windows 8.1");
    let mojave = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/14.1.2 Safari/605.1.15";
    assert_device(mojave, "Safari", Some("14"), "macOS 10.14");
}

#[test]
fn non_browsers_and_garbage() {
    assert_device("curl/8.5.0", "curl", Some("8"), "Unknown OS");
    for ua in ["", "   ", "\u{0}\u{1}\u{7f}", "%%%%", "Mozilla/5.0", "\u{1F600}\u{1F600}", "()();;//"] {
        let d = label(ua);
        assert_eq!(d.os, "Unknown OS", "for {ua:?}");
        if ua.trim().is_empty() {
            assert_eq!(d.device, "Unknown browser on Unknown OS");
            assert_eq!(d.browser_version, None);
        }
    }
    // Very long input is cut, not choked on; a multi-byte char at the cut is no problem.
    let long = format!("{CHROME_MAC} {}", "\u{e9}".repeat(5000));
    assert_eq!(label(&long).browser, "Chrome");
    assert_eq!(label(&"\u{e9}".repeat(2000)).device, "Unknown browser on Unknown OS");
}

#[test]
fn client_hints_refine_frozen_versions() {
    assert_eq!(hinted(CHROME_MAC, "macOS", "14.6.1"), "Chrome on macOS 14");
    assert_eq!(hinted(CHROME_MAC, "macOS", "10.15.7"), "Chrome on macOS 10.15");
    assert_eq!(hinted(CHROME_MAC, "macOS", "26.0.0"), "Chrome on macOS 26");
    assert_eq!(hinted(CHROME_WIN, "Windows", "13.0.0"), "Chrome on Windows 11");
    assert_eq!(hinted(EDGE_WIN, "Windows", "19.0.0"), "Edge on Windows 11");
    assert_eq!(hinted(EDGE_WIN, "Windows", "10.0.0"), "Edge on Windows 10");
    assert_eq!(hinted(EDGE_WIN, "Windows", "1.0.0"), "Edge on Windows 10");
    assert_eq!(hinted(EDGE_WIN, "Windows", "0.0.0"), "Edge on Windows");
    assert_eq!(hinted(CHROME_ANDROID_REDUCED, "Android", "14.0.0"), "Chrome on Android 14");
    assert_eq!(hinted(FIREFOX_LINUX, "Linux", ""), "Firefox on Linux");
    let chromeos = "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    assert_eq!(hinted(chromeos, "Chrome OS", "14541.0.0"), "Chrome on ChromeOS");
}

#[test]
fn client_hints_that_say_nothing_real_are_ignored() {
    // Platform disagrees with the UA: ignored.
    assert_eq!(hinted(CHROME_MAC, "Windows", "15.0.0"), "Chrome on macOS");
    assert_eq!(hinted(CHROME_WIN, "macOS", "14.6.1"), "Chrome on Windows");
    assert_eq!(hinted(FIREFOX_LINUX, "Android", "14.0.0"), "Firefox on Linux");
    assert_eq!(hinted("curl/8.5.0", "macOS", "14.6.1"), "curl on Unknown OS");
    // Missing, empty or odd versions: the UA's answer stands.
    assert_eq!(hinted(CHROME_MAC, "macOS", ""), "Chrome on macOS");
    assert_eq!(hinted(CHROME_MAC, "macOS", "fourteen"), "Chrome on macOS");
    assert_eq!(hinted(CHROME_MAC, "macOS", "9.1"), "Chrome on macOS");
    assert_eq!(hinted(CHROME_WIN, "Windows", "11.0.0"), "Chrome on Windows");
    assert_eq!(hinted(CHROME_ANDROID_REDUCED, "Android", ""), "Chrome on Android");
    let only_platform = ClientHints { platform: Some("macOS".into()), ..ClientHints::default() };
    assert_eq!(resolver().describe_device(CHROME_MAC, &only_platform).os, "macOS");
}

#[test]
fn brave_is_named_from_its_client_hints() {
    let hints = ClientHints {
        platform: Some("Windows".into()),
        platform_version: Some("15.0.0".into()),
        full_version_list: Some(
            "\"Brave\";v=\"131.0.0.0\", \"Chromium\";v=\"131.0.0.0\", \"Not_A Brand\";v=\"24.0.0.0\"".into(),
        ),
        ..ClientHints::default()
    };
    assert_eq!(resolver().describe_device(CHROME_WIN, &hints).device, "Brave on Windows 11");
}

#[test]
fn resolver_is_send_sync_and_debug_shows_no_rules() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<ClientInfoResolver>();
    let debug = format!("{:?}", resolver());
    assert!(debug.contains("10.0.0.0/8") && debug.contains("has_geoip: false"), "{debug}");
    assert!(!resolver().has_geoip());
    assert!(resolver().locate("81.2.69.160".parse().unwrap()).is_none());
}

#[test]
fn resolver_client_ip_and_trust() {
    let r = resolver();
    assert!(r.is_trusted("10.1.2.3".parse().unwrap()));
    assert!(!r.is_trusted("11.1.2.3".parse().unwrap()));
    let lines: [&[u8]; 2] = [b"6.6.6.6, 1.2.3.4", b"10.0.0.9"];
    assert_eq!(r.client_ip(Some("10.0.0.1".parse().unwrap()), lines.into_iter()), "1.2.3.4".parse().ok());
    assert_eq!(r.client_ip(Some("8.8.4.4".parse().unwrap()), lines.into_iter()), "8.8.4.4".parse().ok());
}
