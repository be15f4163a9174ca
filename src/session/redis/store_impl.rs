//! `SessionStore` for `RedisStore`: each method is a few single-slot round trips, bounded by
//! the configured timeout (see the key layout in the module header).

use std::collections::HashMap;

use ::redis::{Cmd, RedisResult, Script, Value};
use async_trait::async_trait;

use super::conn::Conn;
use super::fields::{self, decode_hash, decode_record, EXP, LA, REC};
use super::scripts::{evalsha, ACTIVITY, INDEX_ADD, INDEX_DEL_IF, INDEX_SWAP, REPLACE_RECORD};
use super::{hex, unavailable, RedisStore};
use crate::clock::Millis;
use crate::session::store::{Activity, SessionStore, StoreError};
use crate::session::{PublicId, Session, TokenHash};

#[async_trait]
impl SessionStore for RedisStore {
    async fn insert(&self, session: &Session) -> Result<(), StoreError> {
        if !self.insert_record(session).await? {
            return Ok(());
        }
        let now = self.clock.now();
        let skey = self.session_key(&session.token_hash);
        let ikey = self.index_key(&session.user_id);
        // The index outlives every session in it: at least this one's absolute lifetime.
        let index_ttl = session.expires_at.saturating_sub(now).max(1);
        self.bounded("insert", async {
            let conn = self.conn().await?;
            let add = evalsha(&INDEX_ADD, &ikey, &[&session.id.as_str(), &hex(&session.token_hash), &index_ttl]);
            let indexed = run_scripts(conn, &INDEX_ADD, vec![(ikey.clone(), add)]).await.and_then(first_ok);
            if let Err(e) = indexed {
                // Without its index entry the session could not be listed or revoked by id.
                let _ = conn.cmd::<()>(::redis::cmd("DEL").arg(&skey)).await;
                return Err(e);
            }
            Ok(())
        })
        .await
    }

    async fn get(&self, hash: &TokenHash) -> Result<Option<Session>, StoreError> {
        let key = self.session_key(hash);
        self.bounded("get", async {
            let conn = self.conn().await?;
            let fields: HashMap<String, Vec<u8>> =
                conn.cmd(::redis::cmd("HGETALL").arg(&key)).await.map_err(unavailable)?;
            decode_hash(fields)
        })
        .await
    }
    async fn list_for_user(&self, user_id: &str) -> Result<Vec<Session>, StoreError> {
        let ikey = self.index_key(user_id);
        self.bounded("list_for_user", async {
            let conn = self.conn().await?;
            let index: HashMap<String, String> =
                conn.cmd(::redis::cmd("HGETALL").arg(&ikey)).await.map_err(unavailable)?;
            let entries: Vec<(String, String)> = index.into_iter().collect();
            let cmds = entries
                .iter()
                .map(|(_, h)| {
                    let key = format!("{}:s:{{{h}}}", self.prefix);
                    let cmd = ::redis::cmd("HGETALL").arg(&key).to_owned();
                    (key, cmd)
                })
                .collect();
            let replies = conn.batch(cmds).await.map_err(unavailable)?;
            let mut out = Vec::with_capacity(entries.len());
            let mut stale = Vec::new();
            for ((public_id, _), reply) in entries.into_iter().zip(replies) {
                let map: HashMap<String, Vec<u8>> =
                    reply.and_then(|v| Ok(::redis::from_redis_value(v)?)).map_err(unavailable)?;
                match decode_hash(map)? {
                    Some(s) if s.user_id == user_id && s.id.as_str() == public_id => out.push(s),
                    // The session key expired (or never belonged here): clean, don't show.
                    _ => stale.push(public_id),
                }
            }
            if !stale.is_empty() {
                conn.cmd::<()>(::redis::cmd("HDEL").arg(&ikey).arg(&stale)).await.map_err(unavailable)?;
            }
            Ok(out)
        })
        .await
    }

    async fn find_for_user(&self, user_id: &str, id: &PublicId) -> Result<Option<Session>, StoreError> {
        let ikey = self.index_key(user_id);
        self.bounded("find_for_user", async {
            let conn = self.conn().await?;
            let h: Option<String> =
                conn.cmd(::redis::cmd("HGET").arg(&ikey).arg(id.as_str())).await.map_err(unavailable)?;
            let Some(hash) = h.as_deref().and_then(|h| RedisStore::parse_revocation(h.as_bytes())) else {
                return Ok(None);
            };
            let fields: HashMap<String, Vec<u8>> =
                conn.cmd(::redis::cmd("HGETALL").arg(self.session_key(&hash))).await.map_err(unavailable)?;
            Ok(decode_hash(fields)?.filter(|s| s.user_id == user_id && &s.id == id))
        })
        .await
    }

