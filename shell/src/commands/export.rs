//! `qexport` and `qimport`: a queue space's messages to and from the portable stream of
//! docs/export-format.md, in a file or on standard output and input (`-`).

use crate::getopt::Args;
use crate::progress::Dots;
use crate::shell::{CmdResult, Positionals, Shell};
use qm_common::client::{Client, Done};
use qm_common::export::{ExportBatch, Header, Reader, Record, VERSION, Writer};
use qm_common::names::check_queue_name;
use qm_common::protocol::{MessageRequest, NoteLevel, QueueRequest, Reply, Request};
use qm_common::time::parse_tuxedo_time;
use qm_common::{Diagnostic, QmError, QmResult};
use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::rc::Rc;

/// Messages and body bytes `qimport` sends in one request (one durable write): as many as
/// keep its journal record under the journal's limit for one record (2 MiB), beyond which
/// qmd commits through redb itself, more slowly.
const IMPORT_BATCH: usize = 2000;
const IMPORT_BATCH_BYTES: usize = 7 << 18;

fn queue_option(args: &Args) -> Result<Option<String>, String> {
    args.value('q')
        .map(|q| check_queue_name(q).map(|()| q.to_string()).map_err(|e| e.to_string()))
        .transpose()
}

fn file_name(text: &str) -> QmResult<String> {
    if text.is_empty() {
        return Err(QmError::invalid("File", text, "give a path, or - for standard input/output"));
    }
    Ok(text.to_string())
}

/// Where an export goes: a new file (never one that exists), or standard output.
fn output(path: &str) -> Result<(Box<dyn Write>, Option<std::fs::File>), String> {
    if path == "-" {
        return Ok((Box::new(std::io::stdout().lock()), None));
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                format!("{path} exists: qexport writes a new file, it never overwrites one")
            }
            _ => format!("{path}: {e}"),
        })?;
    let sync = file.try_clone().map_err(|e| format!("{path}: {e}"))?;
    Ok((Box::new(BufWriter::with_capacity(1 << 20, file)), Some(sync)))
}

