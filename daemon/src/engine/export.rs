//! `qexport` and `qimport` in the engine: a queue space's messages as portable records
//! ([`qm_common::export`]), and such records enqueued again.
//!
//! An export is a consistent view: the messages in memory only (non-persistent ones) when
//! it starts, then one read transaction of what redb holds (with every acknowledged write
//! applied first), read in msgid order. Messages of transactions not committed are not in
//! it; messages a transaction has dequeued but not committed are (they are still queued).
//!
//! An import keeps each message's msgid, properties and out-of-order placement; an ordinary
//! message takes its place from the importing queue's order. A message the queue space
//! holds already is skipped, so importing a stream twice adds nothing: the same msgid with
//! the same queue, enqueue time, correlation id and body length. When its msgid is another
//! message's (two queue spaces hand out the same msgids), it is added under a new msgid,
//! unless a message like it is there already (added so by an earlier import). The msgid
//! high-water mark is raised past the imported msgids, so that none is handed out again.

use super::index::{Entry, EntryState, Index};
use super::record::{MessageMeta, OrderKey, msgid_of, now_us, order_key, seq_of, split_stored};
use super::{Engine, SEQ_RESERVE, bad_queue};
use qm_common::export::{ExportedMessage, Properties};
use qm_common::message::{BODY_MAX, MsgId, Qos};
use qm_common::order::QueueOrder;
use qm_common::queue::QueueDef;
use qm_common::{QmError, QmResult};
use redb::ReadableTable;
use std::sync::Arc;

/// Which messages an export takes.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub queue: Option<String>,
    /// Enqueue times, seconds since the epoch, inclusive.
    pub enqueued: Option<(u64, u64)>,
}

