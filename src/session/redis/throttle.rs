//! Attempt counters in Redis, so every replica counts against the same limits:
//! `<prefix>:t:{a:<email>}` per account and `<prefix>:t:{n:<network>}` per client network for
//! sign-in, `<prefix>:t:{totp:a:<user id>}` and `<prefix>:t:{totp:n:<network>}` for TOTP codes,
//! each a counter whose TTL is the window. Every call touches one key (cluster-safe).

use std::net::IpAddr;
use std::time::Duration;

use ::redis::Value;
use async_trait::async_trait;

use super::scripts::{evalsha, GIVE_BACK, TAKE_ATTEMPT};
use super::store_impl::run_scripts;
use super::{unavailable, RedisStore};
use crate::auth::throttle::{account_key, network, AttemptLimiter, Rule};
use crate::clock::Millis;
use crate::session::store::StoreError;

impl RedisStore {
    /// Sign-in keeps the key names it always had; other kinds are prefixed with their name.
    fn kind_prefix(rule: &Rule) -> String {
        if rule.kind == "signin" {
            String::new()
        } else {
            format!("{}:", rule.kind)
        }
    }

    fn account_counter(&self, rule: &Rule, account: &str) -> String {
        format!("{}:t:{{{}a:{}}}", self.prefix, Self::kind_prefix(rule), account_key(account))
    }

    fn network_counter(&self, rule: &Rule, ip: IpAddr) -> String {
        format!("{}:t:{{{}n:{}}}", self.prefix, Self::kind_prefix(rule), network(ip))
    }

    /// Counts one attempt on `key`: `Ok(true)` counted, `Ok(false)` the window is used up
    /// (`retry` set), `Err` Redis unreachable.
    async fn take(&self, key: &str, limit: u32, window: Duration, retry: &mut Duration) -> Result<bool, StoreError> {
        let window = window.as_millis() as u64;
        self.bounded("attempt count", async {
            let conn = self.conn().await?;
            let cmd = evalsha(&TAKE_ATTEMPT, key, &[&window, &limit]);
            let reply = run_scripts(conn, &TAKE_ATTEMPT, vec![(key.to_string(), cmd)]).await?;
            match reply.into_iter().next() {
                Some(Ok(Value::Int(n))) if n < 0 => {
                    *retry = Duration::from_millis(n.unsigned_abs().max(1000));
                    Ok(false)
                }
                Some(Ok(Value::Int(_))) => Ok(true),
                Some(Ok(other)) => Err(unavailable(format!("unexpected attempt count reply {other:?}"))),
                Some(Err(e)) => Err(unavailable(e)),
                None => Err(unavailable("no reply to the attempt count")),
            }
        })
        .await
    }

    async fn give_back(&self, key: &str) -> Result<(), StoreError> {
        self.bounded("attempt refund", async {
            let conn = self.conn().await?;
            let cmd = evalsha(&GIVE_BACK, key, &[]);
            run_scripts(conn, &GIVE_BACK, vec![(key.to_string(), cmd)]).await.map(drop)
        })
        .await
    }
}

#[async_trait]
impl AttemptLimiter for RedisStore {
    async fn reserve(
        &self,
        rule: &Rule,
        account: &str,
        _known: bool,
        ip: Option<IpAddr>,
        _now: Millis,
    ) -> Result<Result<(), Duration>, StoreError> {
        // Redis holds every key only for its window, so unknown emails need no separate bound.
        let mut retry = Duration::ZERO;
        let account = self.account_counter(rule, account);
        if !self.take(&account, rule.per_account, rule.window, &mut retry).await? {
            return Ok(Err(retry));
        }
        if let Some(ip) = ip {
            if !self.take(&self.network_counter(rule, ip), rule.per_network, rule.window, &mut retry).await? {
                self.give_back(&account).await?;
                return Ok(Err(retry));
            }
        }
        Ok(Ok(()))
    }

    async fn succeeded(&self, rule: &Rule, account: &str, ip: Option<IpAddr>) {
        let account = self.account_counter(rule, account);
        let reset = self.bounded("attempt reset", async {
            let conn = self.conn().await?;
            conn.cmd::<()>(::redis::cmd("DEL").arg(&account)).await.map_err(unavailable)
        });
        if let Err(e) = reset.await {
            tracing::warn!(error = %e, "could not reset the account's sign-in attempts");
        }
        if let Some(ip) = ip {
            if let Err(e) = self.give_back(&self.network_counter(rule, ip)).await {
                tracing::warn!(error = %e, "could not give the network its sign-in attempt back");
            }
        }
    }
}
