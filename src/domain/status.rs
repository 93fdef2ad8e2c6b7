//! Order and delivery status values, mapped to their column text in one
//! place. The database CHECK constraints list the same values.

/// A status-like enum stored as text: its variants, their column text,
/// `as_str`, `FromStr`, `Display`, serde as the same text, and a Diesel
/// mapping to a `Text` column, so rows and queries carry the enum and no
/// status is spelled as a string outside this macro's invocations. Used for
/// every such column (orders' statuses, the outbox kinds, key states).
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize, ::utoipa::ToSchema, ::diesel::AsExpression, ::diesel::FromSqlRow)]
        #[serde(rename_all = "snake_case")]
        #[diesel(sql_type = ::diesel::sql_types::Text)]
        pub enum $name { $($variant),+ }

        impl ::diesel::serialize::ToSql<::diesel::sql_types::Text, ::diesel::pg::Pg> for $name {
            fn to_sql<'b>(&'b self, out: &mut ::diesel::serialize::Output<'b, '_, ::diesel::pg::Pg>) -> ::diesel::serialize::Result {
                <str as ::diesel::serialize::ToSql<::diesel::sql_types::Text, ::diesel::pg::Pg>>::to_sql(self.as_str(), out)
            }
        }

        impl ::diesel::deserialize::FromSql<::diesel::sql_types::Text, ::diesel::pg::Pg> for $name {
            fn from_sql(bytes: ::diesel::pg::PgValue<'_>) -> ::diesel::deserialize::Result<Self> {
                let text = <String as ::diesel::deserialize::FromSql<::diesel::sql_types::Text, ::diesel::pg::Pg>>::from_sql(bytes)?;
                Ok(text.parse::<$name>()?)
            }
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!("unknown {} `{other}`", stringify!($name))),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result { f.write_str(self.as_str()) }
        }
    };
}
pub(crate) use text_enum;

text_enum! {
    /// Lifecycle of an order (docs/API.md):
    /// `payment_pending → paid | payment_failed`, `paid → fulfilling → shipped
    /// → delivered`, and `cancelled` from `payment_pending` or `paid`.
    OrderStatus {
        PaymentPending => "payment_pending",
        Paid => "paid",
        PaymentFailed => "payment_failed",
        Fulfilling => "fulfilling",
        Shipped => "shipped",
        Delivered => "delivered",
        Cancelled => "cancelled",
    }
}

impl OrderStatus {
    /// The statuses of orders still under way: the status refresh covers
    /// them and the ops board lists them.
    pub const ACTIVE: &'static [OrderStatus] = &[
        OrderStatus::PaymentPending,
        OrderStatus::Paid,
        OrderStatus::Fulfilling,
        OrderStatus::Shipped,
    ];

    pub fn is_active(self) -> bool {
        Self::ACTIVE.contains(&self)
    }
}

text_enum! {
    /// Where the shipment of an order stands.
    DeliveryStatus {
        NotRequested => "not_requested",
        Queued => "queued",
        Requested => "requested",
        InTransit => "in_transit",
        Delivered => "delivered",
        Failed => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_its_text() {
        for s in OrderStatus::ALL {
            assert_eq!(s.as_str().parse::<OrderStatus>(), Ok(*s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.as_str())
            );
        }
        for s in DeliveryStatus::ALL {
            assert_eq!(s.as_str().parse::<DeliveryStatus>(), Ok(*s));
        }
        assert!("PAID".parse::<OrderStatus>().is_err());
    }
}

text_enum! {
    /// Why ops must look at an order: a job used up its attempt budget
    /// without settling it (the `attention` column). `payment_unsettled`:
    /// reconciliation never learned whether the charge happened;
    /// `refund_unsettled`: a cancelled order's refund never went through.
    Attention {
        PaymentUnsettled => "payment_unsettled",
        RefundUnsettled => "refund_unsettled",
        RefundFailed => "refund_failed",
    }
}

text_enum! {
    /// Who made an order's refund: orderflow (a cancel, or ops re-driving
    /// it), or someone in the gateway's own dashboard.
    RefundSource {
        Orderflow => "orderflow",
        Gateway => "gateway",
    }
}
