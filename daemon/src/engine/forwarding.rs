//! What forwarders need of a queue space beyond the data plane: queue definitions, the
//! notification that a queue has a ready message, and sending a failed request to the error
//! queue at commit.

use super::Engine;
use qm_common::message::MsgId;
use qm_common::queue::QueueDef;
use qm_common::{Diagnostic, QmError, QmResult};
use std::sync::Arc;
use tokio::sync::Notify;

impl Engine {
    pub fn queue_def(&self, queue: &str) -> Option<QueueDef> {
        self.lock().index.queues.get(queue).map(|q| q.def.clone())
    }

    /// Woken whenever a message of `queue` becomes ready.
    pub fn queue_notify(&self, queue: &str) -> Option<Arc<Notify>> {
        self.lock().index.queues.get(queue).map(|q| q.notify.clone())
    }

    /// Whether a message of one of `queues` is waiting out its retry delay (it was rolled
    /// back and will be ready again soon). Messages an application scheduled for later are
    /// not counted: they have not been retried.
    pub fn retry_pending(&self, queues: &[String]) -> bool {
        let inner = self.lock();
        queues.iter().any(|q| inner.index.queues.get(q).is_some_and(|q| q.retrying > 0))
    }

    /// At commit, move this message (dequeued in `txid`) to the error queue instead of
    /// deleting it.
    pub fn move_to_error_at_commit(&self, txid: u64, msgid: &MsgId) -> QmResult<()> {
        let mut inner = self.lock();
        let seq = super::record::seq_of(msgid).ok_or_else(|| {
            QmError::new(
                Diagnostic::BadMsgid,
                format!("Message {msgid} is not one of this queue space"),
            )
        })?;
        let txn = inner.txns.get_mut(&txid).ok_or_else(|| {
            QmError::new(Diagnostic::Tran, format!("Transaction {txid} does not exist"))
        })?;
        if !txn.dequeued.contains(&seq) {
            return Err(QmError::new(
                Diagnostic::BadMsgid,
                format!("Message {msgid} was not dequeued in transaction {txid}"),
            ));
        }
        txn.to_error.push(seq);
        Ok(())
    }
}
