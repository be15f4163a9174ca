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
        load(&text).map(|c| c.routes[0].path_prefix.clone()).map_err(|e| e.key)
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
        let text = MINIMAL.replace("upstream = \"app\"", &format!("upstream = \"app\"\nhost = \"{h}\""));
        load(&text).map(|c| c.routes[0].host.clone().unwrap_or_default()).map_err(|e| e.key)
    };
    assert_eq!(host("App.Example.COM:8443"), Ok("app.example.com".into()));
    assert_eq!(host("[::1]:8080"), Ok("[::1]".into()));
    assert_eq!(host("app.example.com"), Ok("app.example.com".into()));
    for bad in ["", "a b", "a/b", "::1", "x:port", "a]b", "[zz]", "[::1]x", "[::1"] {
        assert_eq!(host(bad), Err("routes[0].host".into()), "{bad:?}");
    }
}

#[test]
fn upstreams_are_checked() {
    let addr_up = MINIMAL.replace("builtin = \"whoami\"", "address = \"127.0.0.1:3000\"");
    assert_eq!(load(&addr_up).unwrap().upstreams[0].target, UpstreamTarget::Address(addr("127.0.0.1:3000")));
    let no_port = MINIMAL.replace("builtin = \"whoami\"", "address = \"127.0.0.1\"");
    assert_eq!(err_key(&no_port), "upstreams[0].address");
    let both = MINIMAL.replace("builtin = \"whoami\"", "builtin = \"whoami\"\naddress = \"127.0.0.1:1\"");
    assert_eq!(err_key(&both), "upstreams[0].address");
    let neither = MINIMAL.replace("builtin = \"whoami\"", "");
    assert_eq!(err_key(&neither), "upstreams[0].address");
    let upper = MINIMAL.replace("name = \"app\"", "name = \"App\"");
    assert_eq!(err_key(&upper), "upstreams[0].name");
    let dup = format!("{MINIMAL}\n[[upstreams]]\nname = \"app\"\nbuiltin = \"whoami\"\n");
    assert_eq!(err_key(&dup), "upstreams[1].name");
    let zero = MINIMAL.replace("builtin = \"whoami\"", "builtin = \"whoami\"\nread_timeout = \"0s\"");
    assert_eq!(err_key(&zero), "upstreams[0].read_timeout");
    let none = "[[routes]]\nupstream = \"app\"\n[users]\nfile = \"u.toml\"\n";
    assert_eq!(err_key(none), "upstreams");
}

#[test]
fn upstream_address_is_host_port_not_a_url() {
    let address = |a: &str| {
        let text = MINIMAL.replace("builtin = \"whoami\"", &format!("address = \"{a}\""));
        load(&text).unwrap_err()
    };
    let err = address("http://127.0.0.1:18300");
    assert_eq!(err.key, "upstreams[0].address");
    assert!(err.message.contains("host:port without a scheme"), "{err}");
    assert!(err.message.ends_with("write \"127.0.0.1:18300\""), "{err}");
    assert!(!err.message.contains("resolve"), "no DNS talk: {err}");

    let err = address("http://app.internal/");
    assert!(err.message.ends_with("write \"app.internal:80\""), "{err}");

    let err = address("https://app.internal:8443");
    assert_eq!(err.key, "upstreams[0].address");
    assert!(err.message.contains("without a scheme"), "{err}");
    assert!(err.message.contains("plain HTTP"), "{err}");

    let err = address("127.0.0.1:18300/app");
    assert_eq!(err.key, "upstreams[0].address");
    assert!(err.message.contains("host:port without a path"), "{err}");
    assert!(err.message.contains("write \"127.0.0.1:18300\""), "{err}");
    assert!(err.message.contains("path_prefix"), "{err}");

    let err = address("127.0.0.1");
    assert!(err.message.contains("missing the port"), "{err}");
    assert!(err.message.contains("\"127.0.0.1:80\""), "{err}");
    let err = address("[::1]");
    assert!(err.message.contains("\"[::1]:80\""), "{err}");

    let ok = MINIMAL.replace("builtin = \"whoami\"", "address = \"[::1]:3000\"");
    assert_eq!(load(&ok).unwrap().upstreams[0].target, UpstreamTarget::Address(addr("[::1]:3000")));
}

