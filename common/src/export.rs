//! The portable export stream of `qexport` and `qimport` (docs/export-format.md).
//!
//! A stream is an 8-byte magic, then records: a header, queue definitions, messages, and
//! an end record that counts what came before. Each record is a kind byte, a big-endian
//! 32-bit length, the payload, and a big-endian CRC-32 of kind, length and payload. Payloads
//! are UTF-8 JSON, except that a message's payload is the length of its JSON, the JSON, and
//! then the body's bytes as they are. Nothing depends on redb or on the machine's byte
//! order, and a stream that was cut short is told apart from a whole one by its end record.

use crate::message::Qos;
use crate::queue::QueueDef;
use crate::{QmError, QmResult};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

/// The first bytes of every stream.
pub const MAGIC: &[u8; 8] = b"QMEXPORT";
/// The stream version this qm writes and reads.
pub const VERSION: u32 = 1;
/// The largest record a reader takes: a body of 4 MiB and its properties, with room.
pub const RECORD_MAX: u32 = 5 << 20;

/// What the stream holds, first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub version: u32,
    /// The qm release that wrote it.
    pub qm_version: String,
    /// Seconds since the epoch.
    pub created: u64,
    /// Where the messages came from: device and queue space.
    pub device: String,
    pub qspace: String,
}

/// One message: every property qm keeps, and its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedMessage {
    pub props: Properties,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// A message's properties, as its record in a stream writes them (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Properties {
    /// 16 hexadecimal digits, as qm gives them.
    pub msgid: String,
    pub queue: String,
    /// Hexadecimal.
    pub corrid: String,
    pub priority: u8,
    /// Microseconds since the epoch.
    pub enqueued_us: u64,
    pub available_us: u64,
    /// The time it sorts by under `time` order.
    pub order_time_us: u64,
    pub expires_us: Option<u64>,
    pub retries: u32,
    pub delivery: Qos,
    pub reply_queue: Option<String>,
    pub failure_queue: Option<String>,
    pub reply_qos: Option<Qos>,
    pub urcode: i64,
    pub origin_queue: Option<String>,
    /// A placement out of the queue's order (`TPQTOP`, `TPQBEFOREMSGID`), kept as it was:
    /// top, the three sort parts, tie-break, before-offset. `None` for ordinary messages,
    /// which take their place from the importing queue's order.
    pub placement: Option<[i64; 6]>,
}

/// Part of an export as the daemon sends it to qmadmin: queue definitions (in the first
/// batch), then messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportBatch {
    pub queues: Vec<QueueDef>,
    pub messages: Vec<ExportedMessage>,
}

/// The last record: what came before it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trailer {
    pub queues: u64,
    pub messages: u64,
    /// Bytes of message bodies.
    pub bytes: u64,
}

/// One record of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Header(Header),
    Queue(QueueDef),
    Message(ExportedMessage),
    End(Trailer),
}

const HEADER: u8 = b'H';
const QUEUE: u8 = b'Q';
const MESSAGE: u8 = b'M';
const END: u8 = b'E';

fn bad(what: impl std::fmt::Display) -> QmError {
    QmError::inval(format!("not a valid qm export stream: {what}"))
}

fn io(e: std::io::Error) -> QmError {
    QmError::new(crate::Diagnostic::Os, format!("export stream: {e}"))
}

/// Writes a stream: [`Writer::new`] writes the magic and header, [`Writer::finish`] the end.
pub struct Writer<W: Write> {
    out: W,
    counted: Trailer,
}

impl<W: Write> Writer<W> {
    pub fn new(mut out: W, header: &Header) -> QmResult<Writer<W>> {
        out.write_all(MAGIC).map_err(io)?;
        let mut w = Writer { out, counted: Trailer::default() };
        w.record(HEADER, &json(header)?, &[])?;
        Ok(w)
    }

    pub fn queue(&mut self, def: &QueueDef) -> QmResult<()> {
        self.counted.queues += 1;
        self.record(QUEUE, &json(def)?, &[])
    }

