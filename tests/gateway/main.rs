//! The gateway end to end, in-process on real sockets: one test binary, one module per area.

#[path = "../support/mod.rs"]
mod support;

mod account;
mod api_keys;
mod bad_input;
mod cli;
mod client_info;
mod elevation;
mod expiry;
mod metrics;
mod oauth;
mod oauth_client;
mod oauth_peers;
mod outage;
mod passkeys;
mod proxying;
mod rate_limits;
mod redis_outage;
mod redis_tls;
mod replicas;
mod sentinel;
mod sessions;
mod signin;
mod signin_starts;
mod totp;
mod vigilance;
