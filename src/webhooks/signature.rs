//! `Orderflow-Signature: t=<unix seconds>,v1=<hex>`: HMAC-SHA256 keyed with
//! the endpoint's whole `whsec_…` secret over `"<t>." + raw body`. The
//! receiver side ([`verify`]) is what docs/WEBHOOKS.md shows a storefront.

use sha2::{Digest, Sha256};

const BLOCK: usize = 64;

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The header value for `body` signed at `t` with each of `secrets`: one
/// `v1` per secret (during a rotation, the new one first).
pub fn sign_all(secrets: &[secrecy::SecretString], t: i64, body: &[u8]) -> String {
    use secrecy::ExposeSecret;
    let mut header = format!("t={t}");
    for secret in secrets {
        header.push_str(",v1=");
        header.push_str(&hex::encode(mac(secret.expose_secret(), t, body)));
    }
    header
}

fn mac(secret: &str, t: i64, body: &[u8]) -> [u8; 32] {
    let mut message = format!("{t}.").into_bytes();
    message.extend_from_slice(body);
    hmac_sha256(secret.as_bytes(), &message)
}

/// Why a receiver refuses a delivery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("malformed Orderflow-Signature header")]
    Malformed,
    #[error("signature timestamp outside the tolerance")]
    TooOld,
    #[error("no v1 signature matches")]
    Mismatch,
}

/// The receiver's check: the header parses, its `t` is within `tolerance`
/// seconds of `now`, and one of its `v1` values is the HMAC of `"<t>." +
/// body` (compared in constant time).
pub fn verify(
    header: &str,
    secret: &str,
    body: &[u8],
    now: i64,
    tolerance: i64,
) -> Result<(), Refused> {
    let mut t = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => candidates.push(hex::decode(v).map_err(|_| Refused::Malformed)?),
            _ => {}
        }
    }
    let t = t.ok_or(Refused::Malformed)?;
    if candidates.is_empty() {
        return Err(Refused::Malformed);
    }
    if (now - t).abs() > tolerance {
        return Err(Refused::TooOld);
    }
    let expected = mac(secret, t, body);
    if candidates.iter().any(|c| same(c, &expected)) {
        Ok(())
    } else {
        Err(Refused::Mismatch)
    }
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 and test case 6 (a key longer than the block).
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn a_signature_verifies_only_with_its_secret_body_and_time() {
        let body = br#"{"id":"evt_1"}"#;
        let header = sign_all(&["whsec_abc".into()], 1_800_000_000, body);
        assert_eq!(
            verify(&header, "whsec_abc", body, 1_800_000_100, 300),
            Ok(())
        );
        assert_eq!(
            verify(&header, "whsec_other", body, 1_800_000_100, 300),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            verify(&header, "whsec_abc", b"{}", 1_800_000_100, 300),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            verify(&header, "whsec_abc", body, 1_800_000_400, 300),
            Err(Refused::TooOld)
        );
        assert_eq!(
            verify("v1=zz", "whsec_abc", body, 0, 300),
            Err(Refused::Malformed)
        );
    }
}
