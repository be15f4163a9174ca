//! How people prove who they are: email + password against the users file, TOTP codes, and
//! sign-in providers (`oauth`, and `external` for which person a provider's identity is).

pub mod external;
pub mod oauth;
pub mod password;
pub mod reload;
pub mod throttle;
pub mod totp;
pub mod users;

pub use users::{User, UserDirectory};
