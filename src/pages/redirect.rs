//! Where to send someone after sign-in (`rd=`): only same-origin absolute paths, parsed with a
//! real URL parser. Anything else (`//host`, `/\host`, tabs/newlines, schemes) becomes `/`.

use url::Url;

/// A stand-in origin: `rd` must resolve against it and stay on it.
const BASE: &str = "http://gateway.invalid";

pub fn safe_redirect(raw: Option<&str>) -> String {
    raw.and_then(resolve).unwrap_or_else(|| "/".to_string())
}

/// The longest `rd` kept: a real path is far shorter, and a longer one would only bloat the
/// records and cookies that carry it.
const MAX_LEN: usize = 2048;

fn resolve(raw: &str) -> Option<String> {
    if raw.len() > MAX_LEN {
        return None;
    }
    // Must look like a path from the start, before any parser normalisation: no scheme, no
    // backslash anywhere, no control characters (the URL parser strips tab/newline, which is
    // exactly how "/\t/evil.example" would become "//evil.example").
    if !raw.starts_with('/') || raw.starts_with("//") || raw.contains('\\') || raw.chars().any(char::is_control) {
        return None;
    }
    // The same rules once more after one round of percent-decoding, for servers and browsers
    // that decode before they look ("/%2F/evil", "/%09/evil", "/%5Cevil").
    let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    if decoded.starts_with("//") || decoded.contains('\\') || decoded.chars().any(char::is_control) {
        return None;
    }
    let base = Url::parse(BASE).ok()?;
    let url = base.join(raw).ok()?;
    if url.origin() != base.origin() {
        return None;
    }
    let mut out = url.path().to_string();
    if let Some(q) = url.query() {
        out.push('?');
        out.push_str(q);
    }
    // And once more on what the parser made of it ("/.//evil" resolves to "//evil").
    if out.starts_with("//") || out.contains('\\') {
        return None;
    }
    // Never bounce back into the sign-in page itself, or into JSON.
    let loops = ["/.dalea/signin", "/.dalea/signout", "/.dalea/api/"];
    if loops.iter().any(|p| out.starts_with(p)) {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_site_paths_are_kept() {
        assert_eq!(safe_redirect(Some("/app/page?x=1")), "/app/page?x=1");
        assert_eq!(safe_redirect(Some("/")), "/");
        assert_eq!(safe_redirect(Some("/a/../b")), "/b");
    }

    #[test]
    fn an_overlong_target_falls_back_to_root() {
        let long = format!("/{}", "a".repeat(MAX_LEN));
        assert_eq!(safe_redirect(Some(&long)), "/");
        let fits = format!("/{}", "a".repeat(MAX_LEN - 1));
        assert_eq!(safe_redirect(Some(&fits)), fits);
    }

    #[test]
    fn off_site_and_tricky_targets_fall_back_to_root() {
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "https://evil.example/",
            "javascript:alert(1)",
            "evil.example",
            "",
            "/%09/evil.example/../..//evil.example",
            "/.dalea/signin?rd=/x",
            "/%2F/evil.example",
            "/%5Cevil.example",
            "/%0d%0aSet-Cookie:x=1",
            "/.//evil.example",
            "/ok/../..//evil.example",
            "/%2e%2e//evil.example",
            "/./\\evil.example",
        ] {
            let got = safe_redirect(Some(bad));
            assert!(got.starts_with('/') && !got.starts_with("//"), "{bad:?} → {got:?}");
            assert!(!got.contains("evil.example"), "{bad:?} → {got:?}");
        }
        assert_eq!(safe_redirect(None), "/");
        assert_eq!(safe_redirect(Some("//evil.example")), "/");
        assert_eq!(safe_redirect(Some("/\t/evil.example")), "/");
    }

    #[test]
    fn sign_in_pages_and_json_are_never_a_destination_but_the_elevation_page_is() {
        for loop_back in ["/.dalea/signin?rd=%2F", "/.dalea/signout", "/.dalea/api/sessions"] {
            assert_eq!(safe_redirect(Some(loop_back)), "/", "{loop_back}");
        }
        assert_eq!(safe_redirect(Some("/.dalea/elevate?rd=%2Fadmin")), "/.dalea/elevate?rd=%2Fadmin");
    }
}
