//! The `LinkStore` contract as tests: one suite, run against every backend (embedded, Redis
//! standalone, Redis Cluster). Every check uses its own people and identities, so the order
//! does not matter.

use futures_util::future::join_all;

use super::links::{Link, LinkStore, MAX_LINKS_PER_PERSON, MAX_PROVIDER_LEN, MAX_SUBJECT_LEN, TOO_MANY_LINKS};
use crate::clock::Millis;
use crate::session::store::StoreError;

const NOW: Millis = 1_700_000_000_000;

/// Runs every contract check against `store`, which must start empty.
pub(crate) async fn run_all(store: &dyn LinkStore) {
    unknown_identities_and_people_have_nothing(store).await;
    a_link_is_found_both_ways(store).await;
    a_linked_identity_is_never_moved(store).await;
    concurrent_links_to_two_people_have_one_winner(store).await;
    a_person_lists_all_their_links(store).await;
    unlink_removes_only_the_persons_own_link(store).await;
    an_unlinked_identity_can_be_linked_again(store).await;
    links_per_person_are_capped(store).await;
    bad_identities_are_refused(store).await;
    odd_ids_and_subjects_are_kept_apart(store).await;
}

fn link(provider: &str, subject: &str, user: &str, n: Millis) -> Link {
    Link {
        provider: provider.into(),
        subject: subject.into(),
        user_id: user.into(),
        linked_at: NOW + n,
        email: Some(format!("{user}.{n}@example.com")),
    }
}

async fn linked(store: &dyn LinkStore, l: &Link) -> String {
    store.link(l).await.unwrap_or_else(|e| panic!("link {}/{}: {e}", l.provider, l.subject))
}

async fn owner(store: &dyn LinkStore, provider: &str, subject: &str) -> Option<String> {
    store.linked_user(provider, subject).await.expect("linked_user")
}

/// The person's links, ordered by (provider, subject) (the store promises no order).
async fn listed(store: &dyn LinkStore, user: &str) -> Vec<Link> {
    let mut links = store.links_of(user).await.expect("links_of");
    links.sort_by(|a, b| (&a.provider, &a.subject).cmp(&(&b.provider, &b.subject)));
    links
}

async fn unknown_identities_and_people_have_nothing(store: &dyn LinkStore) {
    assert_eq!(owner(store, "google", "nobody").await, None);
    assert!(listed(store, "nobody").await.is_empty());
    assert!(!store.unlink("nobody", "google", "nobody").await.expect("unlink"));
}

async fn a_link_is_found_both_ways(store: &dyn LinkStore) {
    let l = link("google", "1234567890", "amy", 1);
    assert_eq!(linked(store, &l).await, "amy");
    assert_eq!(owner(store, "google", "1234567890").await.as_deref(), Some("amy"));
    assert_eq!(listed(store, "amy").await, vec![l.clone()], "every field comes back");
    // Linking it to the same person again changes nothing and adds no second entry.
    let again = Link { linked_at: NOW + 99, email: None, ..l.clone() };
    assert_eq!(linked(store, &again).await, "amy");
    assert_eq!(listed(store, "amy").await, vec![l.clone()], "the first link's record is kept");
    // The same subject at another provider is another identity.
    assert_eq!(owner(store, "github", "1234567890").await, None);
    let no_email = Link { email: None, ..link("github", "1234567890", "amy", 2) };
    assert_eq!(linked(store, &no_email).await, "amy");
    assert_eq!(listed(store, "amy").await, vec![no_email, l]);
}

async fn a_linked_identity_is_never_moved(store: &dyn LinkStore) {
    let first = link("microsoft", "00000000-0000-0000-0000-0000000000b1", "ben", 3);
    assert_eq!(linked(store, &first).await, "ben");
    let thief = link("microsoft", "00000000-0000-0000-0000-0000000000b1", "cat", 4);
    assert_eq!(linked(store, &thief).await, "ben", "the winner is reported");
    assert_eq!(owner(store, "microsoft", "00000000-0000-0000-0000-0000000000b1").await.as_deref(), Some("ben"));
    assert_eq!(listed(store, "ben").await, vec![first]);
    assert!(listed(store, "cat").await.is_empty(), "the loser got nothing");
}