#[test]
fn a_route_shadowed_by_an_earlier_one_is_refused() {
    let routes = |extra: &str| {
        let text = MINIMAL.replace(
            "[[routes]]\nupstream = \"app\"\n",
            &format!("[[routes]]\nupstream = \"app\"\npath_prefix = \"/app\"\n{extra}"),
        );
        load(&text)
    };
    let err = routes("[[routes]]\nupstream = \"app\"\npath_prefix = \"/app/\"\n").unwrap_err();
    assert_eq!(err.key, "routes[1].path_prefix");
    assert!(err.message.starts_with("\"/app/\" on any host"), "{err}");
    assert!(err.message.contains("routes[0]'s \"/app\""), "{err}");
    assert!(err.message.contains("would never be used"), "{err}");

    let err = routes(
        "[[routes]]\nupstream = \"app\"\npath_prefix = \"/other\"\n\
         [[routes]]\nupstream = \"app\"\npath_prefix = \"/app\"\naccess = \"public\"\n",
    )
    .unwrap_err();
    assert_eq!(err.key, "routes[2].path_prefix");
    assert!(err.message.contains("already routed by routes[0]"), "{err}");

    let err = routes(
        "[[routes]]\nupstream = \"app\"\nhost = \"a.example\"\npath_prefix = \"/\"\n\
         [[routes]]\nupstream = \"app\"\nhost = \"A.example:443\"\npath_prefix = \"//\"\n",
    )
    .unwrap_err();
    assert_eq!(err.key, "routes[2].path_prefix");
    assert!(err.message.contains("on host \"a.example\""), "{err}");
    assert!(err.message.contains("routes[1]"), "{err}");

    // Same prefix on another host, or host-specific vs any host, or a longer prefix: all live.
    let ok = routes(
        "[[routes]]\nupstream = \"app\"\nhost = \"a.example\"\npath_prefix = \"/app\"\n\
         [[routes]]\nupstream = \"app\"\nhost = \"b.example\"\npath_prefix = \"/app/\"\n\
         [[routes]]\nupstream = \"app\"\npath_prefix = \"/app/x\"\n\
         [[routes]]\nupstream = \"app\"\npath_prefix = \"/App\"\n",
    );
    assert_eq!(ok.unwrap().routes.len(), 5);
}

/// Staged upstreams that no route uses yet are fine.
#[test]
fn an_unused_upstream_is_accepted() {
    let text = format!("{MINIMAL}\n[[upstreams]]\nname = \"staged\"\naddress = \"127.0.0.1:3001\"\n");
    assert_eq!(load(&text).unwrap().upstreams.len(), 2);
}

#[test]
fn routes_may_split_one_prefix_by_method_but_never_share_a_method() {
    let routes = |extra: &str| {
        let text = MINIMAL.replace(
            "[[routes]]\nupstream = \"app\"\n",
            &format!("[[routes]]\nupstream = \"app\"\npath_prefix = \"/admin\"\n{extra}"),
        );
        load(&text)
    };
    let ok = routes(
        "[[routes]]\nupstream = \"app\"\npath_prefix = \"/admin\"\nmethods = [\"post\", \"DELETE\"]\naccess = \"elevated\"\n\
         [[routes]]\nupstream = \"app\"\npath_prefix = \"/admin\"\nmethods = [\"GET\"]\naccess = \"public\"\n",
    )
    .unwrap();
    assert_eq!(ok.routes[1].methods, vec![http::Method::POST, http::Method::DELETE]);
    assert_eq!(ok.routes[2].methods, vec![http::Method::GET, http::Method::HEAD], "GET brings HEAD along");

    let err = routes(
        "[[routes]]\nupstream = \"app\"\npath_prefix = \"/admin\"\nmethods = [\"POST\"]\n\
         [[routes]]\nupstream = \"app\"\npath_prefix = \"/admin/\"\nmethods = [\"PUT\", \"POST\"]\n",
    )
    .unwrap_err();
    assert_eq!(err.key, "routes[2].path_prefix");
    assert!(err.message.contains("for the same methods"), "{err}");

    for bad in ["[\"\"]", "[\"GET /\"]", "[\"POST\", \"post\"]"] {
        let err =
            routes(&format!("[[routes]]\nupstream = \"app\"\npath_prefix = \"/x\"\nmethods = {bad}\n")).unwrap_err();
        assert_eq!(err.key, "routes[1].methods", "{bad}");
    }
}
