//! `PasskeyService` against a software authenticator (webauthn-authenticator-rs `SoftPasskey`)
//! driven the way a browser would drive a real one.
//!
//! `SoftPasskey` cannot store resident keys and never returns a user handle, so [`Browser`]
//! does what a browser and a discoverable credential do between them: it hands the
//! authenticator the registration request without the residency demand, and for a
//! discoverable sign-in it names the credential the person picked and returns its user handle
//! (neither is covered by the signature). It can also play a broken or hostile client: another
//! origin, or no user verification.

use serde_json::Value;
use webauthn_authenticator_rs::prelude::Url;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_rs_proto::{AllowCredentials, ResidentKeyRequirement, UserVerificationPolicy};

use super::*;
use crate::config::PasskeysConfig;

pub(super) const ORIGIN: &str = "https://app.example.com";

pub(super) fn service(origin: &str, rp_id: &str) -> PasskeyService {
    let config = PasskeysConfig { origin: origin.into(), rp_id: rp_id.into(), rp_name: "Dalea Gateway".into() };
    PasskeyService::new(&config).expect("service")
}

/// One person's browser with one software authenticator.
pub(super) struct Browser {
    pub(super) origin: Url,
    authenticator: SoftPasskey,
    /// Whether the authenticator verifies the person when asked (PIN, biometrics).
    verifies: bool,
}

impl Browser {
    pub(super) fn new(origin: &str) -> Browser {
        Browser { origin: Url::parse(origin).expect("origin"), authenticator: SoftPasskey::new(true), verifies: true }
    }

    /// An authenticator that cannot verify the person: it answers without the UV flag.
    fn unverified(origin: &str) -> Browser {
        Browser { authenticator: SoftPasskey::new(false), verifies: false, ..Browser::new(origin) }
    }

    pub(super) fn create(&mut self, ccr: &CreationChallengeResponse) -> RegisterPublicKeyCredential {
        let mut ccr = ccr.clone();
        if let Some(selection) = ccr.public_key.authenticator_selection.as_mut() {
            selection.require_resident_key = false; // SoftPasskey refuses residency outright
            if !self.verifies {
                selection.user_verification = UserVerificationPolicy::Discouraged_DO_NOT_USE;
            }
        }
        self.authenticator.do_registration(self.origin.clone(), ccr).expect("registration")
    }

    /// An assertion for an elevation request (its allow list names the credentials).
    fn get(&mut self, rcr: &RequestChallengeResponse) -> PublicKeyCredential {
        let mut rcr = rcr.clone();
        if !self.verifies {
            rcr.public_key.user_verification = UserVerificationPolicy::Discouraged_DO_NOT_USE;
        }
        self.authenticator.do_authentication(self.origin.clone(), rcr).expect("authentication")
    }

    /// An assertion for a discoverable sign-in with the person's passkey `record`.
    fn discover(&mut self, rcr: &RequestChallengeResponse, record: &PasskeyRecord) -> PublicKeyCredential {
        assert!(rcr.public_key.allow_credentials.is_empty(), "a discoverable request names no credential");
        let mut rcr = rcr.clone();
        rcr.public_key.allow_credentials = vec![AllowCredentials {
            type_: "public-key".into(),
            id: record.passkey.cred_id().clone(),
            transports: None,
        }];
        let mut answer = self.get(&rcr);
        answer.response.user_handle = Some(PasskeyService::user_handle(&record.user_id).as_bytes().to_vec());
        answer
    }
}

/// Registers a passkey for `user` through `browser`; the stored record.
pub(super) fn register(service: &PasskeyService, browser: &mut Browser, user: &str, name: &str) -> PasskeyRecord {
    let (ccr, state) = service.start_registration(user, &format!("{user}@example.com"), user, &[]).expect("start");
    let passkey = service.finish_registration(&browser.create(&ccr), &state).expect("finish registration");
    PasskeyRecord::new(user, name, passkey, 1)
}

/// `record` after a use, as `passkey_used` stores it.
fn used(record: &PasskeyRecord, passkey: Passkey) -> PasskeyRecord {
    PasskeyRecord { passkey, last_used_at: Some(2), ..record.clone() }
}

fn counter(passkey: &Passkey) -> u64 {
    serde_json::to_value(passkey).expect("json")["cred"]["counter"].as_u64().expect("counter")
}

