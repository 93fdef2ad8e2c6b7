//! Staff tokens and session ids: 256 random bits, shown once, kept only as
//! a keyed hash.
//!
//! A fast hash is right here, not a slow password hash: the input is 256
//! random bits, so there is nothing to guess from the hash, and hashing on
//! every request stays a microsecond. The key (HMAC-SHA256 with a fixed
//! label) keeps these hashes from matching any other use of the same bytes.

use base64::Engine as _;
use rand::RngCore as _;

use crate::webhooks::signature::hmac_sha256;

const HASH_KEY: &[u8] = b"orderflow staff credential v1";

/// The prefix of a staff token.
pub const TOKEN_PREFIX: &str = "oft_";
/// The prefix of a page session id.
pub const SESSION_PREFIX: &str = "ofs_";

/// A new credential with `prefix`: 32 random bytes, base64url.
pub fn generate(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The keyed hash a credential is stored and looked up by.
pub fn hash(credential: &str) -> [u8; 32] {
    hmac_sha256(HASH_KEY, credential.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hash_apart() {
        let (a, b) = (generate(TOKEN_PREFIX), generate(TOKEN_PREFIX));
        assert!(a.starts_with("oft_") && a.len() == 4 + 43, "{a}");
        assert_ne!(a, b);
        assert_ne!(hash(&a), hash(&b));
        assert_eq!(hash(&a), hash(&a));
    }
}
