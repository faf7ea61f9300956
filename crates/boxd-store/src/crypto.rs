//! Encryption of secret values at rest: the master key file and sealing.
//!
//! Owns the master key file (outside the database) and XChaCha20-Poly1305
//! sealing of one value at a time, with a fresh 24-byte random nonce per
//! value and associated data ([`Aad`]) binding the value to where it
//! belongs (team, box, kind, name, pattern), so a value moved to another
//! row, box or team no longer opens.
//!
//! Key file format: UTF-8 text, one key per line, `k<N>:<base64 of 32
//! bytes>` (standard alphabet, padded), ids unique, the last line the
//! current key. Mode 0600, a regular file; anything else is refused.
//!
//! Never prints, logs or returns a key or a plaintext in `Debug` output or
//! an error. Keys and opened plaintexts are zeroized when dropped.

use crate::error::{Result, StoreError};
use crate::random_bytes;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use zeroize::{Zeroize, Zeroizing};

/// Length of a master key in bytes.
pub const KEY_LEN: usize = 32;
/// Length of an XChaCha20-Poly1305 nonce in bytes.
pub const NONCE_LEN: usize = 24;
/// Largest key file accepted (about 200 keys), to refuse a wrong file early.
const MAX_KEY_FILE_LEN: u64 = 16 * 1024;

/// The id of a master key, e.g. `k1`.
pub type KeyId = String;

/// What a sealed value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKind {
    /// An attach header's value (team-level or per box).
    AttachHeader,
    /// A placeholder secret's value (per box).
    Secret,
    /// The egress proxy's CA private key.
    CaKey,
    /// A box's coding-agent API key (per box; `name` is `agent_api_key`).
    AgentKey,
    /// A header value of one of a box's remote MCP servers (per box;
    /// `pattern` is the server's name, `name` the header's).
    McpHeader,
}

impl SecretKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::AttachHeader => "attach_header",
            SecretKind::Secret => "secret",
            SecretKind::CaKey => "ca_key",
            SecretKind::AgentKey => "agent_key",
            SecretKind::McpHeader => "mcp_header",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<SecretKind> {
        match s {
            "attach_header" => Ok(SecretKind::AttachHeader),
            "secret" => Ok(SecretKind::Secret),
            "ca_key" => Ok(SecretKind::CaKey),
            "agent_key" => Ok(SecretKind::AgentKey),
            "mcp_header" => Ok(SecretKind::McpHeader),
            other => Err(StoreError::Invalid(format!("secret kind {other:?}"))),
        }
    }
}

/// Where a sealed value belongs; authenticated with it, never encrypted.
/// `scope` is the host pattern of an attach header and the hosts JSON of a
/// secret, so the places a value may be sent to cannot be changed in the
/// database without the value failing to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aad {
    pub team_id: String,
    pub box_id: Option<String>,
    pub kind: SecretKind,
    pub name: String,
    pub scope: String,
}

impl Aad {
    /// Unambiguous bytes: a version tag, then every field as a 4-byte
    /// big-endian length and its bytes (`box_id` absent = `u32::MAX`).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = b"boxd-aad-v1".to_vec();
        let mut field = |bytes: Option<&[u8]>| match bytes {
            Some(b) => {
                let len = u32::try_from(b.len()).unwrap_or(u32::MAX - 1);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(b);
            }
            None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
        };
        field(Some(self.team_id.as_bytes()));
        field(self.box_id.as_deref().map(str::as_bytes));
        field(Some(self.kind.as_str().as_bytes()));
        field(Some(self.name.as_bytes()));
        field(Some(self.scope.as_bytes()));
        out
    }
}

/// A value as stored: the key it was sealed under, its nonce and the
/// ciphertext (with the 16-byte tag). Safe to print: it holds no plaintext.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: KeyId,
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

/// One master key; zeroized on drop.
struct MasterKey {
    id: KeyId,
    key: Zeroizing<[u8; KEY_LEN]>,
}

/// The loaded master keys: every key still able to open old values, and
/// the current one new values are sealed under.
pub struct MasterKeys {
    /// Never empty; the last one is current.
    keys: Vec<MasterKey>,
}

impl fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKeys")
            .field("ids", &self.key_ids())
            .finish_non_exhaustive()
    }
}

