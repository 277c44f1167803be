//! Gathers the database writes of many concurrent jobs into one statement: a hot-path write
//! (record a job, claim it, record its acceptance) is handed to a [`Batcher`], whose task takes
//! everything queued while the previous statements were in flight and runs it as one
//! multi-row statement. No timer is involved (natural batching): an idle sender pays one round trip
//! per job as before, a busy one pays one round trip per batch.
//!
//! Each statement is atomic. When one fails with a database error (a constraint a single row
//! broke, a deadlock) nothing of it was applied, so its items are retried one by one and only the
//! offending item sees the error. A connection error is not retried: the statement may have been
//! applied, so every caller gets the error and treats the outcome as it would for a single-row
//! statement.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use tokio::sync::{Semaphore, mpsc, oneshot};
use wa_db::models::sender::{self as q, AcceptedSend, ClaimedJob, JobKey, NewSendJob, SendJobRow};
use wa_db::{AsyncPgConnection, PgPool};

/// Most items in one statement (bounded so a statement stays well under a millisecond of server
/// time and its bind arrays small).
pub const MAX_BATCH: usize = 256;
/// Statements of one kind in flight at once: enough to overlap round trips, few enough to leave
/// the pool to the rest of the sender.
pub const MAX_IN_FLIGHT: usize = 4;

/// One kind of batched statement.
pub trait BatchOp: Send + Sync + 'static {
    /// What a caller hands in.
    type Item: Send + 'static;
    /// What a caller gets back.
    type Output: Send + 'static;
    /// Short name for logs and metrics.
    const NAME: &'static str;

    /// Runs one statement for `items` and returns one answer per item, in the same order.
    fn run(
        &self,
        conn: &mut AsyncPgConnection,
        items: &[Self::Item],
    ) -> impl Future<Output = diesel::QueryResult<Vec<Self::Output>>> + Send;
}

/// Why a batched write failed (the database error as text; callers treat it as an infrastructure
/// error, exactly like a failed single-row statement).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BatchError(String);

type Reply<O> = oneshot::Sender<Result<O, BatchError>>;

/// Queue in front of one [`BatchOp`]; cheap to share behind an `Arc`.
pub struct Batcher<Op: BatchOp> {
    tx: mpsc::UnboundedSender<(Op::Item, Reply<Op::Output>)>,
}

impl<Op: BatchOp> Batcher<Op> {
    /// Starts the batching task (on the current runtime). It ends when the batcher is dropped.
    pub fn start(op: Op, pool: PgPool) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(gather(Arc::new(op), pool, rx));
        Self { tx }
    }

    /// Queues `item` for the next statement and waits for its answer.
    pub async fn submit(&self, item: Op::Item) -> Result<Op::Output, BatchError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((item, reply))
            .map_err(|_| BatchError(format!("{} batcher stopped", Op::NAME)))?;
        answer
            .await
            .map_err(|_| BatchError(format!("{} batch dropped", Op::NAME)))?
    }
}

async fn gather<Op: BatchOp>(
    op: Arc<Op>,
    pool: PgPool,
    mut rx: mpsc::UnboundedReceiver<(Op::Item, Reply<Op::Output>)>,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Wait for a free statement slot first: whatever queues up meanwhile joins this batch.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let (op, pool) = (op.clone(), pool.clone());
        tokio::spawn(async move {
            execute(&*op, &pool, batch).await;
            drop(permit);
        });
    }
}

