//! [`AccountStore`] for `RedisStore`: a person's TOTP credential, password and audit log, each
//! under keys tagged with the person's id (see the key layout in the module header), so every
//! command and script touches one hash slot. Check-and-set operations are Lua scripts, atomic
//! on the server whichever replica sends them.
//!
//! The id is escaped in keys (`%` → `%25`, `{` → `%7B`, `}` → `%7D`, the empty id → `%`): a
//! brace in an id would otherwise end the hash tag early (and an empty tag is no tag), splitting
//! one person's keys over two slots.

use std::collections::HashMap;
use std::sync::LazyLock;

use ::redis::{Cmd, Script, Value};
use async_trait::async_trait;

use super::scripts::evalsha;
use super::store_impl::run_scripts;
use super::{unavailable, RedisStore};
use crate::account::{AccountStore, AuditEntry, PasswordRecord, PendingTotp, TotpRecord, TotpState};
use crate::clock::Millis;
use crate::session::store::StoreError;

/// How long an audit log outlives its person's last event: 400 days, refreshed by each append.
const AUDIT_TTL_MS: u64 = 400 * 86_400_000;

// Fields of the TOTP hash.
const SECRET: &str = "secret";
const ENROLLED_AT: &str = "enrolled_at";
const LAST_STEP: &str = "last_step";
const PENDING: &str = "pending";
const PENDING_EXP: &str = "pending_exp";

// Fields of the password hash.
const HASH: &str = "hash";
const REPLACES: &str = "replaces";
const CHANGED_AT: &str = "changed_at";

/// Lua helper: whether canonical decimal `a` is larger than `b`, exactly for any u64 (Lua's
/// numbers are doubles, which would round steps above 2^53).
const NEWER: &str = r#"
local function newer(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
"#;

/// Promotes the pending secret. KEYS[1] = TOTP hash; ARGV = secret, step, now. Only when the
/// pending secret is exactly ARGV[1] and `now < pending_exp`; otherwise changes nothing.
/// Returns 1 when it promoted.
static CONFIRM_TOTP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local pending = redis.call('HGET', KEYS[1], 'pending')
if not pending or pending ~= ARGV[1] then return 0 end
local exp = tonumber(redis.call('HGET', KEYS[1], 'pending_exp') or '')
if not exp or tonumber(ARGV[3]) >= exp then return 0 end
redis.call('HSET', KEYS[1], 'secret', pending, 'enrolled_at', ARGV[3], 'last_step', ARGV[2])
redis.call('HDEL', KEYS[1], 'pending', 'pending_exp')
return 1
"#,
    )
});

/// Marks a step used. KEYS[1] = TOTP hash; ARGV[1] = step. Only with an active credential and a
/// step newer than `last_step`. Returns 1 when it accepted the step.
static USE_TOTP_STEP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{NEWER}
local last = redis.call('HGET', KEYS[1], 'last_step')
if not last or redis.call('HEXISTS', KEYS[1], 'secret') == 0 then return 0 end
if not newer(ARGV[1], last) then return 0 end
redis.call('HSET', KEYS[1], 'last_step', ARGV[1])
return 1
"#
    ))
});

/// Appends an audit event. KEYS = log (ZSET), counter (same hash tag); ARGV = JSON, keep, ttl.
/// Numbers the event with the counter, drops all but the newest `keep` and refreshes both TTLs.
/// Returns the event's number.
static APPEND_AUDIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local seq = redis.call('INCR', KEYS[2])
local n = string.format('%d', seq)
redis.call('ZADD', KEYS[1], n, n .. ':' .. ARGV[1])
local keep = tonumber(ARGV[2])
local count = redis.call('ZCARD', KEYS[1])
if count > keep then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, string.format('%d', count - keep - 1))
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return seq
"#,
    )
});

/// A person's id as it appears inside the `{…}` hash tag: braces and `%` escaped, so the tag is
/// the whole id and distinct ids never share keys. The empty id becomes a lone `%` (which no
/// escaped id can be), because an empty tag `{}` would not count as a hash tag at all.
pub(super) fn tag(user_id: &str) -> String {
    if user_id.is_empty() {
        return "%".into();
    }
    let mut out = String::with_capacity(user_id.len());
    for c in user_id.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
    out
}

impl RedisStore {
    fn totp_key(&self, user_id: &str) -> String {
        format!("{}:totp:{{{}}}", self.prefix, tag(user_id))
    }

    fn password_key(&self, user_id: &str) -> String {
        format!("{}:pw:{{{}}}", self.prefix, tag(user_id))
    }

