//! Webhook signing secrets at rest: sealed with ChaCha20-Poly1305 under
//! `WEBHOOK_SECRETS_KEY`, bound to their endpoint's id (a sealed secret
//! copied onto another endpoint does not open). A stored value reads
//! `sealed1:<key id>:<base64 nonce + ciphertext>`, the key id being the
//! first 4 bytes of the key's SHA-256, so a value names the key it needs.
//!
//! Rotating the key: set the new one in `WEBHOOK_SECRETS_KEY` and the old
//! one in `WEBHOOK_SECRETS_KEY_PREVIOUS` (comma-separated, several allowed)
//! on every process; the workers' sweep seals every secret again under the
//! new key (`fanout::reseal`, 100 endpoints a sweep; done when no row is left
//! under an old key id, docs/WEBHOOKS.md shows the query); then drop the
//! old key. A value without the
//! `sealed1:` prefix is a secret from before sealing: it is used as it is
//! and sealed by the same sweep.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use uuid::Uuid;

const PREFIX: &str = "sealed1:";

/// One 32-byte key and its id.
#[derive(Clone)]
struct SealKey {
    id: String,
    cipher: ChaCha20Poly1305,
}

impl SealKey {
    fn new(bytes: [u8; 32]) -> Self {
        let id = hex::encode(&Sha256::digest(bytes)[..4]);
        SealKey {
            id,
            cipher: ChaCha20Poly1305::new(Key::from_slice(&bytes)),
        }
    }
}

/// The keys secrets are sealed with: the current one, and older ones that
/// still open what they sealed.
#[derive(Clone)]
pub struct SecretsKeys {
    current: SealKey,
    previous: Vec<SealKey>,
    /// No key was configured: the built-in development key is in use.
    pub is_development: bool,
}

impl std::fmt::Debug for SecretsKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsKeys")
            .field("current", &self.current.id)
            .field(
                "previous",
                &self.previous.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Why a configured key cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("must be 32 bytes as 64 hex digits or base64")]
pub struct BadKey;

/// Why a stored secret does not open.
#[derive(Debug, thiserror::Error)]
pub enum Unsealable {
    #[error("sealed under key {0}, which is not configured")]
    UnknownKey(String),
    #[error("the sealed secret is damaged or belongs to another endpoint")]
    Damaged,
}

/// A key from its configured text: 64 hex digits, or base64 of 32 bytes.
fn parse_key(raw: &str) -> Result<[u8; 32], BadKey> {
    let raw = raw.trim();
    let bytes = if raw.len() == 64 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(raw).map_err(|_| BadKey)?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(raw)
            .map_err(|_| BadKey)?
    };
    bytes.try_into().map_err(|_| BadKey)
}

impl SecretsKeys {
    /// From `WEBHOOK_SECRETS_KEY` and `WEBHOOK_SECRETS_KEY_PREVIOUS`; with
    /// none, a fixed development key (anyone with the source can open what
    /// it seals: set a key in production).
    pub fn from_config(current: Option<&str>, previous: Option<&str>) -> Result<Self, BadKey> {
        let (current, is_development) = match current {
            Some(raw) => (SealKey::new(parse_key(raw)?), false),
            None => (
                SealKey::new(Sha256::digest(b"orderflow development key").into()),
                true,
            ),
        };
        let previous = previous
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|raw| parse_key(raw).map(SealKey::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SecretsKeys {
            current,
            previous,
            is_development,
        })
    }

    /// Says so in the log when the development key is in use.
    pub fn warn_if_development(&self) {
        if self.is_development {
            tracing::warn!("WEBHOOK_SECRETS_KEY is not set: webhook secrets are sealed with a built-in development key; set a key of your own in production");
        }
    }

