//! `[oauth]` and `[[oauth.providers]]`: kinds, defaults, secrets, names, URLs, allow-lists.

use super::*;

/// MINIMAL plus `[oauth]` with a public URL, then these provider tables.
fn with_providers(tables: &str) -> String {
    with(&format!("[oauth]\npublic_url = \"https://app.example.com\"\n{tables}"))
}

/// MINIMAL plus one provider table with these extra lines.
fn provider(lines: &str) -> String {
    with_providers(&format!("[[oauth.providers]]\n{lines}\n"))
}

fn provider_err(lines: &str) -> (String, String) {
    let e = load(&provider(lines)).expect_err("should be refused");
    (e.key, e.message)
}

#[test]
fn no_providers_by_default_and_unknown_people_are_refused() {
    let c = load(MINIMAL).unwrap();
    assert!(c.oauth.providers.is_empty());
    assert_eq!(c.oauth.unknown_people, UnknownPeople::Refuse);
    assert!(!c.oauth.link_by_verified_email);
    assert!(c.oauth.allows("anyone@anywhere.example"), "no allow-list: everyone");
}

#[test]
fn each_kind_gets_its_issuer_scopes_and_label() {
    let text = with_providers(
        "[[oauth.providers]]\nkind = \"google\"\nclient_id = \"g\"\nclient_secret = \"gs\"\n\
         [[oauth.providers]]\nkind = \"microsoft\"\nclient_id = \"m\"\nclient_secret = \"ms\"\n\
         [[oauth.providers]]\nkind = \"github\"\nclient_id = \"h\"\nclient_secret = \"hs\"\n\
         [[oauth.providers]]\nkind = \"oidc\"\nname = \"corp\"\ndisplay_name = \"Corp SSO\"\n\
         issuer = \"https://sso.example.com/\"\nclient_id = \"c\"\nclient_secret = \"cs\"\n",
    );
    let c = load(&text).unwrap();
    let p: Vec<_> = c.oauth.providers.iter().map(|p| (p.name.as_str(), p.display_name.as_str())).collect();
    assert_eq!(p, [("google", "Google"), ("microsoft", "Microsoft"), ("github", "GitHub"), ("corp", "Corp SSO")]);
    let g = &c.oauth.providers[0];
    assert_eq!(g.kind, ProviderKind::Oidc { issuer: "https://accounts.google.com".into() });
    assert_eq!(g.scopes, ["openid", "email", "profile"]);
    assert_eq!(
        c.oauth.providers[1].kind,
        ProviderKind::Microsoft {
            tenant: "common".into(),
            issuer: "https://login.microsoftonline.com/common/v2.0".into(),
            allowed_tenants: vec![],
        }
    );
    let h = &c.oauth.providers[2];
    assert!(matches!(&h.kind, ProviderKind::GitHub { api_url, .. } if api_url == "https://api.github.com"));
    assert_eq!(h.scopes, ["read:user", "user:email"]);
    assert_eq!(c.oauth.providers[3].kind, ProviderKind::Oidc { issuer: "https://sso.example.com".into() });
    assert_eq!(c.oauth.provider("corp").map(|p| p.client_id.as_str()), Some("c"));
}

