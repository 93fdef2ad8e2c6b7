//! What ops search orders by (`GET /api/v1/orders?q=`): an order id or a
//! prefix of it (≥ 8 hex digits), a customer's email (case-insensitive,
//! compared whole: `%` and `_` are plain characters), a tracking number,
//! or a payment intent id. Each is answered from an index: the primary key
//! (a prefix is a range of it), `orders_email_idx`, `orders_tracking_idx`;
//! an intent id is asked of the gateway, whose intent names its order (no
//! index on the order's intent id, which the purchase writes: see
//! docs/BENCHMARKS.md), and the order must hold that intent.

use uuid::Uuid;

/// A parsed `q`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Search {
    /// Ids from `low` to `high` (a prefix; both equal for a whole id).
    Id {
        low: Uuid,
        high: Uuid,
    },
    /// `lower(customer_email)` equal to this (lower-cased).
    Email(String),
    Tracking(String),
    /// An intent id, and the order its gateway intent names (if any).
    Intent {
        intent: String,
        order: Option<Uuid>,
    },
}

/// The shortest id prefix searched for.
pub const MIN_PREFIX: usize = 8;

impl Search {
    /// Reads `q`; `Err` says why it cannot be a search. An intent's order
    /// is filled in by the listing, which asks the gateway.
    pub fn parse(q: &str) -> Result<Search, String> {
        let q = q.trim();
        if q.is_empty() || q.len() > 320 || q.contains('\0') {
            return Err("1 to 320 characters, no NUL".into());
        }
        if let Some(range) = id_range(q) {
            return Ok(range);
        }
        if q.contains('@') {
            return Ok(Search::Email(q.to_lowercase()));
        }
        if q.starts_with("pi_") {
            return Ok(Search::Intent {
                intent: q.to_owned(),
                order: None,
            });
        }
        Ok(Search::Tracking(q.to_owned()))
    }
}

/// An id or an id prefix: hex digits (hyphens where a UUID has them are
/// ignored), at least [`MIN_PREFIX`] of them.
fn id_range(q: &str) -> Option<Search> {
    let hex: String = q.chars().filter(|c| *c != '-').collect();
    if hex.len() < MIN_PREFIX || hex.len() > 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let pad = |fill: char| {
        let mut s = hex.to_ascii_lowercase();
        while s.len() < 32 {
            s.push(fill);
        }
        Uuid::try_parse(&s).ok()
    };
    Some(Search::Id {
        low: pad('0')?,
        high: pad('f')?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_is_told_apart() {
        let id = Uuid::new_v4();
        assert_eq!(
            Search::parse(&id.to_string()),
            Ok(Search::Id { low: id, high: id })
        );
        let prefix = &id.simple().to_string()[..8];
        match Search::parse(prefix) {
            Ok(Search::Id { low, high }) => {
                assert!(low <= id && id <= high);
                assert!(low.simple().to_string().ends_with("000000"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            Search::parse("Ann_%@Example.com"),
            Ok(Search::Email("ann_%@example.com".into()))
        );
        assert_eq!(
            Search::parse("TRK0000000042"),
            Ok(Search::Tracking("TRK0000000042".into()))
        );
        assert!(matches!(Search::parse("pi_123"), Ok(Search::Intent { .. })));
        // Seven hex digits are too short to be a prefix: a tracking number.
        assert_eq!(
            Search::parse("abcdef1"),
            Ok(Search::Tracking("abcdef1".into()))
        );
        assert!(Search::parse("  ").is_err());
    }
}
