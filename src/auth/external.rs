//! Which of our people an identity at a sign-in provider is, by the `[oauth]` rules:
//!
//! 1. an identity linked before (provider + subject) is that person — no email needed, and a
//!    changed email at the provider changes nothing;
//! 2. otherwise, with `link_by_verified_email = true`, the person whose email equals the
//!    provider's *verified* email, and the identity is linked to them from now on;
//! 3. otherwise someone unknown: refused, or with `unknown_people = "create"` a person is created
//!    from the verified email and the identity linked to them.
//!
//! The allow-lists (`allowed_domains`, `allowed_emails`) apply to every sign-in, linked or not:
//! with a list set, only a verified email on it gets in. Nothing is linked or created for a
//! refused sign-in. A store error is returned as such (the page says "try again"), never
//! turned into a refusal.

use std::sync::Arc;

use crate::account::links::Link;
use crate::account::people::{created_person_id, Person};
use crate::auth::oauth::ExternalIdentity;
use crate::auth::User;
use crate::clock::Millis;
use crate::config::UnknownPeople;
use crate::session::store::StoreError;
use crate::state::AppState;

/// Why a sign-in through a provider is refused. The messages are for the person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Needed and missing: the provider vouched for no email address.
    NoVerifiedEmail,
    /// The allow-lists do not include the email.
    NotAllowed,
    /// No one here matches, and unknown people are refused.
    NoAccount,
    /// Someone here has this email, but linking by email is off (or they were created through
    /// another provider): they must sign in as before.
    EmailInUse,
}

impl Refusal {
    pub fn message(&self, provider: &str) -> String {
        match self {
            Refusal::NoVerifiedEmail => format!(
                "{provider} did not confirm an email address for this account. Verify your email address with \
                 {provider}, or sign in another way."
            ),
            Refusal::NotAllowed => {
                format!("This {provider} account's email address is not allowed to sign in here.")
            }
            Refusal::NoAccount => {
                format!("There is no account here for this {provider} account. Ask your administrator for access.")
            }
            Refusal::EmailInUse => format!(
                "An account here already uses this {provider} account's email address. Sign in as before; \
                 your {provider} account is not connected to it."
            ),
        }
    }

    /// The `reason` of the audit event and log line.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NoVerifiedEmail => "no_verified_email",
            Refusal::NotAllowed => "not_allowed",
            Refusal::NoAccount => "no_account",
            Refusal::EmailInUse => "email_in_use",
        }
    }
}

/// Who signed in, or why not.
#[derive(Debug)]
pub enum Resolution {
    /// This person; `how` says whether the identity was linked before, linked now by email, or
    /// the person was created now.
    Person(Arc<User>, How),
    Refused(Refusal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    Linked,
    LinkedByEmail,
    Created,
}

/// The verified email, lower-case, if the provider vouched for one.
fn verified_email(identity: &ExternalIdentity) -> Option<String> {
    identity.email.as_ref().filter(|_| identity.email_verified).map(|e| e.trim().to_ascii_lowercase())
}

/// Applies the rules above to `identity`, linking or creating as they allow.
pub async fn resolve(state: &AppState, identity: &ExternalIdentity, now: Millis) -> Result<Resolution, StoreError> {
    let rules = &state.config.oauth;
    let email = verified_email(identity);
    let restricted = !rules.allowed_domains.is_empty() || !rules.allowed_emails.is_empty();
    if restricted {
        match &email {
            None => return Ok(Resolution::Refused(Refusal::NoVerifiedEmail)),
            Some(e) if !rules.allows(e) => return Ok(Resolution::Refused(Refusal::NotAllowed)),
            Some(_) => {}
        }
    }

    if let Some(user_id) = state.links.linked_user(&identity.provider, &identity.subject).await? {
        // A link to someone since removed from the users file leads nowhere: refused like a
        // stranger (the link stays, harmless, should they come back).
        return Ok(match state.person(&user_id).await? {
            Some(user) => Resolution::Person(user, How::Linked),
            None => Resolution::Refused(Refusal::NoAccount),
        });
    }

    let Some(email) = email else {
        return Ok(Resolution::Refused(Refusal::NoVerifiedEmail));
    };
    let existing = state.person_by_email(&email).await?;
    let link = |user_id: &str| Link {
        provider: identity.provider.clone(),
        subject: identity.subject.clone(),
        user_id: user_id.to_string(),
        linked_at: now,
        email: Some(email.clone()),
    };
    match existing {
        Some(user) if rules.link_by_verified_email => {
            let owner = state.links.link(&link(&user.id)).await?;
            Ok(linked_to(state, &owner, How::LinkedByEmail).await?)
        }
        Some(_) => Ok(Resolution::Refused(Refusal::EmailInUse)),
        None if rules.unknown_people == UnknownPeople::Create => {
            let id = created_person_id(&identity.provider, &identity.subject);
            let display_name = identity.name.clone().filter(|n| !n.trim().is_empty()).unwrap_or_else(|| email.clone());
            let display_name: String = display_name.chars().filter(|c| !c.is_control()).take(200).collect();
            let wanted = Person {
                id: id.clone(),
                email: email.clone(),
                display_name,
                created_at: now,
                created_via: format!("oauth:{}", identity.provider),
            };
            let stored = state.people.create_person(&wanted).await?;
            if stored.id != id {
                // Another replica created someone with this email a moment ago, through
                // another identity: the same as finding them (linking by email is off).
                return Ok(Resolution::Refused(Refusal::EmailInUse));
            }
            let owner = state.links.link(&link(&id)).await?;
            Ok(linked_to(state, &owner, How::Created).await?)
        }
        None => Ok(Resolution::Refused(Refusal::NoAccount)),
    }
}

/// The person the identity ended up linked to (another replica may have linked it first).
async fn linked_to(state: &AppState, user_id: &str, how: How) -> Result<Resolution, StoreError> {
    Ok(match state.person(user_id).await? {
        Some(user) => Resolution::Person(user, how),
        None => Resolution::Refused(Refusal::NoAccount),
    })
}
