//! The sessions list and revocation.

use crate::support::*;

#[tokio::test]
async fn the_list_shows_every_device_most_recent_first_and_marks_this_one() {
    let gw = TestGateway::start();
    let mac = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    gw.clock.advance(std::time::Duration::from_secs(120));
    let win = sign_in(&gw, DEMO_EMAIL, FIREFOX_WIN).await;
    let _other_person = sign_in(&gw, SAM_EMAIL, FIREFOX_WIN).await;

    let (status, v) = sessions(&gw, &win).await;
    assert_eq!(status, 200);
    let list = v["sessions"].as_array().unwrap();
    assert_eq!(list.len(), 2, "only this person's sessions: {v}");
    assert_eq!(list[0]["device"], "Firefox on Windows", "most recently active first");
    assert_eq!(list[1]["device"], "Chrome on macOS");
    assert_eq!(list[0]["current"], true);
    assert_eq!(list[1]["current"], false);
    assert_ne!(list[0]["last_active"], list[1]["last_active"]);
    for s in list {
        for key in [
            "id",
            "browser",
            "os",
            "device",
            "ip",
            "location",
            "last_active",
            "created_at",
            "sign_in_method",
            "auth_strength",
            "current",
        ] {
            assert!(s.get(key).is_some(), "missing {key}");
        }
        assert_eq!(s["auth_strength"]["elevated"], false);
        assert!(s["location"].is_null(), "no GeoIP database configured");
    }

    // Using the Mac session (any request, the sessions API included) makes it the most recent.
    gw.clock.advance(std::time::Duration::from_secs(60));
    let (_, v) = sessions(&gw, &mac).await;
    assert_eq!(v["sessions"][0]["device"], "Chrome on macOS");
    assert_eq!(v["sessions"][0]["current"], true);
    gw.clock.advance(std::time::Duration::from_secs(60));
    client().get(gw.url("/app")).header("cookie", &win).send().await.unwrap();
    let (_, v) = sessions(&gw, &_other_person).await;
    assert_eq!(v["sessions"].as_array().unwrap().len(), 1, "Sam sees only Sam");
}

