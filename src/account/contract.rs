//! The `AccountStore` contract as tests: one suite, run against every backend (embedded, Redis
//! standalone, Redis Cluster). Every check uses its own people, so the order does not matter.

use futures_util::future::join_all;

use super::{AccountStore, AuditEntry, PasswordRecord, PendingTotp, TotpRecord, TotpState};
use crate::clock::Millis;

const NOW: Millis = 1_700_000_000_000;
const TEN_MINUTES: Millis = 600_000;
/// A realistic TOTP time step (30 s steps since the epoch).
const STEP: u64 = 56_666_666;

/// Runs every contract check against `store`, which must start empty.
pub(crate) async fn run_all(store: &dyn AccountStore) {
    unknown_people_have_nothing(store).await;
    confirm_promotes_the_pending_secret(store).await;
    confirm_refuses_another_secret(store).await;
    confirm_refuses_an_expired_or_missing_enrolment(store).await;
    a_new_enrolment_leaves_the_active_credential_alone(store).await;
    confirm_replaces_the_active_credential(store).await;
    steps_are_accepted_once_and_only_forward(store).await;
    concurrent_uses_of_one_step_accept_exactly_one(store).await;
    remove_clears_credential_and_enrolment(store).await;
    passwords_are_stored_and_overwritten(store).await;
    audit_sequences_count_per_person(store).await;
    audit_pages_newest_first_without_gaps(store).await;
    audit_keeps_only_the_newest(store).await;
    people_are_isolated(store).await;
}

/// A binary secret (zero and non-UTF-8 bytes included) distinct per `n`.
fn secret(n: u8) -> Vec<u8> {
    vec![0, 0xff, n, 0x80, b':', b'{', n.wrapping_mul(7), 0]
}

fn pending(n: u8, expires_at: Millis) -> PendingTotp {
    PendingTotp { secret: secret(n), expires_at }
}

fn password(n: u8) -> PasswordRecord {
    PasswordRecord {
        hash: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$hash{n}"),
        replaces: format!("{n:064x}"),
        changed_at: NOW + Millis::from(n),
    }
}

