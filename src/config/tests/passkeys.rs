//! `[passkeys]`: off by default, the origin's rules, the RP id's default and suffix rule, the name.

use super::*;

fn passkeys(lines: &str) -> Result<Option<PasskeysConfig>, ConfigError> {
    load(&with(&format!("[passkeys]\n{lines}"))).map(|c| c.passkeys)
}

fn refused(lines: &str) -> ConfigError {
    passkeys(lines).expect_err(lines)
}

fn on(origin: &str, rp_id: &str, rp_name: &str) -> Option<PasskeysConfig> {
    Some(PasskeysConfig { origin: origin.into(), rp_id: rp_id.into(), rp_name: rp_name.into() })
}

#[test]
fn off_without_an_origin() {
    assert_eq!(load(MINIMAL).unwrap().passkeys, None);
    assert_eq!(passkeys("").unwrap(), None, "an empty section");
}

#[test]
fn the_rp_id_defaults_to_the_host_and_the_name_to_the_product() {
    assert_eq!(
        passkeys("origin = \"https://app.example.com\"").unwrap(),
        on("https://app.example.com", "app.example.com", DEFAULT_RP_NAME)
    );
    assert_eq!(DEFAULT_RP_NAME, "Dalea Gateway");
    // Normalised: lower-case host, no default port, no trailing slash; other ports kept.
    assert_eq!(
        passkeys("origin = \" HTTPS://App.Example.COM:443/ \"").unwrap(),
        on("https://app.example.com", "app.example.com", DEFAULT_RP_NAME)
    );
    assert_eq!(
        passkeys("origin = \"https://app.example.com:8443\"").unwrap(),
        on("https://app.example.com:8443", "app.example.com", DEFAULT_RP_NAME)
    );
}

#[test]
fn localhost_may_use_plain_http() {
    for (origin, host) in [
        ("http://localhost:8080", "localhost"),
        ("http://localhost", "localhost"),
        ("https://localhost:8443", "localhost"),
    ] {
        let c = passkeys(&format!("origin = \"{origin}\"")).unwrap().expect(origin);
        assert_eq!((c.origin.as_str(), c.rp_id.as_str()), (origin, host));
    }
}

#[test]
fn bad_origins_are_refused() {
    for bad in [
        "http://app.example.com",
        "http://127.0.0.1:8080",
        "http://app.localhost:3000",
        "https://127.0.0.1",
        "https://[::1]:8443",
        "https://app.example.com/login",
        "https://app.example.com/?x=1",
        "https://app.example.com/#top",
        "https://user:pw@app.example.com",
        "https://app.example.com.",
        "ftp://app.example.com",
        "app.example.com",
        "",
    ] {
        let err = refused(&format!("origin = \"{bad}\""));
        assert_eq!(err.key, "passkeys.origin", "{bad:?}: {err}");
    }
    assert!(refused("origin = \"http://10.0.0.1\"").message.contains("IP address"));
    assert!(refused("origin = \"http://app.example.com\"").message.contains("https://"));
    assert!(refused("origin = \"https://app.example.com/x\"").message.contains("no path"));
    // rp_id or rp_name without an origin is a mistake, not "off".
    assert_eq!(refused("rp_id = \"example.com\"").key, "passkeys.origin");
    assert_eq!(refused("rp_name = \"Corp\"").key, "passkeys.origin");
}

#[test]
fn the_rp_id_is_the_host_or_a_parent_domain() {
    let origin = "origin = \"https://app.eu.example.com\"\n";
    for (rp_id, expected) in [
        ("app.eu.example.com", "app.eu.example.com"),
        ("eu.example.com", "eu.example.com"),
        (" Example.COM ", "example.com"),
        ("example.com.", "example.com"),
    ] {
        let c = passkeys(&format!("{origin}rp_id = \"{rp_id}\"")).unwrap().expect(rp_id);
        assert_eq!(c.rp_id, expected, "{rp_id:?}");
    }
    for bad in [
        "com",
        "ample.com",
        "other.example.com",
        "app.eu.example.com.evil.com",
        "",
        ".example.com",
        "x.app.eu.example.com",
    ] {
        let err = refused(&format!("{origin}rp_id = \"{bad}\""));
        assert_eq!(err.key, "passkeys.rp_id", "{bad:?}: {err}");
    }
    assert!(refused(&format!("{origin}rp_id = \"com\"")).message.contains("top-level"));
    // localhost is its own RP id.
    let c = passkeys("origin = \"http://localhost:8080\"\nrp_id = \"localhost\"").unwrap().unwrap();
    assert_eq!(c.rp_id, "localhost");
}

#[test]
fn the_rp_name_is_checked() {
    let c = passkeys("origin = \"https://app.example.com\"\nrp_name = \" Acme Portal \"").unwrap().unwrap();
    assert_eq!(c.rp_name, "Acme Portal");
    let longest = "é".repeat(64);
    let c = passkeys(&format!("origin = \"https://app.example.com\"\nrp_name = \"{longest}\"")).unwrap().unwrap();
    assert_eq!(c.rp_name, longest);
    for bad in ["", "   ", "a\\u0007b", "line\\nbreak", &"n".repeat(65)] {
        let err = refused(&format!("origin = \"https://app.example.com\"\nrp_name = \"{bad}\""));
        assert_eq!(err.key, "passkeys.rp_name", "{bad:?}: {err}");
    }
}

#[test]
fn the_environment_sets_every_key() {
    let env = [
        ("DALEA__PASSKEYS__ORIGIN", "https://id.example.org"),
        ("DALEA__PASSKEYS__RP_ID", "example.org"),
        ("DALEA__PASSKEYS__RP_NAME", "Example"),
    ];
    let c = load_with(MINIMAL, &env, &Overrides::default()).unwrap();
    assert_eq!(c.passkeys, on("https://id.example.org", "example.org", "Example"));
    let err =
        load_with(MINIMAL, &[("DALEA__PASSKEYS__ORIGIN", "http://id.example.org")], &Overrides::default()).unwrap_err();
    assert_eq!(err.key, "passkeys.origin");
    assert!(err.message.ends_with("(set by DALEA__PASSKEYS__ORIGIN)"), "{err}");
}

#[test]
fn the_shipped_files_agree() {
    // The example documents the section with everything commented out: off.
    assert_eq!(load(include_str!("../../../config/gateway.example.toml")).unwrap().passkeys, None);
    let dev = include_str!("../../../config/dev.toml");
    let c = Config::from_toml_str(dev, Path::new("/srv/dalea/config"), &[], &Overrides::default()).unwrap();
    assert_eq!(c.passkeys, on("http://localhost:8080", "localhost", DEFAULT_RP_NAME));
}