#[tokio::test]
async fn revoking_another_session_signs_it_out_at_its_very_next_request() {
    let gw = TestGateway::start();
    let mine = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let other = sign_in(&gw, DEMO_EMAIL, FIREFOX_WIN).await;
    let (_, v) = sessions(&gw, &mine).await;
    let other_id = v["sessions"].as_array().unwrap().iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let my_id = v["sessions"].as_array().unwrap().iter().find(|s| s["current"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Warm the other session into the cache first, so revocation must evict it.
    let before = client().get(gw.url("/app")).header("cookie", &other).send().await.unwrap();
    assert_eq!(before.status(), 200);

    let resp = client()
        .delete(gw.url(&format!("/.dalea/api/sessions/{other_id}")))
        .header("cookie", &mine)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);

    let after =
        client().get(gw.url("/app")).header("cookie", &other).header("accept", "text/html").send().await.unwrap();
    assert_eq!(after.status(), 303);
    assert!(after.headers()["location"].to_str().unwrap().starts_with("/.dalea/signin"));
    assert!(
        set_cookies(&after).iter().any(|c| c.starts_with("dalea_session=;") && c.contains("Max-Age=0")),
        "the dead cookie is cleared"
    );
    let api = client().get(gw.url("/app")).header("cookie", &other).send().await.unwrap();
    assert_eq!(api.status(), 401);

    // Own session: 409 pointing to sign out. Unknown or someone else's: 404.
    let own =
        client().delete(gw.url(&format!("/.dalea/api/sessions/{my_id}"))).header("cookie", &mine).send().await.unwrap();
    assert_eq!(own.status(), 409);
    assert!(own.text().await.unwrap().contains("sign out"));
    let sam = sign_in(&gw, SAM_EMAIL, CHROME_MAC).await;
    let (_, sv) = sessions(&gw, &sam).await;
    let sam_id = sv["sessions"][0]["id"].as_str().unwrap().to_string();
    for id in [sam_id.as_str(), "AAAAAAAAAAAAAAAAAAAAAA", "not-an-id", &other_id] {
        let resp = client()
            .delete(gw.url(&format!("/.dalea/api/sessions/{id}")))
            .header("cookie", &mine)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{id}");
    }
    assert_eq!(sessions(&gw, &sam).await.1["sessions"].as_array().unwrap().len(), 1, "Sam's session is untouched");
}

#[tokio::test]
async fn the_revoke_api_refuses_cross_site_browsers() {
    let gw = TestGateway::start();
    let mine = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let other = sign_in(&gw, DEMO_EMAIL, FIREFOX_WIN).await;
    let (_, v) = sessions(&gw, &other).await;
    let other_id = v["sessions"].as_array().unwrap().iter().find(|s| s["current"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = client()
        .delete(gw.url(&format!("/.dalea/api/sessions/{other_id}")))
        .header("cookie", &mine)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(client().get(gw.url("/app")).header("cookie", &other).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn the_html_page_lists_sessions_and_its_x_revokes_with_a_csrf_token() {
    let gw = TestGateway::start();
    let mine = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let other = sign_in(&gw, DEMO_EMAIL, FIREFOX_WIN).await;
    let page = client().get(gw.url("/.dalea/settings/security/sessions")).header("cookie", &mine).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(html.contains("Chrome on macOS") && html.contains("Firefox on Windows"));
    assert!(html.contains("This is you"));
    assert_eq!(html.matches("/revoke\"").count(), 1, "an × on every row but the current one");
    let token = html.split("name=\"csrf_token\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let action =
        html.split("action=\"").find(|a| a.contains("/revoke")).unwrap().split('"').next().unwrap().to_string();

    let forged =
        client().post(gw.url(&action)).header("cookie", &mine).form(&[("csrf_token", "nope")]).send().await.unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(client().get(gw.url("/app")).header("cookie", &other).send().await.unwrap().status(), 200);

    let resp =
        client().post(gw.url(&action)).header("cookie", &mine).form(&[("csrf_token", &token)]).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/.dalea/settings/security/sessions?done=revoked");
    assert_eq!(client().get(gw.url("/app")).header("cookie", &other).send().await.unwrap().status(), 401);
}

#[tokio::test]
async fn the_sessions_page_without_a_session_goes_to_sign_in() {
    let gw = TestGateway::start();
    let resp = client().get(gw.url("/.dalea/settings/security/sessions")).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/.dalea/signin?rd=%2F.dalea%2Fsettings%2Fsecurity%2Fsessions");
    let api = client().get(gw.url("/.dalea/api/sessions")).send().await.unwrap();
    assert_eq!(api.status(), 401);
}

/// Sessions end with the person they rest on: removing someone from the users file (no restart)
/// signs them out at their next request; a broken edit changes nothing.
#[tokio::test]
async fn removing_a_person_from_the_users_file_ends_their_sessions() {
    let gw = TestGateway::start();
    let demo = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let sam = sign_in(&gw, SAM_EMAIL, CHROME_MAC).await;
    let original = std::fs::read_to_string(&gw.users_file).unwrap();

    std::fs::write(&gw.users_file, "[[users]]\nemail = \"broken").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(
        client().get(gw.url("/app")).header("cookie", &sam).send().await.unwrap().status(),
        200,
        "a broken file is not applied"
    );

    let without_sam =
        original.split("[[users]]").filter(|u| !u.contains(SAM_EMAIL)).collect::<Vec<_>>().join("[[users]]");
    std::fs::write(&gw.users_file, without_sam).unwrap();
    let mut status = 200;
    for _ in 0..60 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        status = client().get(gw.url("/app")).header("cookie", &sam).send().await.unwrap().status().as_u16();
        if status != 200 {
            break;
        }
    }
    assert_eq!(status, 401, "Sam's session ended once the file no longer lists Sam");
    assert_eq!(client().get(gw.url("/app")).header("cookie", &demo).send().await.unwrap().status(), 200);
    assert_eq!(try_sign_in(&gw, SAM_EMAIL, PASSWORD).await.status(), 401);
}

/// Leaving the users file ends the person's sessions and API keys in the store itself, without
/// waiting for their next request: putting the id back — the same person after a mistaken
/// edit, or worse someone else under a reused id — brings none of them back.
#[tokio::test]
async fn a_removed_persons_sessions_and_keys_stay_ended_when_the_id_comes_back() {
    use std::time::Duration;

    use crate::support::api_keys::{create_key, eventually, key_setup, key_works};

    let gw = key_setup().start();
    let demo = sign_in(&gw, DEMO_EMAIL, CHROME_MAC).await;
    let sam = sign_in(&gw, SAM_EMAIL, CHROME_MAC).await;
    let sams_key = create_key(&gw, &sam, "sam's script", Some(30)).await;
    let sam_id = gw.state.users.current().by_email(SAM_EMAIL).expect("Sam is listed").id.clone();
    let demo_id = gw.state.users.current().by_email(DEMO_EMAIL).expect("Demo is listed").id.clone();
    let original = std::fs::read_to_string(&gw.users_file).unwrap();
    let without_sam =
        original.split("[[users]]").filter(|u| !u.contains(SAM_EMAIL)).collect::<Vec<_>>().join("[[users]]");
    std::fs::write(&gw.users_file, without_sam).unwrap();

    // Nobody uses Sam's cookie meanwhile: the gateway ends the sessions on its own.
    let store = gw.state.sessions.store.clone();
    let ended = eventually(Duration::from_secs(10), || async {
        store.list_for_user(&sam_id).await.expect("the store answers").is_empty()
    })
    .await;
    assert!(ended, "Sam's sessions are still in the store after Sam left the users file");
    assert_eq!(store.list_for_user(&demo_id).await.unwrap().len(), 1, "Demo's session is untouched");
    let keys = gw.state.api_keys.store.keys_for_user(&sam_id).await.expect("the store answers");
    assert!(keys.is_empty(), "Sam's API keys are revoked too: {keys:?}");

    std::fs::write(&gw.users_file, &original).unwrap();
    let back =
        eventually(Duration::from_secs(10), || async { gw.state.users.current().by_id(&sam_id).is_some() }).await;
    assert!(back, "the users file lists Sam again");
    let status = client().get(gw.url("/app")).header("cookie", &sam).send().await.unwrap().status();
    assert_eq!(status, 401, "an ended session stays ended when its id returns");
    assert!(!key_works(&gw, &sams_key.key).await, "so does a revoked key");
    assert_eq!(client().get(gw.url("/app")).header("cookie", &demo).send().await.unwrap().status(), 200);
    assert_eq!(try_sign_in(&gw, SAM_EMAIL, PASSWORD).await.status(), 200, "Sam can sign in afresh");
}