impl Selection {
    fn takes(&self, meta: &MessageMeta) -> bool {
        self.queue.as_ref().is_none_or(|q| *q == meta.queue)
            && self.enqueued.is_none_or(|(lo, hi)| {
                let at = meta.enqueued_us / 1_000_000;
                lo <= at && at <= hi
            })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// A message as an export stream carries it.
fn exported(seq: u64, meta: &MessageMeta, body: Vec<u8>) -> ExportedMessage {
    let k = &meta.key;
    let ordinary = k.top == 0 && k.sub == 0;
    let props = Properties {
        msgid: msgid_of(seq).to_string(),
        queue: meta.queue.clone(),
        corrid: hex(&meta.corrid),
        priority: meta.priority,
        enqueued_us: meta.enqueued_us,
        available_us: meta.available_us,
        order_time_us: meta.order_time_us,
        expires_us: meta.expires_us,
        retries: meta.retries,
        delivery: if meta.persistent { Qos::Persistent } else { Qos::NonPersistent },
        reply_queue: meta.reply_queue.clone(),
        failure_queue: meta.failure_queue.clone(),
        reply_qos: meta.reply_qos,
        urcode: meta.urcode,
        origin_queue: meta.origin_queue.clone(),
        placement: (!ordinary).then_some([k.top, k.parts[0], k.parts[1], k.parts[2], k.tie, k.sub]),
    };
    ExportedMessage { props, body }
}

/// An imported message's sequence number and record, placed in `def`'s queue.
fn imported(message: &ExportedMessage, order: &QueueOrder) -> QmResult<(u64, MessageMeta)> {
    let m = &message.props;
    let bad = |what: &str| QmError::inval(format!("imported message {}: {what}", m.msgid));
    let seq = seq_of(&MsgId(m.msgid.as_bytes().to_vec()))
        .ok_or_else(|| bad("its msgid is not 16 lowercase hexadecimal digits"))?;
    if message.body.len() > BODY_MAX {
        return Err(bad(&format!("its body is over the limit of {BODY_MAX} bytes")));
    }
    if !(1..=100).contains(&m.priority) {
        return Err(bad(&format!("its priority {} is not 1 to 100", m.priority)));
    }
    for name in [&m.reply_queue, &m.failure_queue, &m.origin_queue].into_iter().flatten() {
        qm_common::names::check_queue_name(name).map_err(|e| bad(&e.message))?;
    }
    let corrid = unhex(&m.corrid).ok_or_else(|| bad("its corrid is not hexadecimal"))?;
    if corrid.len() > qm_common::message::ID_MAX {
        return Err(bad("its corrid is too long"));
    }
    let mut meta = MessageMeta {
        queue: m.queue.clone(),
        corrid,
        priority: m.priority,
        enqueued_us: m.enqueued_us,
        // Never before a microsecond after its enqueue time, which is not this queue
        // space's: so it is not taken for one enqueued here in sequence (see
        // `stored::in_sequence`), and keeps an `age` key.
        available_us: m.available_us.max(m.enqueued_us.saturating_add(1)),
        order_time_us: m.order_time_us,
        expires_us: m.expires_us,
        retries: m.retries,
        persistent: m.delivery != Qos::NonPersistent,
        reply_queue: m.reply_queue.clone(),
        failure_queue: m.failure_queue.clone(),
        reply_qos: m.reply_qos,
        urcode: m.urcode,
        body_len: message.body.len() as u64,
        origin_queue: m.origin_queue.clone(),
        key: OrderKey { top: 0, parts: [0; 3], tie: 0, sub: 0, seq },
    };
    meta.key = match m.placement {
        Some([top, p0, p1, p2, tie, sub]) => OrderKey { top, parts: [p0, p1, p2], tie, sub, seq },
        None => order_key(order, &meta, seq),
    };
    Ok((seq, meta))
}

/// The lock an export that moves messages (`qexport -x`) holds on them until its stream is
/// written.
const EXPORT_LOCK: u64 = u64::MAX - 1;

impl Engine {
    /// `qexport -x`: locks the messages the export takes (those no transaction holds, in
    /// each queue's order), hands them to `sink`, and returns them, still locked, for
    /// [`Engine::end_move`]. Blocking: reads redb.
    pub fn export_locked(
        &self,
        selection: &Selection,
        sink: &mut dyn FnMut(ExportedMessage) -> QmResult<()>,
    ) -> QmResult<Vec<u64>> {
        let queues: Vec<String> = (self.lock().index.queues.keys())
            .filter(|q| selection.queue.as_ref().is_none_or(|s| s == *q))
            .cloned()
            .collect();
        let mut taken = Vec::new();
        for queue in queues {
            if let Err(e) = self.lock_for_export(&queue, selection, &mut taken) {
                self.give_back(&taken);
                return Err(e);
            }
        }
        for seq in &taken {
            let entry = self.lock().index.msgs.get(seq).cloned();
            let sent = match entry {
                Some(e) => self.body_of(*seq, &e).and_then(|b| sink(exported(*seq, &e.meta, b))),
                None => Ok(()),
            };
            if let Err(e) = sent {
                self.give_back(&taken);
                return Err(e);
            }
        }
        Ok(taken)
    }

    /// Locks the messages of `queue` that `qexport -x` takes, a step at a time (see
    /// [`super::admin`]), and adds them to `taken` in the queue's order.
    fn lock_for_export(
        &self,
        queue: &str,
        selection: &Selection,
        taken: &mut Vec<u64>,
    ) -> QmResult<()> {
        let all = qm_common::message::Criteria::default();
        let seqs = match self.candidates(queue, &all) {
            Ok(seqs) => seqs,
            // Removed since the export began: nothing of it to take.
            Err(e) if e.diagnostic == qm_common::Diagnostic::BadQueue => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut locked = Vec::new();
        let outcome = seqs.chunks(super::admin::ADMIN_STEP).try_for_each(|step| {
            let mut inner = self.lock();
            for (seq, meta, state) in self.select(&inner, queue, &all, step)? {
                if !matches!(state, EntryState::Ready | EntryState::Waiting)
                    || !selection.takes(&meta)
                {
                    continue;
                }
                locked.push((meta.key, seq));
                inner.index.adopt(seq, meta, state, None);
                let blocks = self.blocks(&inner.index.msgs[&seq].meta);
                inner.index.set_state(seq, EntryState::Locked(EXPORT_LOCK), blocks);
            }
            Ok(())
        });
        // Those locked before an error too: the caller gives them back.
        locked.sort_unstable();
        taken.extend(locked.into_iter().map(|(_, seq)| seq));
        outcome
    }

    /// Ends `qexport -x`: removes the messages it locked, in one durable write, once their
    /// stream is written (`commit`), or gives them back to their queues; how many went.
    pub async fn end_move(&self, taken: Vec<u64>, commit: bool) -> QmResult<u64> {
        if !commit {
            self.give_back(&taken);
            return Ok(0);
        }
        let pending = {
            let inner = self.lock();
            let ops: Vec<_> = taken
                .iter()
                .filter_map(|seq| inner.index.msgs.get(seq).map(|e| (seq, e)))
                .filter(|(_, e)| e.meta.persistent && e.state == EntryState::Locked(EXPORT_LOCK))
                .map(|(seq, e)| self.delete(*seq, e))
                .collect();
            (!ops.is_empty()).then(|| self.send(ops))
        };
        let result = match pending {
            Some(p) => p.wait().await.map(drop),
            None => Ok(()),
        };
        if let Err(e) = result {
            self.give_back(&taken);
            return Err(e);
        }
        let mut inner = self.lock();
        let mut removed = 0;
        for seq in &taken {
            let Some(e) = inner.index.msgs.get(seq) else { continue };
            if e.state != EntryState::Locked(EXPORT_LOCK) {
                continue;
            }
            let blocks = self.blocks(&e.meta);
            inner.index.remove(*seq, blocks);
            removed += 1;
        }
        Ok(removed)
    }

    /// Gives messages an export locked back to their queues.
    pub fn give_back(&self, taken: &[u64]) {
        let mut inner = self.lock();
        let now = now_us();
        for seq in taken {
            let Some(e) = inner.index.msgs.get(seq) else { continue };
            if e.state != EntryState::Locked(EXPORT_LOCK) {
                continue;
            }
            let (blocks, state) = (self.blocks(&e.meta), Index::settle_state(&e.meta, now));
            inner.index.set_state(*seq, state, blocks);
            inner.index.evict(*seq);
        }
        self.timer_wake.notify_one();
    }

    /// The definitions of the queues an export takes; refuses a queue that does not exist.
    pub fn export_queues(&self, selection: &Selection) -> QmResult<Vec<QueueDef>> {
        let inner = self.lock();
        if let Some(q) = &selection.queue
            && !inner.index.queues.contains_key(q)
        {
            return Err(bad_queue(q, &self.name));
        }
        let mut defs: Vec<QueueDef> = inner
            .index
            .queues
            .values()
            .map(|q| q.def.clone())
            .filter(|d| selection.queue.as_ref().is_none_or(|q| *q == d.name))
            .collect();
        defs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(defs)
    }

    /// Hands every message the export takes to `sink`, in msgid order (see the module's
    /// comment). Blocking: reads redb.
    pub fn export(
        &self,
        selection: &Selection,
        sink: &mut dyn FnMut(ExportedMessage) -> QmResult<()>,
    ) -> QmResult<()> {
        let in_memory: Vec<ExportedMessage> = {
            let inner = self.lock();
            inner
                .index
                .msgs
                .iter()
                .filter(|(_, e)| {
                    !e.meta.persistent && !matches!(e.state, EntryState::Uncommitted(_))
                })
                .filter(|(_, e)| selection.takes(&e.meta))
                .map(|(seq, e)| {
                    exported(*seq, &e.meta, e.body.as_deref().unwrap_or_default().to_vec())
                })
                .collect()
        };
        for m in in_memory {
            sink(m)?;
        }
        let fail = |e: &dyn std::fmt::Display| QmError::system(format!("export: reading: {e}"));
        self.db.read(|txn| {
            let msg = match txn.open_table(self.tables.msg()) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
                Err(e) => return Err(fail(&e)),
            };
            let parts = txn.open_table(self.tables.parts()).ok();
            for item in msg.iter().map_err(|e| fail(&e))? {
                let (k, v) = item.map_err(|e| fail(&e))?;
                let seq = k.value();
                let stored = split_stored(v.value())
                    .ok_or_else(|| fail(&format_args!("message {seq:016x} is cut short")))?;
                let meta: MessageMeta = postcard::from_bytes(stored.meta)
                    .map_err(|e| fail(&format_args!("message {seq:016x}: {e}")))?;
                if !selection.takes(&meta) {
                    continue;
                }
                if let Some(at) = &stored.logged {
                    let body = super::writer::read_logged(self.db.bodies(), at)?;
                    sink(exported(seq, &meta, body))?;
                    continue;
                }
                let mut body = Vec::with_capacity(meta.body_len as usize);
                if stored.parted {
                    let parts = parts.as_ref().ok_or_else(|| fail(&"body parts missing"))?;
                    for part in parts.range((seq, 0u32)..=(seq, u32::MAX)).map_err(|e| fail(&e))? {
                        body.extend_from_slice(part.map_err(|e| fail(&e))?.1.value());
                    }
                }
                body.extend_from_slice(stored.tail);
                sink(exported(seq, &meta, body))?;
            }
            Ok(())
        })
    }

    /// Whether the queue space holds `meta`'s message under another msgid than `seq`: one
    /// imported before whose msgid was taken (see [`Engine::import`]).
    fn holds_twin(
        &self,
        inner: &super::Inner,
        disk: &mut super::pick::Disk<'_>,
        meta: &MessageMeta,
    ) -> QmResult<bool> {
        if inner.index.msgs.values().any(|e| same(&e.meta, meta)) {
            return Ok(true);
        }
        let seqs = match disk.view()? {
            Some(view) => view.enqueued_at(&meta.queue, meta.enqueued_us)?,
            None => return Ok(false),
        };
        for seq in seqs {
            if let Some((found, _)) = self.lookup(inner, disk, seq)?
                && same(&found, meta)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Enqueues imported messages in one durable write (see the module's comment).
    pub async fn import(&self, messages: Vec<ExportedMessage>) -> QmResult<Imported> {
        let now = now_us();
        let (placed, done, mark, pending) = {
            let mut inner = self.lock();
            let mut done = Imported::default();
            let mut ops = Vec::new();
            let mut placed: Vec<(u64, u64)> = Vec::new();
            let outcome =
                self.place_imported(&mut inner, messages, now, &mut ops, &mut placed, &mut done);
            if let Err(e) = outcome {
                for (seq, blocks) in placed {
                    inner.index.remove(seq, blocks);
                }
                return Err(e);
            }
            // Msgids handed out from now on come after every one imported.
            let mut mark = None;
            if inner.index.next_seq > inner.index.reserved || done.highest > inner.index.next_seq {
                inner.index.next_seq = inner.index.next_seq.max(done.highest);
                inner.index.reserved = inner.index.reserved.max(inner.index.next_seq + SEQ_RESERVE);
                let at = inner.index.reserved;
                ops.push(self.seq_state(at));
                mark = Some(at);
            }
            let pending = (!ops.is_empty()).then(|| self.send(ops));
            (placed, done, mark, pending)
        };
        let result = match pending {
            Some(p) => p.wait().await.map(drop),
            None => Ok(()),
        };
        let mut inner = self.lock();
        match result {
            Ok(()) => {
                if let Some(mark) = mark {
                    inner.seq_durable = inner.seq_durable.max(mark);
                }
                for (seq, _) in &placed {
                    self.finalize_enqueue(&mut inner, *seq, now_us());
                }
                Ok(done)
            }
            Err(e) => {
                for (seq, blocks) in placed {
                    inner.index.remove(seq, blocks);
                }
                Err(e)
            }
        }
    }

    /// Puts each imported message in the index, uncommitted, and its write in `ops`.
    fn place_imported(
        &self,
        inner: &mut super::Inner,
        messages: Vec<ExportedMessage>,
        now: u64,
        ops: &mut Vec<super::writer::WriteOp>,
        placed: &mut Vec<(u64, u64)>,
        done: &mut Imported,
    ) -> QmResult<()> {
        let mut disk = self.disk();
        for m in messages {
            let q = inner.index.queues.get(&m.props.queue);
            let order = &q.ok_or_else(|| bad_queue(&m.props.queue, &self.name))?.def.order;
            let (mut seq, mut meta) = imported(&m, order)?;
            // Those placed already in this batch are in memory: the lookup finds them too.
            let taken = self.lookup(inner, &mut disk, seq)?.map(|(found, _)| found);
            match taken {
                Some(found) if same(&found, &meta) => {
                    done.skipped += 1;
                    continue;
                }
                Some(_) if self.holds_twin(inner, &mut disk, &meta)? => {
                    done.skipped += 1;
                    continue;
                }
                // Its msgid is another message's here: it takes a new one, and keeps its
                // place (its order key still sorts by the msgid it had).
                Some(_) => {
                    inner.index.next_seq += 1;
                    seq = inner.index.next_seq;
                    meta.key = OrderKey { seq, ..meta.key };
                    done.renumbered += 1;
                }
                None => done.highest = done.highest.max(seq),
            }
            if meta.expires_us.is_some_and(|e| e <= now) {
                done.skipped += 1;
                continue;
            }
            self.check_capacity(inner, meta.persistent, meta.body_len)?;
            let blocks = self.blocks(&meta);
            let body: Arc<[u8]> = m.body.into();
            if meta.persistent {
                ops.push(self.put(seq, &meta, Some(body.clone())));
            }
            let state = EntryState::Uncommitted(0);
            inner.index.insert(seq, Entry { meta, state, body: Some(body), body_at: None }, blocks);
            placed.push((seq, blocks));
            done.added += 1;
        }
        Ok(())
    }
}

/// Whether two records are of the same message, as far as an import can tell: the same
/// queue, enqueue time, correlation id and body length.
fn same(a: &MessageMeta, b: &MessageMeta) -> bool {
    a.queue == b.queue
        && a.enqueued_us == b.enqueued_us
        && a.corrid == b.corrid
        && a.body_len == b.body_len
}

/// What an import did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Imported {
    pub added: u64,
    /// Held already (by msgid, or under a new msgid by an earlier import), or expired.
    pub skipped: u64,
    /// Added under a new msgid: theirs was another message's here.
    pub renumbered: u64,
    /// The highest msgid kept.
    pub highest: u64,
}
