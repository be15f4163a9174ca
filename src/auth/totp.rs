//! RFC 6238 one-time codes (TOTP) as authenticator apps speak them: HMAC-SHA1, 6 digits,
//! 30-second steps, one step of clock drift accepted either way. Time always comes in as a
//! parameter (`now`, Unix milliseconds); this module never reads the clock.

use std::fmt;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Builder, Secret, Totp};
use zeroize::Zeroizing;

use crate::clock::Millis;
use crate::session::token::random_bytes;

/// Digits in a code.
pub const DIGITS: u8 = 6;
/// Length of one time step in seconds.
pub const STEP_SECONDS: u64 = 30;
/// Steps of clock drift accepted on either side of the current one.
pub const SKEW_STEPS: u64 = 1;
/// Length of a generated secret in bytes (160 bits, as RFC 4226 recommends).
pub const SECRET_LEN: usize = 20;

const STEP_MILLIS: Millis = 30_000;
/// Longest input `normalize_code` looks at, so pasted junk is refused early.
const MAX_CODE_INPUT: usize = 32;
/// Smallest size of the QR code image, in pixels, quiet zone included.
const QR_MIN_PIXELS: u32 = 200;
/// Everything but RFC 3986 unreserved characters is percent-encoded in the URI.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The shared secret behind one person's codes. Never printed; wiped from memory on drop.
#[derive(Clone)]
pub struct TotpSecret(Zeroizing<Vec<u8>>);

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(..)")
    }
}

impl TotpSecret {
    /// A fresh random 160-bit secret.
    pub fn generate() -> TotpSecret {
        TotpSecret(Zeroizing::new(random_bytes::<SECRET_LEN>().to_vec()))
    }

    /// Wraps stored secret bytes (for example, just decrypted from the store).
    pub fn from_bytes(bytes: Vec<u8>) -> TotpSecret {
        TotpSecret(Zeroizing::new(bytes))
    }

    /// The raw secret, to be sealed with [`crate::secrets::SecretKey::encrypt`] for storage.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// RFC 4648 base32 without padding: what people type into an authenticator app.
    pub fn base32(&self) -> String {
        Secret::from(self.as_bytes()).to_base32()
    }

    /// [`TotpSecret::base32`] in groups of four separated by spaces, for reading off a screen.
    pub fn base32_grouped(&self) -> String {
        let plain = Zeroizing::new(self.base32());
        let groups: Vec<&str> = plain.as_bytes().chunks(4).filter_map(|c| std::str::from_utf8(c).ok()).collect();
        groups.join(" ")
    }

    fn totp(&self, digits: u8) -> Totp {
        Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(digits)
            .with_skew(0)
            .with_step_duration(STEP_SECONDS)
            .with_secret(self.as_bytes())
            .build_noncompliant()
    }
}

/// The `otpauth://` URI an authenticator app scans, with every parameter spelled out:
/// `otpauth://totp/Issuer:account?secret=…&issuer=Issuer&algorithm=SHA1&digits=6&period=30`.
/// Issuer and account are percent-encoded (a `:` inside either becomes `%3A`, so the only
/// literal colon in the label is the separator). An empty issuer leaves it out.
pub fn otpauth_uri(secret: &TotpSecret, issuer: &str, account: &str) -> String {
    let account = utf8_percent_encode(account, URI_COMPONENT);
    let secret = Zeroizing::new(secret.base32());
    let parameters = format!("algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}");
    if issuer.is_empty() {
        format!("otpauth://totp/{account}?secret={}&{parameters}", secret.as_str())
    } else {
        let issuer = utf8_percent_encode(issuer, URI_COMPONENT);
        format!("otpauth://totp/{issuer}:{account}?secret={}&issuer={issuer}&{parameters}", secret.as_str())
    }
}