fn key_file_error(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::KeyFile {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

impl MasterKeys {
    /// Loads the key file at `path`, or creates it with one fresh key
    /// (`k1`) if there is none. The file must be a regular file with mode
    /// 0600 or stricter (no group or other bits).
    pub fn load_or_create(path: &Path) -> Result<MasterKeys> {
        match MasterKeys::load(path) {
            Err(StoreError::KeyFile { .. }) if !exists_at_all(path) => {
                let keys = MasterKeys {
                    keys: vec![MasterKey::generate("k1".into())?],
                };
                match write_new(path, &keys.to_text()) {
                    Ok(()) => Ok(keys),
                    // Another process created it first: use theirs.
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => MasterKeys::load(path),
                    Err(e) => Err(key_file_error(path, format!("cannot create: {e}"))),
                }
            }
            other => other,
        }
    }

    /// Loads an existing key file.
    pub fn load(path: &Path) -> Result<MasterKeys> {
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| key_file_error(path, format!("cannot open: {e}")))?;
        let meta = file
            .metadata()
            .map_err(|e| key_file_error(path, format!("cannot stat: {e}")))?;
        if !meta.file_type().is_file() {
            return Err(key_file_error(path, "not a regular file"));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(key_file_error(
                path,
                format!(
                    "mode {:04o} gives group or other access; it must be 0600",
                    meta.mode() & 0o7777
                ),
            ));
        }
        if meta.len() > MAX_KEY_FILE_LEN {
            return Err(key_file_error(path, "too large to be a key file"));
        }
        let mut text = Zeroizing::new(String::new());
        file.read_to_string(&mut text)
            .map_err(|e| key_file_error(path, format!("cannot read: {e}")))?;
        MasterKeys::parse(&text).map_err(|reason| key_file_error(path, reason))
    }

    /// Appends a new current key to the file at `path` (rewritten
    /// atomically and durably: a new 0600 file, fsynced, renamed over the
    /// old one, the folder fsynced).
    /// Values sealed before stay readable under their old key id until
    /// [`crate::Store::reseal_all`] moves them. Returns the new key's id.
    /// Not safe against a concurrent `rotate` of the same file (one of the
    /// two new keys would be lost): run it from the one process that owns
    /// the data directory.
    pub fn rotate(path: &Path) -> Result<KeyId> {
        let mut keys = MasterKeys::load(path)?;
        let next = keys
            .keys
            .iter()
            .filter_map(|k| k.id.strip_prefix('k')?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let id = format!("k{next}");
        keys.keys.push(MasterKey::generate(id.clone())?);
        replace_durably(path, &keys.to_text())
            .map_err(|e| key_file_error(path, format!("cannot rewrite: {e}")))?;
        Ok(id)
    }

    /// The id of the key new values are sealed under.
    pub fn current_id(&self) -> &str {
        self.current().id.as_str()
    }

    /// Every loaded key id, oldest first.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// Encrypts `plaintext` under the current key with a fresh random
    /// nonce, bound to `aad`.
    pub fn seal(&self, aad: &Aad, plaintext: &[u8]) -> Result<Sealed> {
        let key = self.current();
        let nonce = random_bytes::<NONCE_LEN>()?;
        let cipher = XChaCha20Poly1305::new(key.key.as_ref().into());
        let ciphertext = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad.encode(),
                },
            )
            .map_err(|_| StoreError::Invalid("value: too long to encrypt".into()))?;
        Ok(Sealed {
            key_id: key.id.clone(),
            nonce,
            ciphertext,
        })
    }

    /// Decrypts `sealed`, checking it belongs to `aad`. The plaintext is
    /// zeroized when the returned buffer is dropped.
    pub fn open(&self, aad: &Aad, sealed: &Sealed) -> Result<Zeroizing<Vec<u8>>> {
        let key = self
            .keys
            .iter()
            .find(|k| k.id == sealed.key_id)
            .ok_or_else(|| StoreError::UnknownKey(sealed.key_id.clone()))?;
        let cipher = XChaCha20Poly1305::new(key.key.as_ref().into());
        cipher
            .decrypt(
                XNonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &aad.encode(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| StoreError::Decrypt(describe(aad)))
    }

    fn current(&self) -> &MasterKey {
        // `keys` is never empty (parse and load_or_create ensure it).
        &self.keys[self.keys.len() - 1]
    }

    fn parse(text: &str) -> std::result::Result<MasterKeys, String> {
        let mut keys: Vec<MasterKey> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let Some((id, b64)) = line.split_once(':') else {
                return Err(format!("line {}: expected `k<N>:<base64>`", n + 1));
            };
            let valid_id = id
                .strip_prefix('k')
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
            if !valid_id {
                return Err(format!("line {}: key id must be `k<N>`", n + 1));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(format!("line {}: key id {id} appears twice", n + 1));
            }
            let mut bytes = Zeroizing::new(Vec::new());
            if STANDARD.decode_vec(b64, &mut bytes).is_err() {
                return Err(format!("line {}: key {id} is not valid base64", n + 1));
            }
            if bytes.len() != KEY_LEN {
                return Err(format!(
                    "line {}: key {id} must be {KEY_LEN} bytes, not {}",
                    n + 1,
                    bytes.len()
                ));
            }
            let mut key = Zeroizing::new([0u8; KEY_LEN]);
            key.copy_from_slice(&bytes);
            keys.push(MasterKey {
                id: id.to_owned(),
                key,
            });
        }
        if keys.is_empty() {
            return Err("holds no key".into());
        }
        Ok(MasterKeys { keys })
    }

    fn to_text(&self) -> Zeroizing<String> {
        let mut text = Zeroizing::new(String::new());
        for k in &self.keys {
            let mut b64 = STANDARD.encode(k.key.as_ref());
            text.push_str(&k.id);
            text.push(':');
            text.push_str(&b64);
            text.push('\n');
            b64.zeroize();
        }
        text
    }
}

