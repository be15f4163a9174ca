//! `[[upstreams]]` and `[[routes]]`: names, targets, hosts, prefixes, references.

use super::*;

#[test]
fn routes_are_checked() {
    let text = MINIMAL.replace("upstream = \"app\"", "upstream = \"nope\"");
    let err = load(&text).unwrap_err();
    assert_eq!(err.key, "routes[0].upstream");
    assert!(err.message.contains("\"nope\""), "{err}");

    let prefix = |p: &str| {
        let line = format!("upstream = \"app\"\npath_prefix = '{p}'");
        let text = MINIMAL.replace("upstream = \"app\"", &line);
        load(&text)
            .map(|c| c.routes[0].path_prefix.clone())
            .map_err(|e| e.key)
    };
    let bad = [
        "/.dalea",
        "/.dalea/x",
        "//.dalea",
        "/\\.dalea",
        "/%2Edalea/",
        "/.DALEA",
        "app",
        "",
        "/a/../b",
        "/a/%2e%2e/b",
        "/a?b",
        "/a b",
    ];
    for p in bad {
        assert_eq!(prefix(p), Err("routes[0].path_prefix".into()), "{p:?}");
    }
    for p in ["/", "/app", "/app/", "/dalea", "/a.b/.well-known"] {
        assert_eq!(prefix(p), Ok(p.into()));
    }

    let two = format!("{MINIMAL}\n[[routes]]\nname = \"route0\"\nupstream = \"app\"\n");
    assert_eq!(err_key(&two), "routes[1].name");
    let missing = format!("{MINIMAL}\n[[routes]]\npath_prefix = \"/x\"\n");
    assert_eq!(err_key(&missing), "routes[1].upstream");
    let no_routes = MINIMAL.replace("[[routes]]\nupstream = \"app\"\n", "");
    assert_eq!(err_key(&no_routes), "routes");
}

#[test]
fn route_host_is_normalised() {
    let host = |h: &str| {
        let text = MINIMAL.replace(
            "upstream = \"app\"",
            &format!("upstream = \"app\"\nhost = \"{h}\""),
        );
        load(&text)
            .map(|c| c.routes[0].host.clone().unwrap_or_default())
            .map_err(|e| e.key)
    };
    assert_eq!(host("App.Example.COM:8443"), Ok("app.example.com".into()));
    assert_eq!(host("[::1]:8080"), Ok("[::1]".into()));
    assert_eq!(host("app.example.com"), Ok("app.example.com".into()));
    for bad in [
        "", "a b", "a/b", "::1", "x:port", "a]b", "[zz]", "[::1]x", "[::1",
    ] {
        assert_eq!(host(bad), Err("routes[0].host".into()), "{bad:?}");
    }
}

#[test]
fn upstreams_are_checked() {
    let addr_up = MINIMAL.replace("builtin = \"whoami\"", "address = \"127.0.0.1:3000\"");
    assert_eq!(
        load(&addr_up).unwrap().upstreams[0].target,
        UpstreamTarget::Address(addr("127.0.0.1:3000"))
    );
    let no_port = MINIMAL.replace("builtin = \"whoami\"", "address = \"127.0.0.1\"");
    assert_eq!(err_key(&no_port), "upstreams[0].address");
    let both = MINIMAL.replace(
        "builtin = \"whoami\"",
        "builtin = \"whoami\"\naddress = \"127.0.0.1:1\"",
    );
    assert_eq!(err_key(&both), "upstreams[0].address");
    let neither = MINIMAL.replace("builtin = \"whoami\"", "");
    assert_eq!(err_key(&neither), "upstreams[0].address");
    let upper = MINIMAL.replace("name = \"app\"", "name = \"App\"");
    assert_eq!(err_key(&upper), "upstreams[0].name");
    let dup = format!("{MINIMAL}\n[[upstreams]]\nname = \"app\"\nbuiltin = \"whoami\"\n");
    assert_eq!(err_key(&dup), "upstreams[1].name");
    let zero = MINIMAL.replace(
        "builtin = \"whoami\"",
        "builtin = \"whoami\"\nread_timeout = \"0s\"",
    );
    assert_eq!(err_key(&zero), "upstreams[0].read_timeout");
    let none = "[[routes]]\nupstream = \"app\"\n[users]\nfile = \"u.toml\"\n";
    assert_eq!(err_key(none), "upstreams");
}
