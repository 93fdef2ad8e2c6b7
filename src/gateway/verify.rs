//! `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`: HMAC-SHA256 over
//! `"<t>." + raw body`, keyed with one of the gateway's signing secrets.
//! The same scheme as orderflow's own webhooks, so the check is theirs
//! ([`crate::webhooks::signature::verify`], constant time), tried with each
//! configured secret: while a secret is rolled, both verify.

use secrecy::{ExposeSecret, SecretString};

use super::TOLERANCE_SECS;
use crate::webhooks::signature::{self, Refused};

/// Whether `header` signs `body` with any of `secrets`, `t` within
/// [`TOLERANCE_SECS`] of `now`. No secret configured: nothing verifies.
pub fn check(
    header: Option<&str>,
    secrets: &[SecretString],
    body: &[u8],
    now: i64,
) -> Result<(), Refused> {
    let header = header.ok_or(Refused::Malformed)?;
    let mut refused = Refused::Mismatch;
    for secret in secrets {
        match signature::verify(header, secret.expose_secret(), body, now, TOLERANCE_SECS) {
            Ok(()) => return Ok(()),
            // Malformed or too old whatever the secret: say so.
            Err(e @ (Refused::Malformed | Refused::TooOld)) => return Err(e),
            Err(e) => refused = e,
        }
    }
    Err(refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(all: &[&str]) -> Vec<SecretString> {
        all.iter()
            .map(|s| SecretString::from(s.to_string()))
            .collect()
    }

    #[test]
    fn any_configured_secret_verifies_and_nothing_else_does() {
        let body = br#"{"id":"evt_1"}"#;
        let now = 1_700_000_000;
        let old = signature::sign_all(&secrets(&["whsec_old"]), now, body);
        let rolled = secrets(&["whsec_new", "whsec_old"]);
        assert_eq!(check(Some(&old), &rolled, body, now), Ok(()));
        assert_eq!(
            check(Some(&old), &secrets(&["whsec_new"]), body, now),
            Err(Refused::Mismatch)
        );
        assert_eq!(check(Some(&old), &[], body, now), Err(Refused::Mismatch));
        assert_eq!(check(None, &rolled, body, now), Err(Refused::Malformed));
        assert_eq!(
            check(Some(&old), &rolled, body, now + TOLERANCE_SECS + 1),
            Err(Refused::TooOld)
        );
        assert_eq!(
            check(Some(&old), &rolled, br#"{"id":"evt_2"}"#, now),
            Err(Refused::Mismatch)
        );
    }
}
