//! The currency rule of orders and products: an ISO 4217 code in lower
//! case, as the payment gateway takes it. (The database CHECKs the same.)

/// What a valid code looks like, for error messages.
pub const RULE: &str = "must be 3 lowercase letters (ISO 4217), e.g. \"usd\"";

/// Whether `s` is a currency code.
pub fn is_code(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|b| b.is_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_currency_is_three_lowercase_letters() {
        assert!(super::is_code("eur"));
        for bad in ["EUR", "eu", "euro", "e1r", ""] {
            assert!(!super::is_code(bad), "{bad}");
        }
    }
}
