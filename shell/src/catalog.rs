//! The command table: names, abbreviations, syntax, help, and the function behind each.
//!
//! Names and abbreviations are Tuxedo's, exactly; qm's own additions have no abbreviation.

use crate::commands::{
    automation, device, general, message, msgadmin, qspace, queue, rights, stat, why,
};
use crate::getopt::Args;
use crate::shell::{CmdResult, Shell};

/// What tab completion offers after a command's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Complete {
    Nothing,
    QueueSpace,
    Queue,
    Command,
}

/// One command.
pub struct CommandSpec {
    pub name: &'static str,
    pub abbrev: Option<&'static str>,
    /// Dash options, getopt style (`d:n:e:`).
    pub options: &'static str,
    pub max_args: usize,
    pub syntax: &'static str,
    pub help: &'static str,
    pub complete: Complete,
    pub run: fn(&mut Shell, Args) -> CmdResult,
}

impl CommandSpec {
    /// `qspacecreate (qspc) [-A actions] ...`
    pub fn usage(&self) -> String {
        match self.abbrev {
            Some(a) => format!("{} ({a}) {}", self.name, self.syntax),
            None => format!("{} {}", self.name, self.syntax),
        }
    }
}

macro_rules! command {
    ($name:literal, $abbrev:expr, $opts:literal, $max:literal, $syntax:literal, $complete:ident, $run:path, $help:literal) => {
        CommandSpec {
            name: $name,
            abbrev: $abbrev,
            options: $opts,
            max_args: $max,
            syntax: $syntax,
            help: $help,
            complete: Complete::$complete,
            run: $run,
        }
    };
}