    pub fn message(&mut self, m: &ExportedMessage) -> QmResult<()> {
        self.counted.messages += 1;
        self.counted.bytes += m.body.len() as u64;
        let meta = json(&m.props)?;
        self.record(MESSAGE, &meta, &m.body)
    }

    /// Writes the end record and hands the output back (to be synced by the caller).
    pub fn finish(mut self) -> QmResult<(W, Trailer)> {
        let counted = self.counted;
        self.record(END, &json(&counted)?, &[])?;
        self.out.flush().map_err(io)?;
        Ok((self.out, counted))
    }

    /// A record; a message's payload is its JSON's length, the JSON, then the body.
    fn record(&mut self, kind: u8, meta: &[u8], body: &[u8]) -> QmResult<()> {
        let with_len = kind == MESSAGE;
        let len = meta.len() + body.len() + if with_len { 4 } else { 0 };
        if len > RECORD_MAX as usize {
            return Err(QmError::inval(format!(
                "a record of {len} bytes is over the stream's limit"
            )));
        }
        let mut head = Vec::with_capacity(9);
        head.push(kind);
        head.extend_from_slice(&(len as u32).to_be_bytes());
        if with_len {
            head.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        }
        let mut crc = crc32fast::Hasher::new();
        for part in [&head[..], meta, body] {
            crc.update(part);
            self.out.write_all(part).map_err(io)?;
        }
        self.out.write_all(&crc.finalize().to_be_bytes()).map_err(io)
    }
}

fn json<T: Serialize>(value: &T) -> QmResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| QmError::system(format!("export stream: {e}")))
}

/// Reads a stream record by record; the end record must come, and must count what came.
pub struct Reader<R: Read> {
    input: R,
    counted: Trailer,
    ended: bool,
    started: bool,
}

impl<R: Read> Reader<R> {
    pub fn new(input: R) -> Reader<R> {
        Reader { input, counted: Trailer::default(), ended: false, started: false }
    }

    /// The next record; `None` after the end record. A stream that stops before its end
    /// record, or has anything after it, is an error.
    pub fn next_record(&mut self) -> QmResult<Option<Record>> {
        if self.ended {
            let mut extra = [0u8; 1];
            return match self.input.read(&mut extra).map_err(io)? {
                0 => Ok(None),
                _ => Err(bad("bytes follow its end record")),
            };
        }
        if !self.started {
            let mut magic = [0u8; 8];
            self.input
                .read_exact(&mut magic)
                .map_err(|_| bad("it does not begin with QMEXPORT"))?;
            if &magic != MAGIC {
                return Err(bad("it does not begin with QMEXPORT"));
            }
            self.started = true;
            let record = self.read_record()?;
            let Record::Header(h) = record else {
                return Err(bad("its first record is not its header"));
            };
            if h.version != VERSION {
                return Err(QmError::inval(format!(
                    "the export stream has version {}; this qm reads version {VERSION}",
                    h.version
                )));
            }
            return Ok(Some(Record::Header(h)));
        }
        let record = self.read_record()?;
        match &record {
            Record::Header(_) => return Err(bad("a second header")),
            Record::Queue(_) => self.counted.queues += 1,
            Record::Message(m) => {
                self.counted.messages += 1;
                self.counted.bytes += m.body.len() as u64;
            }
            Record::End(t) => {
                if *t != self.counted {
                    return Err(bad(format!(
                        "its end record counts {} queues and {} messages, {} and {} came",
                        t.queues, t.messages, self.counted.queues, self.counted.messages
                    )));
                }
                self.ended = true;
            }
        }
        Ok(Some(record))
    }