async fn concurrent_links_to_two_people_have_one_winner(store: &dyn LinkStore) {
    for round in 0..5 {
        let subject = format!("contested-{round}");
        let people: Vec<String> = (0..6).map(|p| format!("racer-{round}-{p}")).collect();
        let links: Vec<Link> = people.iter().map(|p| link("oidc", &subject, p, round)).collect();
        let results = join_all(links.iter().map(|l| store.link(l))).await;
        let winners: Vec<String> = results.into_iter().map(|r| r.expect("link")).collect();
        let winner = winners[0].clone();
        assert!(winners.iter().all(|w| *w == winner), "every caller learns the one winner: {winners:?}");
        assert!(people.contains(&winner), "the winner is one of them");
        assert_eq!(owner(store, "oidc", &subject).await, Some(winner.clone()));
        for p in &people {
            let theirs = listed(store, p).await;
            if *p == winner {
                assert_eq!(theirs.len(), 1, "{p}");
                assert_eq!(theirs[0].user_id, winner);
            } else {
                assert!(theirs.is_empty(), "{p} lost the race: {theirs:?}");
            }
        }
    }
}

async fn a_person_lists_all_their_links(store: &dyn LinkStore) {
    let mine = [link("google", "dan-g", "dan", 5), link("github", "42", "dan", 6), link("oidc", "dan:corp", "dan", 7)];
    for l in &mine {
        assert_eq!(linked(store, l).await, "dan");
    }
    linked(store, &link("google", "dana-g", "dana", 8)).await;
    let mut expected = mine.to_vec();
    expected.sort_by(|a, b| (&a.provider, &a.subject).cmp(&(&b.provider, &b.subject)));
    assert_eq!(listed(store, "dan").await, expected);
    assert_eq!(listed(store, "dana").await.len(), 1, "a person whose id starts with another's");
}

async fn unlink_removes_only_the_persons_own_link(store: &dyn LinkStore) {
    let (keep, drop) = (link("google", "eve-1", "eve", 9), link("github", "eve-2", "eve", 10));
    linked(store, &keep).await;
    linked(store, &drop).await;
    assert!(!store.unlink("fay", "github", "eve-2").await.expect("unlink"), "not fay's to remove");
    assert!(!store.unlink("eve", "google", "eve-2").await.expect("unlink"), "another provider's identity");
    assert_eq!(owner(store, "github", "eve-2").await.as_deref(), Some("eve"));
    assert!(store.unlink("eve", "github", "eve-2").await.expect("unlink"));
    assert_eq!(owner(store, "github", "eve-2").await, None);
    assert_eq!(listed(store, "eve").await, vec![keep]);
    assert!(!store.unlink("eve", "github", "eve-2").await.expect("unlink twice"));
    // Concurrent unlinks of one link: exactly one removes it.
    let again = link("github", "eve-2", "eve", 11);
    linked(store, &again).await;
    let results = join_all((0..6).map(|_| store.unlink("eve", "github", "eve-2"))).await;
    assert_eq!(results.into_iter().filter(|r| *r.as_ref().expect("unlink")).count(), 1);
}

async fn an_unlinked_identity_can_be_linked_again(store: &dyn LinkStore) {
    linked(store, &link("google", "moving", "gil", 12)).await;
    assert!(store.unlink("gil", "google", "moving").await.expect("unlink"));
    let moved = link("google", "moving", "hal", 13);
    assert_eq!(linked(store, &moved).await, "hal", "free again after the unlink");
    assert!(listed(store, "gil").await.is_empty());
    assert_eq!(listed(store, "hal").await, vec![moved]);
}

