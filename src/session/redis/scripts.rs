//! The Lua scripts. Each touches exactly one key (cluster-safe) and runs atomically, which is
//! what lets activity writes check "does this session still exist" without a race.

use std::sync::LazyLock;

use ::redis::{Cmd, Script, ToRedisArgs};

/// Activity for one session. KEYS[1] = session key; ARGV = at, ip ("" = keep), now, idle.
/// Does nothing when the key is gone (never resurrects) or `at` is not newer than `la`;
/// otherwise moves `la` forward, sets `ip`, and resets the TTL to
/// `min(at + idle, exp) - now` (at least 1 ms). Returns 1 when it wrote.
pub(super) static ACTIVITY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local at = tonumber(ARGV[1])
local la = tonumber(redis.call('HGET', KEYS[1], 'la') or '0') or 0
if at <= la then return 0 end
redis.call('HSET', KEYS[1], 'la', ARGV[1])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'ip', ARGV[2]) end
local exp = tonumber(redis.call('HGET', KEYS[1], 'exp') or '0') or 0
local ttl = math.floor(math.min(at + tonumber(ARGV[4]), exp) - tonumber(ARGV[3]))
if ttl < 1 then ttl = 1 end
redis.call('PEXPIRE', KEYS[1], string.format('%d', ttl))
return 1
"#,
    )
});

/// Adds an index entry. KEYS[1] = index key; ARGV = public id, token-hash hex, ttl.
/// The TTL only grows, so the index outlives every session listed in it.
pub(super) static INDEX_ADD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local want = tonumber(ARGV[3])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < want then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
"#,
    )
});

/// Counts one sign-in attempt. KEYS[1] = counter; ARGV = window (ms), limit. The window starts
/// with the first attempt. Returns the new count, or minus the milliseconds left in the window
/// when the limit is already used up (then nothing is counted).
pub(super) static TAKE_ATTEMPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if n > tonumber(ARGV[2]) then
  redis.call('DECR', KEYS[1])
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 1 then ttl = tonumber(ARGV[1]) end
  return -ttl
end
return n
"#,
    )
});

/// Gives an attempt back. KEYS[1] = counter. Never below zero, never creates the key.
pub(super) static GIVE_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if n > 0 then redis.call('DECR', KEYS[1]) end
return 1
"#,
    )
});

/// Sweep delete. KEYS[1] = session key; ARGV[1] = the `la` seen when it was judged expired
/// ("" = none). Deletes only if no activity arrived since. Returns the number deleted.
pub(super) static DELETE_IF_IDLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local la = redis.call('HGET', KEYS[1], 'la') or ''
if la ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"#,
    )
});

/// `EVALSHA <sha> 1 <key> <args…>`, for pipelines (callers load the script on NOSCRIPT).
pub(super) fn evalsha(script: &Script, key: &str, args: &[&dyn ToRedisArgsDyn]) -> Cmd {
    let mut cmd = ::redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(1).arg(key);
    for a in args {
        a.push_to(&mut cmd);
    }
    cmd
}

/// Object-safe shim over `ToRedisArgs` so mixed argument types fit in one slice.
pub(super) trait ToRedisArgsDyn {
    fn push_to(&self, cmd: &mut Cmd);
}

impl<T: ToRedisArgs> ToRedisArgsDyn for T {
    fn push_to(&self, cmd: &mut Cmd) {
        cmd.arg(self);
    }
}

/// Points an index entry at a rotated session. KEYS[1] = index key; ARGV = public id, old
/// hash hex, new hash hex. Only when the entry still names the old hash (not revoked
/// meanwhile). Returns 1 when it did.
pub(super) static INDEX_SWAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"#,
    )
});

/// Overwrites an existing session's record. KEYS[1] = session key; ARGV[1] = record. Does
/// nothing when the key is gone. Returns 1 when it wrote.
pub(super) static REPLACE_RECORD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'rec', ARGV[1])
return 1
"#,
    )
});

/// Drops an index entry only if it still names this session's token. KEYS[1] = index key;
/// ARGV = public id, token-hash hex. (A rotation may have moved the entry on meanwhile.)
pub(super) static INDEX_DEL_IF: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
return redis.call('HDEL', KEYS[1], ARGV[1])
"#,
    )
});
