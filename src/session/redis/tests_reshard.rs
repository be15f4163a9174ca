//! Cluster resharding is followed without a restart: slots move between the masters of a real
//! 3-master cluster (`redis-cli --cluster reshard`) while one store instance keeps serving
//! `get`, `list_for_user`, `record_activity`, `insert` and `remove`. During the move a call may
//! answer `Unavailable` (counted and printed), never wrong data; after it, zero errors and every
//! session, listing and write made during the move is exactly as expected.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::redis_server::{resp_command as resp, resp_values, RedisCluster};
use super::tests::{config, session_at};
use super::{hex, RedisStore};
use crate::clock::{Clock, Millis, SystemClock};
use crate::config::RedisMode;
use crate::session::store::{Activity, SessionStore, StoreError};
use crate::session::{Session, TokenHash};
use ::redis::cluster_routing::Slot;

const USERS: [&str; 5] = ["ana", "ben", "cho", "dev", "eli"];
const HOUR: Millis = 3_600_000;
/// Slots per move. `reshard` takes the source's lowest slots, so these moves end with slots
/// 0–3999 (~24% of the space, half of it moved twice) on another master than at the start:
/// 0–1999 go 0→1→2, 2000–3999 go 0→2. (A cycle such as 0→1, 1→2, 2→0 would put every slot
/// back where it was, hiding a stale slot map.)
const SLOTS_PER_MOVE: &str = "2000";
const MOVES: [(usize, usize); 3] = [(0, 1), (0, 2), (1, 2)];

fn node_id(port: u16) -> String {
    let id = resp(port, &["CLUSTER", "MYID"]).expect("CLUSTER MYID");
    assert_eq!(id.len(), 40, "unexpected node id from {port}: {id:?}");
    id
}

/// Each node's view of slot ownership (`CLUSTER NODES`: node id → its slot ranges, without
/// the `[slot->-id]` migration markers), plus whether it says `cluster_state:ok` and no slot
/// is mid-migration.
fn view(port: u16) -> Option<Vec<(String, Vec<String>)>> {
    let info = resp(port, &["CLUSTER", "INFO"]).ok()?;
    if !info.contains("cluster_state:ok") {
        return None;
    }
    let nodes = resp(port, &["CLUSTER", "NODES"]).ok()?;
    let mut out = Vec::new();
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            continue;
        }
        if fields[8..].iter().any(|s| s.starts_with('[')) {
            return None; // a slot is still migrating/importing
        }
        out.push((fields[0].to_string(), fields[8..].iter().map(|s| s.to_string()).collect()));
    }
    out.sort();
    Some(out)
}

