//! AES-256-GCM encryption of message bodies, raw payloads, outbox events and media files at rest.
//!
//! Each value gets a fresh random 96-bit nonce; the key id (first 8 hex chars of SHA-256 of the
//! key) is stored beside every ciphertext so the key can rotate: new values use the current key,
//! old ones decrypt with the key their id names (`MESSAGE_ENCRYPTION_KEYS_OLD`).

use std::collections::HashMap;
use std::sync::Arc;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, Generate, KeyInit, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// Nonce length of AES-GCM with a 96-bit nonce.
pub const NONCE_LEN: usize = 12;

/// Why a key or a ciphertext could not be used; never contains key material or plaintext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The key is not base64 of exactly 32 bytes.
    #[error("an encryption key must be base64 of 32 bytes ({0})")]
    BadKey(String),
    /// No key with this id is configured.
    #[error("no encryption key with id {0} is configured")]
    UnknownKey(String),
    /// Authentication failed: wrong key, wrong nonce or tampered data.
    #[error("decryption failed (wrong key or tampered data)")]
    Decrypt,
    /// Encryption failed (only for absurdly long inputs).
    #[error("encryption failed")]
    Encrypt,
}

/// A ciphertext with what is needed to decrypt it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Ciphertext followed by the 16-byte tag.
    pub ciphertext: Vec<u8>,
    /// The 12-byte nonce.
    pub nonce: Vec<u8>,
    /// Which key encrypted it.
    pub key_id: String,
}

/// The current key plus older keys for decryption; cheap to clone.
#[derive(Clone)]
pub struct Cipher {
    current_id: String,
    keys: Arc<HashMap<String, Aes256Gcm>>,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cipher")
            .field("current_key_id", &self.current_id)
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// The id stored beside ciphertexts: first 8 hex chars of SHA-256 of the raw key.
pub fn key_id(raw_key: &[u8]) -> String {
    hex::encode(Sha256::digest(raw_key))[..8].to_owned()
}

fn decode_key(b64: &str) -> Result<Vec<u8>, CryptoError> {
    let raw = STANDARD
        .decode(b64.trim())
        .map_err(|e| CryptoError::BadKey(format!("not base64: {e}")))?;
    if raw.len() != 32 {
        return Err(CryptoError::BadKey(format!(
            "decodes to {} bytes",
            raw.len()
        )));
    }
    Ok(raw)
}

impl Cipher {
    /// Builds from the base64 current key and `keyid:base64,…` older keys (either may be empty).
    pub fn from_base64(current: &str, old: &str) -> Result<Self, CryptoError> {
        let raw = decode_key(current)?;
        let current_id = key_id(&raw);
        let mut keys = HashMap::new();
        keys.insert(current_id.clone(), new_aes(&raw)?);
        for item in old.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            // The id is recomputed from the key; a given id only documents which key it is.
            let b64 = item.split_once(':').map_or(item, |(_, key)| key);
            let raw = decode_key(b64)?;
            keys.entry(key_id(&raw)).or_insert(new_aes(&raw)?);
        }
        Ok(Self {
            current_id,
            keys: Arc::new(keys),
        })
    }

    /// The id of the key new values are encrypted with.
    pub fn current_key_id(&self) -> &str {
        &self.current_id
    }

