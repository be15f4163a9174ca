//! Build script: embeds uap-core's User-Agent rules without copying them into the repository.
//!
//! uap-core's `regexes.yaml` (Apache-2.0, not ours) ships inside the `ua-parser` crate's own
//! package at `uap-core/regexes.yaml`. We find that package with `cargo metadata`, keep only the
//! browser and OS rules (the sessions page never parses devices), and write them as JSON to
//! `$OUT_DIR/uap_regexes.json`, which `src/client_info/device.rs` embeds with `include_str!`.
//!
//! `DALEA_UAP_REGEXES=/path/to/regexes.yaml` at build time uses another copy instead (e.g.
//! Debian's `/usr/share/uap-core/regexes.yaml`, or a newer uap-core checkout). Otherwise the
//! package's own uap-core test directory is passed to the unit tests as `DALEA_UAP_TESTS_DIR`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// The fields of one `user_agent_parsers` entry. Typed (rather than a generic YAML value) so
/// that a replacement like `v1_replacement: 10` can never turn into a JSON number.
#[derive(Deserialize, Serialize)]
struct UserAgentParser {
    regex: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    family_replacement: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    v1_replacement: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    v2_replacement: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    v3_replacement: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    v4_replacement: Option<String>,
}

#[derive(Deserialize, Serialize)]
struct OsParser {
    regex: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    os_replacement: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    os_v1_replacement: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    os_v2_replacement: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    os_v3_replacement: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    os_v4_replacement: Option<String>,
}

#[derive(Deserialize)]
struct RegexesIn {
    user_agent_parsers: Vec<UserAgentParser>,
    os_parsers: Vec<OsParser>,
}

/// Same shape as `ua_parser::Regexes`; `device_parsers` stays empty on purpose.
#[derive(Serialize)]
struct RegexesOut {
    user_agent_parsers: Vec<UserAgentParser>,
    os_parsers: Vec<OsParser>,
    device_parsers: Vec<()>,
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DALEA_UAP_REGEXES");
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    // A different ua-parser version in the lock file means a different regexes.yaml.
    let lock = manifest_dir.join("Cargo.lock");
    if lock.exists() {
        println!("cargo:rerun-if-changed={}", lock.display());
    }

    let yaml_path = match env::var_os("DALEA_UAP_REGEXES") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            let uap_core = find_ua_parser_package(&manifest_dir).join("uap-core");
            // uap-core's own tests for these rules, for the crate's unit tests.
            println!("cargo:rustc-env=DALEA_UAP_TESTS_DIR={}", uap_core.join("tests").display());
            uap_core.join("regexes.yaml")
        }
    };
    println!("cargo:rerun-if-changed={}", yaml_path.display());

    let yaml = fs::read_to_string(&yaml_path).unwrap_or_else(|e| {
        panic!(
            "\n\ncannot read uap-core rules at {}: {e}\n\
             The `ua-parser` crate's package should ship them as uap-core/regexes.yaml; \
             set DALEA_UAP_REGEXES=/path/to/regexes.yaml to use another copy.\n\n",
            yaml_path.display()
        )
    });
    let parsed: RegexesIn = serde_yaml::from_str(&yaml)
        .unwrap_or_else(|e| panic!("\n\ncannot parse uap-core rules at {}: {e}\n\n", yaml_path.display()));
    if parsed.user_agent_parsers.is_empty() || parsed.os_parsers.is_empty() {
        panic!("\n\nuap-core rules at {} have no user_agent or os parsers\n\n", yaml_path.display());
    }
    let out = RegexesOut {
        user_agent_parsers: parsed.user_agent_parsers,
        os_parsers: parsed.os_parsers,
        device_parsers: Vec::new(),
    };
    let json = serde_json::to_string(&out).expect("serialising uap rules to JSON");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let target = out_dir.join("uap_regexes.json");
    fs::write(&target, json).unwrap_or_else(|e| panic!("cannot write {}: {e}", target.display()));
}

/// The directory of the `ua-parser` package this crate depends on, from `cargo metadata`.
fn find_ua_parser_package(manifest_dir: &Path) -> PathBuf {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let metadata = |offline: bool| {
        let mut cmd = Command::new(&cargo);
        cmd.arg("metadata")
            .arg("--format-version")
            .arg("1")
            .arg("--manifest-path")
            .arg(manifest_dir.join("Cargo.toml"));
        // Only the packages of the platform being built: others may not be downloaded.
        if let Ok(target) = env::var("TARGET") {
            cmd.arg("--filter-platform").arg(target);
        }
        if offline {
            cmd.arg("--offline");
        }
        cmd.output()
    };
    // Everything this build needs is already on disk, so try without the network first.
    let output = match metadata(true) {
        Ok(out) if out.status.success() => out,
        _ => metadata(false).unwrap_or_else(|e| {
            panic!("{}", not_found(&format!("cannot run `{} metadata`: {e}", cargo.to_string_lossy())))
        }),
    };
    if !output.status.success() {
        panic!(
            "{}",
            not_found(&format!(
                "`cargo metadata` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{}", not_found(&format!("`cargo metadata` output is not JSON: {e}"))));

    let packages = meta["packages"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    // Prefer the exact package the root depends on (the lock file may hold more than one).
    let wanted_id = meta["resolve"]["root"].as_str().and_then(|root| {
        meta["resolve"]["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["id"] == root)
            .and_then(|n| n["deps"].as_array()?.iter().find(|d| d["name"] == "ua_parser")?["pkg"].as_str())
    });
    let package = packages
        .iter()
        .find(|p| wanted_id.is_some_and(|id| p["id"] == id))
        .or_else(|| packages.iter().find(|p| p["name"] == "ua-parser"))
        .unwrap_or_else(|| panic!("{}", not_found("no package named `ua-parser` in `cargo metadata`")));
    let manifest = package["manifest_path"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", not_found("`ua-parser` has no manifest_path in `cargo metadata`")));
    Path::new(manifest)
        .parent()
        .unwrap_or_else(|| panic!("{}", not_found("`ua-parser` manifest_path has no parent directory")))
        .to_path_buf()
}

fn not_found(why: &str) -> String {
    format!(
        "\n\ncannot locate uap-core's regexes.yaml inside the `ua-parser` package: {why}\n\
         Set DALEA_UAP_REGEXES=/path/to/regexes.yaml to point the build at a copy.\n\n"
    )
}