    fn read_record(&mut self) -> QmResult<Record> {
        let mut head = [0u8; 5];
        self.input.read_exact(&mut head).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => bad("it ends before its end record (cut short)"),
            _ => io(e),
        })?;
        let len = u32::from_be_bytes(head[1..5].try_into().expect("4 bytes"));
        if len > RECORD_MAX {
            return Err(bad(format!("a record of {len} bytes (the limit is {RECORD_MAX})")));
        }
        let mut payload = vec![0u8; len as usize + 4];
        self.input
            .read_exact(&mut payload)
            .map_err(|_| bad("it ends inside a record (cut short)"))?;
        let crc_at = payload.len() - 4;
        let stored = u32::from_be_bytes(payload[crc_at..].try_into().expect("4 bytes"));
        payload.truncate(crc_at);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        crc.update(&payload);
        if crc.finalize() != stored {
            return Err(bad(format!("record {} fails its checksum (damaged)", self.position())));
        }
        let at = self.position();
        match head[0] {
            HEADER => parse(&payload, at).map(Record::Header),
            QUEUE => parse(&payload, at).map(Record::Queue),
            END => parse(&payload, at).map(Record::End),
            MESSAGE => {
                let meta_len = payload
                    .get(..4)
                    .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
                    .filter(|n| 4 + n <= payload.len())
                    .ok_or_else(|| {
                        bad(format!("record {}: a message cut short", self.position()))
                    })?;
                let props: Properties = parse(&payload[4..4 + meta_len], at)?;
                let body = payload[4 + meta_len..].to_vec();
                Ok(Record::Message(ExportedMessage { props, body }))
            }
            kind => Err(bad(format!("a record of unknown kind {kind:#04x}"))),
        }
    }

    /// The number of the record being read, for messages (the header is 1).
    fn position(&self) -> u64 {
        2 + self.counted.queues + self.counted.messages
    }
}

/// Record number `at`'s JSON, as what it must be.
fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], at: u64) -> QmResult<T> {
    serde_json::from_slice(bytes).map_err(|e| bad(format!("record {at}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(i: u8) -> ExportedMessage {
        let props = Properties {
            msgid: format!("{:016x}", i),
            queue: "Q".into(),
            corrid: "0a0b".into(),
            priority: i,
            enqueued_us: 1,
            available_us: 2,
            order_time_us: 2,
            expires_us: Some(3),
            retries: 1,
            delivery: Qos::Persistent,
            reply_queue: Some("R".into()),
            failure_queue: None,
            reply_qos: None,
            urcode: -4,
            origin_queue: None,
            placement: None,
        };
        ExportedMessage { props, body: vec![i; i as usize * 100] }
    }

    fn stream(n: u8) -> Vec<u8> {
        let header = Header {
            version: VERSION,
            qm_version: "t".into(),
            created: 0,
            device: "d".into(),
            qspace: "QS".into(),
        };
        let mut w = Writer::new(Vec::new(), &header).unwrap();
        for i in 0..n {
            w.message(&message(i)).unwrap();
        }
        w.finish().unwrap().0
    }

    fn read_all(bytes: &[u8]) -> QmResult<Vec<Record>> {
        let mut r = Reader::new(bytes);
        let mut all = Vec::new();
        while let Some(record) = r.next_record()? {
            all.push(record);
        }
        Ok(all)
    }

    #[test]
    fn round_trip() {
        let records = read_all(&stream(3)).unwrap();
        assert_eq!(records.len(), 5);
        assert_eq!(records[2], Record::Message(message(1)));
        assert_eq!(records[4], Record::End(Trailer { queues: 0, messages: 3, bytes: 300 }));
    }

    #[test]
    fn cut_damaged_or_extended_streams_are_refused() {
        let whole = stream(3);
        for cut in [0, 5, 8, 20, whole.len() - 1] {
            assert!(read_all(&whole[..cut]).is_err(), "cut at {cut}");
        }
        for at in [3, 12, whole.len() / 2, whole.len() - 2] {
            let mut bad = whole.clone();
            bad[at] ^= 1;
            assert!(read_all(&bad).is_err(), "byte {at} flipped");
        }
        let mut longer = whole.clone();
        longer.push(0);
        assert!(read_all(&longer).is_err());
    }
}