#[test]
fn register_then_sign_in_then_elevate() {
    let service = service(ORIGIN, "app.example.com");
    let mut browser = Browser::new(ORIGIN);
    let record = register(&service, &mut browser, "amy", "Laptop");
    assert_eq!(record.id, credential_id(&record.passkey));
    assert_eq!(counter(&record.passkey), 0);

    // Sign-in: no email typed; the answer names the person and the credential.
    let (rcr, state) = service.start_signin().expect("start sign-in");
    assert!(rcr.mediation.is_none(), "a modal request");
    let answer = browser.discover(&rcr, &record);
    let (handle, id) = service.identify(&answer).expect("identify");
    assert_eq!((handle, id.as_str()), (PasskeyService::user_handle("amy"), record.id.as_str()));
    let (id, passkey) = service.finish_signin(&answer, &state, std::slice::from_ref(&record)).expect("sign in");
    assert_eq!(id, record.id);
    assert_eq!(counter(&passkey), 1, "the counter moved forward");
    let record = used(&record, passkey);

    // Elevation: an assertion by one of her passkeys.
    let (rcr, state) = service.start_elevation(std::slice::from_ref(&record)).expect("start elevation");
    let allowed: Vec<&[u8]> = rcr.public_key.allow_credentials.iter().map(|c| c.id.as_slice()).collect();
    assert_eq!(allowed, [record.passkey.cred_id().as_slice()]);
    let answer = browser.get(&rcr);
    let (id, passkey) = service.finish_elevation(&answer, &state, std::slice::from_ref(&record)).expect("elevate");
    assert_eq!((id.as_str(), counter(&passkey)), (record.id.as_str(), 2));
}

#[test]
fn registration_asks_for_verification_and_a_discoverable_credential_and_excludes_existing_ones() {
    let service = service(ORIGIN, "app.example.com");
    let mut browser = Browser::new(ORIGIN);
    let first = register(&service, &mut browser, "amy", "Laptop");
    let (ccr, _) = service.start_registration("amy", "amy@example.com", "Amy", std::slice::from_ref(&first)).unwrap();
    let options = &ccr.public_key;
    let selection = options.authenticator_selection.as_ref().expect("selection");
    assert!(selection.require_resident_key);
    assert_eq!(selection.resident_key, Some(ResidentKeyRequirement::Required));
    assert_eq!(selection.user_verification, UserVerificationPolicy::Required);
    let excluded: Vec<&[u8]> = options.exclude_credentials.iter().flatten().map(|c| c.id.as_slice()).collect();
    assert_eq!(excluded, [first.passkey.cred_id().as_slice()]);
    assert_eq!(options.user.id.as_slice(), PasskeyService::user_handle("amy").as_bytes());
    assert_eq!((options.user.name.as_str(), options.user.display_name.as_str()), ("amy@example.com", "Amy"));
    assert_eq!((options.rp.id.as_str(), options.rp.name.as_str()), ("app.example.com", "Dalea Gateway"));
    // Empty labels fall back to the id and the email.
    let (ccr, _) = service.start_registration("p-7", "", " ", &[]).unwrap();
    assert_eq!((ccr.public_key.user.name.as_str(), ccr.public_key.user.display_name.as_str()), ("p-7", "p-7"));
}

#[test]
fn user_handles_are_stable_distinct_uuids() {
    let amy = PasskeyService::user_handle("amy");
    assert_eq!(amy, PasskeyService::user_handle("amy"));
    assert_ne!(amy, PasskeyService::user_handle("amy "));
    assert_ne!(amy, PasskeyService::user_handle(""));
    assert_eq!(amy.get_version_num(), 8);
    assert_eq!(amy.as_bytes()[8] & 0xc0, 0x80, "the RFC 9562 variant");
}

#[test]
fn answers_made_on_another_origin_are_refused() {
    let service = service(ORIGIN, "app.example.com");
    let mut browser = Browser::new(ORIGIN);
    let record = register(&service, &mut browser, "amy", "Laptop");
    // A client on a subdomain or another port may ask for this RP id; the origin gives it away.
    for elsewhere in ["https://evil.app.example.com", "https://app.example.com:8443"] {
        browser.origin = Url::parse(elsewhere).unwrap();
        let (rcr, state) = service.start_signin().unwrap();
        let answer = browser.discover(&rcr, &record);
        let refused = service.finish_signin(&answer, &state, std::slice::from_ref(&record)).unwrap_err();
        assert!(matches!(&refused, PasskeyError::Rejected(m) if m.contains("another site")), "{elsewhere}: {refused}");
        let (rcr, state) = service.start_elevation(std::slice::from_ref(&record)).unwrap();
        let answer = browser.get(&rcr);
        let refused = service.finish_elevation(&answer, &state, std::slice::from_ref(&record)).unwrap_err();
        assert!(matches!(&refused, PasskeyError::Rejected(m) if m.contains("another site")), "{elsewhere}: {refused}");
        let (ccr, state) = service.start_registration("amy", "amy@example.com", "Amy", &[]).unwrap();
        let refused = service.finish_registration(&browser.create(&ccr), &state).unwrap_err();
        assert!(matches!(&refused, PasskeyError::Rejected(m) if m.contains("another site")), "{elsewhere}: {refused}");
    }
    browser.origin = Url::parse(ORIGIN).unwrap();
    let (rcr, state) = service.start_signin().unwrap();
    let answer = browser.discover(&rcr, &record);
    assert!(service.finish_signin(&answer, &state, std::slice::from_ref(&record)).is_ok(), "from the right origin");
    // A passkey of another site (another RP id) is not one of ours, whatever it claims.
    let other = self::service("https://other.example.org", "other.example.org");
    let mut elsewhere = Browser::new("https://other.example.org");
    let foreign = register(&other, &mut elsewhere, "amy", "Other");
    let (rcr, _) = other.start_signin().unwrap();
    let answer = elsewhere.discover(&rcr, &foreign);
    let (_, state) = service.start_signin().unwrap();
    let refused = service.finish_signin(&answer, &state, std::slice::from_ref(&record)).unwrap_err();
    assert!(matches!(refused, PasskeyError::UnknownPasskey), "{refused}");
    let refused = service.finish_signin(&answer, &state, std::slice::from_ref(&foreign)).unwrap_err();
    assert!(matches!(refused, PasskeyError::Rejected(_)), "{refused}");
}