/// `qexport [-q queue] [-t time1[-time2]] [-k | -x] file`.
pub fn qexport(sh: &mut Shell, args: Args) -> CmdResult {
    let queue = queue_option(&args)?;
    if args.flag('k') && args.flag('x') {
        return Err("qexport: -k keeps the messages and -x takes them out: give one".into());
    }
    let take = args.flag('x');
    let enqueued = match args.value('t') {
        Some(t) => Some(
            super::msgadmin::range("Enqueue time", t, |s| parse_tuxedo_time("Enqueue time", s))
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let mut pos = Positionals::new(args.positionals);
    let path = sh.required(&mut pos, "File: ", file_name)?;
    sh.require_open()?;
    let qspace = sh.open_qspace.clone().unwrap_or_default();
    let (out, sync) = output(&path)?;
    let header = Header {
        version: VERSION,
        qm_version: env!("CARGO_PKG_VERSION").to_string(),
        created: qm_common::time::now_secs(),
        device: sh.device.display().to_string(),
        qspace: qspace.clone(),
    };
    let mut writer = Some(Writer::new(out, &header).map_err(|e| e.to_string())?);
    // Counted against the messages the queues hold now (a time range exports fewer).
    let show = sh.shows_progress();
    let total = if show { held(sh, queue.clone()) } else { 0 };
    let mut dots = Dots::new(show, sh.json_now || path == "-");
    let mut exported = 0u64;
    let request = Request::Message(MessageRequest::Export { queue, enqueued, take });
    let streamed = sh.call_streaming(request, &mut |batch: ExportBatch| {
        let w = writer.as_mut().ok_or_else(|| QmError::system("the export stream is closed"))?;
        for def in &batch.queues {
            w.queue(def)?;
        }
        for m in &batch.messages {
            w.message(m)?;
        }
        exported += batch.messages.len() as u64;
        dots.tell(exported, total);
        Ok(())
    });
    dots.finish(streamed.is_ok());
    // A stream that failed has no end record: no import takes it as whole; what -x held
    // goes back to its queues.
    let written = streamed.and_then(|_| {
        let (mut out, counted) =
            writer.take().expect("written").finish().map_err(|e| e.to_string())?;
        out.flush().map_err(|e| format!("{path}: {e}"))?;
        if let Some(file) = sync {
            file.sync_all().map_err(|e| format!("{path}: {e}"))?;
        }
        Ok(counted)
    });
    let counted = match written {
        Ok(counted) => counted,
        Err(e) => {
            if take {
                let _ =
                    sh.call_quiet(Request::Message(MessageRequest::EndExport { commit: false }));
            }
            return Err(e);
        }
    };
    let removed = match take {
        true => {
            let end = Request::Message(MessageRequest::EndExport { commit: true });
            match sh.call(end)?.reply {
                Reply::Count(n) => format!(
                    ", and took {} out of it",
                    qm_common::plural::count(n, "message", "messages")
                ),
                _ => String::new(),
            }
        }
        false => String::new(),
    };
    let said = format!(
        "Exported {} ({} bytes) and {} of queue space {qspace} to {path}{removed}",
        qm_common::plural::count(counted.messages, "message", "messages"),
        counted.bytes,
        qm_common::plural::count(counted.queues, "queue definition", "queue definitions"),
    );
    // Standard output is the stream itself when it is `-`.
    match path.as_str() {
        "-" => eprintln!("{said}"),
        _ => sh.info(&said),
    }
    Ok(())
}

/// The messages `queue` holds now, or the open queue space's queues together; 0 when
/// that cannot be told (the export then says why it fails, if it does).
fn held(sh: &mut Shell, queue: Option<String>) -> u64 {
    match sh.call_quiet(Request::Queue(QueueRequest::Info { name: queue })) {
        Ok(Done { reply: Reply::Queues(listing), .. }) => listing.total.messages(),
        _ => 0,
    }
}

/// A reader that counts the bytes read through it, for `qimport`'s progress.
struct Counted<R> {
    inner: R,
    read: Rc<Cell<u64>>,
}

/// `qimport`'s dots: the bytes of its file read so far, of the file's size.
struct FileProgress {
    dots: Dots,
    read: Rc<Cell<u64>>,
    size: u64,
}

impl FileProgress {
    /// `input` counted; dots only when `show` and the size is known (not standard input).
    fn of(
        input: Box<dyn Read>,
        size: u64,
        show: bool,
        to_err: bool,
    ) -> (Counted<Box<dyn Read>>, Self) {
        let read = Rc::new(Cell::new(0));
        let counted = Counted { inner: input, read: read.clone() };
        (counted, FileProgress { dots: Dots::new(show && size > 0, to_err), read, size })
    }

    fn tell(&mut self) {
        self.dots.tell(self.read.get(), self.size);
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// `qimport [-q queue] file`.
pub fn qimport(sh: &mut Shell, args: Args) -> CmdResult {
    let only = queue_option(&args)?;
    let mut pos = Positionals::new(args.positionals);
    let path = sh.required(&mut pos, "File: ", file_name)?;
    sh.require_open()?;
    let qspace = sh.open_qspace.clone().unwrap_or_default();
    // Progress by the bytes of a file read (a stream on standard input has no known end).
    let (input, size): (Box<dyn Read>, u64) = if path == "-" {
        (Box::new(std::io::stdin().lock()), 0)
    } else {
        let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        (Box::new(file), size)
    };
    let (input, progress) = FileProgress::of(input, size, sh.shows_progress(), sh.json_now);
    let mut reader = Reader::new(BufReader::with_capacity(1 << 20, input));
    let mut import = Import {
        added: 0,
        skipped: 0,
        renumbered: 0,
        created: Vec::new(),
        batch: Vec::new(),
        bytes: 0,
        senders: None,
        progress,
    };
    let outcome = import.run(sh, &mut reader, only.as_deref());
    import.progress.dots.finish(outcome.is_ok());
    let renumbered = match import.renumbered {
        0 => String::new(),
        n => format!(" ({n} under new msgids: theirs were other messages' here)"),
    };
    let done = format!(
        "{}{renumbered} into queue space {qspace}, {} already there",
        qm_common::plural::count(import.added, "message imported", "messages imported"),
        import.skipped
    );
    let created = match import.created.is_empty() {
        true => String::new(),
        false => format!("; queues created: {}", import.created.join(", ")),
    };
    match outcome {
        Ok(()) => {
            sh.info(&format!("{done}{created}"));
            Ok(())
        }
        Err(e) => Err(format!(
            "{path}: {e}; {done} before that{created} (a repeated import adds only what is missing)"
        )),
    }
}

struct Import {
    added: u64,
    skipped: u64,
    renumbered: u64,
    created: Vec<String>,
    batch: Vec<qm_common::export::ExportedMessage>,
    bytes: usize,
    /// The connections batches go on, once the first batch is ready; None after they
    /// could not be made: batches then go one at a time on the session's own.
    senders: Option<Option<Senders>>,
    progress: FileProgress,
}

/// Import requests in flight at once, each on a connection of its own: while qmd writes
/// one batch, it reads and checks the next, and qmadmin reads the stream. Messages keep
/// their order all the same: a message's place in its queue comes from the stream (its
/// priority, times and msgid), not from when its batch arrived.
const IMPORT_CONNECTIONS: usize = 4;

/// The extra connections of an import and the batches in flight on them.
struct Senders {
    /// Their own runtime, with a thread that sends while qmadmin reads the stream.
    runtime: tokio::runtime::Runtime,
    idle: Vec<Client>,
    busy: VecDeque<tokio::task::JoinHandle<(Client, QmResult<Done>)>>,
}

impl Senders {
    fn new(sh: &Shell) -> Result<Senders, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the import's connections: {e}"))?;
        let idle = sh.more_connections(IMPORT_CONNECTIONS, &runtime)?;
        Ok(Senders { runtime, idle, busy: VecDeque::new() })
    }

    /// The answer of the oldest batch in flight, if any.
    fn finish_one(&mut self) -> Option<QmResult<Done>> {
        let handle = self.busy.pop_front()?;
        match self.runtime.block_on(handle) {
            Ok((client, result)) => {
                self.idle.push(client);
                Some(result)
            }
            Err(e) => Some(Err(QmError::system(format!("an import batch was lost: {e}")))),
        }
    }
}

impl Import {
    fn run<R: Read>(
        &mut self,
        sh: &mut Shell,
        reader: &mut Reader<R>,
        only: Option<&str>,
    ) -> Result<(), String> {
        let read = self.read(sh, reader, only);
        // Whatever went wrong, the batches already sent are answered and counted.
        let sent = self.finish(sh);
        read.and(sent)
    }

    fn read<R: Read>(
        &mut self,
        sh: &mut Shell,
        reader: &mut Reader<R>,
        only: Option<&str>,
    ) -> Result<(), String> {
        let wanted = |queue: &str| only.is_none_or(|q| q == queue);
        while let Some(record) = reader.next_record().map_err(|e| e.message)? {
            match record {
                Record::Header(_) => {}
                Record::Queue(def) if wanted(&def.name) => self.define(sh, def)?,
                Record::Queue(_) => {}
                Record::Message(m) if wanted(&m.props.queue) => {
                    self.bytes += m.body.len();
                    self.batch.push(m);
                    if self.batch.len() >= IMPORT_BATCH || self.bytes >= IMPORT_BATCH_BYTES {
                        self.send(sh)?;
                    }
                }
                Record::Message(_) => {}
                Record::End(_) => self.send(sh)?,
            }
        }
        Ok(())
    }

    /// Creates a queue the stream defines and the queue space lacks.
    fn define(&mut self, sh: &mut Shell, def: qm_common::queue::QueueDef) -> Result<(), String> {
        let name = def.name.clone();
        match sh.call_quiet(Request::Queue(QueueRequest::Get { name: name.clone() })) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.diagnostic, Diagnostic::BadQueue | Diagnostic::NotFound) => {
                sh.call(Request::Queue(QueueRequest::Create(def)))?;
                self.created.push(name);
                Ok(())
            }
            Err(e) => Err(e.message),
        }
    }

    /// Sends the batch gathered so far: on a free extra connection, after waiting for the
    /// oldest batch in flight when none is free; on the session's own connection when
    /// there are no extra ones.
    fn send(&mut self, sh: &mut Shell) -> Result<(), String> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let messages = std::mem::take(&mut self.batch);
        self.bytes = 0;
        self.progress.tell();
        let request = Request::Message(MessageRequest::Import { messages });
        let senders = self.senders.get_or_insert_with(|| Senders::new(sh).ok());
        let Some(senders) = senders else {
            let done = sh.call(request)?;
            self.tally(&done.reply);
            return Ok(());
        };
        if senders.idle.is_empty() {
            let answer = senders.finish_one().expect("no connection is free, so one is busy");
            self.count(sh, answer)?;
        }
        let senders = self.senders.as_mut().and_then(Option::as_mut).expect("made above");
        let mut client = senders.idle.pop().expect("a connection is free");
        let sending = async move {
            let result = client.call(request).await;
            (client, result)
        };
        senders.busy.push_back(senders.runtime.spawn(sending));
        Ok(())
    }

    /// Waits for every batch in flight; the first failure, once all are answered.
    fn finish(&mut self, sh: &mut Shell) -> Result<(), String> {
        let mut first = Ok(());
        while let Some(answer) =
            self.senders.as_mut().and_then(Option::as_mut).and_then(Senders::finish_one)
        {
            let counted = self.count(sh, answer);
            if first.is_ok() {
                first = counted;
            }
        }
        first
    }

    /// Adds a batch's answer to the counts and shows its notes.
    fn count(&mut self, sh: &mut Shell, answer: QmResult<Done>) -> Result<(), String> {
        let done = answer.map_err(|e| e.message)?;
        for note in &done.notes {
            match note.level {
                NoteLevel::Info => sh.info(&note.text),
                NoteLevel::Warn => sh.warn(&note.text),
            }
        }
        self.tally(&done.reply);
        Ok(())
    }

    fn tally(&mut self, reply: &Reply) {
        if let Reply::Imported { added, skipped, renumbered } = reply {
            self.added += added;
            self.skipped += skipped;
            self.renumbered += renumbered;
        }
    }
}
