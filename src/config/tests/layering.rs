//! File, `DALEA__*` environment and command-line flags together: who wins, and errors that
//! name the variable.

use super::*;

#[test]
fn env_sets_string_bool_and_list() {
    let env = [
        ("DALEA__SESSION__COOKIE_NAME", "from_env"),
        ("DALEA__SESSION__COOKIE_SECURE", "false"),
        ("DALEA__CLIENT_INFO__TRUSTED_PROXIES", "10.0.0.0/8, 192.168.0.1"),
        ("DALEA__SERVER__THREADS", "7"),
    ];
    let c = load_with(&with("[session]\ncookie_name = \"from_file\""), &env, &Overrides::default()).unwrap();
    assert_eq!(c.session.cookie_name, "from_env");
    assert!(!c.session.cookie_secure);
    assert_eq!(c.client_info.trusted_proxies.len(), 2);
    assert_eq!(c.server.threads, 7);
}

#[test]
fn env_errors_name_key_and_variable() {
    let o = Overrides::default();
    let err = load_with(MINIMAL, &[("DALEA__SESSION__COOKIE_NAEM", "x")], &o).unwrap_err();
    assert_eq!(err.key, "session.cookie_naem");
    assert!(err.message.contains("DALEA__SESSION__COOKIE_NAEM"), "{err}");

    let err = load_with(MINIMAL, &[("DALEA__SESSION__COOKIE_SECURE", "maybe")], &o).unwrap_err();
    assert_eq!(err.to_string(), "session.cookie_secure: DALEA__SESSION__COOKIE_SECURE=\"maybe\" is not true or false");

    let err = load_with(MINIMAL, &[("DALEA__ROUTES__UPSTREAM", "x")], &o).unwrap_err();
    assert_eq!(err.key, "routes");

    // Validation errors for a value from the environment say which variable set it.
    let err = load_with(MINIMAL, &[("DALEA__SESSION__IDLE_TIMEOUT", "31d")], &o).unwrap_err();
    assert_eq!(err.key, "session.idle_timeout");
    assert!(err.message.ends_with(" (set by DALEA__SESSION__IDLE_TIMEOUT)"), "{err}");
    let err = load_with(MINIMAL, &[("DALEA__STORE__KIND", "postgres")], &o).unwrap_err();
    assert_eq!(err.key, "store.kind");
    assert!(err.message.ends_with(" (set by DALEA__STORE__KIND)"), "{err}");
    // ...and file errors do not.
    let err = load_with(&with("[session]\nidle_timeout = \"31d\""), &[], &o).unwrap_err();
    assert!(!err.message.contains("set by"), "{err}");
}

#[test]
fn flags_beat_env_beat_file() {
    let file =
        with("[server]\nlisten = \"127.0.0.1:1001\"\nadmin_listen = \"127.0.0.1:2001\"\n[store]\npath = \"file-data\"");
    let env = [
        ("DALEA__SERVER__LISTEN", "127.0.0.1:1002"),
        ("DALEA__SERVER__ADMIN_LISTEN", "127.0.0.1:2002"),
        ("DALEA__STORE__PATH", "env-data"),
    ];
    let none = Overrides::default();

    let c = load_with(&file, &[], &none).unwrap();
    assert_eq!((c.server.listen, c.server.admin_listen), (addr("127.0.0.1:1001"), addr("127.0.0.1:2001")));
    assert_eq!(c.store.path, PathBuf::from("/etc/dalea/file-data"));

    let c = load_with(&file, &env, &none).unwrap();
    assert_eq!((c.server.listen, c.server.admin_listen), (addr("127.0.0.1:1002"), addr("127.0.0.1:2002")));
    assert_eq!(c.store.path, PathBuf::from("/etc/dalea/env-data"));

    let flags = Overrides {
        listen: Some(addr("127.0.0.1:1003")),
        admin_listen: Some(addr("127.0.0.1:2003")),
        data_dir: Some(PathBuf::from("flag-data")),
    };
    let c = load_with(&file, &env, &flags).unwrap();
    assert_eq!((c.server.listen, c.server.admin_listen), (addr("127.0.0.1:1003"), addr("127.0.0.1:2003")));
    assert_eq!(c.store.path, PathBuf::from("flag-data"));
}

#[test]
fn an_empty_trusted_proxies_variable_clears_the_file_list() {
    let text = with("[client_info]\ntrusted_proxies = [\"10.0.0.0/8\"]");
    let o = Overrides::default();
    let c = load_with(&text, &[("DALEA__CLIENT_INFO__TRUSTED_PROXIES", "")], &o).unwrap();
    assert!(c.client_info.trusted_proxies.is_empty());
    assert_eq!(load_with(&text, &[], &o).unwrap().client_info.trusted_proxies.len(), 1);
}

#[test]
fn users_file_from_the_environment_is_remembered_for_its_errors() {
    let o = Overrides::default();
    let c = load_with(MINIMAL, &[("DALEA__USERS__FILE", "/srv/people.toml")], &o).unwrap();
    assert_eq!(c.users.file, PathBuf::from("/srv/people.toml"));
    assert_eq!(c.users.set_by.as_deref(), Some("DALEA__USERS__FILE"));
    assert_eq!(
        c.users.annotate("cannot read users file /srv/people.toml: not found"),
        "cannot read users file /srv/people.toml: not found (set by DALEA__USERS__FILE)"
    );

    let c = load(MINIMAL).unwrap();
    assert_eq!(c.users.set_by, None);
    assert_eq!(c.users.annotate("users[0].email: x"), "users[0].email: x");
}
