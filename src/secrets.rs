//! Encryption at rest for per-person secrets (such as TOTP seeds): AES-256-GCM under one
//! gateway key, with the secret's purpose bound in as associated data.
//!
//! A sealed value is `1 (version) ++ nonce (12 bytes) ++ ciphertext ++ tag (16 bytes)`. The
//! purpose (for example `totp:<user id>`) is not stored: the caller supplies it again when
//! opening, so a value copied to another person or another use does not decrypt.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::alphabet::STANDARD;
use base64::engine::general_purpose::STANDARD as STANDARD_PADDED;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use zeroize::Zeroizing;

use crate::session::token::random_bytes;

/// Length of the key in bytes (AES-256).
pub const KEY_LEN: usize = 32;
const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const KEY_HINT: &str = "it must be 32 bytes of base64, e.g. from `openssl rand -base64 32`";

/// Standard base64 that accepts input with or without `=` padding.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The 256-bit key that seals per-person secrets. Never printed; wiped from memory on drop.
#[derive(Clone)]
pub struct SecretKey(Zeroizing<[u8; KEY_LEN]>);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// A fresh random key from the operating system.
    pub fn generate() -> SecretKey {
        SecretKey(Zeroizing::new(random_bytes::<KEY_LEN>()))
    }

    /// Parses standard base64 (padding optional, surrounding whitespace ignored) of exactly
    /// 32 bytes. Error messages never repeat the key text.
    pub fn from_base64(s: &str) -> Result<SecretKey, String> {
        let text = s.trim();
        if text.is_empty() {
            return Err(format!("the key is empty; {KEY_HINT}"));
        }
        let bytes = Zeroizing::new(
            LENIENT_BASE64.decode(text).map_err(|_| format!("the key is not valid base64; {KEY_HINT}"))?,
        );
        let array: [u8; KEY_LEN] =
            bytes.as_slice().try_into().map_err(|_| format!("the key is {} bytes long; {KEY_HINT}", bytes.len()))?;
        Ok(SecretKey(Zeroizing::new(array)))
    }

    /// Reads the key file at `path` (base64 text), or creates it with a fresh key, readable by
    /// the owner only, when it does not exist. Safe when several processes start at once: the
    /// file appears complete or not at all, and whoever comes second reads the winner's key.
    pub fn load_or_create(path: &Path) -> Result<SecretKey, String> {
        match read_key_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => create_key_file(path),
            other => other.map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?,
        }
    }

    /// Seals `plaintext` for `purpose` with a fresh random nonce.
    pub fn encrypt(&self, purpose: &str, plaintext: &[u8]) -> Vec<u8> {
        let nonce = random_bytes::<NONCE_LEN>();
        let payload = Payload { msg: plaintext, aad: purpose.as_bytes() };
        #[allow(clippy::expect_used)]
        let sealed =
            self.cipher().encrypt(Nonce::from_slice(&nonce), payload).expect("AES-GCM seals any message under 64 GiB");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a value sealed by [`SecretKey::encrypt`] for the same `purpose`. `None` when the
    /// key or purpose differ, or the data is truncated, altered or of an unknown version.
    pub fn decrypt(&self, purpose: &str, data: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let (&version, rest) = data.split_first()?;
        if version != VERSION || rest.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let payload = Payload { msg: sealed, aad: purpose.as_bytes() };
        self.cipher().decrypt(Nonce::from_slice(nonce), payload).ok().map(Zeroizing::new)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(self.0.as_slice()))
    }

    fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD_PADDED.encode(self.0.as_slice()))
    }
}

/// Ok(Ok(key)) for a good file, Ok(Err(message)) for a file that is not a key, Err for I/O.
fn read_key_file(path: &Path) -> io::Result<Result<SecretKey, String>> {
    let text = Zeroizing::new(fs::read_to_string(path)?);
    Ok(SecretKey::from_base64(&text).map_err(|e| format!("the key file {} is not usable: {e}", path.display())))
}

