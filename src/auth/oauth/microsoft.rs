//! What is particular to Microsoft's identity platform (v2.0), on top of plain OpenID Connect.
//!
//! **Multi-tenant issuers.** For `tenant = "common"`, `"organizations"` or `"consumers"` the
//! discovery document's `issuer` is a template, literally
//! `https://login.microsoftonline.com/{tenantid}/v2.0`, while each ID token's `iss` names the
//! person's own tenant. All tenants share one set of signing keys, so a valid signature only
//! says "Microsoft issued this for *some* tenant": signature, `aud`, `exp` and `nonce` are
//! checked as for any provider, but the issuer is checked here: the token must carry a `tid`,
//! its `iss` must be the template with `{tenantid}` replaced by that `tid`, and the `tid` must
//! be in `allowed_tenants` when that list is not empty. A single-tenant configuration has a
//! plain issuer and is checked exactly, like any provider.
//!
//! **Verified email.** Microsoft's `email` claim is whatever address the account shows, and
//! for many accounts nobody proved it belongs to the person (any tenant administrator can set
//! any address). So an email from Microsoft counts as verified only when the token says so:
//! `email_verified: true` (sent when the app asks for it as an optional claim), or the
//! optional claim `xms_edov: true` ("email domain owner verified": the tenant proved it owns
//! the address's domain). Anything else — no claim, `false`, or a value of another type —
//! means unverified, and an unverified email is never used to link to an existing person.

use serde_json::Value;

/// The placeholder in a multi-tenant issuer.
pub const TENANT_PLACEHOLDER: &str = "{tenantid}";

/// Whether `issuer` (from discovery) is a multi-tenant template.
pub fn is_issuer_template(issuer: &str) -> bool {
    issuer.contains(TENANT_PLACEHOLDER)
}

/// Why a multi-tenant token's issuer is refused (for the log; people see a short reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    #[error("the ID token has no tid claim")]
    MissingTenant,
    #[error("the tid claim is not a tenant id")]
    MalformedTenant,
    #[error("the ID token's issuer is not the issuer of its tenant")]
    IssuerMismatch,
    #[error("the tenant is not allowed to sign in here")]
    TenantNotAllowed,
}

/// Checks a multi-tenant ID token's `iss` and `tid` against the discovery `template` and
/// `allowed_tenants` (empty: any tenant).
pub fn check_tenant_issuer(
    template: &str,
    iss: &str,
    tid: Option<&str>,
    allowed_tenants: &[String],
) -> Result<(), TenantError> {
    let tid = tid.ok_or(TenantError::MissingTenant)?;
    // Tenant ids are GUIDs; anything with a '/' or '.' could be made to match another path.
    if tid.is_empty() || tid.len() > 64 || !tid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(TenantError::MalformedTenant);
    }
    if iss != issuer_for_tenant(template, tid) {
        return Err(TenantError::IssuerMismatch);
    }
    if !allowed_tenants.is_empty() && !allowed_tenants.iter().any(|t| t.eq_ignore_ascii_case(tid)) {
        return Err(TenantError::TenantNotAllowed);
    }
    Ok(())
}

/// `template` with `{tenantid}` replaced by `tid`.
pub fn issuer_for_tenant(template: &str, tid: &str) -> String {
    template.replace(TENANT_PLACEHOLDER, tid)
}

/// Whether Microsoft vouches for the email (see the module docs): `email_verified` or
/// `xms_edov` is JSON `true`.
pub fn email_verified(email_verified: Option<bool>, xms_edov: Option<&Value>) -> bool {
    email_verified == Some(true) || xms_edov == Some(&Value::Bool(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = "https://login.microsoftonline.com/{tenantid}/v2.0";
    const TID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    #[test]
    fn the_template_is_filled_with_the_tenant() {
        assert!(is_issuer_template(TEMPLATE));
        assert!(!is_issuer_template("https://login.microsoftonline.com/72f988bf/v2.0"));
        assert_eq!(issuer_for_tenant(TEMPLATE, TID), format!("https://login.microsoftonline.com/{TID}/v2.0"));
    }

    #[test]
    fn the_issuer_must_be_the_tokens_own_tenant() {
        let iss = issuer_for_tenant(TEMPLATE, TID);
        assert_eq!(check_tenant_issuer(TEMPLATE, &iss, Some(TID), &[]), Ok(()));
        assert_eq!(check_tenant_issuer(TEMPLATE, &iss, None, &[]), Err(TenantError::MissingTenant));
        let other = "9188040d-6c67-4c5b-b112-36a304b66dad";
        assert_eq!(check_tenant_issuer(TEMPLATE, &iss, Some(other), &[]), Err(TenantError::IssuerMismatch));
        // The template itself is never a valid issuer.
        assert_eq!(check_tenant_issuer(TEMPLATE, TEMPLATE, Some(TID), &[]), Err(TenantError::IssuerMismatch));
        // A tid that would change the path is refused before any comparison.
        for bad in ["", "a/b", "x.example", "{tenantid}", "a b"] {
            assert_eq!(
                check_tenant_issuer(TEMPLATE, &issuer_for_tenant(TEMPLATE, bad), Some(bad), &[]),
                Err(TenantError::MalformedTenant),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn allowed_tenants_limit_who_signs_in() {
        let iss = issuer_for_tenant(TEMPLATE, TID);
        let allowed = vec![TID.to_uppercase()];
        assert_eq!(check_tenant_issuer(TEMPLATE, &iss, Some(TID), &allowed), Ok(()), "case-insensitive");
        let other = "9188040d-6c67-4c5b-b112-36a304b66dad";
        let other_iss = issuer_for_tenant(TEMPLATE, other);
        assert_eq!(
            check_tenant_issuer(TEMPLATE, &other_iss, Some(other), &allowed),
            Err(TenantError::TenantNotAllowed)
        );
    }

    #[test]
    fn email_is_verified_only_when_microsoft_says_so() {
        use serde_json::json;
        assert!(email_verified(Some(true), None));
        assert!(email_verified(None, Some(&json!(true))));
        assert!(email_verified(Some(false), Some(&json!(true))));
        assert!(!email_verified(None, None));
        assert!(!email_verified(Some(false), None));
        assert!(!email_verified(None, Some(&json!(false))));
        assert!(!email_verified(None, Some(&json!("true"))), "a string is not a boolean");
        assert!(!email_verified(None, Some(&json!(1))));
    }
}
