//! Domain types: parsed, valid values that the handlers work with.

pub mod actor;
pub mod country;
pub mod currency;
pub mod event;
pub mod fields;
pub mod product;
pub mod purchase;
pub mod search;
pub mod status;
pub mod stuck;

pub use purchase::{Address, Customer, ItemRequest, PurchaseRequest};
pub use status::{Attention, DeliveryStatus, OrderStatus, RefundSource};
