//! Dalea Gateway: a reverse-proxy authentication gateway on pingora.
//!
//! Reading order: `proxy` (the request flow, top to bottom), then `session` (what a session
//! is and where it lives), `pages` (the built-in pages and JSON API under `/.dalea/`),
//! `auth` (how people prove who they are), `client_info` (IP, device, place), `config`.

pub mod account;
pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod client_info;
pub mod clock;
pub mod config;
pub mod elevation;
pub mod error;
pub mod metrics;
pub mod pages;
pub mod passkeys;
pub mod pending;
pub mod proxy;
pub mod secrets;
pub mod server;
pub mod session;
pub mod state;
pub mod vigilance;
pub mod whoami;
