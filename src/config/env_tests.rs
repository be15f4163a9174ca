//! Tests of the `DALEA__SECTION__KEY` overlay on its own (loading through it: `tests.rs`).

use super::*;

fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn get<'a>(t: &'a toml::Table, section: &str, key: &str) -> &'a toml::Value {
    &t[section][key]
}

#[test]
fn sets_string_bool_int_and_list() {
    let mut t: toml::Table = toml::from_str("[session]\ncookie_name = \"file\"\n").unwrap();
    let keys = overlay(
        &mut t,
        &vars(&[
            ("DALEA__SESSION__COOKIE_NAME", "from_env"),
            ("DALEA__SESSION__COOKIE_SECURE", "false"),
            ("DALEA__SERVER__THREADS", " 4 "),
            ("DALEA__CLIENT_INFO__TRUSTED_PROXIES", " 10.0.0.0/8, ,192.168.0.1,"),
            ("PATH", "/usr/bin"),
            ("dalea__session__cookie_name", "ignored: prefix is upper case"),
        ]),
    )
    .unwrap();
    assert_eq!(get(&t, "session", "cookie_name").as_str(), Some("from_env"));
    assert_eq!(get(&t, "session", "cookie_secure").as_bool(), Some(false));
    assert_eq!(get(&t, "server", "threads").as_integer(), Some(4));
    let list: Vec<&str> =
        get(&t, "client_info", "trusted_proxies").as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(list, ["10.0.0.0/8", "192.168.0.1"]);
    assert_eq!(keys.var_for("session.cookie_secure"), Some("DALEA__SESSION__COOKIE_SECURE"));
    assert_eq!(keys.var_for("server.listen"), None);
}

#[test]
fn key_match_is_case_insensitive() {
    let mut t = toml::Table::new();
    overlay(&mut t, &vars(&[("DALEA__Session__Idle_Timeout", "1d")])).unwrap();
    assert_eq!(get(&t, "session", "idle_timeout").as_str(), Some("1d"));
}

#[test]
fn empty_list_value_gives_empty_list() {
    let mut t = toml::Table::new();
    overlay(&mut t, &vars(&[("DALEA__CLIENT_INFO__TRUSTED_PROXIES", "")])).unwrap();
    assert_eq!(get(&t, "client_info", "trusted_proxies").as_array().map(Vec::len), Some(0));
}

#[test]
fn rejects_unknown_key_and_section() {
    let mut t = toml::Table::new();
    let err = overlay(&mut t, &vars(&[("DALEA__SESSION__COOKIE_NAEM", "x")])).unwrap_err();
    assert_eq!(err.key, "session.cookie_naem");
    assert!(err.message.contains("DALEA__SESSION__COOKIE_NAEM"), "{err}");
    let err = overlay(&mut t, &vars(&[("DALEA__SESION__IDLE_TIMEOUT", "x")])).unwrap_err();
    assert_eq!(err.key, "sesion.idle_timeout");
    // The sections it offers are every one the schema has, each once.
    let offered = err.message.rsplit(" are ").next().unwrap_or_default();
    let mut sections: Vec<&str> = SCHEMA.iter().map(|(s, _, _)| *s).collect();
    sections.sort();
    sections.dedup();
    let mut listed: Vec<&str> = offered.split(", ").collect();
    listed.sort();
    assert_eq!(listed, sections, "{err}");
    let err = overlay(&mut t, &vars(&[("DALEA__SESSION", "x")])).unwrap_err();
    assert_eq!(err.key, "session");
    let err = overlay(&mut t, &vars(&[("DALEA__SESSION__A__B", "x")])).unwrap_err();
    assert_eq!(err.key, "session.a.b");
}

#[test]
fn rejects_bad_values_naming_the_variable() {
    let mut t = toml::Table::new();
    let err = overlay(&mut t, &vars(&[("DALEA__SESSION__COOKIE_SECURE", "maybe")])).unwrap_err();
    assert_eq!(err.key, "session.cookie_secure");
    assert_eq!(err.message, "DALEA__SESSION__COOKIE_SECURE=\"maybe\" is not true or false");
    let err = overlay(&mut t, &vars(&[("DALEA__SERVER__THREADS", "many")])).unwrap_err();
    assert_eq!(err.key, "server.threads");
    assert!(err.message.contains("DALEA__SERVER__THREADS"), "{err}");
}

#[test]
fn arrays_of_tables_are_file_only() {
    let mut t = toml::Table::new();
    for (name, key) in [("DALEA__ROUTES__0__UPSTREAM", "routes"), ("DALEA__UPSTREAMS__ADDRESS", "upstreams")] {
        let err = overlay(&mut t, &vars(&[(name, "x")])).unwrap_err();
        assert_eq!(err.key, key);
        assert!(err.message.contains(name), "{err}");
        assert!(err.message.contains("only be set in the config file"), "{err}");
    }
}

#[test]
fn section_that_is_not_a_table_is_an_error() {
    let mut t: toml::Table = toml::from_str("session = 5\n").unwrap();
    let err = overlay(&mut t, &vars(&[("DALEA__SESSION__COOKIE_NAME", "x")])).unwrap_err();
    assert_eq!(err.key, "session");
}

#[test]
fn annotate_marks_env_keys_and_their_items() {
    let mut t = toml::Table::new();
    let keys = overlay(&mut t, &vars(&[("DALEA__CLIENT_INFO__TRUSTED_PROXIES", "x")])).unwrap();
    let err = keys.annotate(ConfigError::new("client_info.trusted_proxies[0]", "bad"));
    assert_eq!(err.message, "bad (set by DALEA__CLIENT_INFO__TRUSTED_PROXIES)");
    let err = keys.annotate(ConfigError::new("client_info.geoip_database", "bad"));
    assert_eq!(err.message, "bad");
    let err = keys.annotate(ConfigError::new("client_info.trusted_proxies_x", "bad"));
    assert_eq!(err.message, "bad");
}

/// Every schema entry must be a key the file format knows (else setting it would fail as an
/// unknown field after the overlay).
#[test]
fn schema_keys_are_known_to_the_file_format() {
    for (section, key, _) in SCHEMA {
        let err = super::super::file::FileConfig::from_table(
            toml::from_str(&format!("[{section}]\n{key} = {{ probe = 1 }}\n")).unwrap(),
        )
        .err()
        .unwrap();
        assert_eq!(err.key, format!("{section}.{key}"), "{err}");
        assert!(!err.message.contains("unknown field"), "{section}.{key}: {err}");
    }
}