    /// `secret` sealed under the current key, for endpoint `endpoint`.
    pub fn seal(&self, endpoint: Uuid, secret: &str) -> String {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .current
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: endpoint.as_bytes(),
                },
            )
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!(
            "{PREFIX}{}:{}",
            self.current.id,
            STANDARD_NO_PAD.encode(out)
        )
    }

    /// The secret in `stored` (a value from before sealing is returned as
    /// it is).
    pub fn open(&self, endpoint: Uuid, stored: &str) -> Result<SecretString, Unsealable> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(SecretString::from(stored.to_owned()));
        };
        let (id, data) = rest.split_once(':').ok_or(Unsealable::Damaged)?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| Unsealable::UnknownKey(id.to_owned()))?;
        let data = STANDARD_NO_PAD
            .decode(data)
            .map_err(|_| Unsealable::Damaged)?;
        if data.len() < 12 {
            return Err(Unsealable::Damaged);
        }
        let (nonce, sealed) = data.split_at(12);
        let plain = key
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: endpoint.as_bytes(),
                },
            )
            .map_err(|_| Unsealable::Damaged)?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| Unsealable::Damaged)
    }

    /// Whether `stored` is sealed under the current key (else the sweep
    /// seals it again).
    pub fn is_current(&self, stored: &str) -> bool {
        stored
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once(':'))
            .is_some_and(|(id, _)| id == self.current.id)
    }

    /// The prefix of every value sealed under the current key (SQL `LIKE`
    /// finds the others).
    pub fn current_prefix(&self) -> String {
        format!("{PREFIX}{}:", self.current.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    const KEY_A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const KEY_B: &str = "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM=";

    #[test]
    fn a_sealed_secret_opens_only_for_its_endpoint_under_a_known_key() {
        let keys = SecretsKeys::from_config(Some(KEY_A), None).unwrap();
        let (one, two) = (Uuid::new_v4(), Uuid::new_v4());
        let stored = keys.seal(one, "whsec_abc");
        assert!(stored.starts_with("sealed1:"));
        assert!(!stored.contains("whsec_abc"));
        assert_ne!(
            stored,
            keys.seal(one, "whsec_abc"),
            "a fresh nonce each time"
        );
        assert_eq!(
            keys.open(one, &stored).unwrap().expose_secret(),
            "whsec_abc"
        );
        assert!(matches!(keys.open(two, &stored), Err(Unsealable::Damaged)));
        let mut tampered = stored.clone();
        tampered.pop();
        tampered.push(if stored.ends_with('A') { 'B' } else { 'A' });
        assert!(keys.open(one, &tampered).is_err());
        assert!(keys.is_current(&stored));
    }

    #[test]
    fn a_rotated_key_still_opens_what_the_old_one_sealed_until_it_is_dropped() {
        let old = SecretsKeys::from_config(Some(KEY_A), None).unwrap();
        let id = Uuid::new_v4();
        let stored = old.seal(id, "whsec_old");
        let rotated = SecretsKeys::from_config(Some(KEY_B), Some(KEY_A)).unwrap();
        assert_ne!(KEY_A, KEY_B);
        assert!(!rotated.is_current(&stored));
        assert_eq!(
            rotated.open(id, &stored).unwrap().expose_secret(),
            "whsec_old"
        );
        let dropped = SecretsKeys::from_config(Some(KEY_B), None).unwrap();
        assert!(matches!(
            dropped.open(id, &stored),
            Err(Unsealable::UnknownKey(_))
        ));
    }

    #[test]
    fn plain_secrets_from_before_sealing_still_open_and_bad_keys_are_refused() {
        let keys = SecretsKeys::from_config(None, None).unwrap();
        assert!(keys.is_development);
        let id = Uuid::new_v4();
        assert_eq!(
            keys.open(id, "whsec_plain").unwrap().expose_secret(),
            "whsec_plain"
        );
        assert!(!keys.is_current("whsec_plain"));
        for bad in ["short", "zz", &"0".repeat(63)] {
            assert!(SecretsKeys::from_config(Some(bad), None).is_err(), "{bad}");
        }
        assert!(format!("{keys:?}").len() < 80, "Debug shows ids only");
    }
}
