//! How people prove who they are. Today: email + password against the users file.
//! (OAuth, passkeys and TOTP join here as their own modules.)

pub mod password;
pub mod reload;
pub mod throttle;
pub mod totp;
pub mod users;

pub use users::{User, UserDirectory};
