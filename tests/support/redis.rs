//! Real `redis-server` processes for tests: a standalone server, a 3-master cluster, or a master +
//! replica + 3 sentinels ([`RedisSentinelSetup`]), on free loopback ports in temp dirs, killed on
//! Drop. std + tempfile only (no redis-rs), so both
//! integration tests (`mod redis;`) and unit tests (`#[path = ...] mod redis_server;`) can use it.
//!
//! Redis missing or failing to start is a PANIC with a clear message, never a skip: CI installs
//! `redis-server` (`apt-get install -y redis-server`), and a skipped Redis test proves nothing.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(15);

fn binary(name: &str) -> PathBuf {
    let env = format!("DALEA_{}", name.to_uppercase().replace('-', "_"));
    if let Ok(p) = std::env::var(&env) {
        return PathBuf::from(p);
    }
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    // Fall back to PATH; a missing binary panics at spawn with the message below.
    PathBuf::from(name)
}

/// A loopback port that is free now, and whose cluster bus port (`port + 10000`) is free too.
fn free_port() -> u16 {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let calls = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut x = (nanos ^ (u64::from(std::process::id()) << 32) ^ calls.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
    for _ in 0..1000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Below the kernel's ephemeral range (32768+ here), bus port included: ports the
        // tests' other listeners get from port 0 never collide with a Redis about to start.
        let port = 10_000 + (x % 11_000) as u16;
        let ok = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        // Never the same port twice in one test process (a server may not have bound it yet).
        static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !handed_out.contains(&port) && ok(port) && ok(port + 10_000) {
            handed_out.push(port);
            return port;
        }
    }
    panic!("no free loopback port pair found for redis-server");
}

/// Writes one command as a RESP array on a fresh connection; the reply is left to read.
fn send(port: u16, args: &[&str]) -> std::io::Result<BufReader<TcpStream>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{}\r\n", a.len(), a));
    }
    stream.write_all(req.as_bytes())?;
    Ok(BufReader::new(stream))
}

/// Sends one command as a RESP array and returns the raw reply (simple line or bulk body).
pub fn resp_command(port: u16, args: &[&str]) -> std::io::Result<String> {
    let mut reader = send(port, args)?;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if let Some(len) = line.strip_prefix('$') {
        let len: i64 = len.trim().parse().unwrap_or(-1);
        if len < 0 {
            return Ok(String::new());
        }
        let mut body = vec![0u8; len as usize + 2];
        reader.read_exact(&mut body)?;
        body.truncate(len as usize);
        return Ok(String::from_utf8_lossy(&body).into_owned());
    }
    Ok(line.trim_end().to_string())
}

fn answers_ping(port: u16) -> bool {
    matches!(resp_command(port, &["PING"]), Ok(r) if r == "+PONG")
}

fn spawn(port: u16, dir: &Path, extra: &[&str]) -> Child {
    spawn_until(port, dir, extra, answers_ping)
}