fn event(n: u64) -> String {
    format!(r#"{{"event":"sign-in","ip":"::1","note":"café {n}"}}"#)
}

async fn state(store: &dyn AccountStore, user: &str) -> TotpState {
    store.totp(user).await.expect("totp")
}

/// Enrols `user` with `secret(n)` and confirms it at `step`.
async fn enrol(store: &dyn AccountStore, user: &str, n: u8, step: u64) {
    store.set_pending_totp(user, &pending(n, NOW + TEN_MINUTES)).await.expect("set pending");
    assert!(store.confirm_totp(user, &secret(n), step, NOW).await.expect("confirm"), "confirm {user}");
}

async fn all_audit(store: &dyn AccountStore, user: &str) -> Vec<AuditEntry> {
    store.audit_page(user, None, 10_000).await.expect("audit page")
}

fn seqs(entries: &[AuditEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.seq).collect()
}

async fn unknown_people_have_nothing(store: &dyn AccountStore) {
    assert_eq!(state(store, "nobody").await, TotpState::default());
    assert!(store.password("nobody").await.expect("password").is_none());
    assert!(all_audit(store, "nobody").await.is_empty());
    assert!(!store.use_totp_step("nobody", STEP).await.expect("use step"), "no credential, no step");
    assert!(!store.confirm_totp("nobody", &secret(1), STEP, NOW).await.expect("confirm"), "nothing pending");
    assert!(!store.remove_totp("nobody").await.expect("remove"));
    assert_eq!(state(store, "nobody").await, TotpState::default(), "the refusals wrote nothing");
}

async fn confirm_promotes_the_pending_secret(store: &dyn AccountStore) {
    let p = pending(1, NOW + TEN_MINUTES);
    store.set_pending_totp("amy", &p).await.expect("set pending");
    assert_eq!(state(store, "amy").await, TotpState { active: None, pending: Some(p.clone()) });
    // One millisecond before the enrolment expires is still in time.
    let at = NOW + TEN_MINUTES - 1;
    assert!(store.confirm_totp("amy", &secret(1), STEP, at).await.expect("confirm"));
    let active = TotpRecord { secret: secret(1), enrolled_at: at, last_step: STEP };
    assert_eq!(state(store, "amy").await, TotpState { active: Some(active), pending: None });
    // The step the code was checked with counts as used.
    assert!(!store.use_totp_step("amy", STEP).await.expect("use step"));
    assert!(!store.confirm_totp("amy", &secret(1), STEP + 1, at).await.expect("confirm"), "pending is gone");
}

async fn confirm_refuses_another_secret(store: &dyn AccountStore) {
    let p = pending(2, NOW + TEN_MINUTES);
    store.set_pending_totp("ben", &p).await.expect("set pending");
    let before = state(store, "ben").await;
    for other in [secret(3), Vec::new(), secret(2)[..4].to_vec(), [secret(2), vec![0]].concat()] {
        assert!(!store.confirm_totp("ben", &other, STEP, NOW).await.expect("confirm"));
    }
    assert_eq!(state(store, "ben").await, before, "a refused confirmation changes nothing");
    // A restarted enrolment replaces the pending secret: the old one no longer confirms.
    let q = pending(4, NOW + 2 * TEN_MINUTES);
    store.set_pending_totp("ben", &q).await.expect("restart");
    assert!(state(store, "ben").await.pending == Some(q), "the restart replaced the pending secret");
    assert!(!store.confirm_totp("ben", &secret(2), STEP, NOW).await.expect("confirm"));
    assert!(store.confirm_totp("ben", &secret(4), STEP, NOW).await.expect("confirm"));
}

async fn confirm_refuses_an_expired_or_missing_enrolment(store: &dyn AccountStore) {
    let p = pending(5, NOW + TEN_MINUTES);
    store.set_pending_totp("cat", &p).await.expect("set pending");
    let before = state(store, "cat").await;
    for late in [NOW + TEN_MINUTES, NOW + TEN_MINUTES + 1, NOW + 100 * TEN_MINUTES] {
        assert!(!store.confirm_totp("cat", &secret(5), STEP, late).await.expect("confirm"), "expired at {late}");
    }
    assert_eq!(state(store, "cat").await, before, "a refused confirmation changes nothing");
    assert!(!store.confirm_totp("dan", &secret(5), STEP, NOW).await.expect("confirm"), "nothing pending");
    assert_eq!(state(store, "dan").await, TotpState::default());
}

async fn a_new_enrolment_leaves_the_active_credential_alone(store: &dyn AccountStore) {
    enrol(store, "eve", 6, STEP).await;
    let active = state(store, "eve").await.active;
    let p = pending(7, NOW + TEN_MINUTES);
    store.set_pending_totp("eve", &p).await.expect("set pending");
    assert_eq!(state(store, "eve").await, TotpState { active: active.clone(), pending: Some(p) });
    assert!(store.use_totp_step("eve", STEP + 1).await.expect("the active credential still works"));
    // A refused confirmation leaves both in place.
    assert!(!store.confirm_totp("eve", &secret(6), STEP + 2, NOW).await.expect("confirm"));
    let after = state(store, "eve").await;
    assert_eq!(after.active.map(|a| (a.secret, a.last_step)), Some((secret(6), STEP + 1)));
    assert!(after.pending.is_some());
}

async fn confirm_replaces_the_active_credential(store: &dyn AccountStore) {
    enrol(store, "fay", 8, STEP).await;
    assert!(store.use_totp_step("fay", STEP + 10).await.expect("use step"));
    store.set_pending_totp("fay", &pending(9, NOW + 2 * TEN_MINUTES)).await.expect("set pending");
    // The new credential starts from the step it was confirmed with, even an older one.
    let at = NOW + TEN_MINUTES;
    assert!(store.confirm_totp("fay", &secret(9), STEP + 5, at).await.expect("confirm"));
    let active = TotpRecord { secret: secret(9), enrolled_at: at, last_step: STEP + 5 };
    assert_eq!(state(store, "fay").await, TotpState { active: Some(active), pending: None });
    assert!(store.use_totp_step("fay", STEP + 6).await.expect("use step"));
}

async fn steps_are_accepted_once_and_only_forward(store: &dyn AccountStore) {
    store.set_pending_totp("gil", &pending(10, NOW + TEN_MINUTES)).await.expect("set pending");
    assert!(!store.use_totp_step("gil", STEP).await.expect("use step"), "a pending enrolment is no credential");
    assert!(store.confirm_totp("gil", &secret(10), STEP, NOW).await.expect("confirm"));
    for (step, accepted) in [
        (STEP, false),
        (STEP - 1, false),
        (STEP + 1, true),
        (STEP + 1, false),
        (STEP + 3, true),
        (STEP + 2, false),
        (STEP + 3, false),
        (STEP + 4, true),
    ] {
        assert_eq!(store.use_totp_step("gil", step).await.expect("use step"), accepted, "step {step}");
    }
    let active = state(store, "gil").await.active.expect("active");
    assert_eq!((active.secret, active.last_step, active.enrolled_at), (secret(10), STEP + 4, NOW));
}

async fn concurrent_uses_of_one_step_accept_exactly_one(store: &dyn AccountStore) {
    enrol(store, "hal", 11, STEP).await;
    for round in 1..=3 {
        let step = STEP + round;
        let results = join_all((0..8).map(|_| store.use_totp_step("hal", step))).await;
        let accepted = results.into_iter().map(|r| r.expect("use step")).filter(|&ok| ok).count();
        assert_eq!(accepted, 1, "one code, one use (round {round})");
    }
    assert_eq!(state(store, "hal").await.active.map(|a| a.last_step), Some(STEP + 3));
}

async fn remove_clears_credential_and_enrolment(store: &dyn AccountStore) {
    enrol(store, "ida", 12, STEP).await;
    store.set_pending_totp("ida", &pending(13, NOW + TEN_MINUTES)).await.expect("set pending");
    assert!(store.remove_totp("ida").await.expect("remove"));
    assert_eq!(state(store, "ida").await, TotpState::default());
    assert!(!store.remove_totp("ida").await.expect("remove twice"));
    assert!(!store.use_totp_step("ida", STEP + 1).await.expect("use step"));
    assert!(!store.confirm_totp("ida", &secret(13), STEP, NOW).await.expect("confirm"), "pending went too");
    // Only an enrolment in progress: removed, but nothing was active.
    store.set_pending_totp("ida", &pending(14, NOW + TEN_MINUTES)).await.expect("set pending");
    assert!(!store.remove_totp("ida").await.expect("remove"));
    assert_eq!(state(store, "ida").await, TotpState::default());
}

async fn passwords_are_stored_and_overwritten(store: &dyn AccountStore) {
    assert!(store.password("jan").await.expect("password").is_none());
    store.set_password("jan", &password(1)).await.expect("set");
    assert_eq!(store.password("jan").await.expect("password"), Some(password(1)));
    store.set_password("jan", &password(2)).await.expect("overwrite");
    assert_eq!(store.password("jan").await.expect("password"), Some(password(2)));
    let empty = PasswordRecord { hash: String::new(), replaces: String::new(), changed_at: 0 };
    store.set_password("jan", &empty).await.expect("overwrite");
    assert_eq!(store.password("jan").await.expect("password"), Some(empty));
}

async fn audit_sequences_count_per_person(store: &dyn AccountStore) {
    for n in 1..=4u64 {
        assert_eq!(store.append_audit("kim", &event(n), 100).await.expect("append"), n);
        if n % 2 == 0 {
            assert_eq!(store.append_audit("lou", &event(n), 100).await.expect("append"), n / 2);
        }
    }
    let kim = all_audit(store, "kim").await;
    assert_eq!(seqs(&kim), [4, 3, 2, 1]);
    assert!(kim.iter().all(|e| e.json == event(e.seq)), "the JSON comes back as stored");
    assert_eq!(seqs(&all_audit(store, "lou").await), [2, 1]);
}

async fn audit_pages_newest_first_without_gaps(store: &dyn AccountStore) {
    for n in 1..=10u64 {
        store.append_audit("max", &event(n), 100).await.expect("append");
    }
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store.audit_page("max", before, 3).await.expect("page");
        assert!(page.len() <= 3, "limit respected");
        let Some(last) = page.last() else { break };
        before = Some(last.seq);
        seen.extend(page);
    }
    assert_eq!(seqs(&seen), (1..=10).rev().collect::<Vec<_>>(), "newest first, no gaps, no repeats");
    assert!(seen.iter().all(|e| e.json == event(e.seq)));
    assert_eq!(seqs(&store.audit_page("max", Some(6), 2).await.expect("page")), [5, 4]);
    assert_eq!(seqs(&store.audit_page("max", Some(1_000), 2).await.expect("page")), [10, 9]);
    assert!(store.audit_page("max", Some(1), 10).await.expect("page").is_empty());
    assert!(store.audit_page("max", Some(0), 10).await.expect("page").is_empty());
    assert!(store.audit_page("max", None, 0).await.expect("page").is_empty());
}

