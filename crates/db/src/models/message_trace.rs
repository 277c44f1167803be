//! `messages.trace_parent`: the W3C `traceparent` of the sender's span behind an outbound message.
//! conversation-sync records it from the `outbound.accepted` event and reads it back when the
//! message's status webhooks arrive, to link their spans to the send (a webhook starts a trace of
//! its own: Meta sends no trace context). Both statements take a whole batch at once.

use diesel::QueryResult;
use diesel::prelude::QueryableByName;
use diesel::sql_types::{Array, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// The send's trace context of one outbound message.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct SendTrace {
    /// Tenant.
    #[diesel(sql_type = Text)]
    pub tenant_id: String,
    /// Meta's message id.
    #[diesel(sql_type = Text)]
    pub wa_message_id: String,
    /// `00-<trace id>-<span id>-<flags>`.
    #[diesel(sql_type = Text)]
    pub trace_parent: String,
}

/// Stores each trace on its message when the message has none yet (the first send's context
/// wins; a redelivered `outbound.accepted` changes nothing); messages not stored yet are skipped.
/// Returns how many rows changed.
pub async fn record_send_traces(
    conn: &mut AsyncPgConnection,
    traces: &[SendTrace],
) -> QueryResult<usize> {
    if traces.is_empty() {
        return Ok(0);
    }
    let (tenants, (wamids, parents)): (Vec<&str>, (Vec<&str>, Vec<&str>)) = traces
        .iter()
        .map(|t| {
            (
                t.tenant_id.as_str(),
                (t.wa_message_id.as_str(), t.trace_parent.as_str()),
            )
        })
        .unzip();
    diesel::sql_query(
        "UPDATE messages AS m SET trace_parent = t.trace_parent \
         FROM unnest($1::text[], $2::text[], $3::text[]) AS t(tenant_id, wa_message_id, trace_parent) \
         WHERE m.tenant_id = t.tenant_id AND m.wa_message_id = t.wa_message_id \
           AND m.trace_parent IS NULL",
    )
    .bind::<Array<Text>, _>(tenants)
    .bind::<Array<Text>, _>(wamids)
    .bind::<Array<Text>, _>(parents)
    .execute(conn)
    .await
}

/// The stored send traces of these `(tenant, wamid)` messages (those without one are left out).
pub async fn send_traces(
    conn: &mut AsyncPgConnection,
    messages: &[(&str, &str)],
) -> QueryResult<Vec<SendTrace>> {
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    let (tenants, wamids): (Vec<&str>, Vec<&str>) = messages.iter().copied().unzip();
    diesel::sql_query(
        "SELECT m.tenant_id, m.wa_message_id, m.trace_parent \
         FROM messages AS m \
         JOIN unnest($1::text[], $2::text[]) AS t(tenant_id, wa_message_id) \
           ON m.tenant_id = t.tenant_id AND m.wa_message_id = t.wa_message_id \
         WHERE m.trace_parent IS NOT NULL",
    )
    .bind::<Array<Text>, _>(tenants)
    .bind::<Array<Text>, _>(wamids)
    .load(conn)
    .await
}
