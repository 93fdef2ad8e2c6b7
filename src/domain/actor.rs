//! Who made a change of an order: a staff member, the payment gateway (its
//! events), or the service itself. Carried by every order event.

use serde::Serialize;

/// Who made a change: `{"type": "staff" | "system" | "gateway", "name"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Actor {
    #[serde(rename = "type")]
    pub kind: ActorKind,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    Staff,
    System,
    Gateway,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::Staff => "staff",
            ActorKind::System => "system",
            ActorKind::Gateway => "gateway",
        }
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
