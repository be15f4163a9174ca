//! The `PeopleStore` contract as tests: one suite, run against every backend (embedded, Redis
//! standalone, Redis Cluster). Every check uses its own ids and emails, so the order does not
//! matter.

use futures_util::future::join_all;

use super::people::{created_person_id, PeopleStore, Person, MAX_DISPLAY_NAME_LEN, MAX_EMAIL_LEN, MAX_ID_LEN};
use crate::clock::Millis;
use crate::session::store::StoreError;

const NOW: Millis = 1_700_000_000_000;

/// Runs every contract check against `store`, which must start empty.
pub(crate) async fn run_all(store: &dyn PeopleStore) {
    unknown_people_are_none(store).await;
    a_created_person_is_found_by_id_and_email(store).await;
    creating_again_returns_the_existing_person(store).await;
    an_email_taken_by_another_id_returns_its_person(store).await;
    an_id_taken_returns_its_person_whatever_the_email(store).await;
    emails_match_case_insensitively(store).await;
    concurrent_creates_of_one_email_have_one_winner(store).await;
    concurrent_creates_of_one_person_agree(store).await;
    bad_input_is_refused(store).await;
    odd_emails_are_kept_apart(store).await;
}

fn person(id: &str, email: &str, n: Millis) -> Person {
    Person {
        id: id.into(),
        email: email.into(),
        display_name: format!("Person {n}"),
        created_at: NOW + n,
        created_via: "oauth:google".into(),
    }
}

async fn created(store: &dyn PeopleStore, p: &Person) -> Person {
    store.create_person(p).await.unwrap_or_else(|e| panic!("create {}: {e}", p.id))
}

async fn by_id(store: &dyn PeopleStore, id: &str) -> Option<Person> {
    store.person(id).await.expect("person")
}

async fn by_email(store: &dyn PeopleStore, email: &str) -> Option<Person> {
    store.person_by_email(email).await.expect("person_by_email")
}

async fn unknown_people_are_none(store: &dyn PeopleStore) {
    assert_eq!(by_id(store, "nobody").await, None);
    assert_eq!(by_email(store, "nobody@example.com").await, None);
}

async fn a_created_person_is_found_by_id_and_email(store: &dyn PeopleStore) {
    let amy = person(&created_person_id("google", "108"), "amy@example.com", 1);
    assert_eq!(created(store, &amy).await, amy, "every field comes back");
    assert_eq!(by_id(store, &amy.id).await, Some(amy.clone()));
    assert_eq!(by_email(store, "amy@example.com").await, Some(amy.clone()));
    // Neighbours of the id and email are other people.
    assert_eq!(by_id(store, &amy.id[..amy.id.len() - 1]).await, None);
    assert_eq!(by_email(store, "my@example.com").await, None);
    assert_eq!(by_email(store, "amy@example.co").await, None);
}

async fn creating_again_returns_the_existing_person(store: &dyn PeopleStore) {
    let ben = person("ben-1", "ben@example.com", 2);
    assert_eq!(created(store, &ben).await, ben);
    let again = Person { display_name: "Benjamin".into(), created_at: NOW + 99, ..ben.clone() };
    assert_eq!(created(store, &again).await, ben, "the first record is kept");
    assert_eq!(by_id(store, "ben-1").await, Some(ben));
}

async fn an_email_taken_by_another_id_returns_its_person(store: &dyn PeopleStore) {
    let cat = person("cat-1", "cat@example.com", 3);
    created(store, &cat).await;
    let other = person("cat-2", "CAT@example.com", 4);
    assert_eq!(created(store, &other).await, cat, "the email's person is reported");
    assert_eq!(by_id(store, "cat-2").await, None, "no second person with that email");
    assert_eq!(by_email(store, "cat@example.com").await, Some(cat));
}

async fn an_id_taken_returns_its_person_whatever_the_email(store: &dyn PeopleStore) {
    let dan = person("dan-1", "dan@example.com", 5);
    let dee = person("dee-1", "dee@example.com", 6);
    created(store, &dan).await;
    created(store, &dee).await;
    // The id decides first: dan-1 stays dan, even when the email asked for is free or dee's.
    assert_eq!(created(store, &person("dan-1", "dan.new@example.com", 7)).await, dan);
    assert_eq!(created(store, &person("dan-1", "dee@example.com", 8)).await, dan);
    assert_eq!(by_email(store, "dan.new@example.com").await, None, "the new email was not taken");
    assert_eq!(by_email(store, "dee@example.com").await, Some(dee));
}

async fn emails_match_case_insensitively(store: &dyn PeopleStore) {
    let eve = person("eve-1", " Eve.Smith@Example.COM ", 9);
    let stored = created(store, &eve).await;
    assert_eq!(stored, Person { email: "eve.smith@example.com".into(), ..eve }, "kept trimmed and lower-case");
    for asked in ["eve.smith@example.com", "EVE.SMITH@EXAMPLE.COM", "Eve.Smith@example.com", " eve.smith@example.com"] {
        assert_eq!(by_email(store, asked).await, Some(stored.clone()), "{asked:?}");
    }
    assert_eq!(created(store, &person("eve-2", "EVE.smith@example.com", 10)).await, stored);
}