async fn execute<Op: BatchOp>(op: &Op, pool: &PgPool, batch: Vec<(Op::Item, Reply<Op::Output>)>) {
    let (items, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    metrics::histogram!("wa_sender_db_batch_size", "statement" => Op::NAME)
        .record(items.len() as f64);
    let mut conn = match pool.get().await {
        Ok(conn) => conn,
        Err(error) => {
            let error = BatchError(format!("database unavailable: {error}"));
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
            return;
        }
    };
    match op.run(&mut conn, &items).await {
        Ok(outputs) => answer_all(replies, outputs),
        Err(error) if items.len() > 1 && statement_was_not_applied(&error) => {
            tracing::warn!(statement = Op::NAME, error = %error, items = items.len(), "batched statement failed; retrying its items one by one");
            for (item, reply) in items.into_iter().zip(replies) {
                let one = std::slice::from_ref(&item);
                let result = op.run(&mut conn, one).await;
                match result {
                    Ok(outputs) => answer_all(vec![reply], outputs),
                    Err(error) => {
                        let _ = reply.send(Err(BatchError(error.to_string())));
                    }
                }
            }
        }
        Err(error) => {
            let error = BatchError(error.to_string());
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

fn answer_all<O>(replies: Vec<Reply<O>>, outputs: Vec<O>) {
    if outputs.len() != replies.len() {
        // A BatchOp must answer every item; failing them all is the only safe reading.
        let error = BatchError(format!(
            "batched statement answered {} of {} items",
            outputs.len(),
            replies.len()
        ));
        for reply in replies {
            let _ = reply.send(Err(error.clone()));
        }
        return;
    }
    for (reply, output) in replies.into_iter().zip(outputs) {
        let _ = reply.send(Ok(output));
    }
}

/// True for errors PostgreSQL raised while executing the statement (it was rolled back); false
/// for connection errors, after which the statement may or may not have been applied.
fn statement_was_not_applied(error: &DieselError) -> bool {
    match error {
        DieselError::DatabaseError(kind, _) => !matches!(
            kind,
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand
        ),
        DieselError::SerializationError(_) | DieselError::QueryBuilderError(_) => true,
        _ => false,
    }
}

/// Intake: record each job (idempotency) and learn its state.
pub struct RecordJobs;

/// A job as intake records it (owned, so it can wait in the batcher's queue).
#[derive(Debug, Clone)]
pub struct JobRecord {
    /// Tenant id.
    pub tenant_id: String,
    /// Job id.
    pub job_id: String,
    /// Normalised recipient, when `to` parsed.
    pub to_e164: Option<String>,
    /// Priority word.
    pub priority: &'static str,
    /// Graph `type` word.
    pub message_type: &'static str,
    /// Echoed reference kind.
    pub reference_kind: Option<String>,
    /// Echoed reference id.
    pub reference_id: Option<String>,
    /// The job's deadline.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl JobRecord {
    /// The row to insert.
    pub fn as_new(&self) -> NewSendJob<'_> {
        NewSendJob {
            tenant_id: &self.tenant_id,
            job_id: &self.job_id,
            to_e164: self.to_e164.as_deref(),
            priority: self.priority,
            message_type: self.message_type,
            reference_kind: self.reference_kind.as_deref(),
            reference_id: self.reference_id.as_deref(),
            expires_at: self.expires_at,
        }
    }
}

impl BatchOp for RecordJobs {
    type Item = JobRecord;
    /// The stored row (new, or the one recorded before).
    type Output = SendJobRow;
    const NAME: &'static str = "record_jobs";

    async fn run(
        &self,
        conn: &mut AsyncPgConnection,
        items: &[JobRecord],
    ) -> diesel::QueryResult<Vec<SendJobRow>> {
        let new: Vec<NewSendJob<'_>> = items.iter().map(JobRecord::as_new).collect();
        let rows = q::record_send_jobs(conn, &new).await?;
        let by_key: HashMap<(&str, &str), &SendJobRow> = rows
            .iter()
            .map(|row| ((row.tenant_id.as_str(), row.job_id.as_str()), row))
            .collect();
        let mut answers = Vec::with_capacity(items.len());
        for (item, new) in items.iter().zip(&new) {
            match by_key.get(&(item.tenant_id.as_str(), item.job_id.as_str())) {
                Some(row) => answers.push((*row).clone()),
                // Another transaction inserted it after this statement's snapshot was taken (its
                // conflict hid the row from us): a statement of its own sees it.
                None => answers.push(SendJobRow::insert_or_get(conn, new).await?),
            }
        }
        Ok(answers)
    }
}

/// Dispatch: claim a job right before its Graph call (`received` → `sending`).
pub struct ClaimJobs;

impl BatchOp for ClaimJobs {
    /// `(tenant_id, job_id)`.
    type Item = (String, String);
    /// The claim; `None` when the job is missing or not `received` (or another delivery of it in
    /// the same batch got the claim).
    type Output = Option<ClaimedJob>;
    const NAME: &'static str = "claim_jobs";

    async fn run(
        &self,
        conn: &mut AsyncPgConnection,
        items: &[(String, String)],
    ) -> diesel::QueryResult<Vec<Option<ClaimedJob>>> {
        let keys: Vec<(&str, &str)> = items
            .iter()
            .map(|(t, j)| (t.as_str(), j.as_str()))
            .collect();
        let claimed = q::claim_many_for_send(conn, &keys).await?;
        let mut by_key: HashMap<(String, String), ClaimedJob> = claimed
            .into_iter()
            .map(|c| ((c.tenant_id.clone(), c.job_id.clone()), c))
            .collect();
        // `remove`: a key given twice gets its claim once, by its first requester.
        Ok(items.iter().map(|key| by_key.remove(key)).collect())
    }
}

/// Dispatch: record Meta's acceptance (wamid) before the outcome is published.
pub struct RecordAccepted;

/// An accepted send (owned, so it can wait in the batcher's queue).
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Tenant id.
    pub tenant_id: String,
    /// Job id.
    pub job_id: String,
    /// The attempt Meta accepted.
    pub attempt: i32,
    /// Meta's message id.
    pub wa_message_id: String,
    /// When Meta answered.
    pub accepted_at: chrono::DateTime<chrono::Utc>,
}

impl BatchOp for RecordAccepted {
    type Item = Accepted;
    /// True when this call moved the job to `accepted`.
    type Output = bool;
    const NAME: &'static str = "record_accepted";

    async fn run(
        &self,
        conn: &mut AsyncPgConnection,
        items: &[Accepted],
    ) -> diesel::QueryResult<Vec<bool>> {
        let sends: Vec<AcceptedSend<'_>> = items
            .iter()
            .map(|a| AcceptedSend {
                tenant_id: &a.tenant_id,
                job_id: &a.job_id,
                attempt: a.attempt,
                wa_message_id: &a.wa_message_id,
                accepted_at: a.accepted_at,
            })
            .collect();
        let changed: HashSet<JobKey> = q::record_many_accepted(conn, &sends)
            .await?
            .into_iter()
            .collect();
        Ok(items
            .iter()
            .map(|a| {
                changed.contains(&JobKey {
                    tenant_id: a.tenant_id.clone(),
                    job_id: a.job_id.clone(),
                })
            })
            .collect())
    }
}