#[test]
fn the_client_secret_comes_from_a_file_or_the_environment_and_is_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("google.secret");
    std::fs::write(&file, "s3cret-from-file\n").unwrap();
    let c =
        load(&provider(&format!("kind = \"google\"\nclient_id = \"g\"\nclient_secret_file = \"{}\"", file.display())))
            .unwrap();
    let secret = &c.oauth.providers[0].client_secret;
    assert_eq!(secret.expose(), "s3cret-from-file");
    assert!(!format!("{:?}", c.oauth).contains("s3cret"), "Debug never shows it");

    let var = "DALEA_TEST_OAUTH_SECRET_7F3A";
    std::env::set_var(var, "s3cret-from-env");
    let c = load(&provider(&format!("kind = \"github\"\nclient_id = \"h\"\nclient_secret_env = \"{var}\""))).unwrap();
    assert_eq!(c.oauth.providers[0].client_secret.expose(), "s3cret-from-env");

    let (key, msg) =
        provider_err("kind = \"github\"\nclient_id = \"h\"\nclient_secret_env = \"DALEA_TEST_UNSET_91B2\"");
    assert_eq!(key, "oauth.providers[0].client_secret_env");
    assert!(msg.contains("DALEA_TEST_UNSET_91B2"), "{msg}");
    let (key, msg) = provider_err("kind = \"github\"\nclient_id = \"h\"\nclient_secret_file = \"/nonexistent/x\"");
    assert_eq!(key, "oauth.providers[0].client_secret_file");
    assert!(msg.contains("/nonexistent/x"), "{msg}");
    assert_eq!(provider_err("kind = \"github\"\nclient_id = \"h\"").0, "oauth.providers[0].client_secret_file");
    let both = "kind = \"github\"\nclient_id = \"h\"\nclient_secret = \"a\"\nclient_secret_env = \"X\"";
    assert!(provider_err(both).1.contains("only one"));
    let (_, msg) = provider_err("kind = \"github\"\nclient_id = \"h\"\nclient_secret = \"  \"");
    assert!(msg.contains("empty"), "{msg}");
}

#[test]
fn bad_provider_settings_name_the_key() {
    let base = "client_id = \"x\"\nclient_secret = \"y\"\n";
    let cases = [
        ("kind = \"facebook\"", "oauth.providers[0].kind"),
        ("kind = \"oidc\"", "oauth.providers[0].issuer"),
        ("kind = \"oidc\"\nissuer = \"http://sso.example.com\"", "oauth.providers[0].issuer"),
        ("kind = \"oidc\"\nissuer = \"https://sso.example.com/?x=1\"", "oauth.providers[0].issuer"),
        ("kind = \"oidc\"\nissuer = \"not a url\"", "oauth.providers[0].issuer"),
        ("kind = \"google\"\nname = \"Google\"", "oauth.providers[0].name"),
        ("kind = \"google\"\nname = \"a/b\"", "oauth.providers[0].name"),
        ("kind = \"google\"\nscopes = [\"email\"]", "oauth.providers[0].scopes"),
        ("kind = \"google\"\nscopes = [\"openid\", \"a b\"]", "oauth.providers[0].scopes"),
        ("kind = \"google\"\ntenant = \"common\"", "oauth.providers[0].tenant"),
        ("kind = \"github\"\nissuer = \"https://x.example\"", "oauth.providers[0].issuer"),
        ("kind = \"google\"\napi_url = \"https://x.example\"", "oauth.providers[0].api_url"),
        (
            "kind = \"oidc\"\nissuer = \"https://x.example\"\ntoken_url = \"https://x.example\"",
            "oauth.providers[0].token_url",
        ),
        ("kind = \"microsoft\"\ntenant = \"a b\"", "oauth.providers[0].tenant"),
        (
            "kind = \"microsoft\"\ntenant = \"contoso.onmicrosoft.com\"\nallowed_tenants = [\"x\"]",
            "oauth.providers[0].allowed_tenants",
        ),
        ("kind = \"github\"\nclient_secret_typo = \"z\"", "oauth.providers[0].client_secret_typo"),
    ];
    for (lines, key) in cases {
        let text = provider(&format!("{base}{lines}"));
        assert_eq!(err_key(&text), key, "{lines}");
    }
    assert_eq!(
        err_key(&provider("kind = \"github\"\nclient_id = \" \"\nclient_secret = \"y\"")),
        "oauth.providers[0].client_id"
    );
    let twice = with_providers(&format!(
        "[[oauth.providers]]\nkind = \"github\"\n{base}[[oauth.providers]]\nkind = \"github\"\n{base}"
    ));
    assert_eq!(err_key(&twice), "oauth.providers[1].name");
}

