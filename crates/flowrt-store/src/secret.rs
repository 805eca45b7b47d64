//! The local secret key (`<home>/secret.key`) and ChaCha20-Poly1305 sealing of secret values.
//!
//! A sealed value is `base64(nonce || ciphertext || tag)`. The associated data binds it to its
//! connection and field, so a value copied into another connection or field fails to open.

use crate::error::StoreError;
use crate::fsutil;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A key file the operator gives this process (`flowrt server --secret-key-file`), in place of
/// `<home>/secret.key`: several servers on one database must seal with one key.
static OPERATOR_KEY_FILE: OnceLock<PathBuf> = OnceLock::new();

/// Seal and open secrets with the key in `path` from now on, in this whole process (set once,
/// before the first secret is read; a second call with another path is refused).
pub fn use_key_file(path: &Path) -> Result<(), StoreError> {
    let path = path.to_path_buf();
    let set = OPERATOR_KEY_FILE.get_or_init(|| path.clone());
    if *set == path {
        Ok(())
    } else {
        Err(StoreError::IoAt {
            action: "a secret key file is already in use; refusing",
            path,
            source: io::Error::from(io::ErrorKind::AlreadyExists),
        })
    }
}

/// The key to seal with: the operator's file, else `home`'s own (created on first use).
pub(crate) fn load_key(home: &Path) -> Result<SecretKey, StoreError> {
    match OPERATOR_KEY_FILE.get() {
        Some(path) => SecretKey::load(path),
        None => SecretKey::load_or_create(&home.join(crate::SECRET_KEY_FILE)),
    }
}

pub(crate) const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;

/// The store's symmetric key. `Debug` does not print it.
pub(crate) struct SecretKey {
    cipher: ChaCha20Poly1305,
    fingerprint: String,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(******)")
    }
}

impl SecretKey {
    /// Load the key at `path`, creating it (mode 0600, atomically) when it does not exist.
    pub(crate) fn load_or_create(path: &Path) -> Result<Self, StoreError> {
        match Self::load(path) {
            Err(StoreError::IoAt { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            other => return other,
        }
        let mut bytes = [0u8; KEY_LEN];
        getrandom::getrandom(&mut bytes).map_err(|e| StoreError::Random(e.to_string()))?;
        match fsutil::write_new_private(path, &bytes) {
            Ok(()) => Ok(Self::from_bytes(&bytes)),
            // Another process created it between our read and our write: use theirs.
            Err(StoreError::IoAt { source, .. })
                if source.kind() == io::ErrorKind::AlreadyExists =>
            {
                Self::load(path)
            }
            Err(e) => Err(e),
        }
    }

    fn load(path: &Path) -> Result<Self, StoreError> {
        let bytes = std::fs::read(path).map_err(|source| StoreError::IoAt {
            action: "cannot read secret key file",
            path: path.to_path_buf(),
            source,
        })?;
        check_private(path)?;
        if bytes.len() != KEY_LEN {
            return Err(StoreError::KeyInvalid {
                path: path.to_path_buf(),
                len: bytes.len(),
            });
        }
        Ok(Self::from_bytes(&bytes))
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"flowrt secret key fingerprint\0");
        h.update(bytes);
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(bytes)),
            fingerprint: hex::encode(&h.finalize()[..8]),
        }
    }

    /// Names the key without revealing it (a hash of it, domain-separated): servers compare
    /// theirs with the one their database's secrets were sealed with.
    pub(crate) fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub(crate) fn seal(&self, conn: &str, field: &str, plain: &str) -> Result<String, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|e| StoreError::Random(e.to_string()))?;
        let aad = associated_data(conn, field);
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| StoreError::Encrypt {
                name: conn.to_string(),
                field: field.to_string(),
            })?;
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(B64.encode(out))
    }

    pub(crate) fn open(&self, conn: &str, field: &str, sealed: &str) -> Result<String, StoreError> {
        let fail = || StoreError::Decrypt {
            name: conn.to_string(),
            field: field.to_string(),
        };
        let raw = B64.decode(sealed).map_err(|_| fail())?;
        if raw.len() < NONCE_LEN {
            return Err(fail());
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let aad = associated_data(conn, field);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map_err(|_| fail())?;
        String::from_utf8(plain).map_err(|_| fail())
    }
}

fn associated_data(conn: &str, field: &str) -> Vec<u8> {
    format!("flowrt-connection-v1\0{conn}\0{field}").into_bytes()
}

/// Refuse a key file that group or others may access.
#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs_err::metadata(path)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(StoreError::KeyPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}
