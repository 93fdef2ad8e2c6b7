//! Who made a change of an order: a staff member, the payment gateway (its
//! events), or the service itself. Carried by every order event.

use serde::Serialize;

use super::status::text_enum;

/// Who made a change: `{"type": "staff" | "system" | "gateway", "name"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Actor {
    #[serde(rename = "type")]
    pub kind: ActorKind,
    pub name: String,
}

text_enum! {
    /// Which kind of actor: a person (or script) with a staff account, the
    /// payment gateway, or the service itself.
    ActorKind {
        Staff => "staff",
        System => "system",
        Gateway => "gateway",
    }
}

impl Actor {
    /// The service itself: its workers, the storefront's purchase path.
    pub fn system() -> Actor {
        Actor {
            kind: ActorKind::System,
            name: "orderflow".into(),
        }
    }

    /// The payment gateway, through its signed events.
    pub fn gateway() -> Actor {
        Actor {
            kind: ActorKind::Gateway,
            name: "payment_gateway".into(),
        }
    }

    pub fn staff(name: &str) -> Actor {
        Actor {
            kind: ActorKind::Staff,
            name: name.to_owned(),
        }
    }
}