pub static COMMANDS: &[CommandSpec] = &[
    command!(
        "abort",
        None,
        "",
        0,
        "",
        Nothing,
        message::abort,
        "Rolls back the session's transaction: its enqueues vanish, its dequeued messages return to their queues with one more retry counted."
    ),
    command!(
        "begin",
        None,
        "t:",
        0,
        "[-t timeout]",
        Nothing,
        message::begin,
        "Begins a transaction on the open queue space; qenqueue and qdequeue join it until commit or abort. -t sets its time-out in seconds (default: the daemon's, 30 s); past it the daemon rolls it back."
    ),
    command!(
        "commit",
        None,
        "",
        0,
        "",
        Nothing,
        message::commit,
        "Commits the session's transaction: its enqueues become visible and its dequeues final, on disk when the command returns."
    ),
    command!(
        "boot",
        None,
        "i:",
        0,
        "-i srvid",
        Nothing,
        automation::boot,
        "Boots the forwarder (TMQFORWARD) with this server id, as defined in the daemon's configuration file: it attaches to its queue space and forwards every message of its queues to the service named like the queue. A threshold command can run qmadmin -c \"boot -i ID\" to start a reserve forwarder."
    ),
    command!(
        "chdl",
        None,
        "",
        2,
        "[dlindex [newdevice]]",
        Nothing,
        device::chdl,
        "Renames a device list entry, e.g. after its file moved. Without a new name it prints the current one and asks for the new. Entry 0 must always name the device itself ($QMCONFIG)."
    ),
    command!(
        "crdl",
        None,
        "p:",
        3,
        "[-p pagesize] [device [offset [size]]]",
        Nothing,
        device::crdl,
        "Creates a device list entry: SIZE pages of DEVICE starting at block OFFSET. The first entry must be the device itself at offset 0; it creates the device, and -p sets its page size (default 1024 bytes, fixed from then on). An entry on another file puts that file under qm; entries on one file may not overlap."
    ),
    command!(
        "daemon",
        None,
        "",
        1,
        "[status|stop|reload]",
        Nothing,
        general::daemon,
        "Shows the qmd serving this device (pid, socket, sessions, loaded queue spaces), stops it, or makes it re-read its configuration file (forwarders, services, threshold command time limit)."
    ),
    command!(
        "dsdl",
        None,
        "y",
        1,
        "[-y] [dlindex]",
        Nothing,
        device::dsdl,
        "Destroys a device list entry that holds no queue-space extents. Entry 0 goes last and takes the whole device with it. Asks for confirmation unless -y is given."
    ),
    command!(
        "echo",
        Some("e"),
        "",
        1,
        "[{off|on}]",
        Nothing,
        general::echo,
        "Echoes each command line read before running it (useful for script transcripts). Without an argument, toggles."
    ),
    command!(
        "help",
        Some("h"),
        "",
        1,
        "[{command|all}]",
        Command,
        general::help,
        "Without an argument, lists the syntax of every command. With a command name or abbreviation, explains that command; with 'all', explains every command."
    ),
    command!(
        "ipcrm",
        None,
        "fy",
        1,
        "[-f] [-y] [queue_space_name]",
        QueueSpace,
        qspace::ipcrm,
        "Drops a queue space's in-memory state (non-persistent messages, open transactions) and detaches everyone from it. Refuses while others are attached unless -f is given; -f asks for confirmation unless -y is given."
    ),
    command!(
        "ipcs",
        None,
        "",
        1,
        "[queue_space_name]",
        QueueSpace,
        qspace::ipcs,
        "Lists the sessions, clients and forwarders attached to a queue space (all loaded queue spaces when the answer is empty)."
    ),
    command!(
        "lidl",
        None,
        "",
        1,
        "[dlindex]",
        Nothing,
        device::lidl,
        "Lists the device list: index, file, first block and size of each entry; in verbose mode also each entry's free-space map."
    ),
    command!(
        "livtoc",
        None,
        "",
        0,
        "",
        Nothing,
        device::livtoc,
        "Lists the volume table of contents: the VTOC and UDL tables and every queue-space extent, with its entry, offset and size."
    ),
    command!(
        "paginate",
        Some("page"),
        "",
        1,
        "[{off|on}]",
        Nothing,
        general::paginate,
        "Pages long output through $PAGER (default 'less -FRX'). Only possible when input and output are terminals. Without an argument, toggles."
    ),
    command!(
        "qaddext",
        None,
        "",
        2,
        "[queue_space_name [pages]]",
        QueueSpace,
        qspace::qaddext,
        "Adds an extent of PAGES pages (rounded down to a multiple of 4) to a queue space, from free space on the file the queue space lives on. The queue space must be inactive: your own qopen is closed, others must detach first. Its non-persistent messages are lost."
    ),
    command!(
        "qauth",
        None,
        "",
        1,
        "[principal]",
        Nothing,
        rights::qauth,
        "Lists the rights granted to principals: who, which rights, and where (a queue space, one of its queues, or * for everywhere). The daemon's owner and root are listed first: they hold admin everywhere whatever is granted. With a principal, lists the grants that apply to it (by name or by pattern); anyone may list their own, the whole list needs admin."
    ),
    command!(
        "qchange",
        None,
        "d:n:e:",
        7,
        "[-d persist|nonpersist] [-n nhigh,nlow,ncmd] [-e default_relative_expiration_time] [queue_name [out-of-order [retries [delay [high [low [cmd]]]]]]]",
        Queue,
        queue::qchange,
        "Changes a queue of the open queue space: everything qcreate set except the order. Prompts offer the current values as defaults; -d, -n and -e change only when given."
    ),
    command!(
        "printserver",
        Some("psr"),
        "",
        0,
        "",
        Nothing,
        automation::printserver,
        "Lists the configured forwarders: server id, queue space, options (in CLOPT spelling), state (running, idle, stopped, exited when its queues were empty, failed, not booted), boot time, messages forwarded, failures and the last error."
    ),
    command!(
        "qaborttrans",
        Some("qabort"),
        "y",
        1,
        "[-y] [tranindex]",
        Nothing,
        msgadmin::qaborttrans,
        "Rolls back a transaction the daemon holds open (index from qprinttrans), e.g. of a client that stalls. Checks that the index is open, then asks for confirmation unless -y is given."
    ),
    command!(
        "qchangeexp",
        Some("qce"),
        "y",
        1,
        "[-y] [newtime]",
        Nothing,
        msgadmin::qchangeexp,
        "Sets the expiration of the selected messages (qset queue, qscan criteria): +seconds from now, an absolute YY[MM[DD[HH[MM[SS]]]]], or none. Asks for confirmation unless -y is given."
    ),
    command!(
        "qchangeprio",
        Some("qcp"),
        "y",
        1,
        "[-y] [newpriority]",
        Nothing,
        msgadmin::qchangeprio,
        "Sets the priority (1-100) of the selected messages (qset queue, qscan criteria). Without criteria every message changes, after confirmation unless -y is given."
    ),
    command!(
        "qchangequeue",
        Some("qcq"),
        "y",
        1,
        "[-y] [newqueue]",
        Queue,
        msgadmin::qchangequeue,
        "Moves the selected messages (qset queue, qscan criteria) to another queue of the same queue space, e.g. from the error queue back to the service queue; they start with a fresh retry count. Without criteria every message moves, after confirmation unless -y is given."
    ),
    command!(
        "qchangetime",
        Some("qct"),
        "y",
        1,
        "[-y] [newtime]",
        Nothing,
        msgadmin::qchangetime,
        "Sets the availability time of the selected messages: +seconds from now (+0 is now) or an absolute YY[MM[DD[HH[MM[SS]]]]]. Without criteria every message changes, after confirmation unless -y is given."
    ),
    command!(
        "qclose",
        None,
        "",
        0,
        "",
        Nothing,
        qspace::qclose,
        "Closes the open queue space. Its non-persistent messages stay in the daemon until ipcrm."
    ),
    command!(
        "qcommittrans",
        Some("qcommit"),
        "y",
        1,
        "[-y] [tranindex]",
        Nothing,
        msgadmin::qcommittrans,
        "Commits a transaction the daemon holds open (index from qprinttrans) on its owner's behalf. Checks that the index is open, then asks for confirmation unless -y is given."
    ),
    command!(
        "qcreate",
        Some("qcr"),
        "d:n:e:",
        8,
        "[-d persist|nonpersist] [-n nhigh,nlow,ncmd] [-e default_relative_expiration_time] [queue_name [qorder [out-of-order [retries [delay [high [low [cmd]]]]]]]]",
        Queue,
        queue::qcreate,
        "Creates a queue in the open queue space. QORDER is a comma list of priority, time, expiration, then fifo or lifo last; OUT-OF-ORDER is none, top, msgid or top,msgid; after RETRIES rolled-back dequeues a message goes to the error queue, each retry waiting DELAY seconds. HIGH and LOW are capacity marks (Nb bytes, NB blocks, N% of the queue space, Nm messages); CMD runs once when usage reaches HIGH and again only after it fell to LOW. -d sets the default delivery policy, -n the non-persistent marks and command, -e the default expiration (+seconds or none)."
    ),
    command!(
        "qdeletemsg",
        Some("qdltm"),
        "y",
        0,
        "[-y]",
        Nothing,
        msgadmin::qdeletemsg,
        "Deletes the selected messages (qset queue, qscan criteria). Asks for confirmation unless -y is given. Messages held by a transaction are left alone and counted as such."
    ),
    command!(
        "qdequeue",
        None,
        "m:i:w:kB",
        1,
        "[-m msgid] [-i corrid] [-w seconds] [-k] [-B] [queue_name]",
        Queue,
        message::qdequeue,
        "Dequeues a message from a queue of the open queue space (in the session's transaction, if one is open) and prints a line with its msgid, priority, correlation id, retries, user return code and delivery mode, and its reply queue, failure queue and reply delivery mode when the sender set them (reply_queue=, failure_queue=, reply_qos=), then its body on the next line. In the body (and correlation id) printable ASCII stays as it is and every other byte, blanks and newlines included, and the backslash itself are written as \\xx hex escapes (hello\\20world); -B prints only the body, its raw bytes, with no header and no newline added; --json prints all of it as one JSON object. -m and -i select by message or correlation id (\\xx escapes allowed), -w waits up to that many seconds for one, -k peeks without taking."
    ),
    command!(
        "qdestroy",
        Some("qds"),
        "pfy",
        1,
        "[{-p|-f}] [-y] [queue_name]",
        Queue,
        queue::qdestroy,
        "Destroys a queue of the open queue space. Refuses while it holds messages (-p purges them first) or while others are attached (-f forces both). Asks for confirmation unless -y is given."
    ),
    command!(
        "qenqueue",
        None,
        "p:t:e:i:r:f:d:q:u:Tb:F:",
        2,
        "[-p priority] [-t time] [-e exptime|none] [-i corrid] [-r replyqueue] [-f failurequeue] [-d persist|nonpersist] [-q replyqos] [-u urcode] [-T | -b msgid] [-F file] [queue_name [body]]",
        Queue,
        message::qenqueue,
        "Enqueues a message on a queue of the open queue space (in the session's transaction, if one is open) and prints its message id. The body is the argument, else the file given with -F (- for standard input), else standard input (read to its end) when commands come from -c. When the commands come from standard input (a script or the terminal) the body cannot: give it as an argument or with -F FILE. Bodies are at most 4194304 bytes. -p priority 1-100 (default 50); -t availability and -e expiration as +seconds or YY[MM[DD[HH[MM[SS]]]]], ending by 2037-12-31 23:59:59 (-e none: never); -i correlation id; -r/-f reply and failure queues; -d delivery mode (default: the queue's); -q reply delivery mode; -u user return code; -T at the top of the queue, -b before a message (the queue must allow it)."
    ),
    command!(
        "qgrant",
        None,
        "",
        3,
        "[principal [right[,right] [queue_space_name[/queue_name]]]]",
        Nothing,
        rights::qgrant,
        "Grants rights to a principal: unix:USER (a local user on the control socket), cert:ID (a client certificate's identity over TLS) or anonymous (plain TCP and HTTP), or a pattern with * such as cert:render-*. Rights are enqueue, dequeue, browse (peek, qlist, qinfo and other listings) and admin (everything else, and all of the above). The scope is a queue space, or one queue of it, either possibly a * pattern; without one the rights hold everywhere. Nobody but the daemon's owner and root holds anything until granted; a pattern never gives anonymous admin. Grants are kept in the device."
    ),
    command!(
        "qinfo",
        None,
        "",
        1,
        "[queue_name]",
        Queue,
        queue::qinfo,
        "Shows each queue of the open queue space (or one) with its messages, persistent and non-persistent, and the bytes and blocks they use, then the totals. Verbose mode adds each queue's definition."
    ),
    command!(
        "qopen",
        None,
        "",
        1,
        "[queue_space_name]",
        QueueSpace,
        qspace::qopen,
        "Opens a queue space for the commands that work on queues and messages, closing any other one this session had open."
    ),
    command!(
        "qlist",
        Some("ql"),
        "",
        0,
        "",
        Nothing,
        msgadmin::qlist,
        "Lists the selected messages (qset queue, qscan criteria) in queue order: msgid, priority, retries, length, delivery and reply modes, state, availability and expiration times; verbose mode adds correlation id, enqueue time, origin queue (for the error queue), reply and failure queues, user return code."
    ),
    command!(
        "qstat",
        None,
        "",
        1,
        "[--once] [queue_space_name]",
        QueueSpace,
        stat::qstat,
        "Shows a queue space live (the open one by default; it must be loaded): per queue the messages and bytes, enqueues and dequeues per second, the oldest message's age, messages waiting for their time (and of those, in a retry delay), held by transactions, the threshold state and the forwarders running. At a terminal it redraws every second until Ctrl-C; piped, with --once or --json it prints one view, rates measured over one second."
    ),
    command!(
        "qwhy",
        None,
        "m:",
        1,
        "[-m] msgid",
        Nothing,
        why::qwhy,
        "Tells why a message of the open queue space is not moving, one sentence per reason: held by an open transaction (its number, pid and program), enqueued by one not committed yet, waiting out its retry delay (retry k of n) or its availability time, behind the messages that come before it in its queue's order (and by which sort key), expired, moved to the error queue (from which queue, after how many retries), no forwarder running for its queue (naming the configured ones that would serve it). When nothing holds it back it says that it is next in line. The msgid is written as qlist shows it (\\xx escapes allowed); --json gives each reason as a kind, its sentence and its facts. Needs browse on the message's queue."
    ),
    command!(
        "qthlog",
        None,
        "",
        1,
        "[queue_name]",
        Queue,
        automation::qthlog,
        "Shows the record of threshold commands run for the open queue space (or one queue): when, which limit and usage, the command, how it ended and how long it took; verbose mode adds the first lines it printed."
    ),
    command!(
        "qthtest",
        None,
        "n",
        1,
        "[-n] [queue_name]",
        Queue,
        automation::qthtest,
        "Runs a queue's threshold command now, in the environment a real crossing gives it (QMCONFIG, QM_SOCKET, QM_QSPACE, QM_QUEUE, QM_LIMIT, QM_USAGE...), records it like a firing and prints how it went. -n runs the non-persistent limits' command."
    ),
    command!(
        "qprinttrans",
        Some("qpt"),
        "",
        0,
        "",
        Nothing,
        msgadmin::qprinttrans,
        "Lists the transactions the daemon holds open on the open queue space: index, owner, start, time left, enqueues and dequeues."
    ),
    command!(
        "qrevoke",
        None,
        "",
        3,
        "[principal [right[,right] [queue_space_name[/queue_name]]]]",
        Nothing,
        rights::qrevoke,
        "Takes back rights granted with qgrant, naming the principal and the scope exactly as they were granted (qauth shows them). Rights not granted there are refused, and then nothing changes."
    ),
    command!(
        "qscan",
        None,
        "t:p:m:i:d:e:",
        1,
        "[{ [-t time1[-time2]] [-p priority1[-priority2]] [-m msgid] [-i corrid] [-d delivery_mode] [-e time1[-time2]] | none }]",
        Nothing,
        msgadmin::qscan,
        "Sets the criteria that select messages for qlist, qdeletemsg and the qchange commands: availability time (-t) and expiration time (-e) ranges as YY[MM[DD[HH[MM[SS]]]]] (a single time covers its whole unit: 2511 is November 2025), priority range (-p), message id (-m), correlation id (-i), delivery mode (-d persist|nonpersist). 'none' clears them; without arguments it prints them."
    ),
    command!(
        "qset",
        None,
        "",
        1,
        "[queue_name]",
        Queue,
        msgadmin::qset,
        "Sets the queue the message commands act on (it must exist in the open queue space); without an argument prints it."
    ),
    command!(
        "qsize",
        None,
        "A:H:C:O:Q:f:n:o:",
        5,
        "[-A actions] [-H handles] [-C cursors] [-O owners] [-Q tmp_queues] [-f filter_memory] [-n nonpersistent_msg_memory[b,B]] [-o overflow_memory] [pages [queues [transactions [processes [messages]]]]]",
        Nothing,
        qspace::qsize,
        "Estimates the daemon memory a queue space of these sizes needs. qm uses no System V semaphores, so their count is always 0."
    ),
    command!(
        "qspacechange",
        Some("qspch"),
        "A:H:C:O:Q:f:n:o:",
        8,
        "[-A actions] [-H handles] [-C cursors] [-O owners] [-Q tmp_queues] [-f filter_memory] [-n nonpersistent_msg_memory[b,B]] [-o overflow_memory] [queue_space_name [ipckey [trans [procs [messages [errorq [inityn [blocking]]]]]]]]",
        QueueSpace,
        qspace::qspacechange,
        "Changes a queue space's parameters (not its size or number of queues: see qaddext). Prompts offer the current values as defaults. The queue space must be inactive: your own qopen is closed, others must detach first; its non-persistent messages are lost."
    ),
    command!(
        "qspacecreate",
        Some("qspc"),
        "A:n:o:",
        10,
        "[-A actions] [-n nonpersistent_msg_memory[b,B]] [-o overflow_memory] [queue_space_name [ipckey [pages [queues [trans [procs [messages [errorq [inityn [blocking]]]]]]]]]]",
        QueueSpace,
        qspace::qspacecreate,
        "Creates a queue space of PAGES pages (rounded down to a multiple of 4) taken first-fit from the device list's free space; it needs one page plus one per queue for itself. IPCKEY is 32769 to 262143 and unique. ERRORQ names the queue that receives messages out of retries (create it with qcreate). INITYN y takes now the disk the pages may need over their life, so a disk too small is refused at creation. -n sets memory for non-persistent messages (blocks, or bytes with b), -A extra waiting dequeues."
    ),
    command!(
        "qspacedestroy",
        Some("qspds"),
        "fy",
        1,
        "[-f] [-y] [queue_space_name]",
        QueueSpace,
        qspace::qspacedestroy,
        "Destroys a queue space and its extents. Refuses while it holds messages or others are attached, unless -f is given. Asks for confirmation unless -y is given."
    ),
    command!(
        "qspacelist",
        Some("qspl"),
        "",
        1,
        "[queue_space_name]",
        QueueSpace,
        qspace::qspacelist,
        "Shows a queue space's parameters, extents and memory (the open one when the answer is empty)."
    ),
    command!(
        "quit",
        Some("q"),
        "",
        0,
        "",
        Nothing,
        general::quit,
        "Leaves qmadmin. End of input does the same. A transaction still open is rolled back with a warning and the exit status is 1; at a terminal qmadmin asks first."
    ),
    command!(
        "shutdown",
        None,
        "i:q:",
        0,
        "{-i srvid | -q queue_name}",
        Nothing,
        automation::shutdown,
        "Stops a forwarder (-i) or every forwarder of a queue (-q) once it has finished its current message."
    ),
    command!(
        "verbose",
        Some("v"),
        "",
        1,
        "[{off|on}]",
        Nothing,
        general::verbose,
        "Makes commands say more: lidl adds free-space maps, qinfo queue definitions, qspacecreate progress dots. Without an argument, toggles."
    ),
    command!(
        "whoami",
        None,
        "",
        0,
        "",
        Nothing,
        rights::whoami,
        "Shows the principal this session speaks for, as the daemon sees it (unix:USER on the control socket, cert:ID over TLS, anonymous over plain TCP), and the face it came through."
    ),
];

/// Finds a command by full name or abbreviation.
pub fn lookup(name: &str) -> Option<&'static CommandSpec> {
    COMMANDS.iter().find(|c| c.name == name || c.abbrev == Some(name))
}