async fn links_per_person_are_capped(store: &dyn LinkStore) {
    for i in 0..MAX_LINKS_PER_PERSON {
        assert_eq!(linked(store, &link("oidc", &format!("ida-{i}"), "ida", 14)).await, "ida");
    }
    let one_more = store.link(&link("oidc", "ida-extra", "ida", 15)).await;
    assert!(matches!(&one_more, Err(StoreError::Unavailable(m)) if m == TOO_MANY_LINKS), "{one_more:?}");
    assert_eq!(owner(store, "oidc", "ida-extra").await, None, "the refused link was not written");
    // Identities already linked still answer with their person, hers or someone else's.
    assert_eq!(linked(store, &link("oidc", "ida-0", "ida", 16)).await, "ida");
    linked(store, &link("oidc", "jan-1", "jan", 17)).await;
    assert_eq!(linked(store, &link("oidc", "jan-1", "ida", 18)).await, "jan");
    // An unlink makes room.
    assert!(store.unlink("ida", "oidc", "ida-3").await.expect("unlink"));
    assert_eq!(linked(store, &link("oidc", "ida-extra", "ida", 19)).await, "ida");
    assert_eq!(listed(store, "ida").await.len(), MAX_LINKS_PER_PERSON);
}

async fn bad_identities_are_refused(store: &dyn LinkStore) {
    let long_provider = "p".repeat(MAX_PROVIDER_LEN + 1);
    let long_subject = "s".repeat(MAX_SUBJECT_LEN + 1);
    let bad = [("", "s"), ("goo:gle", "s"), ("g{x}", "s"), ("g o", "s"), ("é", "s"), (&long_provider, "s")];
    for (provider, subject) in bad.into_iter().chain([("google", ""), ("google", long_subject.as_str())]) {
        let l = link(provider, subject, "kim", 20);
        assert!(matches!(store.link(&l).await, Err(StoreError::Corrupt(_))), "{provider:?}/{subject:?}");
        assert!(store.linked_user(provider, subject).await.is_err(), "{provider:?}/{subject:?}");
        assert!(store.unlink("kim", provider, subject).await.is_err(), "{provider:?}/{subject:?}");
    }
    let long_email = Link { email: Some(format!("{}@example.com", "e".repeat(320))), ..link("google", "k", "kim", 21) };
    assert!(matches!(store.link(&long_email).await, Err(StoreError::Corrupt(_))));
    assert!(listed(store, "kim").await.is_empty());
    // The longest provider and subject are fine.
    let longest = link(&"p".repeat(MAX_PROVIDER_LEN), &"ü".repeat(MAX_SUBJECT_LEN / 2), "kim", 22);
    assert_eq!(linked(store, &longest).await, "kim");
    assert_eq!(listed(store, "kim").await, vec![longest]);
}

async fn odd_ids_and_subjects_are_kept_apart(store: &dyn LinkStore) {
    // Characters keys are built from, escapes of them, prefixes of each other, and unicode.
    let odd = ["a{b", "a}b", "}", "{", "{x}", "a:b", "a", "%7D", "%7B", "%", "a}:n", "ünï—😀", "a:b}", "a%7Db"];
    for (i, id) in odd.iter().enumerate() {
        let n = i as Millis;
        // Each odd id is a person and a subject; a subject is linked to the person of the next id.
        let person = odd[(i + 1) % odd.len()];
        assert_eq!(linked(store, &link("google", id, person, n)).await, person, "{id}");
        assert_eq!(linked(store, &link("google.corp", &format!("{id}:google"), id, n)).await, *id);
    }
    assert_eq!(linked(store, &link("google", "x", "", 99)).await, "", "even the empty person id");
    assert_eq!(listed(store, "").await.len(), 1);
    for (i, id) in odd.iter().enumerate() {
        let person = odd[(i + 1) % odd.len()];
        assert_eq!(owner(store, "google", id).await.as_deref(), Some(person), "{id}");
        let theirs = listed(store, id).await;
        let before = (i + odd.len() - 1) % odd.len();
        let expected = [
            link("google", odd[before], id, before as Millis),
            link("google.corp", &format!("{id}:google"), id, i as Millis),
        ];
        assert_eq!(theirs, expected, "{id}");
    }
    // Unlinking for one odd id leaves the look-alikes alone.
    assert!(store.unlink("a}b", "google", "a{b").await.expect("unlink"));
    for (i, id) in odd.iter().enumerate().skip(1) {
        assert_eq!(owner(store, "google", id).await.as_deref(), Some(odd[(i + 1) % odd.len()]), "{id}");
    }
    assert_eq!(listed(store, "a}b").await.len(), 1);
}