#[test]
fn a_replayed_or_older_assertion_is_refused() {
    let service = service(ORIGIN, "app.example.com");
    let mut browser = Browser::new(ORIGIN);
    let record = register(&service, &mut browser, "amy", "Laptop");
    let (rcr, state) = service.start_signin().unwrap();
    let answer = browser.discover(&rcr, &record);
    let (_, passkey) = service.finish_signin(&answer, &state, std::slice::from_ref(&record)).expect("first use");
    let stored = used(&record, passkey);
    // The same answer with the same state once more: the stored counter has moved past it.
    let again = service.finish_signin(&answer, &state, std::slice::from_ref(&stored)).unwrap_err();
    assert!(matches!(again, PasskeyError::PossiblyCloned), "{again}");

    // Two elevations answered in order, finished in the other order: the older answer's
    // counter is below the stored one (as a copied authenticator's would be).
    let (rcr1, state1) = service.start_elevation(std::slice::from_ref(&stored)).unwrap();
    let (rcr2, state2) = service.start_elevation(std::slice::from_ref(&stored)).unwrap();
    let (older, newer) = (browser.get(&rcr1), browser.get(&rcr2));
    let (_, passkey) = service.finish_elevation(&newer, &state2, std::slice::from_ref(&stored)).expect("newer");
    let stored = used(&stored, passkey);
    let refused = service.finish_elevation(&older, &state1, std::slice::from_ref(&stored)).unwrap_err();
    assert!(matches!(refused, PasskeyError::PossiblyCloned), "{refused}");
    // An answer checked against another request's state.
    let (rcr3, _) = service.start_elevation(std::slice::from_ref(&stored)).unwrap();
    let (_, state4) = service.start_elevation(std::slice::from_ref(&stored)).unwrap();
    let refused = service.finish_elevation(&browser.get(&rcr3), &state4, std::slice::from_ref(&stored)).unwrap_err();
    assert!(matches!(&refused, PasskeyError::Rejected(m) if m.contains("another request")), "{refused}");
}

#[test]
fn another_persons_passkey_is_refused() {
    let service = service(ORIGIN, "app.example.com");
    let (mut amys, mut bens) = (Browser::new(ORIGIN), Browser::new(ORIGIN));
    let amy = register(&service, &mut amys, "amy", "Amy's");
    let ben = register(&service, &mut bens, "ben", "Ben's");

    // Sign-in: Ben's passkey checked against Amy's list, or claiming Amy's user handle.
    let (rcr, state) = service.start_signin().unwrap();
    let answer = bens.discover(&rcr, &ben);
    let refused = service.finish_signin(&answer, &state, std::slice::from_ref(&amy)).unwrap_err();
    assert!(matches!(refused, PasskeyError::UnknownPasskey), "{refused}");
    let mut claims_amy = answer.clone();
    claims_amy.response.user_handle = Some(PasskeyService::user_handle("amy").as_bytes().to_vec());
    let refused = service.finish_signin(&claims_amy, &state, &[amy.clone(), ben.clone()]).unwrap_err();
    assert!(matches!(refused, PasskeyError::UnknownPasskey), "{refused}");
    assert!(service.finish_signin(&answer, &state, std::slice::from_ref(&ben)).is_ok(), "his own is fine");

    // Elevation: Ben's answer to his own request, sent to finish Amy's elevation.
    let (_, amys_state) = service.start_elevation(std::slice::from_ref(&amy)).unwrap();
    let (rcr, _) = service.start_elevation(std::slice::from_ref(&ben)).unwrap();
    let answer = bens.get(&rcr);
    let refused = service.finish_elevation(&answer, &amys_state, std::slice::from_ref(&amy)).unwrap_err();
    assert!(matches!(refused, PasskeyError::UnknownPasskey), "{refused}");
    // A passkey removed after the request started is refused.
    let (rcr, state) = service.start_elevation(std::slice::from_ref(&amy)).unwrap();
    let answer = amys.get(&rcr);
    let refused = service.finish_elevation(&answer, &state, &[]).unwrap_err();
    assert!(matches!(refused, PasskeyError::UnknownPasskey), "{refused}");
    assert!(matches!(service.start_elevation(&[]), Err(PasskeyError::NoPasskeys)));
}