    fn audit_key(&self, user_id: &str) -> String {
        format!("{}:audit:{{{}}}", self.prefix, tag(user_id))
    }

    fn audit_counter_key(&self, user_id: &str) -> String {
        format!("{}:audit:{{{}}}:n", self.prefix, tag(user_id))
    }

    /// Runs one script call (`cmd`, routed by `key`) and returns its integer reply.
    async fn script_int(&self, what: &str, script: &Script, key: String, cmd: Cmd) -> Result<i64, StoreError> {
        self.bounded(what, async {
            let conn = self.conn().await?;
            let replies = run_scripts(conn, script, vec![(key, cmd)]).await?;
            match replies.into_iter().next() {
                Some(Ok(Value::Int(n))) => Ok(n),
                Some(Ok(other)) => Err(unavailable(format!("unexpected {what} reply {other:?}"))),
                Some(Err(e)) => Err(unavailable(e)),
                None => Err(unavailable(format!("no reply to {what}"))),
            }
        })
        .await
    }

    /// All fields of a hash (empty when the key does not exist).
    pub(super) async fn hash_fields(&self, what: &str, key: &str) -> Result<HashMap<String, Vec<u8>>, StoreError> {
        self.bounded(what, async {
            let conn = self.conn().await?;
            conn.cmd(::redis::cmd("HGETALL").arg(key)).await.map_err(unavailable)
        })
        .await
    }
}

pub(super) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("redis: {what}"))
}

/// A numeric field; `None` when absent, `Corrupt` when not a number.
pub(super) fn number<T: std::str::FromStr>(
    fields: &HashMap<String, Vec<u8>>,
    name: &str,
) -> Result<Option<T>, StoreError> {
    let Some(raw) = fields.get(name) else { return Ok(None) };
    let parsed = std::str::from_utf8(raw).ok().and_then(|s| s.parse().ok());
    parsed.map(Some).ok_or_else(|| corrupt(format!("field {name} is not a number")))
}

fn required<T>(value: Option<T>, name: &str) -> Result<T, StoreError> {
    value.ok_or_else(|| corrupt(format!("field {name} is missing")))
}

fn text(fields: &mut HashMap<String, Vec<u8>>, name: &str) -> Result<String, StoreError> {
    let raw = required(fields.remove(name), name)?;
    String::from_utf8(raw).map_err(|_| corrupt(format!("field {name} is not text")))
}

fn decode_totp(mut fields: HashMap<String, Vec<u8>>) -> Result<TotpState, StoreError> {
    let active = match fields.remove(SECRET) {
        None => None,
        Some(secret) => Some(TotpRecord {
            secret,
            enrolled_at: required(number(&fields, ENROLLED_AT)?, ENROLLED_AT)?,
            last_step: required(number(&fields, LAST_STEP)?, LAST_STEP)?,
        }),
    };
    let pending = match fields.remove(PENDING) {
        None => None,
        Some(secret) => Some(PendingTotp { secret, expires_at: required(number(&fields, PENDING_EXP)?, PENDING_EXP)? }),
    };
    Ok(TotpState { active, pending })
}

fn decode_password(mut fields: HashMap<String, Vec<u8>>) -> Result<Option<PasswordRecord>, StoreError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let changed_at = required(number(&fields, CHANGED_AT)?, CHANGED_AT)?;
    Ok(Some(PasswordRecord { hash: text(&mut fields, HASH)?, replaces: text(&mut fields, REPLACES)?, changed_at }))
}

/// An audit log member: `<seq>:<json>`.
fn decode_audit(member: &[u8]) -> Result<AuditEntry, StoreError> {
    let member = std::str::from_utf8(member).map_err(|_| corrupt("audit event is not text"))?;
    let (seq, json) = member.split_once(':').ok_or_else(|| corrupt("audit event without a number"))?;
    let seq = seq.parse().map_err(|_| corrupt("audit event number is not a number"))?;
    Ok(AuditEntry { seq, json: json.to_string() })
}

#[async_trait]
impl AccountStore for RedisStore {
    async fn totp(&self, user_id: &str) -> Result<TotpState, StoreError> {
        decode_totp(self.hash_fields("totp", &self.totp_key(user_id)).await?)
    }

    async fn set_pending_totp(&self, user_id: &str, pending: &PendingTotp) -> Result<(), StoreError> {
        let key = self.totp_key(user_id);
        let mut cmd = ::redis::cmd("HSET");
        cmd.arg(&key).arg(PENDING).arg(pending.secret.as_slice()).arg(PENDING_EXP).arg(pending.expires_at);
        self.bounded("set_pending_totp", async {
            let conn = self.conn().await?;
            conn.cmd::<()>(&cmd).await.map_err(unavailable)
        })
        .await
    }