async fn audit_keeps_only_the_newest(store: &dyn AccountStore) {
    for n in 1..=7u64 {
        assert_eq!(store.append_audit("ned", &event(n), 5).await.expect("append"), n);
    }
    assert_eq!(seqs(&all_audit(store, "ned").await), [7, 6, 5, 4, 3], "the oldest are dropped");
    // Numbers keep counting after a trim, and a smaller bound trims further.
    assert_eq!(store.append_audit("ned", &event(8), 2).await.expect("append"), 8);
    assert_eq!(seqs(&all_audit(store, "ned").await), [8, 7]);
    assert_eq!(store.append_audit("ned", &event(9), 1).await.expect("append"), 9);
    let kept = all_audit(store, "ned").await;
    assert_eq!(seqs(&kept), [9]);
    assert_eq!(kept[0].json, event(9));
}

async fn people_are_isolated(store: &dyn AccountStore) {
    // Prefixes of each other, and ids with the characters keys are built from.
    let people = ["ann", "anna", "an", "a{b", "a}b", "}x", "{y}", "a:b", "a", "a}:n", "a:n", "%7D", "}", "%", ""];
    for (i, user) in people.iter().enumerate() {
        let n = 100 + i as u8;
        enrol(store, user, n, STEP + i as u64).await;
        store.set_pending_totp(user, &pending(n + 50, NOW + TEN_MINUTES + i as Millis)).await.expect("pending");
        store.set_password(user, &password(n)).await.expect("password");
        for k in 1..=(i as u64 + 1) {
            assert_eq!(store.append_audit(user, &format!("{{\"who\":{i},\"k\":{k}}}"), 100).await.expect("append"), k);
        }
    }
    for (i, user) in people.iter().enumerate() {
        let n = 100 + i as u8;
        let got = state(store, user).await;
        let active = got.active.expect("active");
        assert_eq!((active.secret, active.last_step), (secret(n), STEP + i as u64), "{user}");
        assert!(got.pending == Some(pending(n + 50, NOW + TEN_MINUTES + i as Millis)), "{user}");
        assert_eq!(store.password(user).await.expect("password"), Some(password(n)), "{user}");
        let audit = all_audit(store, user).await;
        assert_eq!(audit.len(), i + 1, "{user}");
        assert!(audit.iter().all(|e| e.json == format!("{{\"who\":{i},\"k\":{}}}", e.seq)), "{user}");
    }
    // Using, confirming or removing for one person leaves the others alone.
    assert!(store.use_totp_step("a{b", STEP + 1_000).await.expect("use step"));
    assert!(store.remove_totp("a").await.expect("remove"));
    for (i, user) in people.iter().enumerate().filter(|(_, u)| !["a{b", "a"].contains(u)) {
        let got = state(store, user).await;
        assert_eq!(got.active.map(|a| a.last_step), Some(STEP + i as u64), "{user}");
        assert!(got.pending.is_some(), "{user}");
    }
}
