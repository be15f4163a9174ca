//! `[rate_limit]`: how many failed sign-ins and TOTP codes are allowed per account and per
//! client network, and for how long, with the defaults and with the settings changed.

use std::time::Duration;

use crate::support::account::*;
use crate::support::*;

fn retry_after(resp: &reqwest::Response) -> u64 {
    resp.headers().get("retry-after").expect("Retry-After").to_str().unwrap().parse().expect("seconds")
}

#[tokio::test]
async fn the_sign_in_limits_and_window_follow_the_config() {
    let gw =
        Setup::default().toml("[rate_limit]\nwindow = \"5m\"\nsignin_per_account = 3\nsignin_per_network = 5").start();
    for _ in 0..3 {
        assert_eq!(try_sign_in(&gw, DEMO_EMAIL, "guess").await.status(), 401);
    }
    let locked = try_sign_in(&gw, DEMO_EMAIL, PASSWORD).await;
    assert_eq!(locked.status(), 429, "the account's 3 attempts are used up");
    assert!((1..=300).contains(&retry_after(&locked)), "a 5-minute window");

    // The network has used 3 of its 5: two more guesses at another account, then it waits too.
    for _ in 0..2 {
        assert_eq!(try_sign_in(&gw, SAM_EMAIL, "guess").await.status(), 401);
    }
    assert_eq!(try_sign_in(&gw, SAM_EMAIL, PASSWORD).await.status(), 429, "the network's 5 attempts are used up");

    gw.clock.advance(Duration::from_secs(300));
    assert_eq!(try_sign_in(&gw, DEMO_EMAIL, PASSWORD).await.status(), 200);
    assert_eq!(try_sign_in(&gw, SAM_EMAIL, PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn by_default_ten_wrong_codes_are_allowed_per_15_minutes() {
    let gw = TestGateway::start();
    let cookie = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let app = enroll_totp(&gw, &cookie).await;
    gw.clock.advance(STEP);
    for _ in 0..10 {
        let (status, v) = status_json(elevate_with_code(&gw, &cookie, &app.wrong_code(&gw.clock)).await).await;
        assert_eq!((status, v["error"].as_str()), (401, Some("invalid_code")), "{v}");
    }
    let locked = elevate_with_code(&gw, &cookie, &app.code(&gw.clock)).await;
    assert_eq!(locked.status(), 429);
    let retry = retry_after(&locked);
    assert!((841..=900).contains(&retry), "a 15-minute window: {retry}");

    gw.clock.advance(Duration::from_secs(899));
    assert_eq!(elevate_with_code(&gw, &cookie, &app.code(&gw.clock)).await.status(), 429, "not over yet");
    gw.clock.advance(Duration::from_secs(1));
    assert_eq!(elevate_with_code(&gw, &cookie, &app.code(&gw.clock)).await.status(), 200);
}