impl MasterKey {
    fn generate(id: KeyId) -> Result<MasterKey> {
        let mut bytes = random_bytes::<KEY_LEN>()?;
        let key = Zeroizing::new(bytes);
        bytes.zeroize();
        Ok(MasterKey { id, key })
    }
}

/// What an error may say about a value: where it belongs, nothing more.
fn describe(aad: &Aad) -> String {
    format!(
        "{} {:?} of team {}{}",
        aad.kind.as_str(),
        aad.name,
        aad.team_id,
        aad.box_id
            .as_deref()
            .map(|b| format!(", box {b}"))
            .unwrap_or_default()
    )
}

/// Anything at `path`, a dangling symlink included.
fn exists_at_all(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// Creates `path` (which must not exist) with mode 0600 and `text`, durably:
/// the file and then its folder are fsynced, so a sealed value never
/// outlives the key it was sealed under. Not a rename over `path` like
/// [`replace_durably`]: of two processes creating the key file at once,
/// the second must find the first one's keys, not replace them.
fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let result = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all());
    if result.is_err() {
        let _ = fs::remove_file(path);
        return result;
    }
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => File::open(dir).and_then(|d| d.sync_all()),
        None => File::open(".").and_then(|d| d.sync_all()),
    }
}

/// Replaces the key file at `path` with `text` through `atomic-write-file`:
/// a uniquely named 0600 file beside it, fsynced, renamed over it, the
/// folder fsynced; a failure leaves the old file and no temporary file.
fn replace_durably(path: &Path, text: &str) -> std::io::Result<()> {
    use atomic_write_file::unix::OpenOptionsExt as _;
    let mut file = atomic_write_file::OpenOptions::new()
        .mode(0o600)
        .preserve_mode(false)
        .preserve_owner(false)
        .open(path)?;
    match file.write_all(text.as_bytes()) {
        Ok(()) => file.commit(),
        Err(e) => {
            let _ = file.discard();
            Err(e)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    const VALUE: &[u8] = b"sk-live-very-secret-value-0123456789";

    /// A fresh folder under the temp dir, removed when dropped.
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new(test: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "boxd-crypto-{test}-{}-{}",
                std::process::id(),
                crate::hex(&random_bytes::<6>().unwrap())
            ));
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        pub(crate) fn key_file(&self) -> PathBuf {
            self.0.join("master.key")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn aad() -> Aad {
        Aad {
            team_id: "team_a".into(),
            box_id: Some("box_1".into()),
            kind: SecretKind::Secret,
            name: "OPENAI_API_KEY".into(),
            scope: r#"["api.openai.com"]"#.into(),
        }
    }

    fn keys(dir: &TempDir) -> MasterKeys {
        MasterKeys::load_or_create(&dir.key_file()).unwrap()
    }

    #[test]
    fn seal_then_open_round_trips_with_a_fresh_nonce_each_time() {
        let dir = TempDir::new("roundtrip");
        let keys = keys(&dir);
        let a = keys.seal(&aad(), VALUE).unwrap();
        let b = keys.seal(&aad(), VALUE).unwrap();
        assert_eq!(a.key_id, "k1");
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
        assert_eq!(a.ciphertext.len(), VALUE.len() + 16);
        assert_eq!(keys.open(&aad(), &a).unwrap().as_slice(), VALUE);
        assert_eq!(keys.open(&aad(), &b).unwrap().as_slice(), VALUE);
    }

    #[test]
    fn a_value_does_not_open_under_any_other_binding() {
        let dir = TempDir::new("aad");
        let keys = keys(&dir);
        let sealed = keys.seal(&aad(), VALUE).unwrap();
        let others = [
            Aad {
                team_id: "team_b".into(),
                ..aad()
            },
            Aad {
                box_id: Some("box_2".into()),
                ..aad()
            },
            Aad {
                box_id: None,
                ..aad()
            },
            Aad {
                kind: SecretKind::AttachHeader,
                ..aad()
            },
            Aad {
                name: "OPENAI_API_KEY2".into(),
                ..aad()
            },
            Aad {
                scope: r#"["evil.example"]"#.into(),
                ..aad()
            },
        ];
        for other in others {
            let err = keys.open(&other, &sealed).unwrap_err();
            assert!(matches!(err, StoreError::Decrypt(_)), "{other:?}: {err:?}");
            let text = format!("{err} {err:?}");
            assert!(!text.contains("sk-live"), "{text}");
        }
    }

    #[test]
    fn the_aad_encoding_is_unambiguous() {
        // Moving bytes between neighbouring fields changes the encoding.
        let a = Aad {
            team_id: "ab".into(),
            name: "c".into(),
            ..aad()
        };
        let b = Aad {
            team_id: "a".into(),
            name: "bc".into(),
            ..aad()
        };
        assert_ne!(a.encode(), b.encode());
        let none = Aad {
            box_id: None,
            ..aad()
        };
        let empty = Aad {
            box_id: Some(String::new()),
            ..aad()
        };
        assert_ne!(none.encode(), empty.encode());
    }

    #[test]
    fn tampered_ciphertext_nonce_or_key_id_fails() {
        let dir = TempDir::new("tamper");
        let keys = keys(&dir);
        let sealed = keys.seal(&aad(), VALUE).unwrap();
        for i in 0..sealed.ciphertext.len() {
            let mut bad = sealed.clone();
            bad.ciphertext[i] ^= 0x01;
            assert!(matches!(
                keys.open(&aad(), &bad),
                Err(StoreError::Decrypt(_))
            ));
        }
        let mut bad = sealed.clone();
        bad.ciphertext.truncate(bad.ciphertext.len() - 1);
        assert!(matches!(
            keys.open(&aad(), &bad),
            Err(StoreError::Decrypt(_))
        ));
        let mut bad = sealed.clone();
        bad.nonce[0] ^= 0x80;
        assert!(matches!(
            keys.open(&aad(), &bad),
            Err(StoreError::Decrypt(_))
        ));
        let mut bad = sealed.clone();
        bad.key_id = "k9".into();
        assert!(matches!(keys.open(&aad(), &bad), Err(StoreError::UnknownKey(id)) if id == "k9"));
    }

    #[test]
    fn another_key_file_cannot_open_a_value() {
        let (one, two) = (TempDir::new("other1"), TempDir::new("other2"));
        let sealed = keys(&one).seal(&aad(), VALUE).unwrap();
        // Same id `k1`, different key bytes.
        assert!(matches!(
            keys(&two).open(&aad(), &sealed),
            Err(StoreError::Decrypt(_))
        ));
    }

    #[test]
    fn a_created_key_file_is_0600_and_loads_back_the_same_keys() {
        let dir = TempDir::new("create");
        let first = keys(&dir);
        let meta = fs::metadata(dir.key_file()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = fs::read_to_string(dir.key_file()).unwrap();
        assert!(text.starts_with("k1:") && text.ends_with('\n'), "format");
        assert_eq!(text.lines().count(), 1);
        let sealed = first.seal(&aad(), VALUE).unwrap();
        let again = keys(&dir);
        assert_eq!(again.open(&aad(), &sealed).unwrap().as_slice(), VALUE);
    }

    #[test]
    fn a_key_file_readable_by_group_or_others_is_refused() {
        let dir = TempDir::new("perms");
        keys(&dir);
        for mode in [0o644, 0o640, 0o604, 0o660] {
            fs::set_permissions(dir.key_file(), fs::Permissions::from_mode(mode)).unwrap();
            let err = MasterKeys::load_or_create(&dir.key_file()).unwrap_err();
            assert!(matches!(err, StoreError::KeyFile { .. }), "{err:?}");
            assert!(err.to_string().contains("0600"), "{err}");
        }
        fs::set_permissions(dir.key_file(), fs::Permissions::from_mode(0o400)).unwrap();
        MasterKeys::load(&dir.key_file()).unwrap();
    }

    #[test]
    fn malformed_key_files_are_refused_without_echoing_them() {
        let dir = TempDir::new("format");
        let short = STANDARD.encode([7u8; 31]);
        let good = STANDARD.encode([7u8; 32]);
        let cases = [
            String::new(),
            "\n\n".to_owned(),
            format!("k1:{short}\n"),
            format!("k1:{good}AA\n"),
            format!("k1:{good}\nk1:{good}\n"),
            format!("key1:{good}\n"),
            format!("{good}\n"),
            "k1:not base64!\n".to_owned(),
        ];
        for text in cases {
            let _ = fs::remove_file(dir.key_file());
            write_new(&dir.key_file(), &text).unwrap();
            let err = MasterKeys::load_or_create(&dir.key_file()).unwrap_err();
            assert!(
                matches!(err, StoreError::KeyFile { .. }),
                "{text:?}: {err:?}"
            );
            assert!(!err.to_string().contains(&good), "{err}");
            // The bad file is left alone, never overwritten.
            assert_eq!(fs::read_to_string(dir.key_file()).unwrap(), text);
        }
    }

    #[test]
    fn a_symlinked_key_file_is_refused() {
        let dir = TempDir::new("symlink");
        keys(&dir);
        let link = dir.0.join("link.key");
        std::os::unix::fs::symlink(dir.key_file(), &link).unwrap();
        assert!(matches!(
            MasterKeys::load_or_create(&link),
            Err(StoreError::KeyFile { .. })
        ));
        // A dangling link is not replaced by a new file either.
        let dangling = dir.0.join("dangling.key");
        std::os::unix::fs::symlink(dir.0.join("nowhere"), &dangling).unwrap();
        assert!(MasterKeys::load_or_create(&dangling).is_err());
        assert!(!dir.0.join("nowhere").exists());
    }

    #[test]
    fn rotation_adds_a_current_key_and_old_values_still_open() {
        let dir = TempDir::new("rotate");
        let before = keys(&dir);
        let old = before.seal(&aad(), VALUE).unwrap();
        assert_eq!(MasterKeys::rotate(&dir.key_file()).unwrap(), "k2");
        assert_eq!(MasterKeys::rotate(&dir.key_file()).unwrap(), "k3");
        let after = keys(&dir);
        assert_eq!(after.key_ids(), ["k1", "k2", "k3"]);
        assert_eq!(after.current_id(), "k3");
        let meta = fs::metadata(dir.key_file()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(after.open(&aad(), &old).unwrap().as_slice(), VALUE);
        assert_eq!(after.seal(&aad(), VALUE).unwrap().key_id, "k3");
        // No temporary file is left next to the key file.
        assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 1);
    }

    #[test]
    fn debug_output_shows_no_key_and_no_plaintext() {
        let dir = TempDir::new("debug");
        let keys = keys(&dir);
        let sealed = keys.seal(&aad(), VALUE).unwrap();
        let opened = keys.open(&aad(), &sealed).unwrap();
        let text = fs::read_to_string(dir.key_file()).unwrap();
        let b64 = text.trim().split_once(':').unwrap().1;
        let raw = STANDARD.decode(b64).unwrap();
        let shown = format!("{keys:?} {sealed:?} {:?}", aad());
        assert!(shown.contains("k1"), "{shown}");
        assert!(!shown.contains(b64), "{shown}");
        assert!(!shown.contains(&format!("{:?}", &raw[..8])), "{shown}");
        assert!(!shown.contains(&format!("{:?}", &sealed.ciphertext[..8])));
        assert!(!shown.contains("sk-live"), "{shown}");
        assert_eq!(opened.as_slice(), VALUE);
    }
}