/// Starts `redis-server` and waits until `ready(port)`.
fn spawn_until(port: u16, dir: &Path, extra: &[&str], ready: impl Fn(u16) -> bool) -> Child {
    let port_s = port.to_string();
    let dir_s = dir.to_string_lossy().into_owned();
    let mut args = vec!["--port", &port_s, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", &dir_s];
    args.extend_from_slice(extra);
    spawn_ready("redis-server", &args, dir, "redis.log", port, ready)
}

/// Starts `name` (redis-server or redis-sentinel) with `args`, logging to `dir/log_name`, and
/// waits until `ready(port)`. Panics with the log if it cannot start, exits, or never gets
/// ready: a Redis test that cannot run must fail, not skip.
fn spawn_ready(name: &str, args: &[&str], dir: &Path, log_name: &str, port: u16, ready: impl Fn(u16) -> bool) -> Child {
    let bin = binary(name);
    let log_path = dir.join(log_name);
    let log = std::fs::File::create(&log_path).expect("create log file");
    let mut child = Command::new(&bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {} ({e}): Redis tests need it installed (apt-get install -y {name})", bin.display())
        });
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if ready(port) {
            return child;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!("{name} on port {port} exited ({status}) before it was ready:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    panic!("{name} on port {port} was not ready within {START_TIMEOUT:?}:\n{log}");
}

fn stop(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A throwaway CA and a server certificate for 127.0.0.1 it signed (SAN IP:127.0.0.1), made
/// with the `openssl` CLI in `dir`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate (PEM): what a client must trust to verify the server.
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl ({e}): TLS Redis tests need the openssl CLI"));
    assert!(out.status.success(), "openssl {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

impl TlsFiles {
    pub fn generate(dir: &Path) -> TlsFiles {
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let mut ca =
            vec!["req", "-x509", "-days", "2", "-subj", "/CN=Dalea Test CA", "-keyout", "ca.key", "-out", "ca.pem"];
        ca.extend_from_slice(&ec);
        ca.extend_from_slice(&[
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &ca);
        let mut csr = vec!["req", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr"];
        csr.extend_from_slice(&ec);
        openssl(dir, &csr);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write server.ext");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ],
        );
        TlsFiles {
            ca_cert: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        }
    }
}

/// `redis-cli --tls … PING` answers PONG (verifying the server with `ca`).
fn answers_tls_ping(port: u16, ca: &Path) -> bool {
    Command::new(binary("redis-cli"))
        .args(["--tls", "--cacert"])
        .arg(ca)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "PING"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "PONG")
}

/// One standalone `redis-server`.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    child: Option<Child>,
    /// Set for a TLS-only server ([`start_tls`](Self::start_tls)).
    tls: Option<TlsFiles>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts with extra `redis-server` arguments (e.g. `["--requirepass", "x"]`).
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for redis-server");
        let port = free_port();
        let child = spawn(port, dir.path(), extra);
        RedisServer { port, dir, extra: extra.iter().map(|s| s.to_string()).collect(), child: Some(child), tls: None }
    }

    /// A TLS-only server (`--port 0 --tls-port P`, no client certificates) whose certificate
    /// for 127.0.0.1 is signed by a throwaway CA made now ([`tls_files`](Self::tls_files)).
    pub fn start_tls() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for redis-server");
        let tls = TlsFiles::generate(dir.path());
        let port = free_port();
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let extra: Vec<String> = [
            "--port".to_string(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            path(&tls.server_cert),
            "--tls-key-file".into(),
            path(&tls.server_key),
            "--tls-ca-cert-file".into(),
            path(&tls.ca_cert),
            "--tls-auth-clients".into(),
            "no".into(),
        ]
        .into();
        let args: Vec<&str> = extra.iter().map(String::as_str).collect();
        let ca = tls.ca_cert.clone();
        let child = spawn_until(port, dir.path(), &args, |p| answers_tls_ping(p, &ca));
        RedisServer { port, dir, extra, child: Some(child), tls: Some(tls) }
    }

    /// The CA and server certificate of a [`start_tls`](Self::start_tls) server.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the server (an outage). Data is lost (`--save ''`).
    pub fn kill(&mut self) {
        stop(&mut self.child);
    }

    /// Starts it again on the same port (after [`kill`](Self::kill)).
    pub fn restart(&mut self) {
        stop(&mut self.child);
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        self.child = Some(match &self.tls {
            None => spawn(self.port, self.dir.path(), &extra),
            Some(tls) => spawn_until(self.port, self.dir.path(), &extra, |p| answers_tls_ping(p, &tls.ca_cert)),
        });
    }

    /// Runs one command over plain RESP (simple or bulk string replies only); over TLS through
    /// `redis-cli` for a TLS server (its trimmed output).
    pub fn command(&self, args: &[&str]) -> String {
        let Some(tls) = &self.tls else { return resp_command(self.port, args).expect("redis command") };
        let out = Command::new(binary("redis-cli"))
            .args(["--tls", "--cacert"])
            .arg(&tls.ca_cert)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// A Redis Cluster of `n` masters, no replicas.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    dirs: Vec<tempfile::TempDir>,
    children: Vec<Option<Child>>,
}

impl RedisCluster {
    pub fn start(masters: usize) -> Self {
        assert!(masters >= 3, "redis-cli --cluster create needs at least 3 masters");
        let mut cluster = RedisCluster { ports: Vec::new(), dirs: Vec::new(), children: Vec::new() };
        for _ in 0..masters {
            let dir = tempfile::tempdir().expect("temp dir for redis-server");
            let mut port = free_port();
            while cluster.ports.contains(&port) {
                port = free_port();
            }
            let child = spawn(
                port,
                dir.path(),
                &["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"],
            );
            cluster.ports.push(port);
            cluster.dirs.push(dir);
            cluster.children.push(Some(child));
        }
        let cli = binary("redis-cli");
        let addrs: Vec<String> = cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new(&cli)
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} ({e}): install redis-tools/redis-server", cli.display()));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + START_TIMEOUT;
        for &port in &cluster.ports {
            loop {
                let info = resp_command(port, &["CLUSTER", "INFO"]).unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster node {port} not ok within {START_TIMEOUT:?}: {info}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
    }

    /// Seed URLs of every node.
    pub fn nodes(&self) -> Vec<String> {
        self.ports.iter().map(|p| format!("redis://127.0.0.1:{p}/")).collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            stop(c);
        }
    }
}

/// Reads one RESP reply of any shape, flattened to strings (arrays become their elements; nil
/// becomes nothing; simple strings, errors and integers keep their prefix character).
fn read_reply(reader: &mut impl BufRead, out: &mut Vec<String>) -> std::io::Result<()> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let line = line.trim_end();
    if let Some(n) = line.strip_prefix('*') {
        for _ in 0..n.parse::<i64>().unwrap_or(0).max(0) {
            read_reply(reader, out)?;
        }
    } else if let Some(len) = line.strip_prefix('$') {
        let len: i64 = len.parse().unwrap_or(-1);
        if len >= 0 {
            let mut body = vec![0u8; len as usize + 2];
            reader.read_exact(&mut body)?;
            body.truncate(len as usize);
            out.push(String::from_utf8_lossy(&body).into_owned());
        }
    } else {
        out.push(line.to_string());
    }
    Ok(())
}

/// Sends one command and returns the reply flattened by [`read_reply`].
pub fn resp_values(port: u16, args: &[&str]) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    read_reply(&mut send(port, args)?, &mut out)?;
    Ok(out)
}

/// The master name the sentinels of [`RedisSentinelSetup`] monitor.
pub const SENTINEL_MASTER: &str = "mymaster";

/// A master, one replica (`--replicaof`) and three sentinels (quorum 2, down after 1 s) on
/// free loopback ports, ready when every sentinel names the master and knows the replica and
/// the other sentinels. Everything is killed on Drop.
pub struct RedisSentinelSetup {
    /// Data nodes: `[0]` starts as the master, `[1]` as its replica.
    pub data_ports: Vec<u16>,
    pub sentinel_ports: Vec<u16>,
    data: Vec<Option<Child>>,
    sentinels: Vec<Option<Child>>,
    dirs: Vec<tempfile::TempDir>,
}

impl RedisSentinelSetup {
    pub fn start() -> Self {
        let mut used: Vec<u16> = Vec::new();
        let mut fresh_port = || loop {
            let p = free_port();
            if !used.contains(&p) {
                used.push(p);
                return p;
            }
        };
        let mut setup = RedisSentinelSetup {
            data_ports: Vec::new(),
            sentinel_ports: Vec::new(),
            data: Vec::new(),
            sentinels: Vec::new(),
            dirs: Vec::new(),
        };
        let master = fresh_port();
        let dir = tempfile::tempdir().expect("temp dir for redis-server");
        setup.data.push(Some(spawn(master, dir.path(), &[])));
        setup.data_ports.push(master);
        setup.dirs.push(dir);
        let replica = fresh_port();
        let dir = tempfile::tempdir().expect("temp dir for redis-server");
        let master_s = master.to_string();
        setup.data.push(Some(spawn(replica, dir.path(), &["--replicaof", "127.0.0.1", &master_s])));
        setup.data_ports.push(replica);
        setup.dirs.push(dir);
        wait_until(START_TIMEOUT, "the replica to sync with the master", || {
            resp_command(replica, &["INFO", "replication"]).unwrap_or_default().contains("master_link_status:up")
        });
        for _ in 0..3 {
            let port = fresh_port();
            let dir = tempfile::tempdir().expect("temp dir for redis-sentinel");
            setup.sentinels.push(Some(spawn_sentinel(port, master, dir.path())));
            setup.sentinel_ports.push(port);
            setup.dirs.push(dir);
        }
        let want = format!("address=127.0.0.1:{master},slaves=1,sentinels=3");
        for &port in &setup.sentinel_ports.clone() {
            wait_until(START_TIMEOUT, &format!("sentinel {port} to see the master, the replica and its peers"), || {
                resp_command(port, &["INFO", "sentinel"]).unwrap_or_default().contains(&want)
            });
        }
        setup
    }

    /// The sentinels' URLs (`redis://127.0.0.1:port`).
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinel_ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect()
    }

    /// The master's port as the first sentinel that answers names it.
    pub fn current_master_port(&self) -> u16 {
        for &port in &self.sentinel_ports {
            if let Ok(reply) = resp_values(port, &["SENTINEL", "get-master-addr-by-name", SENTINEL_MASTER]) {
                if let Some(p) = reply.get(1).and_then(|p| p.parse().ok()) {
                    return p;
                }
            }
        }
        panic!("no sentinel names a master for {SENTINEL_MASTER}");
    }

    /// Kills the current master's process (a failover follows once the sentinels agree).
    /// Returns its port.
    pub fn kill_master(&mut self) -> u16 {
        let port = self.current_master_port();
        let i = self.data_ports.iter().position(|&p| p == port).expect("the master is one of ours");
        stop(&mut self.data[i]);
        port
    }

    /// Waits until every sentinel names a master other than `old` and that node answers as
    /// master; returns its port. Panics after `within`.
    pub fn wait_for_failover(&self, old: u16, within: Duration) -> u16 {
        let mut new = 0;
        wait_until(within, &format!("the sentinels to promote a replica after {old} died"), || {
            let ports: Vec<Option<u16>> = self
                .sentinel_ports
                .iter()
                .map(|&s| {
                    resp_values(s, &["SENTINEL", "get-master-addr-by-name", SENTINEL_MASTER])
                        .ok()
                        .and_then(|r| r.get(1).and_then(|p| p.parse().ok()))
                })
                .collect();
            match ports.first() {
                Some(&Some(p)) if p != old && ports.iter().all(|q| *q == Some(p)) => {
                    new = p;
                    resp_values(p, &["ROLE"]).map(|r| r.first().map(String::as_str) == Some("master")).unwrap_or(false)
                }
                _ => false,
            }
        });
        new
    }

    /// Waits until the replica has every write the master accepted so far (replication is
    /// asynchronous): one write then `WAIT 1` on the same connection, as the replication
    /// stream is ordered.
    pub fn sync_replica(&self) {
        let port = self.current_master_port();
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the master");
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
        let req =
            "*3\r\n$3\r\nSET\r\n$15\r\ndalea-test-sync\r\n$1\r\n1\r\n*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$4\r\n3000\r\n";
        stream.write_all(req.as_bytes()).expect("send SET + WAIT");
        let mut reader = BufReader::new(stream);
        let mut replies = Vec::new();
        read_reply(&mut reader, &mut replies).expect("SET reply");
        read_reply(&mut reader, &mut replies).expect("WAIT reply");
        assert_eq!(replies, ["+OK", ":1"], "the replica did not acknowledge the master's writes");
    }
}

impl Drop for RedisSentinelSetup {
    fn drop(&mut self) {
        for c in self.sentinels.iter_mut().chain(self.data.iter_mut()) {
            stop(c);
        }
    }
}

fn wait_until(within: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn_sentinel(port: u16, master: u16, dir: &Path) -> Child {
    let conf = dir.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {dir}\n\
             sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master} 2\n\
             sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
             sentinel failover-timeout {SENTINEL_MASTER} 3000\n\
             sentinel parallel-syncs {SENTINEL_MASTER} 1\n",
            dir = dir.display()
        ),
    )
    .expect("write sentinel.conf");
    let conf_s = conf.to_string_lossy().into_owned();
    spawn_ready("redis-sentinel", &[&conf_s], dir, "sentinel.log", port, answers_ping)
}
