//! What the stores that keep one record per STRING key share (linked identities, passkeys,
//! people): reading records with their raw bytes, changing one only if it still holds what was
//! read (one-key compare-and-set scripts), and dropping a person's stale index entries.

use std::sync::LazyLock;

use ::redis::{Cmd, Script, Value};
use serde::de::DeserializeOwned;

use super::conn::Conn;
use super::scripts::{evalsha, INDEX_DEL_IF};
use super::store_impl::{first_ok, run_scripts};
use super::unavailable;
use crate::session::embedded_account::decode;
use crate::session::store::StoreError;

/// Deletes KEYS[1] if it holds exactly ARGV[1]. Returns the number deleted.
static DEL_IF_EQUAL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"#,
    )
});

/// Sets KEYS[1] to ARGV[2] if it holds exactly ARGV[1]. Returns 1 when it did.
static SET_IF_EQUAL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"#,
    )
});

/// The record at `key`, raw and decoded.
pub(super) async fn read_record<T: DeserializeOwned>(
    conn: &Conn,
    key: &str,
) -> Result<Option<(Vec<u8>, T)>, StoreError> {
    let raw: Option<Vec<u8>> = conn.cmd(::redis::cmd("GET").arg(key)).await.map_err(unavailable)?;
    raw.map(|raw| decode(&raw).map(|record| (raw, record))).transpose()
}

/// The records at `keys`, in one batch, in the same order (`None` where a key is gone).
pub(super) async fn read_records<T: DeserializeOwned>(
    conn: &Conn,
    keys: &[String],
) -> Result<Vec<Option<T>>, StoreError> {
    let cmds = keys.iter().map(|k| (k.clone(), ::redis::cmd("GET").arg(k).to_owned())).collect();
    let replies = conn.batch(cmds).await.map_err(unavailable)?;
    replies
        .into_iter()
        .map(|reply| {
            let raw: Option<Vec<u8>> = reply.and_then(|v| Ok(::redis::from_redis_value(v)?)).map_err(unavailable)?;
            raw.map(|raw| decode(&raw)).transpose()
        })
        .collect()
}

/// Deletes `key` if it still holds `raw`. Whether it did.
pub(super) async fn delete_if_equal(conn: &Conn, key: &str, raw: &[u8]) -> Result<bool, StoreError> {
    let cmd = evalsha(&DEL_IF_EQUAL, key, &[&raw]);
    compare_and_set(conn, &DEL_IF_EQUAL, key, cmd).await
}

/// Sets `key` to `new` if it still holds `old`. Whether it did.
pub(super) async fn set_if_equal(conn: &Conn, key: &str, old: &[u8], new: &[u8]) -> Result<bool, StoreError> {
    let cmd = evalsha(&SET_IF_EQUAL, key, &[&old, &new]);
    compare_and_set(conn, &SET_IF_EQUAL, key, cmd).await
}

async fn compare_and_set(conn: &Conn, script: &Script, key: &str, cmd: Cmd) -> Result<bool, StoreError> {
    let replies = run_scripts(conn, script, vec![(key.to_string(), cmd)]).await?;
    match replies.into_iter().next() {
        Some(Ok(Value::Int(n))) => Ok(n == 1),
        Some(Ok(other)) => Err(unavailable(format!("unexpected compare-and-set reply {other:?}"))),
        Some(Err(e)) => Err(unavailable(e)),
        None => Err(unavailable("no reply to a compare-and-set script")),
    }
}

/// Drops the entries (field, value) of the index HASH `index_key` that still hold the value seen.
pub(super) async fn drop_index_entries(
    conn: &Conn,
    index_key: &str,
    stale: &[(String, String)],
) -> Result<(), StoreError> {
    let cmds: Vec<(String, Cmd)> =
        stale.iter().map(|(f, v)| (index_key.to_string(), evalsha(&INDEX_DEL_IF, index_key, &[f, v]))).collect();
    if cmds.is_empty() {
        return Ok(());
    }
    first_ok(run_scripts(conn, &INDEX_DEL_IF, cmds).await?)
}
