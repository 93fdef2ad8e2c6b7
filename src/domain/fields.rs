//! One way to validate a JSON object: every field is checked and every
//! error is collected (`field` path and message), so a client sees all that
//! is wrong with a request at once. The purchase and the product requests
//! are both parsed with it.

use email_address::EmailAddress;
use serde_json::{Map, Value};

use crate::error::FieldError;

/// The field errors found so far.
#[derive(Default)]
pub struct Fields {
    pub errors: Vec<FieldError>,
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Fields {
    pub fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    pub fn field<'v>(
        &mut self,
        obj: &'v Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<&'v Value> {
        match obj.get(key) {
            None | Some(Value::Null) => {
                self.fail(path, "is required");
                None
            }
            Some(v) => Some(v),
        }
    }

    pub fn object<'v>(
        &mut self,
        obj: &'v Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<&'v Map<String, Value>> {
        match self.field(obj, key, path)? {
            Value::Object(m) => Some(m),
            other => {
                self.fail(path, format!("must be an object, not {}", type_name(other)));
                None
            }
        }
    }

    pub fn string<'v>(
        &mut self,
        obj: &'v Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<&'v str> {
        match self.field(obj, key, path)? {
            Value::String(s) => Some(s),
            other => {
                self.fail(path, format!("must be a string, not {}", type_name(other)));
                None
            }
        }
    }

    /// Free text: trimmed, 1..=max characters, no control characters.
    pub fn checked_text(&mut self, raw: &str, path: &str, max: usize) -> Option<String> {
        let t = raw.trim();
        let n = t.chars().count();
        if n == 0 {
            self.fail(path, "must not be empty");
            None
        } else if n > max {
            self.fail(path, format!("must be at most {max} characters"));
            None
        } else if t.chars().any(char::is_control) {
            self.fail(path, "must not contain control characters");
            None
        } else {
            Some(t.to_owned())
        }
    }

    pub fn text(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
        max: usize,
    ) -> Option<String> {
        let raw = self.string(obj, key, path)?;
        self.checked_text(raw, path, max)
    }

    /// `Some(None)` for absent, null or blank; `None` when invalid.
    pub fn optional_text(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
        max: usize,
    ) -> Option<Option<String>> {
        match obj.get(key) {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(s)) if s.trim().is_empty() => Some(None),
            Some(Value::String(s)) => self.checked_text(s, path, max).map(Some),
            Some(other) => {
                self.fail(
                    path,
                    format!("must be a string or null, not {}", type_name(other)),
                );
                None
            }
        }
    }

    pub fn email(&mut self, obj: &Map<String, Value>, key: &str, path: &str) -> Option<String> {
        let raw = self.string(obj, key, path)?.trim();
        if raw.chars().count() > 254 {
            self.fail(path, "must be at most 254 characters");
            None
        } else if !EmailAddress::is_valid(raw) {
            self.fail(path, "is not a valid email address");
            None
        } else {
            Some(raw.to_owned())
        }
    }

    /// An ISO 4217 currency code, the one rule for orders and products.
    pub fn currency(&mut self, obj: &Map<String, Value>, key: &str, path: &str) -> Option<String> {
        let c = self.string(obj, key, path)?;
        if super::currency::is_code(c) {
            Some(c.to_owned())
        } else {
            self.fail(path, super::currency::RULE);
            None
        }
    }

    /// A whole number within `range`.
    pub fn whole(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<i64> {
        let v = self.field(obj, key, path)?;
        match v.as_i64() {
            Some(n) if range.contains(&n) => Some(n),
            _ => {
                self.fail(
                    path,
                    format!(
                        "must be a whole number from {} to {}",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }

    pub fn boolean(&mut self, obj: &Map<String, Value>, key: &str, path: &str) -> Option<bool> {
        match self.field(obj, key, path)? {
            Value::Bool(b) => Some(*b),
            other => {
                self.fail(path, format!("must be a boolean, not {}", type_name(other)));
                None
            }
        }
    }

    /// The value, or the errors found.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, Vec<FieldError>> {
        match value {
            Some(v) if self.errors.is_empty() => Ok(v),
            _ => Err(self.errors),
        }
    }
}
