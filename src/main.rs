//! The `dalea-gateway` command: `serve`, `check-config`, `hash-password`. Wiring only.

/// mimalloc instead of the system allocator: a proxied request allocates and frees dozens of
/// small buffers (headers, futures), and glibc's malloc spent about a fifth of the gateway's
/// instructions on them (callgrind, see the README's load benchmark section).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use dalea_gateway::auth::{password, UserDirectory};
use dalea_gateway::client_info::{ClientInfoError, ClientInfoResolver};
use dalea_gateway::clock::SystemClock;
use dalea_gateway::config::{Config, Overrides};

#[derive(Parser)]
#[command(name = "dalea-gateway", version, about = "Reverse-proxy authentication gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[arg(long)]
        config: PathBuf,
        /// Public listener, beats `[server] listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Admin listener, beats `[server] admin_listen`.
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
        /// Directory of the embedded store, replaces `[store] path`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Log as JSON lines.
        #[arg(long)]
        log_json: bool,
    },
    /// Load the configuration exactly as `serve` would (environment included) and report.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Read a password from standard input and print its argon2id hash for the users file.
    HashPassword,
    /// Remove a person's authenticator app (TOTP), e.g. after a lost phone. With the embedded
    /// store, stop the gateway first.
    ResetTotp {
        #[arg(long)]
        config: PathBuf,
        /// The person's email, as in the users file.
        #[arg(long)]
        email: String,
        /// Directory of the embedded store, replaces `[store] path`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    dalea_gateway::session::redis::install_crypto_provider(); // rustls (rediss://): ring, once
    match Cli::parse().command {
        Command::Serve { config, listen, admin_listen, data_dir, log_json } => {
            init_logging(log_json);
            let overrides = Overrides { listen, admin_listen, data_dir };
            serve(&config, &overrides)
        }
        Command::ResetTotp { config, email, data_dir } => {
            let overrides = Overrides { data_dir, ..Overrides::default() };
            let loaded = match Config::load(&config, &overrides) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{}: {e}", config.display());
                    return ExitCode::from(2);
                }
            };
            match dalea_gateway::account::totp::operator_reset(loaded, &email) {
                Ok(true) => {
                    println!("{email}: authenticator app removed; they can set up a new one after signing in");
                    ExitCode::SUCCESS
                }
                Ok(false) => {
                    println!("{email}: had no authenticator app; nothing changed");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("reset-totp: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { config } => match check_config(&config) {
            Ok(()) => {
                println!("{}: OK", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", config.display());
                ExitCode::FAILURE
            }
        },
        Command::HashPassword => hash_password(),
    }
}

fn serve(path: &std::path::Path, overrides: &Overrides) -> ExitCode {
    let config = match Config::load(path, overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let (listen, admin) = (config.server.listen, config.server.admin_listen);
    match dalea_gateway::server::build(config, Arc::new(SystemClock)) {
        Ok(built) => {
            tracing::info!(%listen, %admin, "dalea-gateway starting");
            built.server.run(pingora::server::RunArgs::default());
            dalea_gateway::server::final_flush(&built.state);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot start: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Everything `serve` reads before it listens, except opening the store (which a running
/// gateway holds): the config with its environment, the users file and the GeoIP database.
fn check_config(path: &std::path::Path) -> Result<(), String> {
    let config = Config::load(path, &Overrides::default()).map_err(|e| e.to_string())?;
    UserDirectory::load(&config.users.file).map_err(|e| format!("users.file: {}", config.users.annotate(e)))?;
    let info = &config.client_info;
    match ClientInfoResolver::new(info.trusted_proxies.clone(), info.geoip_database.as_deref()) {
        Ok(_) => {}
        // What `serve` does too: run without locations (and without location warnings).
        Err(e @ ClientInfoError::GeoIpOpen { .. }) if info.geoip_optional => eprintln!(
            "{}: note: client_info.geoip_database: {e}; geoip_optional is set, so the gateway will run without \
             locations and without location warnings",
            path.display()
        ),
        Err(e) => return Err(format!("client_info.geoip_database: {e}")),
    }
    if config.secrets == dalea_gateway::config::KeySource::Missing {
        eprintln!(
            "{}: note: secrets.encryption_key is not set, so people cannot set up an authenticator app \
             (TOTP); set one key shared by every replica",
            path.display()
        );
    }
    Ok(())
}

fn hash_password() -> ExitCode {
    let mut input = String::new();
    if std::io::stdin().read_to_string(&mut input).is_err() {
        eprintln!("could not read a password from standard input");
        return ExitCode::FAILURE;
    }
    let pw = input.strip_suffix('\n').map(|p| p.strip_suffix('\r').unwrap_or(p)).unwrap_or(&input);
    if pw.is_empty() {
        eprintln!("the password is empty");
        return ExitCode::FAILURE;
    }
    match password::hash(pw) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hashing failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    // pingora's own debug output prints proxied headers and bodies (the apps' cookies and
    // bearer tokens); keep it at info unless RUST_LOG names pingora explicitly.
    let wanted = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string());
    let directives =
        if wanted.contains("pingora") { wanted } else { format!("{wanted},pingora_core=info,pingora_proxy=info") };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,pingora_core=info,pingora_proxy=info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
