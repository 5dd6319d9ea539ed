//! The shell's state and the services commands use: calling the daemon, printing, prompting.

use crate::input::{Input, Read};
use qm_common::client::{Client, Done};
use qm_common::protocol::{DaemonRequest, DataRequest, Names, NoteLevel, QueueRequest, Request};
use qm_common::{QmError, QmResult};
use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The confirmation question of commands that destroy or change.
const CONFIRM: &str = "Are you sure? [y, n] ";

/// Why a command failed; printed as `ERROR: ...`.
pub type Failure = String;
pub type CmdResult = Result<(), Failure>;

/// The positional arguments not yet consumed by a command.
#[derive(Debug, Default)]
pub struct Positionals(VecDeque<String>);

impl Positionals {
    pub fn new(args: Vec<String>) -> Self {
        Positionals(args.into())
    }

    /// Takes the next positional argument, if one is left.
    pub fn take(&mut self) -> Option<String> {
        self.0.pop_front()
    }

    /// The next positional argument, left in place.
    pub fn peek(&self) -> Option<&String> {
        self.0.front()
    }
}

/// What becomes of an answer that did not parse.
enum Bad {
    Fail(Failure),
    AskAgain,
    CarryOn,
}

/// One answer: a positional argument or a line typed at a prompt.
struct Answer {
    text: String,
    from_prompt: bool,
    /// Why the line could not be taken at all (it is not text).
    unreadable: Option<QmError>,
}

impl Answer {
    fn given(text: String, from_prompt: bool) -> Answer {
        Answer { text, from_prompt, unreadable: None }
    }

    /// Empty, and not because it could not be read.
    fn is_empty(&self) -> bool {
        self.text.is_empty() && self.unreadable.is_none()
    }

    fn parse<T>(&self, parse: impl Fn(&str) -> QmResult<T>) -> QmResult<T> {
        match &self.unreadable {
            Some(e) => Err(e.clone()),
            None => parse(&self.text),
        }
    }
}

/// The running shell.
pub struct Shell {
    runtime: tokio::runtime::Runtime,
    client: Client,
    pub device: PathBuf,
    /// The address the daemon was reached at, when not through the device's own socket.
    pub remote: Option<String>,
    pub input: Box<dyn Input>,
    pub echo: bool,
    pub verbose: bool,
    pub paginate: bool,
    /// `--json` given to qmadmin itself: every listing prints JSON.
    pub json: bool,
    /// The running command prints JSON: notes go to standard error so that standard output
    /// stays one JSON document.
    pub json_now: bool,
    /// Names offered to completion, refreshed after every command.
    pub names: Arc<Mutex<Names>>,
    /// Commands come from `-c`: standard input is free for message bodies.
    pub script_mode: bool,
    /// A message body was read from standard input already (it holds only one).
    pub stdin_read: bool,
    /// The queue message commands act on (`qset`).
    pub target_queue: Option<String>,
    /// The selection message commands act on (`qscan`).
    pub criteria: qm_common::message::Criteria,
    /// The first bad answer a script gave to a prompt. The command goes on reading its
    /// answers (so that they are not run as commands) and fails before it reaches qmd.
    pub deferred: Option<Failure>,
    /// The running command came on a line that is not UTF-8 (see [`crate::input::raw_text`]):
    /// its message body stands for bytes as they were read.
    pub raw_line: bool,
    /// The transaction this session began and has not committed or rolled back yet.
    pub transaction: Option<u64>,
    /// The queue space `qopen` opened, to open again on a new connection.
    pub open_qspace: Option<String>,
    /// How to reach the daemon again when a connection is given up (Ctrl-C during a wait)
    /// or lost.
    pub reconnect: Option<Reconnect>,
    /// Ctrl-C ended the running command (at one of its prompts or while it waited): an
    /// empty line does not repeat it.
    pub interrupted: bool,
}