async fn concurrent_creates_of_one_email_have_one_winner(store: &dyn PeopleStore) {
    for round in 0..5 {
        let email = format!("race-{round}@example.com");
        let racers: Vec<Person> =
            (0..8).map(|i| person(&created_person_id(&format!("idp{i}"), &email), &email, round)).collect();
        let results = join_all(racers.iter().map(|p| store.create_person(p))).await;
        let winners: Vec<Person> = results.into_iter().map(|r| r.expect("create")).collect();
        let winner = winners[0].clone();
        assert!(winners.iter().all(|w| *w == winner), "every caller learns the one winner: {winners:?}");
        assert!(racers.contains(&winner), "the winner is one of them");
        assert_eq!(by_email(store, &email).await, Some(winner.clone()));
        for p in &racers {
            let found = by_id(store, &p.id).await;
            if p.id == winner.id {
                assert_eq!(found, Some(winner.clone()));
            } else {
                assert_eq!(found, None, "{} lost the race", p.id);
            }
        }
    }
}

async fn concurrent_creates_of_one_person_agree(store: &dyn PeopleStore) {
    // The same sign-in finishing on several replicas at once (display names differ in timing).
    let racers: Vec<Person> =
        (0..8).map(|n| Person { display_name: format!("Fay {n}"), ..person("fay-1", "fay@example.com", n) }).collect();
    let results = join_all(racers.iter().map(|p| store.create_person(p))).await;
    let winners: Vec<Person> = results.into_iter().map(|r| r.expect("create")).collect();
    assert!(winners.iter().all(|w| *w == winners[0]), "{winners:?}");
    assert!(racers.contains(&winners[0]));
    assert_eq!(by_id(store, "fay-1").await.as_ref(), Some(&winners[0]));
    assert_eq!(by_email(store, "fay@example.com").await.as_ref(), Some(&winners[0]));
}

async fn bad_input_is_refused(store: &dyn PeopleStore) {
    let long_email = format!("{}@example.com", "e".repeat(MAX_EMAIL_LEN));
    let bad = [
        person("", "gil@example.com", 11),
        person("gil 1", "gil@example.com", 11),
        person("gil{1}", "gil@example.com", 11),
        person("gïl", "gil@example.com", 11),
        person(&"g".repeat(MAX_ID_LEN + 1), "gil@example.com", 11),
        person("gil-1", "", 11),
        person("gil-1", "gil.example.com", 11),
        person("gil-1", "gil @example.com", 11),
        person("gil-1", "gil\u{1b}@example.com", 11),
        person("gil-1", &long_email, 11),
        Person { display_name: "g".repeat(MAX_DISPLAY_NAME_LEN + 1), ..person("gil-1", "gil@example.com", 11) },
        Person { display_name: "Gil\r\nX-Injected: 1".into(), ..person("gil-1", "gil@example.com", 11) },
        Person { created_via: "oauth:\u{0}".into(), ..person("gil-1", "gil@example.com", 11) },
    ];
    for p in &bad {
        assert!(matches!(store.create_person(p).await, Err(StoreError::Corrupt(_))), "{p:?}");
    }
    assert_eq!(by_id(store, "gil-1").await, None, "nothing was written");
    assert_eq!(by_email(store, "gil@example.com").await, None);
    for id in ["", "gil 1", "gil{1}", "a}b"] {
        assert!(matches!(store.person(id).await, Err(StoreError::Corrupt(_))), "{id:?}");
    }
    for email in ["", "gil.example.com", "gil @example.com", long_email.as_str()] {
        assert!(matches!(store.person_by_email(email).await, Err(StoreError::Corrupt(_))), "{email:?}");
    }
    // The longest values are fine.
    let longest = Person {
        display_name: "ü".repeat(MAX_DISPLAY_NAME_LEN),
        ..person(&"g".repeat(MAX_ID_LEN), &format!("{}@x.io", "g".repeat(MAX_EMAIL_LEN - 5)), 12)
    };
    assert_eq!(created(store, &longest).await, longest);
    assert_eq!(by_id(store, &longest.id).await, Some(longest.clone()));
    assert_eq!(by_email(store, &longest.email).await, Some(longest));
}

async fn odd_emails_are_kept_apart(store: &dyn PeopleStore) {
    // Characters keys are built from, escapes of them (lower-case, as emails are stored),
    // prefixes of each other, and unicode.
    let odd = ["a{b}@x", "a}b@x", "{@x", "}@x", "%7d@x", "%7b%7d@x", "%@x", "a@x", "a@x:y", "a:b@x", "ünï—😀@x", "@"];
    for (i, email) in odd.iter().enumerate() {
        let p = person(&format!("odd-{i}"), email, i as Millis);
        assert_eq!(created(store, &p).await, p, "{email}");
    }
    for (i, email) in odd.iter().enumerate() {
        let found = by_email(store, email).await.unwrap_or_else(|| panic!("{email} is found"));
        assert_eq!(found.id, format!("odd-{i}"), "{email}");
        assert_eq!(by_id(store, &format!("odd-{i}")).await.map(|p| p.email), Some(email.to_string()));
    }
}