/// The URI as an inline SVG QR code (no XML prolog, with a `viewBox` and a quiet zone, about
/// 200 pixels square). It holds only the encoder's own markup (rectangles and one path of
/// numbers), never text from the URI, so it is safe to place in a page as is. Empty when the
/// URI is too long for a QR code (over ~2 KB); the manual-entry key still works then.
pub fn qr_svg(uri: &str) -> String {
    let Ok(code) = QrCode::with_error_correction_level(uri.as_bytes(), EcLevel::M) else {
        return String::new();
    };
    let image = code
        .render::<svg::Color>()
        .quiet_zone(true)
        .dark_color(svg::Color("#000"))
        .light_color(svg::Color("#fff"))
        .min_dimensions(QR_MIN_PIXELS, QR_MIN_PIXELS)
        .build();
    image.find("<svg").map(|start| image[start..].to_string()).unwrap_or_default()
}

/// The six digits of a typed code, or `None`. Spaces and dashes are ignored ("123 456",
/// "123-456"); anything else (letters, non-ASCII digits, too few or too many digits, more
/// than 32 bytes of input) is refused.
pub fn normalize_code(input: &str) -> Option<String> {
    if input.len() > MAX_CODE_INPUT {
        return None;
    }
    let mut digits = String::with_capacity(usize::from(DIGITS));
    for c in input.chars() {
        match c {
            '0'..='9' => digits.push(c),
            '-' => {}
            c if c.is_whitespace() => {}
            _ => return None,
        }
    }
    (digits.len() == usize::from(DIGITS)).then_some(digits)
}

/// Checks `code` against the steps around `now` (one either side) and returns the time step
/// it matched, or `None` for a malformed or wrong code. Every candidate is computed and
/// compared in constant time. Callers should refuse a step at or below the last one used,
/// which stops a code from being replayed; if two steps ever matched, the later is returned.
pub fn verify(secret: &TotpSecret, code: &str, now: Millis) -> Option<u64> {
    let code = normalize_code(code)?;
    let totp = secret.totp(DIGITS);
    let current = step_at(now);
    let mut matched = None;
    for step in current.saturating_sub(SKEW_STEPS)..=current.saturating_add(SKEW_STEPS) {
        let expected = code_for_step(&totp, step);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            matched = Some(step);
        }
    }
    matched
}

/// The code an authenticator app shows at `at` (Unix milliseconds).
pub fn code_at(secret: &TotpSecret, at: Millis) -> String {
    code_for_step(&secret.totp(DIGITS), step_at(at))
}

/// The time step (30-second window since the epoch) containing `at`; 0 before the epoch.
pub fn step_at(at: Millis) -> u64 {
    u64::try_from(at.div_euclid(STEP_MILLIS)).unwrap_or(0)
}