#[test]
fn loopback_http_is_allowed_for_a_provider_on_this_machine() {
    let c = load(&provider(
        "kind = \"github\"\nclient_id = \"h\"\nclient_secret = \"s\"\nauthorize_url = \"http://127.0.0.1:4000/login/oauth/authorize\"\n\
         token_url = \"http://localhost:4000/login/oauth/access_token\"\napi_url = \"http://[::1]:4000/\"",
    ))
    .unwrap();
    match &c.oauth.providers[0].kind {
        ProviderKind::GitHub { authorize_url, api_url, .. } => {
            assert_eq!(authorize_url, "http://127.0.0.1:4000/login/oauth/authorize");
            assert_eq!(api_url, "http://[::1]:4000");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn people_rules_and_allow_lists() {
    let c = load(&with(
        "[oauth]\nlink_by_verified_email = true\nunknown_people = \"create\"\n\
         allowed_domains = [\"Example.COM\"]\nallowed_emails = [\"Partner@Other.example\"]",
    ))
    .unwrap();
    assert!(c.oauth.link_by_verified_email);
    assert_eq!(c.oauth.unknown_people, UnknownPeople::Create);
    assert!(c.oauth.allows("ann@example.com") && c.oauth.allows("ANN@EXAMPLE.COM"));
    assert!(c.oauth.allows("partner@other.example"));
    assert!(!c.oauth.allows("mallory@other.example"));
    assert!(!c.oauth.allows("ann@example.com.evil.example"), "whole domains only");
    assert!(!c.oauth.allows("ann@sub.example.com"), "subdomains are not the domain");
    assert_eq!(err_key(&with("[oauth]\nunknown_people = \"invite\"")), "oauth.unknown_people");
    assert_eq!(err_key(&with("[oauth]\nallowed_domains = [\"@example.com\"]")), "oauth.allowed_domains[0]");
    assert_eq!(err_key(&with("[oauth]\nallowed_emails = [\"nobody\"]")), "oauth.allowed_emails[0]");
}

#[test]
fn provider_tokens_are_never_kept_so_there_is_no_setting_for_it() {
    assert_eq!(err_key(&with("[oauth]\nkeep_tokens = true")), "oauth.keep_tokens");
}

#[test]
fn the_environment_sets_the_people_rules_but_not_providers() {
    let c = load_with(
        MINIMAL,
        &[("DALEA__OAUTH__UNKNOWN_PEOPLE", "create"), ("DALEA__OAUTH__ALLOWED_DOMAINS", "a.example, b.example")],
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(c.oauth.unknown_people, UnknownPeople::Create);
    assert_eq!(c.oauth.allowed_domains, ["a.example", "b.example"]);
    let err = load_with(MINIMAL, &[("DALEA__OAUTH__PROVIDERS", "x")], &Overrides::default()).unwrap_err();
    assert!(err.message.contains("DALEA__OAUTH__PROVIDERS"), "{err}");
}

#[test]
fn providers_need_the_public_url_their_redirect_uris_are_made_from() {
    let google = "[[oauth.providers]]\nkind = \"google\"\nclient_id = \"g\"\nclient_secret = \"gs\"\n";
    let e = load(&with(google)).unwrap_err();
    assert_eq!(e.key, "oauth.public_url");
    assert!(e.message.contains("/.dalea/oauth/<name>/callback"), "{e}");
    let c = load(&with_providers(google)).unwrap();
    assert_eq!(c.oauth.redirect_uri("google"), "https://app.example.com/.dalea/oauth/google/callback");
    let dev = load(&with(&format!("[oauth]\npublic_url = \"http://localhost:8080/\"\n{google}"))).unwrap();
    assert_eq!(dev.oauth.redirect_uri("google"), "http://localhost:8080/.dalea/oauth/google/callback");
    for bad in ["http://app.example.com", "https://app.example.com/auth", "https://u:p@app.example.com", "app"] {
        let e = load(&with(&format!("[oauth]\npublic_url = \"{bad}\"\n{google}"))).unwrap_err();
        assert_eq!(e.key, "oauth.public_url", "{bad}");
    }
}