    async fn confirm_totp(&self, user_id: &str, secret: &[u8], step: u64, now: Millis) -> Result<bool, StoreError> {
        let key = self.totp_key(user_id);
        let cmd = evalsha(&CONFIRM_TOTP, &key, &[&secret, &step, &now]);
        Ok(self.script_int("confirm_totp", &CONFIRM_TOTP, key, cmd).await? == 1)
    }

    async fn use_totp_step(&self, user_id: &str, step: u64) -> Result<bool, StoreError> {
        let key = self.totp_key(user_id);
        let cmd = evalsha(&USE_TOTP_STEP, &key, &[&step]);
        Ok(self.script_int("use_totp_step", &USE_TOTP_STEP, key, cmd).await? == 1)
    }

    async fn remove_totp(&self, user_id: &str) -> Result<bool, StoreError> {
        let key = self.totp_key(user_id);
        self.bounded("remove_totp", async {
            let conn = self.conn().await?;
            let mut pipe = ::redis::pipe();
            pipe.atomic().cmd("HEXISTS").arg(&key).arg(SECRET).cmd("DEL").arg(&key).ignore();
            let (active,): (bool,) = conn.pipe(&pipe).await.map_err(unavailable)?;
            Ok(active)
        })
        .await
    }

    async fn password(&self, user_id: &str) -> Result<Option<PasswordRecord>, StoreError> {
        decode_password(self.hash_fields("password", &self.password_key(user_id)).await?)
    }

    async fn set_password(&self, user_id: &str, record: &PasswordRecord) -> Result<(), StoreError> {
        let key = self.password_key(user_id);
        // Every field is written, so the previous record is replaced as a whole.
        let mut cmd = ::redis::cmd("HSET");
        cmd.arg(&key)
            .arg(HASH)
            .arg(&record.hash)
            .arg(REPLACES)
            .arg(&record.replaces)
            .arg(CHANGED_AT)
            .arg(record.changed_at);
        self.bounded("set_password", async {
            let conn = self.conn().await?;
            conn.cmd::<()>(&cmd).await.map_err(unavailable)
        })
        .await
    }

    async fn append_audit(&self, user_id: &str, json: &str, keep: usize) -> Result<u64, StoreError> {
        let log = self.audit_key(user_id);
        let mut cmd = ::redis::cmd("EVALSHA");
        cmd.arg(APPEND_AUDIT.get_hash()).arg(2).arg(&log).arg(self.audit_counter_key(user_id));
        cmd.arg(json).arg(keep).arg(AUDIT_TTL_MS);
        let seq = self.script_int("append_audit", &APPEND_AUDIT, log, cmd).await?;
        u64::try_from(seq).map_err(|_| corrupt("audit counter below zero"))
    }

    async fn audit_page(
        &self,
        user_id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let key = self.audit_key(user_id);
        let max = before.map_or_else(|| "+inf".to_string(), |b| format!("({b}"));
        let mut cmd = ::redis::cmd("ZREVRANGEBYSCORE");
        cmd.arg(&key).arg(max).arg("-inf").arg("LIMIT").arg(0).arg(limit);
        let members: Vec<Vec<u8>> = self
            .bounded("audit_page", async {
                let conn = self.conn().await?;
                conn.cmd(&cmd).await.map_err(unavailable)
            })
            .await?;
        members.iter().map(|m| decode_audit(m)).collect()
    }
}

#[cfg(test)]
mod tests {

    use ::redis::cluster_routing::Slot;
    use ::redis::Commands;

