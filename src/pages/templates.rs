//! The built-in pages' HTML templates (minijinja, embedded in the binary). Template names end
//! in `.html`, so everything interpolated is HTML-escaped; unknown variables are errors.

use minijinja::value::Serde;
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::error::GatewayError;

const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("templates/layout.html")),
    ("signin.html", include_str!("templates/signin.html")),
    ("sessions.html", include_str!("templates/sessions.html")),
    ("error.html", include_str!("templates/error.html")),
    ("account_header.html", include_str!("templates/account_header.html")),
    ("security_nav.html", include_str!("templates/security_nav.html")),
    ("elevate.html", include_str!("templates/elevate.html")),
    ("totp.html", include_str!("templates/totp.html")),
    ("password.html", include_str!("templates/password.html")),
    ("audit_log.html", include_str!("templates/audit_log.html")),
    ("api_keys.html", include_str!("templates/api_keys.html")),
    ("passkeys.html", include_str!("templates/passkeys.html")),
];

pub struct Templates {
    env: Environment<'static>,
}

#[derive(Serialize)]
struct ErrorPage<'a> {
    title: &'a str,
    message: String,
    status: u16,
    /// Where to go to fix it, when there is such a place.
    link: Option<(&'static str, &'static str)>,
}

impl Templates {
    pub fn new() -> Result<Self, minijinja::Error> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)?;
        }
        Ok(Templates { env })
    }

    /// Renders `name` with `ctx`. A template bug is logged and shown as a plain error page
    /// rather than a 500 with a stack of details.
    pub fn render<T: Serialize>(&self, name: &str, ctx: &T) -> String {
        match self.env.get_template(name).and_then(|t| t.render(Serde(ctx))) {
            Ok(html) => html,
            Err(e) => {
                tracing::error!(template = name, error = %e, "template failed to render");
                "<!doctype html><title>Error</title><p>Something went wrong on our side.</p>".to_string()
            }
        }
    }

    pub fn error_page(&self, err: &GatewayError) -> String {
        let title = match err.status() {
            401 => "Sign in required",
            403 => "Not allowed",
            404 => "Not found",
            413 => "Too large",
            503 => "Temporarily unavailable",
            _ => "Something is not right",
        };
        let link = match err {
            GatewayError::ElevationRequired { .. } => Some(("/.dalea/elevate", "Confirm it's you")),
            GatewayError::SignInRequired => Some(("/.dalea/signin", "Sign in")),
            _ => None,
        };
        let title = if matches!(err, GatewayError::ElevationRequired { .. }) { "Confirm it's you" } else { title };
        self.render("error.html", &ErrorPage { title, message: err.to_string(), status: err.status(), link })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_and_the_error_page_escapes() {
        let t = Templates::new().expect("templates");
        let html = t.error_page(&GatewayError::BadRequest("<script>x</script>".into()));
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("<script>x"));
    }
}
