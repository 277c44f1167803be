//! One module per shared table or per service: `Queryable + Selectable` row structs, `New*`
//! `Insertable`s, and queries taking `&mut AsyncPgConnection` and returning `QueryResult`.
//! Callers own the connection and any transaction around several calls.
//!
//! `tenant` and `processed_event` are shared by every service; `sender`, `conversation` and
//! `scheduler` hold the queries of the service with the same name (`schema.rs` covers every table);
//! `message_trace` is conversation-sync's too, kept apart because it serves tracing only.

pub mod conversation;
pub mod message_trace;
pub mod processed_event;
pub mod scheduler;
pub mod sender;
pub mod tenant;

pub use processed_event::ProcessedEvent;
pub use tenant::{NewTenant, Tenant};