    /// Encrypts `plaintext` under the current key with a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Sealed, CryptoError> {
        let aes = self
            .keys
            .get(&self.current_id)
            .ok_or_else(|| CryptoError::UnknownKey(self.current_id.clone()))?;
        let nonce = Nonce::<Aes256Gcm>::generate();
        let ciphertext = aes
            .encrypt(&nonce, plaintext)
            .map_err(|_| CryptoError::Encrypt)?;
        Ok(Sealed {
            ciphertext,
            nonce: nonce.to_vec(),
            key_id: self.current_id.clone(),
        })
    }

    /// Decrypts a value sealed with the key named `key_id`.
    pub fn open(
        &self,
        ciphertext: &[u8],
        nonce: &[u8],
        key_id: &str,
    ) -> Result<Vec<u8>, CryptoError> {
        let aes = self
            .keys
            .get(key_id)
            .ok_or_else(|| CryptoError::UnknownKey(key_id.to_owned()))?;
        let nonce = Nonce::<Aes256Gcm>::try_from(nonce).map_err(|_| CryptoError::Decrypt)?;
        aes.decrypt(&nonce, ciphertext)
            .map_err(|_| CryptoError::Decrypt)
    }

    /// Encrypts a whole file as `nonce || ciphertext` (media at rest).
    pub fn seal_blob(&self, plaintext: &[u8]) -> Result<(Vec<u8>, String), CryptoError> {
        let sealed = self.seal(plaintext)?;
        let mut out = sealed.nonce;
        out.extend_from_slice(&sealed.ciphertext);
        Ok((out, sealed.key_id))
    }

    /// Decrypts a blob made by [`Cipher::seal_blob`].
    pub fn open_blob(&self, blob: &[u8], key_id: &str) -> Result<Vec<u8>, CryptoError> {
        if blob.len() < NONCE_LEN {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
        self.open(ciphertext, nonce, key_id)
    }
}

fn new_aes(raw: &[u8]) -> Result<Aes256Gcm, CryptoError> {
    Aes256Gcm::new_from_slice(raw).map_err(|_| CryptoError::BadKey("wrong length".into()))
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]
mod tests {
    use super::*;

    fn key(byte: u8) -> String {
        STANDARD.encode([byte; 32])
    }

    #[test]
    fn sealed_values_open_and_are_not_plaintext() {
        let cipher = Cipher::from_base64(&key(1), "").unwrap();
        let sealed = cipher.seal(b"kapan jadwal manasik?").unwrap();
        assert!(!sealed.ciphertext.windows(7).any(|w| w == b"manasik"));
        assert_eq!(sealed.nonce.len(), NONCE_LEN);
        let opened = cipher
            .open(&sealed.ciphertext, &sealed.nonce, &sealed.key_id)
            .unwrap();
        assert_eq!(opened, b"kapan jadwal manasik?");
    }

    #[test]
    fn two_seals_of_the_same_text_use_different_nonces() {
        let cipher = Cipher::from_base64(&key(1), "").unwrap();
        let a = cipher.seal(b"x").unwrap();
        let b = cipher.seal(b"x").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn rotated_cipher_still_opens_values_of_the_old_key() {
        let old = Cipher::from_base64(&key(1), "").unwrap();
        let sealed = old.seal(b"lama").unwrap();
        let rotated =
            Cipher::from_base64(&key(2), &format!("{}:{}", old.current_key_id(), key(1))).unwrap();
        assert_ne!(rotated.current_key_id(), old.current_key_id());
        assert_eq!(
            rotated
                .open(&sealed.ciphertext, &sealed.nonce, &sealed.key_id)
                .unwrap(),
            b"lama"
        );
        let without_old = Cipher::from_base64(&key(2), "").unwrap();
        assert!(matches!(
            without_old.open(&sealed.ciphertext, &sealed.nonce, &sealed.key_id),
            Err(CryptoError::UnknownKey(_))
        ));
    }

    #[test]
    fn tampered_ciphertext_is_rejected() {
        let cipher = Cipher::from_base64(&key(3), "").unwrap();
        let (mut blob, id) = cipher.seal_blob(b"file").unwrap();
        let last = blob.len() - 1;
        blob[last] ^= 1;
        assert!(matches!(
            cipher.open_blob(&blob, &id),
            Err(CryptoError::Decrypt)
        ));
    }

    #[test]
    fn keys_of_the_wrong_length_are_rejected_without_echoing_them() {
        let err = Cipher::from_base64(&STANDARD.encode([7u8; 16]), "").unwrap_err();
        assert!(err.to_string().contains("16 bytes"));
        assert!(Cipher::from_base64("not base64!", "").is_err());
    }
}