/// Writes a new key to a private temporary file, then links it into place: linking fails if
/// another process got there first, in which case its key is the one to use.
fn create_key_file(path: &Path) -> Result<SecretKey, String> {
    let key = SecretKey::generate();
    let temp = temp_path(path);
    write_private(&temp, key.to_base64().as_bytes())
        .map_err(|e| format!("cannot create the key file {}: {e}", path.display()))?;
    let linked = fs::hard_link(&temp, path);
    // Best effort: a leftover temporary file is harmless and holds nobody else's key.
    let _ = fs::remove_file(&temp);
    match linked {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            read_key_file(path).map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?
        }
        Err(e) => Err(format!("cannot create the key file {}: {e}", path.display())),
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let suffix: String = random_bytes::<8>().iter().map(|b| format!("{b:02x}")).collect();
    path.with_file_name(format!(".{name}.{suffix}.tmp"))
}

fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(contents)?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::{Arc, Barrier};

    const PURPOSE: &str = "totp:user-1";

    fn same_key(a: &SecretKey, b: &SecretKey) -> bool {
        a.0.as_slice() == b.0.as_slice()
    }

    #[test]
    fn round_trip() {
        let key = SecretKey::generate();
        for plaintext in [&b""[..], b"x", b"twenty bytes of seed", &[0u8; 1000]] {
            let sealed = key.encrypt(PURPOSE, plaintext);
            assert_eq!(sealed.len(), 1 + NONCE_LEN + plaintext.len() + TAG_LEN);
            assert_eq!(sealed[0], VERSION);
            assert_eq!(key.decrypt(PURPOSE, &sealed).as_deref().map(Vec::as_slice), Some(plaintext));
        }
    }

    #[test]
    fn nonces_are_fresh() {
        let key = SecretKey::generate();
        let a = key.encrypt(PURPOSE, b"same");
        let b = key.encrypt(PURPOSE, b"same");
        assert_ne!(a, b);
        assert_ne!(a[1..1 + NONCE_LEN], b[1..1 + NONCE_LEN]);
    }

    #[test]
    fn wrong_purpose_does_not_open() {
        let key = SecretKey::generate();
        let sealed = key.encrypt("totp:user-1", b"seed");
        assert!(key.decrypt("totp:user-2", &sealed).is_none());
        assert!(key.decrypt("recovery:user-1", &sealed).is_none());
        assert!(key.decrypt("", &sealed).is_none());
    }

    #[test]
    fn wrong_key_does_not_open() {
        let sealed = SecretKey::generate().encrypt(PURPOSE, b"seed");
        assert!(SecretKey::generate().decrypt(PURPOSE, &sealed).is_none());
    }

    #[test]
    fn tampering_anywhere_is_refused() {
        let key = SecretKey::generate();
        let sealed = key.encrypt(PURPOSE, b"twenty bytes of seed");
        // Every byte of every region: version, nonce, ciphertext, tag.
        for i in 0..sealed.len() {
            let region = match i {
                0 => "version",
                i if i <= NONCE_LEN => "nonce",
                i if i < sealed.len() - TAG_LEN => "ciphertext",
                _ => "tag",
            };
            let mut altered = sealed.clone();
            altered[i] ^= 0x01;
            assert!(key.decrypt(PURPOSE, &altered).is_none(), "flipped {region} byte {i} still opened");
        }
        let mut version_2 = sealed.clone();
        version_2[0] = 2;
        assert!(key.decrypt(PURPOSE, &version_2).is_none());
        let mut extended = sealed.clone();
        extended.push(0);
        assert!(key.decrypt(PURPOSE, &extended).is_none());
        let mut swapped = sealed.clone();
        swapped[1..1 + NONCE_LEN].copy_from_slice(&key.encrypt(PURPOSE, b"other")[1..1 + NONCE_LEN]);
        assert!(key.decrypt(PURPOSE, &swapped).is_none());
    }

    #[test]
    fn truncation_is_refused() {
        let key = SecretKey::generate();
        let sealed = key.encrypt(PURPOSE, b"seed");
        for len in 0..sealed.len() {
            assert!(key.decrypt(PURPOSE, &sealed[..len]).is_none(), "prefix of {len} bytes opened");
        }
        let empty = key.encrypt(PURPOSE, b"");
        assert!(key.decrypt(PURPOSE, &empty[..empty.len() - 1]).is_none());
    }

    #[test]
    fn base64_accepts_padding_or_not_and_whitespace() {
        let key = SecretKey::generate();
        let padded = key.to_base64();
        assert!(padded.ends_with('='));
        let unpadded = padded.trim_end_matches('=');
        for text in [padded.as_str(), unpadded, &format!("  {}\n", padded.as_str()), &format!("\t{unpadded} \r\n")] {
            let parsed = SecretKey::from_base64(text).expect("parses");
            assert!(same_key(&parsed, &key));
        }
    }

    #[test]
    fn base64_errors_are_clear() {
        let empty = SecretKey::from_base64("  \n").expect_err("empty");
        assert!(empty.contains("empty") && empty.contains("openssl rand -base64 32"), "{empty}");

        let not_base64 = SecretKey::from_base64("this is not base64!").expect_err("garbage");
        assert!(not_base64.contains("not valid base64") && not_base64.contains("32 bytes"), "{not_base64}");
        assert!(!not_base64.contains("this is not"), "the key text must not be echoed");

        let short = SecretKey::from_base64(&STANDARD_PADDED.encode([7u8; 16])).expect_err("16 bytes");
        assert!(short.contains("16 bytes long") && short.contains("32 bytes"), "{short}");

        let long = SecretKey::from_base64(&STANDARD_PADDED.encode([7u8; 33])).expect_err("33 bytes");
        assert!(long.contains("33 bytes long"), "{long}");

        let url_safe = "-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-";
        assert!(SecretKey::from_base64(url_safe).is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let key = SecretKey::from_base64(&STANDARD_PADDED.encode([0xAB; 32])).expect("valid");
        assert_eq!(format!("{key:?}"), "SecretKey(..)");
        assert_eq!(format!("{:?}", Some(&key)), "Some(SecretKey(..))");
    }

    #[test]
    fn load_or_create_makes_a_private_file_and_reads_it_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secrets.key");
        let created = SecretKey::load_or_create(&path).expect("created");
        let mode = fs::metadata(&path).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = fs::read_to_string(&path).expect("readable");
        assert!(same_key(&SecretKey::from_base64(&text).expect("base64 key"), &created));

        let again = SecretKey::load_or_create(&path).expect("re-read");
        assert!(same_key(&again, &created));
        let sealed = created.encrypt(PURPOSE, b"seed");
        assert_eq!(again.decrypt(PURPOSE, &sealed).as_deref().map(Vec::as_slice), Some(&b"seed"[..]));

        let leftovers: Vec<_> = fs::read_dir(dir.path()).expect("dir").collect();
        assert_eq!(leftovers.len(), 1, "no temporary files left behind");
    }

    #[test]
    fn load_or_create_uses_an_operator_written_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secrets.key");
        let key = SecretKey::generate();
        fs::write(&path, format!("{}\n", key.to_base64().as_str())).expect("write");
        assert!(same_key(&SecretKey::load_or_create(&path).expect("loaded"), &key));
    }

    #[test]
    fn load_or_create_refuses_a_bad_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secrets.key");
        fs::write(&path, "short").expect("write");
        let err = SecretKey::load_or_create(&path).expect_err("bad key");
        assert!(err.contains("secrets.key") && err.contains("32 bytes"), "{err}");
        assert_eq!(fs::read_to_string(&path).expect("still there"), "short", "a bad file is never overwritten");

        let missing_dir = dir.path().join("nope").join("secrets.key");
        let err = SecretKey::load_or_create(&missing_dir).expect_err("no directory");
        assert!(err.contains("cannot create the key file"), "{err}");
    }

    #[test]
    fn concurrent_creation_yields_one_key() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = Arc::new(dir.path().join("secrets.key"));
            let threads = 8;
            let barrier = Arc::new(Barrier::new(threads));
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let (path, barrier) = (Arc::clone(&path), Arc::clone(&barrier));
                    std::thread::spawn(move || {
                        barrier.wait();
                        SecretKey::load_or_create(&path)
                    })
                })
                .collect();
            let keys: Vec<SecretKey> = handles.into_iter().map(|h| h.join().expect("thread").expect("key")).collect();
            let on_disk = SecretKey::from_base64(&fs::read_to_string(&*path).expect("file")).expect("key");
            assert!(keys.iter().all(|k| same_key(k, &on_disk)));
        }
    }
}