/// Waits until every node reports `cluster_state:ok`, no open slot, and the same ownership.
fn wait_agreed(ports: &[u16], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let views: Vec<_> = ports.iter().map(|&p| view(p)).collect();
        if views[0].is_some() && views.iter().all(|v| v == &views[0]) {
            return;
        }
        assert!(Instant::now() < deadline, "the cluster did not settle within {within:?}: {views:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The owner (node id) of every slot, as `port` sees it.
fn owners(port: u16) -> Vec<String> {
    let mut out = vec![String::new(); 16384];
    for (id, ranges) in view(port).expect("a settled cluster") {
        for r in ranges {
            let (a, b) = r.split_once('-').unwrap_or((&r, &r));
            let (a, b) = (a.parse::<usize>().expect("slot"), b.parse::<usize>().expect("slot"));
            out[a..=b].fill(id.clone());
        }
    }
    out
}

fn session_slot(hash: &TokenHash) -> Slot {
    Slot::for_key(format!("dalea:s:{{{}}}", hex(hash)))
}

fn reshard(ports: &[u16], from: &str, to: &str) {
    let port = ports[0];
    let cli = std::env::var("DALEA_REDIS_CLI").unwrap_or_else(|_| "redis-cli".into());
    let out = std::process::Command::new(&cli)
        .args(["--cluster", "reshard", &format!("127.0.0.1:{port}")])
        .args(["--cluster-from", from, "--cluster-to", to, "--cluster-slots", SLOTS_PER_MOVE, "--cluster-yes"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cli} ({e})"));
    if !out.status.success() {
        // The slot-by-slot progress is long: keep the end, where the error is.
        let stdout = String::from_utf8_lossy(&out.stdout);
        let tail: Vec<&str> = stdout.lines().rev().take(6).collect();
        let slot = stdout.lines().rev().find_map(|l| l.strip_prefix("Moving slot ")?.split(' ').next()).unwrap_or("0");
        let mut diag = String::new();
        for p in ports {
            let keys = resp_values(*p, &["CLUSTER", "GETKEYSINSLOT", slot, "10"]).unwrap_or_default();
            let nodes = resp(*p, &["CLUSTER", "NODES"]).unwrap_or_default();
            diag.push_str(&format!("node {p}: keys in slot {slot}: {keys:?}\n{nodes}\n"));
        }
        panic!(
            "redis-cli --cluster reshard {from} -> {to} failed:\n…\n{}\n{}\n{diag}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    Alive,
    Removed,
    /// An insert or remove that answered `Unavailable`: it may or may not have happened.
    MaybeInserted,
    MaybeRemoved,
}

struct Tracked {
    session: Session,
    state: State,
    /// Last-active confirmed by an `Ok` write, and the latest one attempted.
    la_ok: Millis,
    la_max: Millis,
}

#[derive(Default)]
struct Model {
    sessions: Vec<Tracked>,
    by_hash: HashMap<TokenHash, usize>,
}

impl Model {
    fn add(&mut self, session: Session, state: State) {
        self.by_hash.insert(session.token_hash, self.sessions.len());
        let la = session.last_active_at;
        self.sessions.push(Tracked { session, state, la_ok: la, la_max: la });
    }

    fn alive(&self) -> Vec<usize> {
        (0..self.sessions.len()).filter(|&i| self.sessions[i].state == State::Alive).collect()
    }

    /// A session the store answered with must be one we know, with its own fields and a
    /// last-active within what was written.
    fn check_found(&self, got: &Session, what: &str) {
        let i = *self.by_hash.get(&got.token_hash).unwrap_or_else(|| panic!("{what}: unknown session {:?}", got.id));
        let t = &self.sessions[i];
        assert_eq!((&got.id, &got.user_id), (&t.session.id, &t.session.user_id), "{what}: wrong record");
        assert_eq!(got.expires_at, t.session.expires_at, "{what}: wrong record");
        assert!(
            (t.la_ok..=t.la_max).contains(&got.last_active_at),
            "{what}: last-active {} outside [{}, {}]",
            got.last_active_at,
            t.la_ok,
            t.la_max
        );
    }

    /// A listing must hold every live session of `user`, nothing removed, nothing of others.
    fn check_listing(&self, user: &str, listed: &[Session], what: &str) {
        let mut seen = std::collections::HashSet::new();
        for s in listed {
            assert!(seen.insert(s.token_hash), "{what}: {user} listed twice: {:?}", s.id);
            self.check_found(s, what);
            let state = self.sessions[self.by_hash[&s.token_hash]].state;
            assert_eq!(s.user_id, user, "{what}: another user's session listed");
            assert!(state != State::Removed, "{what}: a removed session is listed: {:?}", s.id);
        }
        for t in self.sessions.iter().filter(|t| t.session.user_id == user && t.state == State::Alive) {
            assert!(
                seen.contains(&t.session.token_hash),
                "{what}: {user}'s live session {:?} is missing",
                t.session.id
            );
        }
    }
}

/// `Unavailable` is counted (and kept for printing); anything else is a failure.
fn tolerate<T>(r: Result<T, StoreError>, op: &str, errors: &mut Vec<String>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(StoreError::Unavailable(e)) => {
            errors.push(format!("{op}: {e}"));
            None
        }
        Err(e) => panic!("{op}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_resharding_is_followed_without_a_restart() {
    let started = Instant::now();
    let cluster = RedisCluster::start(3);
    let ports = cluster.ports.clone();
    let ids: Vec<String> = ports.iter().map(|&p| node_id(p)).collect();
    let idle = Duration::from_secs(600);
    let cfg = || config(RedisMode::Cluster { nodes: cluster.nodes() }, Duration::from_secs(2));
    let store = RedisStore::new(cfg(), idle).expect("store");
    // Two more instances that connect now and then sit idle through the move: their first
    // calls afterwards run on a slot map that is out of date (one starts with a remove, the
    // other with an insert, as any call that follows a MOVED refreshes the whole map).
    let idle_store = RedisStore::new(cfg(), idle).expect("store");
    let idle_insert = RedisStore::new(cfg(), idle).expect("store");
    let before = owners(ports[0]);

    let now = SystemClock.now();
    let mut model = Model::default();
    for i in 0..50 {
        let (s, _) = session_at(USERS[i % USERS.len()], now, HOUR);
        store.insert(&s).await.expect("insert before the move");
        model.add(s, State::Alive);
    }
    assert_eq!(idle_store.list_for_user(USERS[0]).await.expect("idle store connects").len(), 10);
    assert_eq!(idle_insert.list_for_user(USERS[1]).await.expect("idle store connects").len(), 10);

    let done = Arc::new(AtomicBool::new(false));
    let mover = {
        let (done, ports, ids) = (done.clone(), ports.clone(), ids.clone());
        std::thread::spawn(move || {
            for (from, to) in MOVES {
                let t = Instant::now();
                reshard(&ports, &ids[from], &ids[to]);
                wait_agreed(&ports, Duration::from_secs(20));
                eprintln!("moved {SLOTS_PER_MOVE} slots {from}->{to} in {:?}", t.elapsed());
            }
            done.store(true, Ordering::SeqCst);
        })
    };

    // Keep using the same store while the slots move.
    let mut errors: Vec<String> = Vec::new();
    let mut ops = 0u64;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    let mut at = now;
    while !done.load(Ordering::SeqCst) {
        ops += 1;
        let alive = model.alive();
        match ops % 5 {
            0 => {
                let i = alive[next(alive.len())];
                let hash = model.sessions[i].session.token_hash;
                if let Some(got) = tolerate(store.get(&hash).await, "get", &mut errors) {
                    let got =
                        got.unwrap_or_else(|| panic!("get: live session {:?} not found", model.sessions[i].session.id));
                    model.check_found(&got, "get during the move");
                }
            }
            1 => {
                let user = USERS[next(USERS.len())];
                if let Some(listed) = tolerate(store.list_for_user(user).await, "list_for_user", &mut errors) {
                    model.check_listing(user, &listed, "list_for_user during the move");
                }
            }
            2 => {
                at = (at + 1).max(SystemClock.now());
                let picked: Vec<usize> = (0..8).map(|_| alive[next(alive.len())]).collect();
                let batch: Vec<Activity> = picked
                    .iter()
                    .map(|&i| Activity { token_hash: model.sessions[i].session.token_hash, at, ip: None })
                    .collect();
                for &i in &picked {
                    let t = &mut model.sessions[i];
                    t.la_max = t.la_max.max(at);
                }
                if tolerate(store.record_activity(&batch).await, "record_activity", &mut errors).is_some() {
                    for &i in &picked {
                        let t = &mut model.sessions[i];
                        t.la_ok = t.la_ok.max(at);
                    }
                }
            }
            3 if alive.len() < 120 => {
                let (s, _) = session_at(USERS[next(USERS.len())], SystemClock.now(), HOUR);
                let ok = tolerate(store.insert(&s).await, "insert", &mut errors).is_some();
                model.add(s, if ok { State::Alive } else { State::MaybeInserted });
            }
            _ if alive.len() > 20 => {
                let i = alive[next(alive.len())];
                let hash = model.sessions[i].session.token_hash;
                match tolerate(store.remove(&hash).await, "remove", &mut errors) {
                    Some(true) => model.sessions[i].state = State::Removed,
                    Some(false) => panic!("remove: live session {:?} was not there", model.sessions[i].session.id),
                    None => model.sessions[i].state = State::MaybeRemoved,
                }
            }
            _ => {}
        }
    }
    mover.join().expect("reshard thread");
    wait_agreed(&ports, Duration::from_secs(20));
    let during = started.elapsed();

    // After the move: zero errors. The idle instances go first, each with a write on a key
    // whose slot moved, before any other call could refresh its slot map.
    let after = owners(ports[0]);
    let moved: std::collections::HashSet<Slot> =
        (0..16384u16).filter(|&n| before[n as usize] != after[n as usize]).filter_map(Slot::new).collect();
    assert!(moved.len() >= 4000, "the moves relocated {} slots", moved.len());
    let victim = *model
        .alive()
        .iter()
        .find(|&&i| moved.contains(&session_slot(&model.sessions[i].session.token_hash)))
        .expect("a live session in a moved slot");
    assert!(idle_store
        .remove(&model.sessions[victim].session.token_hash)
        .await
        .expect("idle store: remove after the move"));
    model.sessions[victim].state = State::Removed;
    let fresh = loop {
        let (s, _) = session_at(USERS[0], SystemClock.now(), HOUR);
        if moved.contains(&session_slot(&s.token_hash)) {
            break s;
        }
    };
    idle_insert.insert(&fresh).await.expect("idle store: insert after the move");
    model.add(fresh, State::Alive);
    at = (at + 1).max(SystemClock.now());
    let alive = model.alive();
    let batch: Vec<Activity> =
        alive.iter().map(|&i| Activity { token_hash: model.sessions[i].session.token_hash, at, ip: None }).collect();
    idle_store.record_activity(&batch).await.expect("idle store: record_activity after the move");
    for &i in &alive {
        model.sessions[i].la_ok = at;
        model.sessions[i].la_max = at;
    }
    for user in USERS {
        let (s, _) = session_at(user, SystemClock.now(), HOUR);
        idle_store.insert(&s).await.expect("idle store: insert after the move");
        model.add(s, State::Alive);
    }

    // Settle what the move left uncertain, through the store that lived through it.
    for t in &mut model.sessions {
        match t.state {
            State::MaybeInserted => {
                store.insert(&t.session).await.expect("re-insert after the move");
                t.state = State::Alive;
            }
            State::MaybeRemoved => {
                store.remove(&t.session.token_hash).await.expect("re-remove after the move");
                t.state = State::Removed;
            }
            _ => {}
        }
    }
    for (name, s) in [("store", &store), ("idle store", &idle_store), ("idle insert store", &idle_insert)] {
        for t in &model.sessions {
            let got = s.get(&t.session.token_hash).await.unwrap_or_else(|e| panic!("{name}: get after the move: {e}"));
            match (t.state, got) {
                (State::Alive, Some(got)) => model.check_found(&got, "get after the move"),
                (State::Alive, None) => panic!("{name}: live session {:?} lost in the move", t.session.id),
                (State::Removed, Some(_)) => panic!("{name}: removed session {:?} is back", t.session.id),
                (State::Removed, None) => {}
                (state, _) => unreachable!("settled above: {state:?}"),
            }
        }
        for user in USERS {
            let listed = s.list_for_user(user).await.unwrap_or_else(|e| panic!("{name}: list after the move: {e}"));
            model.check_listing(user, &listed, "list_for_user after the move");
            let live = model.sessions.iter().filter(|t| t.session.user_id == user && t.state == State::Alive).count();
            assert_eq!(listed.len(), live, "{name}: {user}'s listing is exactly the live sessions");
        }
    }
    // And writes through the store that lived through the move land exactly.
    at = (at + 1).max(SystemClock.now());
    let alive = model.alive();
    let batch: Vec<Activity> =
        alive.iter().map(|&i| Activity { token_hash: model.sessions[i].session.token_hash, at, ip: None }).collect();
    store.record_activity(&batch).await.expect("record_activity after the move");
    for &i in &alive {
        let got = store.get(&model.sessions[i].session.token_hash).await.expect("get").expect("live");
        assert_eq!(got.last_active_at, at, "activity after the move landed");
    }

    let removed = model.sessions.iter().filter(|t| t.state == State::Removed).count();
    eprintln!(
        "reshard: {ops} operations during the move ({during:?}), {} Unavailable, {} sessions live, {removed} removed, total {:?}",
        errors.len(),
        alive.len(),
        started.elapsed()
    );
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for e in &errors {
        *kinds.entry(e.clone()).or_default() += 1;
    }
    let mut kinds: Vec<_> = kinds.into_iter().collect();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
    for (e, n) in kinds.iter().take(20) {
        eprintln!("  {n:>5} × {e}");
    }
}