    /// Writes the new key, moves the index entry to it (only if it still names the old one),
    /// then deletes the old key and publishes it as revoked. If the index moved on meanwhile
    /// (revoked), the new key is deleted again and nothing changes.
    async fn rotate(&self, old: &TokenHash, new: &Session) -> Result<bool, StoreError> {
        let Some(stored) = self.get(old).await? else {
            return Ok(false);
        };
        if stored.id != new.id || stored.user_id != new.user_id {
            return Err(StoreError::Corrupt("rotation to another session".into()));
        }
        let mut new = new.clone();
        if stored.last_active_at > new.last_active_at {
            new.last_active_at = stored.last_active_at;
            new.last_ip = stored.last_ip.or(new.last_ip);
        }
        if !self.insert_record(&new).await? {
            return Ok(false);
        }
        let ikey = self.index_key(&new.user_id);
        let swapped = self
            .bounded("rotate", async {
                let conn = self.conn().await?;
                let swap = evalsha(&INDEX_SWAP, &ikey, &[&new.id.as_str(), &hex(old), &hex(&new.token_hash)]);
                let reply = run_scripts(conn, &INDEX_SWAP, vec![(ikey.clone(), swap)]).await?;
                Ok(matches!(reply.into_iter().next(), Some(Ok(Value::Int(1)))))
            })
            .await;
        match swapped {
            Ok(true) => {
                // Not `remove`: the index entry already names the new token.
                let (skey, channel) = (self.session_key(old), self.revocation_channel());
                let deleted: i64 = self
                    .bounded("rotate", async {
                        let conn = self.conn().await?;
                        let n = conn.cmd(::redis::cmd("DEL").arg(&skey)).await.map_err(unavailable)?;
                        let notice = hex(old);
                        self.notices.publishing(notice.as_bytes());
                        conn.cmd::<()>(::redis::cmd("PUBLISH").arg(&channel).arg(&notice))
                            .await
                            .map_err(unavailable)?;
                        Ok(n)
                    })
                    .await?;
                if deleted == 0 {
                    // The old session was revoked while this rotation ran: the new one must not
                    // outlive it.
                    self.remove(&new.token_hash).await?;
                    return Ok(false);
                }
                Ok(true)
            }
            other => {
                let skey = self.session_key(&new.token_hash);
                let _ = self
                    .bounded("rotate undo", async {
                        self.conn().await?.cmd::<()>(::redis::cmd("DEL").arg(&skey)).await.map_err(unavailable)
                    })
                    .await;
                other.map(|_| false)
            }
        }
    }

    async fn update(&self, session: &Session) -> Result<bool, StoreError> {
        let skey = self.session_key(&session.token_hash);
        let record = fields::encode(session)?;
        let channel = self.revocation_channel();
        let notice = format!("~{}", hex(&session.token_hash));
        self.bounded("update", async {
            let conn = self.conn().await?;
            let cmd = evalsha(&REPLACE_RECORD, &skey, &[&record]);
            let reply = run_scripts(conn, &REPLACE_RECORD, vec![(skey.clone(), cmd)]).await?;
            let wrote = matches!(reply.into_iter().next(), Some(Ok(Value::Int(1))));
            if wrote {
                self.notices.publishing(notice.as_bytes());
                conn.cmd::<()>(::redis::cmd("PUBLISH").arg(&channel).arg(&notice)).await.map_err(unavailable)?;
            }
            Ok(wrote)
        })
        .await
    }