    use super::super::redis_server::{RedisCluster, RedisServer};
    use super::super::tests::{clustered, raw, standalone, unconnected};
    use super::*;
    use crate::account::contract::run_all;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn standalone_store_fulfils_the_account_contract() {
        let server = RedisServer::start();
        run_all(&standalone(&server)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster_store_fulfils_the_account_contract() {
        let cluster = RedisCluster::start(3);
        let store = clustered(&cluster);
        run_all(&store).await;
    }

    #[test]
    fn a_persons_keys_share_one_slot_whatever_the_id() {
        let server_less = unconnected();
        for user in ["alice", "}x", "{y}", "a}b", "a{b}c", "%7D", "a:b}:n", ""] {
            let keys = [
                server_less.totp_key(user),
                server_less.password_key(user),
                server_less.audit_key(user),
                server_less.audit_counter_key(user),
            ];
            let slot = Slot::for_key(keys[0].as_bytes());
            assert!(keys.iter().all(|k| Slot::for_key(k.as_bytes()) == slot), "{user}: {keys:?}");
        }
        assert_eq!(tag("a{b}%"), "a%7Bb%7D%25");
        assert_ne!(tag("}"), tag("%7D"));
        assert_ne!(tag(""), tag("%"));
    }

    #[tokio::test]
    async fn account_keys_are_laid_out_as_documented() {
        let server = RedisServer::start();
        let store = standalone(&server);
        let pending = PendingTotp { secret: vec![0, 0xff, 7], expires_at: i64::MAX };
        store.set_pending_totp("a}b", &pending).await.expect("pending");
        assert!(store.confirm_totp("a}b", &[0, 0xff, 7], 5, 1_000).await.expect("confirm"));
        let record = PasswordRecord { hash: "$argon2id$x".into(), replaces: "ab".into(), changed_at: 3 };
        store.set_password("a}b", &record).await.expect("password");
        assert_eq!(store.append_audit("a}b", r#"{"e":1}"#, 10).await.expect("append"), 1);

        let mut con = raw(&server);
        let mut keys: Vec<String> = con.keys("*").expect("keys");
        keys.sort();
        let expected = ["dalea:audit:{a%7Db}", "dalea:audit:{a%7Db}:n", "dalea:pw:{a%7Db}", "dalea:totp:{a%7Db}"];
        assert_eq!(keys, expected);
        let totp: HashMap<String, Vec<u8>> = con.hgetall(expected[3]).expect("hgetall");
        let expected_totp = HashMap::from([
            (SECRET.to_string(), vec![0, 0xff, 7]),
            (ENROLLED_AT.to_string(), b"1000".to_vec()),
            (LAST_STEP.to_string(), b"5".to_vec()),
        ]);
        assert_eq!(totp, expected_totp, "binary secret as bytes, pending fields cleared");
        let members: Vec<String> = con.zrange(expected[0], 0, -1).expect("zrange");
        assert_eq!(members, [r#"1:{"e":1}"#]);

        // Credentials never expire; the audit log lives 400 days after the latest event.
        for key in [expected[2], expected[3]] {
            assert_eq!(con.pttl::<_, i64>(key).expect("pttl"), -1, "{key}");
        }
        for key in [expected[0], expected[1]] {
            let ttl: i64 = con.pttl(key).expect("pttl");
            assert!(ttl > (AUDIT_TTL_MS - 60_000) as i64 && ttl <= AUDIT_TTL_MS as i64, "{key}: {ttl}");
        }
    }

    #[tokio::test]
    async fn steps_beyond_double_precision_compare_exactly() {
        let server = RedisServer::start();
        let store = standalone(&server);
        let big = (1u64 << 60) + 1;
        store.set_pending_totp("zed", &PendingTotp { secret: vec![1], expires_at: 10 }).await.expect("pending");
        assert!(store.confirm_totp("zed", &[1], big, 0).await.expect("confirm"));
        assert!(!store.use_totp_step("zed", big - 1).await.expect("one below"), "2^60 is not 2^60 + 1");
        assert!(!store.use_totp_step("zed", big).await.expect("equal"));
        assert!(store.use_totp_step("zed", big + 1).await.expect("one above"));
        assert!(store.use_totp_step("zed", u64::MAX).await.expect("max"));
        assert_eq!(store.totp("zed").await.expect("totp").active.map(|a| a.last_step), Some(u64::MAX));
    }

    #[tokio::test]
    async fn unreadable_records_are_corrupt_and_an_outage_is_unavailable() {
        let mut server = RedisServer::start();
        let store = standalone(&server);
        let mut con = raw(&server);
        let _: () = con.hset("dalea:totp:{una}", SECRET, "x").expect("hset");
        assert!(matches!(store.totp("una").await, Err(StoreError::Corrupt(_))), "secret without its step");
        let _: () = con.hset("dalea:pw:{una}", CHANGED_AT, "soon").expect("hset");
        assert!(matches!(store.password("una").await, Err(StoreError::Corrupt(_))));
        let _: () = con.zadd("dalea:audit:{una}", "garbage", 1).expect("zadd");
        assert!(matches!(store.audit_page("una", None, 10).await, Err(StoreError::Corrupt(_))));
        server.kill();
        assert!(matches!(store.append_audit("una", "{}", 10).await, Err(StoreError::Unavailable(_))));
        assert!(matches!(store.use_totp_step("una", 1).await, Err(StoreError::Unavailable(_))));
    }
}
