//! Staff accounts and what they may do: the named tokens (`token`), the
//! roles and the one table that says which role each ops route needs
//! (`rules`), the principals a request can carry and their cache (`cache`),
//! the gate every `/api/v1` request passes (`gate`), the page's sessions
//! (`session`), the audit trail (`audit`), their SQL (`store`) and the
//! staff, session and audit endpoints (`endpoints`).

pub mod audit;
pub mod cache;
pub mod endpoints;
pub mod gate;
pub mod rules;
pub mod session;
pub mod store;
pub mod token;

use serde::Serialize;

use crate::domain::actor::Actor;

/// What a principal may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Every GET, the board, the page.
    Viewer,
    /// Retry a delivery, refresh the board, resend a webhook, replay a
    /// gateway event, reconcile.
    Operator,
    /// Cancel and refund.
    Refunder,
    /// Products, webhook endpoints, staff, the audit trail.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Operator, Role::Refunder, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Refunder => "refunder",
            Role::Admin => "admin",
        }
    }

    /// Whether this role includes `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}: one of viewer, operator, refunder, admin"))
    }
}

/// The name the bootstrap admin (`OPS_TOKEN`) goes by in the audit trail
/// and on events.
pub const BOOTSTRAP_NAME: &str = "ops_token";

/// The one a request acts for: a staff account (or the bootstrap admin)
/// and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

impl Principal {
    pub fn actor(&self) -> Actor {
        Actor::staff(&self.name)
    }
}