    /// Deletes the record, then its index entry, then publishes the notice. The notice is
    /// published even when the record was already gone, so retrying a remove whose publish
    /// failed still reaches every replica.
    async fn remove(&self, hash: &TokenHash) -> Result<bool, StoreError> {
        let skey = self.session_key(hash);
        let channel = self.revocation_channel();
        let notice = hex(hash);
        self.bounded("remove", async {
            let conn = self.conn().await?;
            let mut take = ::redis::pipe();
            take.atomic().cmd("HGET").arg(&skey).arg(REC).cmd("DEL").arg(&skey);
            let (record, deleted): (Option<Vec<u8>>, i64) = conn.pipe(&take).await.map_err(unavailable)?;
            let session = record.as_deref().map(decode_record).transpose().ok().flatten();
            // The index entry only if it still names this token (a rotation may have moved it).
            if let Some(s) = &session {
                let ikey = self.index_key(&s.user_id);
                let del = evalsha(&INDEX_DEL_IF, &ikey, &[&s.id.as_str(), &notice]);
                run_scripts(conn, &INDEX_DEL_IF, vec![(ikey, del)]).await.and_then(first_ok)?;
            }
            self.notices.publishing(notice.as_bytes());
            conn.cmd::<()>(::redis::cmd("PUBLISH").arg(&channel).arg(&notice)).await.map_err(unavailable)?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn record_activity(&self, batch: &[Activity]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        let cmds: Vec<(String, Cmd)> = batch
            .iter()
            .map(|a| {
                let key = self.session_key(&a.token_hash);
                let ip = a.ip.map(|ip| ip.to_string()).unwrap_or_default();
                let cmd = evalsha(&ACTIVITY, &key, &[&a.at, &ip, &now, &self.idle_timeout]);
                (key, cmd)
            })
            .collect();
        self.bounded("record_activity", async {
            let conn = self.conn().await?;
            let replies = run_scripts(conn, &ACTIVITY, cmds).await?;
            replies.into_iter().try_for_each(|r| r.map(drop).map_err(unavailable))
        })
        .await
    }

    /// Redis expires sessions by key TTL on its own; this sweep is the backstop for keys
    /// whose TTL outlives their liveness (e.g. after the idle timeout was lowered) and is what
    /// the shared contract checks. It SCANs session keys on every data node, so run it rarely.
    async fn remove_expired(&self, now: Millis, idle_timeout: Millis) -> Result<usize, StoreError> {
        self.sweep(now, idle_timeout).await
    }
}

impl RedisStore {
    /// Writes the session key (record, activity fields, TTL), not the index. `false` when the
    /// session is already over (nothing is written: it would only store a dead session).
    async fn insert_record(&self, session: &Session) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let Some(ttl) = fields::ttl(session.last_active_at, session.expires_at, self.idle_timeout, now) else {
            return Ok(false);
        };
        let record = fields::encode(session)?;
        let skey = self.session_key(&session.token_hash);
        self.bounded("insert", async {
            let conn = self.conn().await?;
            let mut pipe = ::redis::pipe();
            pipe.atomic()
                .cmd("DEL")
                .arg(&skey)
                .ignore()
                .cmd("HSET")
                .arg(&skey)
                .arg(REC)
                .arg(record)
                .arg(LA)
                .arg(session.last_active_at)
                .arg(EXP)
                .arg(session.expires_at)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&skey)
                .arg(ttl)
                .ignore();
            conn.pipe::<()>(&pipe).await.map_err(unavailable)?;
            Ok(true)
        })
        .await
    }
}

/// Runs single-key EVALSHA commands as one batch; those that fail with NOSCRIPT (script
/// cache empty after a restart or on a new node) are retried after loading the script.
pub(super) async fn run_scripts(
    conn: &Conn,
    script: &Script,
    cmds: Vec<(String, Cmd)>,
) -> Result<Vec<RedisResult<Value>>, StoreError> {
    let mut replies = conn.batch(cmds.clone()).await.map_err(unavailable)?;
    let missing: Vec<usize> = replies
        .iter()
        .enumerate()
        .filter(
            |(_, r)| matches!(r, Err(e) if e.kind() == ::redis::ErrorKind::Server(::redis::ServerErrorKind::NoScript)),
        )
        .map(|(i, _)| i)
        .collect();
    if missing.is_empty() {
        return Ok(replies);
    }
    conn.load_script(script).await.map_err(unavailable)?;
    let retry = missing.iter().map(|&i| cmds[i].clone()).collect();
    for (i, r) in missing.into_iter().zip(conn.batch(retry).await.map_err(unavailable)?) {
        replies[i] = r;
    }
    Ok(replies)
}

pub(super) fn first_ok(replies: Vec<RedisResult<Value>>) -> Result<(), StoreError> {
    replies.into_iter().try_for_each(|r| r.map(drop).map_err(unavailable))
}