/// Makes a new connection to the same daemon.
pub type Reconnect = Box<dyn Fn(&tokio::runtime::Runtime) -> Result<Client, String>>;

impl Shell {
    pub fn new(
        runtime: tokio::runtime::Runtime,
        client: Client,
        device: PathBuf,
        input: Box<dyn Input>,
    ) -> Self {
        let paginate = input.interactive() && std::io::stdout().is_terminal();
        if input.interactive() {
            crate::interrupt::catch();
        }
        Shell {
            runtime,
            client,
            device,
            remote: None,
            input,
            echo: false,
            verbose: false,
            paginate,
            json: false,
            json_now: false,
            names: Arc::default(),
            script_mode: false,
            stdin_read: false,
            target_queue: None,
            criteria: Default::default(),
            deferred: None,
            raw_line: false,
            transaction: None,
            open_qspace: None,
            reconnect: None,
            interrupted: false,
        }
    }

    /// The pid of the daemon this session speaks to.
    pub fn daemon_pid(&self) -> u32 {
        self.client.welcome().daemon_pid
    }

    /// The runtime the session's requests run on, for work beside the daemon's connection.
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }

    /// Sends a request; prints the notes that came back; fails with the daemon's message.
    pub fn call(&mut self, request: Request) -> Result<Done, Failure> {
        self.call_with_progress(request, false)
    }

    /// Whether long work shows progress dots: in verbose mode (as Tuxedo) or on a terminal.
    pub fn shows_progress(&self) -> bool {
        self.verbose || std::io::stdout().is_terminal()
    }

    /// [`Shell::call_with_progress`] for long work: dots when [`Shell::shows_progress`].
    pub fn call_long(&mut self, request: Request) -> Result<Done, Failure> {
        let show = self.shows_progress();
        self.call_with_progress(request, show)
    }

    /// Like [`Shell::call`], showing progress dots (one per 5%) when `show` is true and the
    /// daemon tells progress (it does for work long enough to want it).
    pub fn call_with_progress(&mut self, request: Request, show: bool) -> Result<Done, Failure> {
        // Data-plane failures also name their QME* diagnostic, so that a script can tell
        // "no message" from "no space" without reading the sentence.
        if let Some(bad) = self.deferred.take() {
            return Err(bad);
        }
        self.mend()?;
        let data = matches!(request, Request::Data(_));
        // Progress goes where notes go: standard error while the command prints JSON.
        let mut dots = crate::progress::Dots::new(show, self.json_now);
        // Only a dequeue waiting for a message can take long enough to want Ctrl-C.
        let interruptible = self.input.interactive()
            && matches!(&request, Request::Data(DataRequest::Dequeue { ctl, .. }) if ctl.wait_ms.is_some());
        crate::interrupt::clear();
        let call = self.client.call_with_progress(request, |p| dots.tell(p.done, p.total));
        let result = self.runtime.block_on(async {
            tokio::select! {
                result = call => Some(result),
                () = crate::interrupt::typed(), if interruptible => None,
            }
        });
        let Some(result) = result else {
            self.interrupted = true;
            return Err(self.give_up_connection());
        };
        // Finished is 100%, whether or not the last progress frame arrived before the reply.
        dots.finish(result.is_ok());
        let done = result.map_err(|e| {
            // A refusal of rights names its diagnostic first already.
            let named = e.message.starts_with(e.diagnostic.name());
            if data && !named {
                format!("{} ({})", e.message, e.diagnostic.name())
            } else {
                e.message
            }
        })?;
        for note in &done.notes {
            match note.level {
                NoteLevel::Info => self.info(&note.text),
                NoteLevel::Warn => self.warn(&note.text),
            }
        }
        Ok(done)
    }

    /// Sends a request and returns the daemon's answer as it is, printing nothing.
    pub fn call_quiet(&mut self, request: Request) -> QmResult<Done> {
        self.mend().map_err(|e| qm_common::QmError::new(qm_common::Diagnostic::Os, e))?;
        self.runtime.block_on(self.client.call(request))
    }

    /// Sends a request whose answer streams (`qexport`): `on_batch` gets each part.
    pub fn call_streaming(
        &mut self,
        request: Request,
        on_batch: &mut dyn FnMut(qm_common::export::ExportBatch) -> QmResult<()>,
    ) -> Result<Done, Failure> {
        self.mend()?;
        let call = self.client.call_streaming(request, |_| {}, on_batch);
        let result = self.runtime.block_on(call);
        let done = result.map_err(|e| e.message)?;
        for note in &done.notes {
            match note.level {
                NoteLevel::Info => self.info(&note.text),
                NoteLevel::Warn => self.warn(&note.text),
            }
        }
        Ok(done)
    }

    /// `n` more connections to the daemon, made on `runtime`, each with this session's
    /// queue space open: for work that goes faster spread over several (`qimport`). An
    /// error when this session cannot connect again or a connection fails.
    pub fn more_connections(
        &self,
        n: usize,
        runtime: &tokio::runtime::Runtime,
    ) -> Result<Vec<Client>, String> {
        let reconnect = self.reconnect.as_ref().ok_or("this session cannot connect again")?;
        let name = self.open_qspace.clone().ok_or("no queue space is open")?;
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            let mut client = reconnect(runtime)?;
            let open = Request::QueueSpace(qm_common::protocol::QueueSpaceRequest::Open {
                name: name.clone(),
            });
            runtime.block_on(client.call(open)).map_err(|e| e.message)?;
            clients.push(client);
        }
        Ok(clients)
    }

    /// Ends a wait cut short by Ctrl-C: qmd gives up a waiting dequeue only when its
    /// connection closes, so a new connection takes the old one's place, with the queue
    /// space open again (`qset` and `qscan` are qmadmin's own and stay). A transaction of
    /// the old connection is rolled back with it, and said so. Returns the command's error.
    fn give_up_connection(&mut self) -> Failure {
        let cancelled = "interrupted (Ctrl-C): the dequeue stopped waiting";
        if self.reconnect.is_none() {
            return cancelled.into();
        }
        match self.connect_again("the dequeue it waited in was interrupted") {
            Ok(()) => cancelled.into(),
            Err(e) => format!(
                "{cancelled}, but qmd cannot be reached again ({e}); quit and start qmadmin again"
            ),
        }
    }

    /// A new connection in place of this one, with the queue space open again (`qset` and
    /// `qscan` are qmadmin's own and stay). A transaction of the old connection was rolled
    /// back with it (`why`), and said so.
    fn connect_again(&mut self, why: &str) -> Result<(), String> {
        let Some(reconnect) = &self.reconnect else {
            return Err("this session cannot connect again".into());
        };
        // The old connection closes here.
        self.client = reconnect(&self.runtime)?;
        if let Some(id) = self.transaction.take() {
            self.warn(&format!("transaction {id} rolled back: {why}"));
        }
        if let Some(name) = self.open_qspace.clone() {
            let open = Request::QueueSpace(qm_common::protocol::QueueSpaceRequest::Open { name });
            if let Err(e) = self.runtime.block_on(self.client.call(open)) {
                self.open_qspace = None;
                self.warn(&format!("the queue space could not be opened again: {}", e.message));
            }
        }
        Ok(())
    }

    /// After a lost connection (its daemon stopped or died, or a standby took over: seen
    /// when a request met it, or since), connects again, to whichever daemon answers now,
    /// before the next request.
    fn mend(&mut self) -> Result<(), Failure> {
        if !self.client.gone() {
            return Ok(());
        }
        let before = self.daemon_pid();
        self.connect_again("its connection to qmd was lost").map_err(|e| {
            format!("the connection to qmd was lost and it cannot be reached again: {e}")
        })?;
        let now = self.daemon_pid();
        let whom = if now == before { String::new() } else { format!(", now pid {now}") };
        self.warn(&format!("the connection to qmd was lost; connected again{whom}"));
        Ok(())
    }

    /// Fails as the daemon does when this session has no queue space open. Queue commands
    /// check this before they prompt, so that in a script the lines after them are not
    /// taken as answers.
    pub fn require_open(&mut self) -> Result<(), Failure> {
        let request = Request::Queue(QueueRequest::Info { name: None });
        self.call_quiet(request).map(|_| ()).map_err(|e| e.message)
    }

    /// Refreshes the names tab completion offers; failures are of no consequence.
    pub fn refresh_names(&mut self) {
        let request = Request::Daemon(DaemonRequest::Names);
        if let Ok(Done { reply: qm_common::protocol::Reply::Names(names), .. }) =
            self.runtime.block_on(self.client.call(request))
        {
            *self.names.lock().unwrap_or_else(|p| p.into_inner()) = names;
        }
    }

    /// Waits `time`; false when Ctrl-C came first (the wait is what it ends, not qmadmin).
    pub fn pause(&mut self, time: std::time::Duration) -> bool {
        crate::interrupt::clear();
        let waited = self.runtime.block_on(async {
            tokio::select! {
                () = tokio::time::sleep(time) => true,
                () = crate::interrupt::typed() => false,
            }
        });
        // Like any command Ctrl-C ended: an empty line does not start it again.
        self.interrupted |= !waited;
        waited
    }

    pub fn info(&self, text: &str) {
        if self.json_now {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }

    pub fn warn(&self, text: &str) {
        let _ = std::io::stdout().flush();
        eprintln!("WARN: {}", qm_common::error::shown_lines(text));
    }

    /// Prints a command's output, through the pager when paginate is on.
    pub fn output(&self, text: &str) {
        if self.paginate && text.lines().count() > 20 {
            match crate::pager::page(text) {
                Ok(()) => return,
                Err(why) => self.warn(&format!("{why}; the output follows unpaged")),
            }
        }
        print!("{text}");
        if !text.ends_with('\n') {
            println!();
        }
        let _ = std::io::stdout().flush();
    }

    fn answer(&mut self, pos: &mut Positionals, prompt: &str) -> Result<Answer, Failure> {
        self.answer_or(pos, prompt, false)
    }

    /// With `eof_is_empty`, the end of a script answers the prompt with an empty line (the
    /// default), as when the arguments of a one-line command stop before its optional ones.
    fn answer_or(
        &mut self,
        pos: &mut Positionals,
        prompt: &str,
        eof_is_empty: bool,
    ) -> Result<Answer, Failure> {
        if let Some(text) = pos.0.pop_front() {
            return Ok(Answer::given(text, false));
        }
        match self.input.read_line(prompt) {
            Read::Line(line) => Ok(Answer::given(line.trim().to_string(), true)),
            Read::NotText { why, .. } => Ok(Answer {
                text: String::new(),
                from_prompt: true,
                unreadable: Some(QmError::inval(why)),
            }),
            Read::Interrupted => {
                self.interrupted = true;
                Err("command cancelled".into())
            }
            Read::Eof if eof_is_empty && !self.input.interactive() => {
                Ok(Answer::given(String::new(), false))
            }
            Read::Eof => Err(format!("end of input while waiting for: {}", prompt.trim())),
        }
    }

    /// What to do with an answer that did not parse: given as an argument, fail at once; at
    /// a terminal, say so and ask again; in a script, remember the error and carry on, so
    /// that the command still reads its remaining answers (they must not run as commands)
    /// and fails before it reaches qmd.
    fn bad_answer(&mut self, a: &Answer, e: QmError) -> Bad {
        if !a.from_prompt {
            return Bad::Fail(e.message);
        }
        if self.input.interactive() {
            eprintln!("ERROR: {}", qm_common::error::shown_lines(&e.message));
            return Bad::AskAgain;
        }
        self.deferred.get_or_insert(e.message);
        Bad::CarryOn
    }

    /// A value that must be given: an empty answer is warned about and asked again.
    pub fn required<T: Default>(
        &mut self,
        pos: &mut Positionals,
        prompt: &str,
        parse: impl Fn(&str) -> QmResult<T>,
    ) -> Result<T, Failure> {
        loop {
            let a = self.answer(pos, prompt)?;
            if a.is_empty() {
                let field = prompt.trim().trim_end_matches(':');
                if !a.from_prompt {
                    return Err(format!("{field} must be specified"));
                }
                self.warn(&format!("{field} must be specified"));
                continue;
            }
            match a.parse(&parse) {
                Ok(v) => return Ok(v),
                Err(e) => match self.bad_answer(&a, e) {
                    Bad::Fail(why) => return Err(why),
                    Bad::AskAgain => {}
                    Bad::CarryOn => return Ok(T::default()),
                },
            }
        }
    }

    /// A value with a default: an empty answer takes it and prints `announce`, if any.
    pub fn optional<T>(
        &mut self,
        pos: &mut Positionals,
        prompt: &str,
        default: T,
        announce: Option<&str>,
        parse: impl Fn(&str) -> QmResult<T>,
    ) -> Result<T, Failure> {
        loop {
            let a = self.answer_or(pos, prompt, true)?;
            if a.is_empty() {
                if let Some(line) = announce.filter(|_| a.from_prompt) {
                    self.info(line);
                }
                return Ok(default);
            }
            match a.parse(&parse) {
                Ok(v) => return Ok(v),
                Err(e) => match self.bad_answer(&a, e) {
                    Bad::Fail(why) => return Err(why),
                    Bad::AskAgain => {}
                    Bad::CarryOn => return Ok(default),
                },
            }
        }
    }

    /// Free text that may be empty (error queue name, threshold command).
    pub fn text(&mut self, pos: &mut Positionals, prompt: &str) -> Result<String, Failure> {
        let a = self.answer_or(pos, prompt, true)?;
        match a.parse(|text| Ok(text.to_string())) {
            Ok(text) => Ok(text),
            Err(e) => match self.bad_answer(&a, e) {
                Bad::Fail(why) => Err(why),
                Bad::AskAgain | Bad::CarryOn => Ok(String::new()),
            },
        }
    }

    /// Asks for confirmation; only `y` or `Y` confirms.
    pub fn confirm(&mut self) -> Result<bool, Failure> {
        self.ask_yes(CONFIRM)
    }

    /// Asks for confirmation of a change once `check`, made first, found nothing against
    /// it. When it did, a terminal is not asked; a script's answer line is read all the same
    /// (so that it is never run as a command), and the command fails with the check's reason.
    pub fn confirm_checked(&mut self, check: Result<(), Failure>) -> Result<bool, Failure> {
        match check {
            Ok(()) => self.confirm(),
            Err(why) => {
                self.skip_confirmation();
                Err(why)
            }
        }
    }

    /// In a script, reads the line that answers a confirmation the command does not ask
    /// for after all, so that the script stays in step whatever the command found.
    pub fn skip_confirmation(&mut self) {
        if !self.input.interactive() {
            let _ = self.input.read_line(CONFIRM);
        }
    }

    /// Asks `question`; only `y` or `Y` is yes, and Ctrl-C is no.
    pub fn ask_yes(&mut self, question: &str) -> Result<bool, Failure> {
        match self.input.read_line(question) {
            Read::Line(l) => Ok(matches!(l.trim(), "y" | "Y")),
            Read::NotText { why, .. } => Err(why),
            Read::Interrupted => {
                self.interrupted = true;
                Ok(false)
            }
            Read::Eof => Err("end of input while waiting for confirmation".into()),
        }
    }

    /// Output mode for listings: JSON when asked for by the command or by qmadmin itself.
    pub fn wants_json(&self, args_json: bool) -> bool {
        self.json || args_json
    }
}