#[test]
fn an_answer_without_a_user_handle_identifies_no_one() {
    let service = service(ORIGIN, "app.example.com");
    let mut browser = Browser::new(ORIGIN);
    let record = register(&service, &mut browser, "amy", "Laptop");
    let (rcr, state) = service.start_signin().unwrap();
    let mut answer = browser.discover(&rcr, &record);
    answer.response.user_handle = None;
    assert!(matches!(service.identify(&answer), Err(PasskeyError::UnknownPasskey)));
    assert!(matches!(
        service.finish_signin(&answer, &state, std::slice::from_ref(&record)),
        Err(PasskeyError::UnknownPasskey)
    ));
    answer.response.user_handle = Some(vec![1, 2, 3]);
    assert!(matches!(service.identify(&answer), Err(PasskeyError::UnknownPasskey)), "not a UUID");
}

#[test]
fn user_verification_is_required_everywhere() {
    let service = service(ORIGIN, "app.example.com");
    // Registration by an authenticator that did not verify the person.
    let mut lax = Browser::unverified(ORIGIN);
    let (ccr, state) = service.start_registration("amy", "amy@example.com", "Amy", &[]).unwrap();
    let refused = service.finish_registration(&lax.create(&ccr), &state).unwrap_err();
    assert!(matches!(refused, PasskeyError::NotVerified), "{refused}");

    // A verified registration, then answers that skip verification.
    let mut browser = Browser::new(ORIGIN);
    let record = register(&service, &mut browser, "amy", "Laptop");
    browser.verifies = false; // the client asks the authenticator not to verify
    let (rcr, state) = service.start_signin().unwrap();
    let refused = service.finish_signin(&browser.discover(&rcr, &record), &state, std::slice::from_ref(&record));
    assert!(matches!(refused, Err(PasskeyError::NotVerified)), "{refused:?}");
    let (rcr, state) = service.start_elevation(std::slice::from_ref(&record)).unwrap();
    let refused = service.finish_elevation(&browser.get(&rcr), &state, std::slice::from_ref(&record));
    assert!(matches!(refused, Err(PasskeyError::NotVerified)), "{refused:?}");
}

#[test]
fn localhost_over_http_works_for_development() {
    let service = service("http://localhost:8080", "localhost");
    let mut browser = Browser::new("http://localhost:8080");
    let record = register(&service, &mut browser, "dev", "Dev");
    let (rcr, state) = service.start_signin().unwrap();
    let answer = browser.discover(&rcr, &record);
    assert!(service.finish_signin(&answer, &state, std::slice::from_ref(&record)).is_ok());
}

#[test]
fn states_survive_serialisation_and_the_elevation_state_converts() {
    let service = service(ORIGIN, "app.example.com");
    let mut browser = Browser::new(ORIGIN);
    let (ccr, state) = service.start_registration("amy", "amy@example.com", "Amy", &[]).unwrap();
    let state: PasskeyRegistration = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    let record =
        PasskeyRecord::new("amy", "Laptop", service.finish_registration(&browser.create(&ccr), &state).unwrap(), 1);
    let (rcr, state) = service.start_signin().unwrap();
    let state: DiscoverableAuthentication = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    assert!(service.finish_signin(&browser.discover(&rcr, &record), &state, std::slice::from_ref(&record)).is_ok());
    // The elevation state is checked as a single-credential one (`as_single`): same shape.
    let (_, state) = service.start_elevation(std::slice::from_ref(&record)).unwrap();
    let elevation: Value = serde_json::to_value(&state).unwrap();
    let single: Value = serde_json::to_value(service::as_single(&state).expect("converts")).unwrap();
    assert_eq!(elevation, single);
    assert!(elevation["ast"]["challenge"].is_string(), "{elevation}");
}

#[test]
fn records_do_not_print_key_material() {
    let service = service(ORIGIN, "app.example.com");
    let record = register(&service, &mut Browser::new(ORIGIN), "amy", "Laptop");
    let shown = format!("{record:?}");
    assert!(shown.contains("Laptop") && shown.contains(&record.id), "{shown}");
    assert!(!shown.contains("cred") && !shown.contains("EC_EC2") && !shown.contains("counter"), "{shown}");
    assert!(!format!("{service:?}").contains("Webauthn"), "config only");
}
