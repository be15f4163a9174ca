//! What the sessions list says about a device and its place: client hints and GeoIP, end to end.

use crate::support::mmdb::{City, MmdbWriter};
use crate::support::*;

#[tokio::test]
async fn locations_come_from_the_configured_geoip_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("city.mmdb");
    MmdbWriter::new("GeoIP2-City")
        .insert(
            "81.2.69.0/24".parse().unwrap(),
            City { city_en: Some("London"), country_en: Some("United Kingdom"), iso: Some("GB") },
        )
        .insert("2001:218::/32".parse().unwrap(), City { city_en: None, country_en: Some("Japan"), iso: Some("JP") })
        .write(&db)
        .unwrap();
    let gw = Setup::default()
        .toml(&format!("[client_info]\ntrusted_proxies = [\"127.0.0.1/32\"]\ngeoip_database = \"{}\"", db.display()))
        .start();
    let sign_in_from = |ip: &'static str| {
        let url = gw.url("/.dalea/api/signin");
        async move {
            let resp = client()
                .post(url)
                .header("x-forwarded-for", ip)
                .header("user-agent", CHROME_MAC)
                .json(&serde_json::json!({"email": DEMO_EMAIL, "password": PASSWORD}))
                .send()
                .await
                .unwrap();
            session_cookie(&resp).unwrap()
        }
    };
    let london = sign_in_from("81.2.69.160").await;
    let tokyo = sign_in_from("2001:218::1").await;
    let _nowhere = sign_in_from("8.8.8.8").await;

    // Listed from the Tokyo session: listing is itself a request, and counts as activity.
    let (_, v) = sessions(&gw, &tokyo).await;
    let by_ip =
        |ip: &str| v["sessions"].as_array().unwrap().iter().find(|s| s["ip"] == ip).cloned().unwrap_or_default();
    assert_eq!(
        by_ip("81.2.69.160")["location"],
        serde_json::json!({"city": "London", "country": "United Kingdom", "country_code": "GB"})
    );
    // The Tokyo session's latest request (the listing) came straight from 127.0.0.1.
    assert!(by_ip("127.0.0.1")["location"].is_null(), "loopback has no location");
    assert!(by_ip("8.8.8.8")["location"].is_null(), "no record → no location");

    let html = client()
        .get(gw.url("/.dalea/settings/security/sessions"))
        .header("cookie", &london)
        .header("x-forwarded-for", "81.2.69.160")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("81.2.69.160 · London, United Kingdom"), "{html}");
    assert!(!html.contains(dalea_gateway::vigilance::NO_GEOIP_NOTE), "the database is there");
}

#[tokio::test]
async fn a_missing_geoip_database_is_a_clear_startup_error() {
    let err = dalea_gateway::config::Config::from_toml_str(
        "[users]\nfile = \"u.toml\"\n[client_info]\ngeoip_database = \"/nonexistent/city.mmdb\"\n\
         [[upstreams]]\nname = \"a\"\nbuiltin = \"whoami\"\n[[routes]]\nupstream = \"a\"\n",
        std::path::Path::new("."),
        &[],
        &Default::default(),
    )
    .unwrap_err();
    assert_eq!(err.key, "client_info.geoip_database");
}

#[tokio::test]
async fn client_hints_turn_a_frozen_user_agent_into_the_real_os_version() {
    let gw = TestGateway::start();
    let resp = client()
        .post(gw.url("/.dalea/api/signin"))
        .header("user-agent", CHROME_MAC)
        .header("sec-ch-ua-platform", "\"macOS\"")
        .header("sec-ch-ua-platform-version", "\"14.6.1\"")
        .json(&serde_json::json!({"email": DEMO_EMAIL, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["session"]["device"], "Chrome on macOS 14");
    assert_eq!(v["session"]["os"], "macOS 14");

    // Without hints the frozen 10_15_7 is never shown as a real version.
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let (_, v) = sessions(&gw, &cookie).await;
    let current = v["sessions"].as_array().unwrap().iter().find(|s| s["current"] == true).cloned().unwrap();
    assert_eq!(current["os"], "macOS");
    assert_eq!(current["device"], "Chrome on macOS");
}