fn code_for_step(totp: &Totp, step: u64) -> String {
    totp.generate(step.saturating_mul(STEP_SECONDS)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SECRET: &[u8] = b"12345678901234567890";
    /// RFC 6238 Appendix B, SHA-1 column: (time in seconds, 8-digit code).
    const RFC_VECTORS: [(i64, &str); 6] = [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ];

    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(RFC_SECRET.to_vec())
    }

    #[test]
    fn rfc6238_sha1_vectors_at_eight_digits() {
        let secret = rfc_secret();
        let totp = secret.totp(8);
        for (seconds, expected) in RFC_VECTORS {
            assert_eq!(code_for_step(&totp, step_at(seconds * 1000)), expected, "T = {seconds}");
        }
    }

    #[test]
    fn six_digit_codes_are_the_last_six_of_the_rfc_vectors() {
        let secret = rfc_secret();
        for (seconds, expected) in RFC_VECTORS {
            let at = seconds * 1000;
            assert_eq!(code_at(&secret, at), expected[2..], "T = {seconds}");
            assert_eq!(verify(&secret, &expected[2..], at), Some(step_at(at)), "T = {seconds}");
        }
    }

    #[test]
    fn steps() {
        assert_eq!(step_at(0), 0);
        assert_eq!(step_at(29_999), 0);
        assert_eq!(step_at(30_000), 1);
        assert_eq!(step_at(59_000), 1);
        assert_eq!(step_at(1_111_111_109_000), 0x023523EC);
        assert_eq!(step_at(-1), 0);
        assert_eq!(step_at(Millis::MIN), 0);
    }

    #[test]
    fn one_step_of_drift_either_way_is_accepted_and_reported() {
        let secret = TotpSecret::generate();
        let now = 1_700_000_012_345;
        let current = step_at(now);
        let step_ms = STEP_MILLIS;
        assert_eq!(verify(&secret, &code_at(&secret, now), now), Some(current));
        assert_eq!(verify(&secret, &code_at(&secret, now - step_ms), now), Some(current - 1));
        assert_eq!(verify(&secret, &code_at(&secret, now + step_ms), now), Some(current + 1));
        for far in [now - 2 * step_ms, now + 2 * step_ms, now - 10 * step_ms] {
            let code = code_at(&secret, far);
            let in_window = (-1..=1).any(|d| code_at(&secret, now + d * step_ms) == code);
            if !in_window {
                assert_eq!(verify(&secret, &code, now), None);
            }
        }
    }

    #[test]
    fn drift_window_at_step_edges() {
        let secret = rfc_secret();
        let start_of_step = 1_234_567_890 / 30 * 30 * 1000;
        let code = code_at(&secret, start_of_step);
        assert_eq!(verify(&secret, &code, start_of_step - 1), Some(step_at(start_of_step)));
        assert_eq!(verify(&secret, &code, start_of_step + 2 * STEP_MILLIS - 1), Some(step_at(start_of_step)));
        assert_eq!(verify(&secret, &code, start_of_step + 2 * STEP_MILLIS), None);
        assert_eq!(verify(&secret, &code, start_of_step - STEP_MILLIS - 1), None);
    }

    #[test]
    fn near_the_epoch_the_window_does_not_underflow() {
        let secret = rfc_secret();
        assert_eq!(verify(&secret, &code_at(&secret, 0), 0), Some(0));
        assert_eq!(verify(&secret, &code_at(&secret, STEP_MILLIS), 0), Some(1));
    }

    #[test]
    fn formatted_codes_verify() {
        let secret = rfc_secret();
        let at = 59_000;
        assert_eq!(code_at(&secret, at), "287082");
        for typed in ["287082", " 287 082 ", "287-082", "\t287082\n"] {
            assert_eq!(verify(&secret, typed, at), Some(1), "{typed:?}");
        }
    }

    #[test]
    fn malformed_and_wrong_codes_are_refused() {
        let secret = rfc_secret();
        let at = 59_000;
        for bad in ["", "28708", "2870820", "94287082", "28708a", "abcdef", "287 08", "+287082", "287082.", "٢٨٧٠٨٢"]
        {
            assert_eq!(verify(&secret, bad, at), None, "{bad:?}");
        }
        let wrong = if code_at(&secret, at) == "000000" { "111111" } else { "000000" };
        assert_eq!(verify(&secret, wrong, at), None);
    }

    #[test]
    fn normalize_accepts_spaces_and_dashes_only() {
        assert_eq!(normalize_code("123456").as_deref(), Some("123456"));
        assert_eq!(normalize_code(" 123 456 ").as_deref(), Some("123456"));
        assert_eq!(normalize_code("123-456").as_deref(), Some("123456"));
        assert_eq!(normalize_code("000000").as_deref(), Some("000000"));
        for bad in [
            "",
            "12345",
            "1234567",
            "12345678",
            "12a456",
            "123_456",
            "123.456",
            "١٢٣٤٥٦",
            "۱۲۳۴۵۶",
            "１２３４５６",
            "123456\u{0}",
        ] {
            assert_eq!(normalize_code(bad), None, "{bad:?}");
        }
        let overlong = format!("{}123456", " ".repeat(MAX_CODE_INPUT));
        assert_eq!(normalize_code(&overlong), None);
        let just_fits = format!("{}123456", " ".repeat(MAX_CODE_INPUT - 6));
        assert_eq!(normalize_code(&just_fits).as_deref(), Some("123456"));
    }

    #[test]
    fn secrets() {
        let a = TotpSecret::generate();
        let b = TotpSecret::generate();
        assert_eq!(a.as_bytes().len(), SECRET_LEN);
        assert_ne!(a.as_bytes(), b.as_bytes());
        assert_eq!(a.base32().len(), 32);
        assert!(a.base32().bytes().all(|c| c.is_ascii_uppercase() || (b'2'..=b'7').contains(&c)));

        let rfc = rfc_secret();
        assert_eq!(rfc.as_bytes(), RFC_SECRET);
        assert_eq!(rfc.base32(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(rfc.base32_grouped(), "GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ");
        assert_eq!(TotpSecret::from_bytes(vec![0xFF; 16]).base32_grouped(), "7777 7777 7777 7777 7777 7777 74");
    }

    #[test]
    fn debug_is_redacted() {
        let secret = rfc_secret();
        let printed = format!("{secret:?} {:?}", Some(secret.clone()));
        assert_eq!(printed, "TotpSecret(..) Some(TotpSecret(..))");
        assert!(!printed.contains("GEZD") && !printed.contains("1234"));
    }

    #[test]
    fn otpauth_uri_is_complete_and_parses_back() {
        let secret = rfc_secret();
        let uri = otpauth_uri(&secret, "Dalea Gateway", "alice@example.com");
        assert_eq!(
            uri,
            "otpauth://totp/Dalea%20Gateway:alice%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=Dalea%20Gateway&algorithm=SHA1&digits=6&period=30"
        );
        let parsed = Totp::from_url(&uri).expect("totp-rs parses it");
        assert_eq!(parsed.issuer(), Some("Dalea Gateway"));
        assert_eq!(parsed.account_name(), "alice@example.com");
        assert_eq!(parsed.algorithm(), Algorithm::SHA1);
        assert_eq!(parsed.digits(), 6);
        assert_eq!(parsed.step(), 30);
        assert_eq!(parsed.secret().as_bytes(), RFC_SECRET);
        assert_eq!(parsed.generate(59).to_string(), code_at(&secret, 59_000));
    }

    #[test]
    fn otpauth_uri_encodes_awkward_names() {
        let secret = TotpSecret::generate();
        let (issuer, account) = ("Acme: Staff & Co", "a:b c+d@example.com");
        let uri = otpauth_uri(&secret, issuer, account);
        let parsed = url::Url::parse(&uri).expect("a URL");
        assert_eq!(parsed.scheme(), "otpauth");
        assert_eq!(parsed.host_str(), Some("totp"));
        let label = parsed.path().trim_start_matches('/');
        assert_eq!(label.matches(':').count(), 1, "only the separator is a literal colon: {label}");
        let (raw_issuer, raw_account) = label.split_once(':').expect("issuer:account");
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8().expect("utf-8").into_owned();
        assert_eq!(decode(raw_issuer), issuer);
        assert_eq!(decode(raw_account), account);
        let query: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
        let value = |k: &str| query.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(value("issuer"), Some(issuer));
        assert_eq!(value("secret"), Some(secret.base32().as_str()));
        assert_eq!(value("algorithm"), Some("SHA1"));
        assert_eq!(value("digits"), Some("6"));
        assert_eq!(value("period"), Some("30"));
        assert_eq!(query.len(), 5);
    }

    #[test]
    fn otpauth_uri_without_issuer() {
        let uri = otpauth_uri(&rfc_secret(), "", "bob");
        assert_eq!(uri, "otpauth://totp/bob?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&algorithm=SHA1&digits=6&period=30");
        assert!(Totp::from_url(&uri).is_ok());
    }

    #[test]
    fn qr_svg_is_inline_markup() {
        let uri = otpauth_uri(&TotpSecret::generate(), "Dalea Gateway", "<script>alert(1)</script>@example.com");
        let svg = qr_svg(&uri);
        assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        assert!(svg.ends_with("</svg>"));
        assert!(svg.contains("viewBox=\"0 0 "));
        assert!(!svg.contains("<?xml"));
        assert!(!svg.to_ascii_lowercase().contains("script"));
        assert!(!svg.contains("otpauth") && !svg.contains("Dalea"));
        assert_eq!(svg.matches('<').count(), 4, "<svg>, <rect/>, <path/> and </svg> only");
        let width: u32 = svg
            .split("width=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .and_then(|w| w.parse().ok())
            .expect("a width");
        assert!((QR_MIN_PIXELS..=320).contains(&width), "width {width}");
    }

    #[test]
    fn qr_svg_of_an_overlong_uri_is_empty() {
        assert_eq!(qr_svg(&"x".repeat(5000)), "");
    }
}
