//! The command table: names, abbreviations, syntax, help, and the function behind each.
//!
//! Names and abbreviations are Tuxedo's, exactly; qm's own additions have no abbreviation.

use crate::commands::{
    automation, device, export, general, managers, message, msgadmin, qspace, queue, rights, stat,
    why,
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

/// An option or operand as a command's syntax writes it, and what it means.
pub type Entry = (&'static str, &'static str);

/// One command.
pub struct CommandSpec {
    pub name: &'static str,
    pub abbrev: Option<&'static str>,
    /// Dash options, getopt style (`d:n:e:`).
    pub options: &'static str,
    pub max_args: usize,
    pub syntax: &'static str,
    pub help: &'static str,
    /// Each option and operand of `syntax`, in its order, with what it means: its default and
    /// allowed values where it has them.
    pub arguments: &'static [Entry],
    /// A command line that runs it, as typed at the prompt.
    pub example: &'static str,
    pub complete: Complete,
    pub run: fn(&mut Shell, Args) -> CmdResult,
}

impl CommandSpec {
    /// `qspacecreate (qspc) [-A actions] ...`
    pub fn usage(&self) -> String {
        let name = match self.abbrev {
            Some(a) => format!("{} ({a})", self.name),
            None => self.name.to_string(),
        };
        // A command without options or operands has no blank after its name.
        if self.syntax.is_empty() { name } else { format!("{name} {}", self.syntax) }
    }

    /// The entries of [`CommandSpec::arguments`]: dash options first, then operands.
    pub fn option_and_operand_entries(&self) -> (Vec<Entry>, Vec<Entry>) {
        self.arguments.iter().copied().partition(|(name, _)| name.starts_with('-'))
    }
}

macro_rules! command {
    ($name:literal, $abbrev:expr, $opts:literal, $max:literal, $syntax:literal, $complete:ident, $run:path, $help:literal,
     [$(($arg:literal, $meaning:literal)),* $(,)?], $example:literal) => {
        CommandSpec {
            name: $name,
            abbrev: $abbrev,
            options: $opts,
            max_args: $max,
            syntax: $syntax,
            help: $help,
            arguments: &[$(($arg, $meaning)),*],
            example: $example,
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
        "Rolls back the session's transaction: its enqueues vanish, its dequeued messages return to their queues with one more retry counted.",
        [],
        "abort"
    ),
    command!(
        "begin",
        None,
        "t:",
        0,
        "[-t timeout]",
        Nothing,
        message::begin,
        "Begins a transaction on the open queue space; qenqueue and qdequeue join it until commit or abort. -t sets its time-out in seconds (default: the daemon's, 30 s); past it the daemon rolls it back.",
        [(
            "-t timeout",
            "seconds the transaction may stay open before the daemon rolls it back, 1 to 86400 (default: the daemon's, 30)"
        ),],
        "begin -t 60"
    ),
    command!(
        "commit",
        None,
        "",
        0,
        "",
        Nothing,
        message::commit,
        "Commits the session's transaction: its enqueues become visible and its dequeues final, on disk when the command returns.",
        [],
        "commit"
    ),
    command!(
        "boot",
        None,
        "i:",
        0,
        "-i srvid",
        Nothing,
        automation::boot,
        "Boots the forwarder (TMQFORWARD) with this server id, as defined in the daemon's configuration file: it attaches to its queue space and forwards every message of its queues to the service named like the queue. A threshold command can run qmadmin -c \"boot -i ID\" to start a reserve forwarder.",
        [(
            "-i srvid",
            "the forwarder's server id as the daemon's configuration file defines it, 1 to 4294967295 (required)"
        ),],
        "boot -i 1002"
    ),
    command!(
        "chdl",
        None,
        "",
        2,
        "[dlindex [newdevice]]",
        Nothing,
        device::chdl,
        "Renames a device list entry, e.g. after its file moved. Without a new name it prints the current one and asks for the new. Entry 0 must always name the device itself ($QMCONFIG).",
        [
            ("dlindex", "the device list entry to rename, 0 to 24 (asked for when left out)"),
            (
                "newdevice",
                "the entry's new file name, an absolute path of at most 64 characters (asked for, after the current name is shown, when left out)"
            ),
        ],
        "chdl 1 /data/qm/QUE2"
    ),
    command!(
        "crdl",
        None,
        "p:",
        3,
        "[-p pagesize] [device [offset [size]]]",
        Nothing,
        device::crdl,
        "Creates a device list entry: SIZE pages of DEVICE starting at block OFFSET. The first entry must be the device itself at offset 0; it creates the device, and -p sets its page size (default 1024 bytes, fixed from then on). An entry on another file puts that file under qm; entries on one file may not overlap.",
        [
            (
                "-p pagesize",
                "page size in bytes when this entry creates the device: a power of two from 512 to 65536 (default 1024)"
            ),
            (
                "device",
                "the file the entry lies on: the device itself ($QMCONFIG) for the first entry (asked for when left out)"
            ),
            (
                "offset",
                "the block of that file the entry starts at; 0 for the first entry (asked for when left out)"
            ),
            (
                "size",
                "the entry's size in pages, at least 1; the first entry also holds the device's own tables and needs a few more (asked for when left out)"
            ),
        ],
        "crdl /data/qm/QUE 0 5000"
    ),
    command!(
        "daemon",
        None,
        "",
        1,
        "[status|stop|reload]",
        Nothing,
        general::daemon,
        "Shows the qmd serving this device (pid, socket, sessions, loaded queue spaces), stops it, or makes it re-read its configuration file (forwarders, services, threshold command time limit).",
        [(
            "status|stop|reload",
            "status shows the daemon (the default), stop stops it and waits until it let go of the device, reload makes it re-read its configuration file"
        ),],
        "daemon status"
    ),
    command!(
        "dsdl",
        None,
        "y",
        1,
        "[-y] [dlindex]",
        Nothing,
        device::dsdl,
        "Destroys a device list entry that holds no queue-space extents. Entry 0 goes last and takes the whole device with it. Asks for confirmation unless -y is given.",
        [
            ("-y", "does not ask for confirmation"),
            (
                "dlindex",
                "the entry to destroy, 0 to 24; entry 0 only when it is the last one (asked for when left out)"
            ),
        ],
        "dsdl -y 1"
    ),
    command!(
        "echo",
        Some("e"),
        "",
        1,
        "[{off|on}]",
        Nothing,
        general::echo,
        "Echoes each command line read before running it (useful for script transcripts). Without an argument, toggles.",
        [("off|on", "turns echo on or off; without it echo toggles (it starts off)"),],
        "echo on"
    ),
    command!(
        "help",
        Some("h"),
        "",
        1,
        "[{command|all}]",
        Command,
        general::help,
        "Without an argument, lists the syntax of every command. With a command name or abbreviation, explains that command; with 'all', explains every command.",
        [(
            "command|all",
            "a command's name or abbreviation (or !, !!, #, <CR>) to explain, or all to explain every command; without it, the syntax of every command"
        ),],
        "help qcreate"
    ),
    command!(
        "ipcrm",
        None,
        "fy",
        1,
        "[-f] [-y] [queue_space_name]",
        QueueSpace,
        qspace::ipcrm,
        "Drops a queue space's in-memory state (non-persistent messages, open transactions) and detaches everyone from it. Refuses while others are attached unless -f is given; -f asks for confirmation unless -y is given.",
        [
            ("-f", "drops the state even while others are attached (asks for confirmation first)"),
            ("-y", "with -f, does not ask for confirmation"),
            ("queue_space_name", "the queue space (asked for when left out)"),
        ],
        "ipcrm -f -y QSPACE"
    ),
    command!(
        "ipcs",
        None,
        "",
        1,
        "[queue_space_name]",
        QueueSpace,
        qspace::ipcs,
        "Lists the sessions, clients and forwarders attached to a queue space (all loaded queue spaces when the answer is empty).",
        [(
            "queue_space_name",
            "the queue space; an empty answer lists all loaded queue spaces (asked for when left out)"
        ),],
        "ipcs QSPACE"
    ),
    command!(
        "lidl",
        None,
        "",
        1,
        "[dlindex]",
        Nothing,
        device::lidl,
        "Lists the device list: index, file, first block and size of each entry; in verbose mode also each entry's free-space map.",
        [("dlindex", "only this entry, 0 to 24 (default: every entry)"),],
        "lidl"
    ),
    command!(
        "livtoc",
        None,
        "",
        0,
        "",
        Nothing,
        device::livtoc,
        "Lists the volume table of contents: the VTOC and UDL tables and every queue-space extent, with its entry, offset and size.",
        [],
        "livtoc"
    ),
    command!(
        "qbackup",
        None,
        "y",
        1,
        "[-y] [directory]",
        Nothing,
        device::qbackup,
        "Copies the whole device (every file of it: definitions, rights, threshold states and every stored message) into a new or empty directory while the daemon serves, as one consistent snapshot: each transaction is in it whole or not at all. Writers are held only while the snapshot is taken (the report says how long). The copy is checked as qverify checks a device, then a manifest (files, sizes, CRC-32s, queue spaces and their messages) is written last: a directory without one holds a backup that did not finish. Asks for confirmation unless -y.",
        [
            ("-y", "do not ask for confirmation"),
            ("directory", "where the backup goes: a new directory, or an empty one of yours"),
        ],
        "qbackup -y /backup/que-monday"
    ),
    command!(
        "qrestore",
        None,
        "m:",
        64,
        "[directory [new_device]] [-m oldpath=newpath]",
        Nothing,
        device::qrestore,
        "Makes a working device from a backup qbackup made: each copy is checked against the manifest first, then the device file goes to new_device and every other file beside it under its old name, or where -m says. It never overwrites a file, nor restores onto a device a daemon serves (onto this daemon's own device path only while no device is there: it then serves the restored one). The restored device gets a new identity, so that it and the original never take each other's files, and is checked as qverify checks a device.",
        [
            ("directory", "the backup"),
            ("new_device", "the restored device file's path"),
            (
                "-m oldpath=newpath",
                "put the file the device list named oldpath at newpath (repeat for each file to move)"
            ),
        ],
        "qrestore /backup/que-monday /srv/qm/QUE -m /data/q2=/srv/qm/q2"
    ),
    command!(
        "qspacemove",
        None,
        "",
        2,
        "[qspace_name [dlindex]]",
        QueueSpace,
        qspace::qspacemove,
        "Moves an inactive queue space to another device list entry, usually on another file (another disk): its extents become one extent of the same size there. Between files, its tables are copied and checked first, then the device's VTOC moves it in one commit, then the old tables go: a crash at any point leaves exactly one whole queue space. Refused while others are attached.",
        [
            ("qspace_name", "the queue space (asked for when left out)"),
            ("dlindex", "the device list entry to move it to, 0 to 24 (asked for when left out)"),
        ],
        "qspacemove QSPACE 1"
    ),
    command!(
        "qexport",
        None,
        "q:t:kx",
        1,
        "[-q queue] [-t time1[-time2]] [-k | -x] [file]",
        Nothing,
        export::qexport,
        "Writes the open queue space's messages, with every property (msgid, corrid, priority, times, retries, reply and failure queues, delivery, origin queue) and its queue definitions, into a portable stream (docs/export-format.md): a new file, or standard output for -. -k (the default) copies them, a consistent view taken while traffic goes on. -x moves them: each is held as it is written (no dequeue takes it meanwhile), and all are taken out in one durable write once the whole stream is written and synced; if anything fails first, they stay. Messages a transaction holds are left where they are.",
        [
            ("-q queue", "only this queue's messages and definition"),
            (
                "-t time1[-time2]",
                "only messages enqueued from time1 to time2, each YY[MM[DD[HH[MM[SS]]]]] (one time covers its whole unit)"
            ),
            ("-k", "keep the messages (copy; the default)"),
            ("-x", "take the messages out once the stream is written (move)"),
            ("file", "the stream to write, which must not exist; - for standard output"),
        ],
        "qexport -q ORDERS /backup/orders.qmx"
    ),
    command!(
        "qimport",
        None,
        "q:",
        1,
        "[-q queue] [file]",
        Nothing,
        export::qimport,
        "Loads a stream qexport wrote into the open queue space: queues it defines and the space lacks are created first, then its messages are enqueued with their msgids and properties, a thousand per durable write. A msgid the space holds already is skipped, so importing a stream again adds nothing. A stream that is cut short or damaged stops the import there, saying how far it got.",
        [
            ("-q queue", "only this queue's messages and definition"),
            ("file", "the stream to read; - for standard input"),
        ],
        "qimport -q ORDERS /backup/orders.qmx"
    ),
    command!(
        "qverify",
        None,
        "",
        1,
        "[qspace_name]",
        QueueSpace,
        device::qverify,
        "Checks the device while it serves: the device list, the VTOC, extents and free space against each other, every file of the device, and each queue space's messages (every record decoded, its checksums compared, its queue's order tables and totals recomputed). Lists what is wrong and fails (qmadmin exits 1) if anything is. For a stopped device: qmd --verify DEVICE.",
        [("qspace_name", "only this queue space's messages (default: every queue space)"),],
        "qverify QSPACE"
    ),
    command!(
        "paginate",
        Some("page"),
        "",
        1,
        "[{off|on}]",
        Nothing,
        general::paginate,
        "Pages long output through $PAGER (default 'less -FRX'). Only possible when input and output are terminals. Without an argument, toggles.",
        [(
            "off|on",
            "turns paging on or off; without it paging toggles (it starts on when input and output are terminals)"
        ),],
        "paginate off"
    ),
    command!(
        "qaddext",
        None,
        "",
        2,
        "[queue_space_name [pages]]",
        QueueSpace,
        qspace::qaddext,
        "Adds an extent of PAGES pages (rounded down to a multiple of 4) to a queue space, from free space on the file the queue space lives on. The queue space must be inactive: your own qopen is closed, others must detach first. Its non-persistent messages are lost.",
        [
            ("queue_space_name", "the queue space to extend (asked for when left out)"),
            ("pages", "pages to add, rounded down to a multiple of 4 (asked for when left out)"),
        ],
        "qaddext QSPACE 1000"
    ),
    command!(
        "qauth",
        None,
        "",
        1,
        "[principal]",
        Nothing,
        rights::qauth,
        "Lists the rights granted to principals: who, which rights, and where (a queue space, one of its queues, or * for everywhere). The daemon's owner and root are listed first: they hold admin everywhere whatever is granted. With a principal, lists the grants that apply to it (by name or by pattern); anyone may list their own, the whole list needs admin.",
        [(
            "principal",
            "unix:USER, cert:ID or anonymous: only the grants that apply to it (default: every grant, which needs admin)"
        ),],
        "qauth unix:batch"
    ),
    command!(
        "qchange",
        None,
        "d:n:e:L:S:E:D:a:I:P:",
        7,
        "[-d persist|nonpersist] [-n nhigh,nlow,ncmd] [-e default_relative_expiration_time] [-L maxmsgs|none] [-S maxsize|none] [-E on|off] [-D on|off] [-a annotation] [-I idle_seconds|none] [-P conditional|persistent|volatile] [queue_name [out-of-order [retries [delay [high [low [cmd]]]]]]]",
        Queue,
        queue::qchange,
        "Changes a queue of the open queue space: everything qcreate set except the order. Prompts offer the current values as defaults; -d, -n, -e and the attribute options (-L, -S, -E, -D, -a, -I, -P, as qcreate takes them) change only when given.",
        [
            (
                "-d persist|nonpersist",
                "where a message goes when its sender does not say (unchanged when left out)"
            ),
            (
                "-n nhigh,nlow,ncmd",
                "high and low marks for non-persistent messages (b, B or %) and the command run at the high one; the commas are required, the command may be empty (unchanged when left out)"
            ),
            (
                "-e default_relative_expiration_time",
                "the expiration a message gets when its sender sets none: +seconds, or none (unchanged when left out)"
            ),
            (
                "-L maxmsgs|none",
                "the most messages the queue holds, 1 to 1000000000000, enqueues in open transactions included; a full queue refuses an enqueue (QMENOSPACE) unless it asks to wait (qenqueue -w) (unchanged when left out)"
            ),
            (
                "-S maxsize|none",
                "the largest message body the queue takes, 1 to 4194304 bytes (unchanged when left out)"
            ),
            (
                "-E on|off",
                "whether the queue takes enqueues; off refuses them with QMEENQDISABLED (unchanged when left out)"
            ),
            (
                "-D on|off",
                "whether the queue gives out messages; off refuses dequeues and peeks with QMEDEQDISABLED and forwarders find it empty (unchanged when left out)"
            ),
            (
                "-a annotation",
                "free text about the queue, at most 256 characters, no control characters; '' clears it (unchanged when left out)"
            ),
            (
                "-I idle_seconds|none",
                "destroys the queue once it has been empty and without enqueues or dequeues that long, 1 to 31536000 seconds; checked while its queue space is loaded (unchanged when left out)"
            ),
            (
                "-P conditional|persistent|volatile",
                "what the queue keeps on disk: as each message asks, every message, or none (a message asking for disk is kept in memory, with a warning) (unchanged when left out)"
            ),
            ("queue_name", "the queue to change (asked for when left out)"),
            (
                "out-of-order",
                "which enqueues may jump the queue order: none, top, msgid or top,msgid (default: the current value)"
            ),
            (
                "retries",
                "rolled-back dequeues before a message goes to the error queue, 0 to 1000000 (default: the current value)"
            ),
            (
                "delay",
                "seconds a message waits after a rollback before it can be dequeued again, 0 to 31536000 (default: the current value)"
            ),
            (
                "high",
                "the usage that runs cmd: Nb bytes, NB blocks, N% of the queue space or Nm messages (default: the current value)"
            ),
            (
                "low",
                "the usage, in high's unit, it must fall to before cmd can run again (default: the current value)"
            ),
            (
                "cmd",
                "the command run when usage reaches high, at most 127 characters; '' for none (default: the current value)"
            ),
        ],
        "qchange SVCQ none 3 10 80% 20% ''"
    ),
    command!(
        "printserver",
        Some("psr"),
        "",
        0,
        "",
        Nothing,
        automation::printserver,
        "Lists the configured forwarders: server id, queue space, options (in CLOPT spelling), state (running, idle, stopped, exited when its queues were empty, failed, not booted), boot time, messages forwarded, failures and the last error.",
        [],
        "printserver"
    ),
    command!(
        "qaborttrans",
        Some("qabort"),
        "y",
        1,
        "[-y] [tranindex]",
        Nothing,
        msgadmin::qaborttrans,
        "Rolls back a transaction the daemon holds open (index from qprinttrans), e.g. of a client that stalls. Checks that the index is open, then asks for confirmation unless -y is given.",
        [
            ("-y", "does not ask for confirmation"),
            (
                "tranindex",
                "the transaction's index as qprinttrans lists it (asked for when left out)"
            ),
        ],
        "qaborttrans -y 3"
    ),
    command!(
        "qchangeexp",
        Some("qce"),
        "y",
        1,
        "[-y] [newtime]",
        Nothing,
        msgadmin::qchangeexp,
        "Sets the expiration of the selected messages (qset queue, qscan criteria): +seconds from now, an absolute YY[MM[DD[HH[MM[SS]]]]], or none. Asks for confirmation unless -y is given.",
        [
            ("-y", "does not ask for confirmation"),
            (
                "newtime",
                "+seconds from now, an absolute YY[MM[DD[HH[MM[SS]]]]], years 00-37 meaning 2000-2037 and 70-99 1970-1999, or none for never (asked for when left out)"
            ),
        ],
        "qchangeexp -y +3600"
    ),
    command!(
        "qchangeprio",
        Some("qcp"),
        "y",
        1,
        "[-y] [newpriority]",
        Nothing,
        msgadmin::qchangeprio,
        "Sets the priority (1-100) of the selected messages (qset queue, qscan criteria). Without criteria every message changes, after confirmation unless -y is given.",
        [
            ("-y", "does not ask for confirmation when no qscan criteria are set"),
            ("newpriority", "the new priority, 1 to 100 (asked for when left out)"),
        ],
        "qchangeprio -y 80"
    ),
    command!(
        "qchangequeue",
        Some("qcq"),
        "y",
        1,
        "[-y] [newqueue]",
        Queue,
        msgadmin::qchangequeue,
        "Moves the selected messages (qset queue, qscan criteria) to another queue of the same queue space, e.g. from the error queue back to the service queue; they start with a fresh retry count. Without criteria every message moves, after confirmation unless -y is given.",
        [
            ("-y", "does not ask for confirmation when no qscan criteria are set"),
            (
                "newqueue",
                "the queue of the open queue space to move them to (asked for when left out)"
            ),
        ],
        "qchangequeue -y SVCQ"
    ),
    command!(
        "qchangetime",
        Some("qct"),
        "y",
        1,
        "[-y] [newtime]",
        Nothing,
        msgadmin::qchangetime,
        "Sets the availability time of the selected messages: +seconds from now (+0 is now) or an absolute YY[MM[DD[HH[MM[SS]]]]]. Without criteria every message changes, after confirmation unless -y is given.",
        [
            ("-y", "does not ask for confirmation when no qscan criteria are set"),
            (
                "newtime",
                "+seconds from now (+0 is now) or an absolute YY[MM[DD[HH[MM[SS]]]]], years 00-37 meaning 2000-2037 and 70-99 1970-1999 (asked for when left out)"
            ),
        ],
        "qchangetime -y +0"
    ),
    command!(
        "qclose",
        None,
        "",
        0,
        "",
        Nothing,
        qspace::qclose,
        "Closes the open queue space. Its non-persistent messages stay in the daemon until ipcrm.",
        [],
        "qclose"
    ),
    command!(
        "qcommittrans",
        Some("qcommit"),
        "y",
        1,
        "[-y] [tranindex]",
        Nothing,
        msgadmin::qcommittrans,
        "Commits a transaction the daemon holds open (index from qprinttrans) on its owner's behalf. Checks that the index is open, then asks for confirmation unless -y is given.",
        [
            ("-y", "does not ask for confirmation"),
            (
                "tranindex",
                "the transaction's index as qprinttrans lists it (asked for when left out)"
            ),
        ],
        "qcommittrans -y 3"
    ),
    command!(
        "qcreate",
        Some("qcr"),
        "d:n:e:L:S:E:D:a:I:P:",
        8,
        "[-d persist|nonpersist] [-n nhigh,nlow,ncmd] [-e default_relative_expiration_time] [-L maxmsgs|none] [-S maxsize|none] [-E on|off] [-D on|off] [-a annotation] [-I idle_seconds|none] [-P conditional|persistent|volatile] [queue_name [qorder [out-of-order [retries [delay [high [low [cmd]]]]]]]]",
        Queue,
        queue::qcreate,
        "Creates a queue in the open queue space. QORDER is a comma list of priority, time, expiration, then fifo or lifo last; OUT-OF-ORDER is none, top, msgid or top,msgid; after RETRIES rolled-back dequeues a message goes to the error queue, each retry waiting DELAY seconds. HIGH and LOW are capacity marks (Nb bytes, NB blocks, N% of the queue space, Nm messages); CMD runs once when usage reaches HIGH and again only after it fell to LOW. -d sets the default delivery policy, -n the non-persistent marks and command, -e the default expiration (+seconds or none). -L, -S, -E, -D, -a, -I and -P set the queue attributes: maximum length, maximum message size, enqueue and dequeue on or off, annotation, empty idle expiration and persistence mode.",
        [
            (
                "-d persist|nonpersist",
                "where a message goes when its sender does not say (default persist)"
            ),
            (
                "-n nhigh,nlow,ncmd",
                "high and low marks for non-persistent messages (b, B or %) and the command run at the high one; the commas are required, the command may be empty, e.g. 80%,20%, (default 100%,0%, and no command)"
            ),
            (
                "-e default_relative_expiration_time",
                "the expiration a message gets when its sender sets none: +seconds from its enqueue, or none (default none)"
            ),
            (
                "-L maxmsgs|none",
                "the most messages the queue holds, 1 to 1000000000000, enqueues in open transactions included; a full queue refuses an enqueue (QMENOSPACE) unless it asks to wait (qenqueue -w) (default none)"
            ),
            (
                "-S maxsize|none",
                "the largest message body the queue takes, 1 to 4194304 bytes (default none)"
            ),
            (
                "-E on|off",
                "whether the queue takes enqueues; off refuses them with QMEENQDISABLED (default on)"
            ),
            (
                "-D on|off",
                "whether the queue gives out messages; off refuses dequeues and peeks with QMEDEQDISABLED and forwarders find it empty (default on)"
            ),
            (
                "-a annotation",
                "free text about the queue, at most 256 characters, no control characters; '' clears it (default none)"
            ),
            (
                "-I idle_seconds|none",
                "destroys the queue once it has been empty and without enqueues or dequeues that long, 1 to 31536000 seconds; checked while its queue space is loaded (default none)"
            ),
            (
                "-P conditional|persistent|volatile",
                "what the queue keeps on disk: as each message asks, every message, or none (a message asking for disk is kept in memory, with a warning) (default conditional)"
            ),
            (
                "queue_name",
                "the new queue's name, at most 127 characters (asked for when left out)"
            ),
            (
                "qorder",
                "the order messages leave in: priority, time and expiration in any order, comma separated, then fifo or lifo (default fifo)"
            ),
            (
                "out-of-order",
                "which enqueues may jump the queue order: none, top, msgid or top,msgid (default none)"
            ),
            (
                "retries",
                "rolled-back dequeues before a message goes to the error queue, 0 to 1000000 (default 0)"
            ),
            (
                "delay",
                "seconds a message waits after a rollback before it can be dequeued again, 0 to 31536000 (default 0)"
            ),
            (
                "high",
                "the usage that runs cmd: Nb bytes, NB blocks, N% of the queue space or Nm messages (default 100%)"
            ),
            (
                "low",
                "the usage, in high's unit, it must fall to before cmd can run again (default 0)"
            ),
            (
                "cmd",
                "the command run when usage reaches high, at most 127 characters; '' for none (default none)"
            ),
        ],
        "qcreate SVCQ priority,fifo none 2 30 80% 0% ''"
    ),
    command!(
        "qdeletemsg",
        Some("qdltm"),
        "y",
        0,
        "[-y]",
        Nothing,
        msgadmin::qdeletemsg,
        "Deletes the selected messages (qset queue, qscan criteria). Asks for confirmation unless -y is given. Messages held by a transaction are left alone and counted as such.",
        [("-y", "does not ask for confirmation"),],
        "qdeletemsg -y"
    ),
    command!(
        "qdequeue",
        None,
        "m:i:w:kB",
        1,
        "[-m msgid] [-i corrid] [-w seconds] [-k] [-B] [queue_name]",
        Queue,
        message::qdequeue,
        "Dequeues a message from a queue of the open queue space (in the session's transaction, if one is open) and prints a line with its msgid, priority, correlation id, retries, user return code and delivery mode, and its reply queue, failure queue and reply delivery mode when the sender set them (reply_queue=, failure_queue=, reply_qos=), then its body on the next line. The body is shown as text, UTF-8 included, with control characters (newlines too), bytes that are not UTF-8 and the backslash itself written as \\xx hex escapes (line\\0anext); the correlation id keeps only printable ASCII as it is. -B prints only the body, its raw bytes, with no header (at a terminal a newline follows a body that lacks one, so the prompt does not overwrite it); --json prints all of it as one JSON object. -m and -i select by message or correlation id (\\xx escapes allowed), -w waits up to that many seconds for one, -k peeks without taking. A queue named in full, MANAGER/QSPACE/QUEUE with a manager of the profiles (see managers), is another queue manager's, reached on a connection of its own.",
        [
            ("-m msgid", "takes this message: its id as qlist shows it (\\xx escapes allowed)"),
            (
                "-i corrid",
                "takes the first message with this correlation id, at most 32 bytes (\\xx escapes allowed)"
            ),
            (
                "-w seconds",
                "waits up to this many seconds for a message, 0 to 86400 (default: no wait)"
            ),
            ("-k", "peeks: shows the message and leaves it on the queue"),
            ("-B", "prints only the body, as its raw bytes"),
            ("queue_name", "the queue (asked for when left out)"),
        ],
        "qdequeue -w 30 SVCQ"
    ),
    command!(
        "qalias",
        None,
        "",
        2,
        "[queue_name [alias]]",
        Queue,
        queue::qalias,
        "Gives a queue of the open queue space another name: enqueues, dequeues, message administration, qinfo, qchange and qdestroy take the alias wherever they take the queue, and rights granted on the queue apply to requests by either name. An alias is spelled like a queue name and may hold '/' (cf/hotline); no queue of the space may be called or answer to it already.",
        [
            ("queue_name", "the queue (asked for when left out)"),
            ("alias", "the other name, at most 127 characters (asked for when left out)"),
        ],
        "qalias HOTLINE cf/hotline"
    ),
    command!(
        "qunalias",
        None,
        "",
        1,
        "[alias]",
        Nothing,
        queue::qunalias,
        "Removes an alias of a queue of the open queue space; the queue and its messages stay.",
        [("alias", "the alias to remove (asked for when left out)"),],
        "qunalias cf/hotline"
    ),
    command!(
        "qdestroy",
        Some("qds"),
        "pfy",
        1,
        "[{-p|-f}] [-y] [queue_name]",
        Queue,
        queue::qdestroy,
        "Destroys a queue of the open queue space. Refuses while it holds messages (-p purges them first) or while others are attached (-f forces both). Asks for confirmation unless -y is given.",
        [
            ("-p", "purges the queue's messages first"),
            ("-f", "forces: purges the messages and destroys it even while others are attached"),
            ("-y", "does not ask for confirmation"),
            ("queue_name", "the queue (asked for when left out)"),
        ],
        "qdestroy -p -y SVCQ"
    ),
    command!(
        "qenqueue",
        None,
        "p:t:e:i:r:f:d:q:u:Tb:F:w:",
        2,
        "[-p priority] [-t time] [-e exptime|none] [-i corrid] [-r replyqueue] [-f failurequeue] [-d persist|nonpersist] [-q replyqos] [-u urcode] [-T | -b msgid] [-F file] [-w seconds] [queue_name [body]]",
        Queue,
        message::qenqueue,
        "Enqueues a message on a queue of the open queue space (in the session's transaction, if one is open) and prints its message id. The body is the argument, else the file given with -F (- for standard input), else standard input (read to its end) when commands come from -c. When the commands come from standard input (a script or the terminal) the body cannot: give it as an argument or with -F FILE. Bodies are at most 4194304 bytes. -p priority 1-100 (default 50); -t availability and -e expiration as +seconds or YY[MM[DD[HH[MM[SS]]]]], ending by 2037-12-31 23:59:59 (-e none: never); -i correlation id; -r/-f reply and failure queues; -d delivery mode (default: the queue's); -q reply delivery mode; -u user return code; -T at the top of the queue, -b before a message (the queue must allow it); -w waits for room on a full queue. A queue named in full, MANAGER/QSPACE/QUEUE with a manager of the profiles (see managers), is another queue manager's: the message goes there on a connection of its own, outside any transaction of this session.",
        [
            ("-p priority", "1 to 100 (default 50)"),
            (
                "-t time",
                "when it becomes available: +seconds from now or an absolute YY[MM[DD[HH[MM[SS]]]]], years 00-37 meaning 2000-2037 and 70-99 1970-1999 (default now)"
            ),
            (
                "-e exptime|none",
                "when it expires, written like -t; none: never (default: the queue's default expiration)"
            ),
            ("-i corrid", "correlation id, at most 32 bytes (\\xx escapes allowed)"),
            ("-r replyqueue", "the queue a reply should go to"),
            ("-f failurequeue", "the queue a failure reply should go to"),
            ("-d persist|nonpersist", "the delivery mode (default: the queue's)"),
            ("-q replyqos", "the delivery mode of the reply: persist, nonpersist or default"),
            ("-u urcode", "user return code, a signed 64-bit number (default 0)"),
            ("-T", "puts it at the top of the queue (the queue must allow top)"),
            ("-b msgid", "puts it just before this message (the queue must allow msgid)"),
            ("-F file", "reads the body from this file; - reads standard input (only with -c)"),
            (
                "-w seconds",
                "on a queue at its maximum length, waits up to this long (0 to 86400) for room, after the enqueues already waiting (default: refused at once with QMENOSPACE)"
            ),
            ("queue_name", "the queue (asked for when left out)"),
            (
                "body",
                "the body, at most 4194304 bytes; else -F, else standard input under -c, else asked for at a terminal"
            ),
        ],
        "qenqueue -p 80 SVCQ 'hello world'"
    ),
    command!(
        "qgrant",
        None,
        "",
        3,
        "[principal [right[,right] [queue_space_name[/queue_name]]]]",
        Nothing,
        rights::qgrant,
        "Grants rights to a principal: unix:USER (a local user on the control socket), cert:ID (a client certificate's identity over TLS) or anonymous (plain TCP and HTTP), or a pattern with * such as cert:render-*. Rights are enqueue, dequeue, browse (peek, qlist, qinfo and other listings) and admin (everything else, and all of the above). The scope is a queue space, or one queue of it, either possibly a * pattern; without one the rights hold everywhere. Nobody but the daemon's owner and root holds anything until granted; a pattern never gives anonymous admin. Grants are kept in the device.",
        [
            (
                "principal",
                "unix:USER, cert:ID or anonymous, or a pattern with * such as cert:render-* (asked for when left out)"
            ),
            (
                "right[,right]",
                "enqueue, dequeue, browse or admin, several separated by commas (asked for when left out)"
            ),
            (
                "queue_space_name[/queue_name]",
                "where they hold: a queue space or one of its queues, * patterns allowed (default *: everywhere)"
            ),
        ],
        "qgrant unix:batch enqueue,dequeue QSPACE/SVCQ"
    ),
    command!(
        "qinfo",
        None,
        "",
        1,
        "[queue_name]",
        Queue,
        queue::qinfo,
        "Shows each queue of the open queue space (or one) with its messages, persistent and non-persistent, and the bytes and blocks they use, then the totals. Verbose mode adds each queue's definition.",
        [("queue_name", "only this queue (default: every queue of the open queue space)"),],
        "qinfo SVCQ"
    ),
    command!(
        "qopen",
        None,
        "",
        1,
        "[queue_space_name]",
        QueueSpace,
        qspace::qopen,
        "Opens a queue space for the commands that work on queues and messages, closing any other one this session had open.",
        [("queue_space_name", "the queue space (asked for when left out)"),],
        "qopen QSPACE"
    ),
    command!(
        "qlist",
        Some("ql"),
        "",
        0,
        "",
        Nothing,
        msgadmin::qlist,
        "Lists the selected messages (qset queue, qscan criteria) in queue order: msgid, priority, retries, length, delivery and reply modes, state, availability and expiration times; verbose mode adds correlation id, enqueue time, origin queue (for the error queue), reply and failure queues, user return code.",
        [],
        "qlist"
    ),
    command!(
        "qstat",
        None,
        "",
        1,
        "[--once] [queue_space_name]",
        QueueSpace,
        stat::qstat,
        "Shows a queue space live (the open one by default; it must be loaded): per queue the messages and bytes, enqueues and dequeues per second, the oldest message's age, messages waiting for their time (and of those, in a retry delay), held by transactions, the threshold state and the forwarders running. At a terminal it redraws every second until Ctrl-C; piped, with --once or --json it prints one view, rates measured over one second.",
        [
            ("--once", "prints one view, also at a terminal"),
            ("queue_space_name", "the queue space, which must be loaded (default: the open one)"),
        ],
        "qstat --once QSPACE"
    ),
    command!(
        "qwhy",
        None,
        "m:",
        1,
        "[-m] msgid",
        Nothing,
        why::qwhy,
        "Tells why a message of the open queue space is not moving, one sentence per reason: held by an open transaction (its number, pid and program), enqueued by one not committed yet, waiting out its retry delay (retry k of n) or its availability time, behind the messages that come before it in its queue's order (and by which sort key), expired, moved to the error queue (from which queue, after how many retries), no forwarder running for its queue (naming the configured ones that would serve it). When nothing holds it back it says that it is next in line. The msgid is written as qlist shows it (\\xx escapes allowed); --json gives each reason as a kind, its sentence and its facts. Needs browse on the message's queue.",
        [
            (
                "-m",
                "names the message id with an option, as qdequeue -m does; give it once, either way"
            ),
            (
                "msgid",
                "the message's id as qlist shows it, \\xx escapes allowed (asked for when left out)"
            ),
        ],
        "qwhy 0000000000000001"
    ),
    command!(
        "qthlog",
        None,
        "",
        1,
        "[queue_name]",
        Queue,
        automation::qthlog,
        "Shows the record of threshold commands run for the open queue space (or one queue): when, which limit and usage, the command, how it ended and how long it took; verbose mode adds the first lines it printed.",
        [("queue_name", "only this queue's record (default: every queue of the open queue space)"),],
        "qthlog SVCQ"
    ),
    command!(
        "qthtest",
        None,
        "n",
        1,
        "[-n] [queue_name]",
        Queue,
        automation::qthtest,
        "Runs a queue's threshold command now, in the environment a real crossing gives it (QMCONFIG, QM_SOCKET, QM_QSPACE, QM_QUEUE, QM_LIMIT, QM_USAGE...), records it like a firing and prints how it went. -n runs the non-persistent limits' command.",
        [
            ("-n", "runs the non-persistent limits' command rather than the persistent one"),
            ("queue_name", "the queue (asked for when left out)"),
        ],
        "qthtest SVCQ"
    ),
    command!(
        "qprinttrans",
        Some("qpt"),
        "",
        0,
        "",
        Nothing,
        msgadmin::qprinttrans,
        "Lists the transactions the daemon holds open on the open queue space: index, owner, start, time left, enqueues and dequeues.",
        [],
        "qprinttrans"
    ),
    command!(
        "qrevoke",
        None,
        "",
        3,
        "[principal [right[,right] [queue_space_name[/queue_name]]]]",
        Nothing,
        rights::qrevoke,
        "Takes back rights granted with qgrant, naming the principal and the scope exactly as they were granted (qauth shows them). Rights not granted there are refused, and then nothing changes.",
        [
            (
                "principal",
                "the principal exactly as it was granted, pattern included (asked for when left out)"
            ),
            (
                "right[,right]",
                "enqueue, dequeue, browse or admin, several separated by commas (asked for when left out)"
            ),
            (
                "queue_space_name[/queue_name]",
                "the scope exactly as it was granted (default *: everywhere)"
            ),
        ],
        "qrevoke unix:batch dequeue QSPACE/SVCQ"
    ),
    command!(
        "qscan",
        None,
        "t:p:m:i:d:e:",
        1,
        "[{ [-t time1[-time2]] [-p priority1[-priority2]] [-m msgid] [-i corrid] [-d delivery_mode] [-e time1[-time2]] | none }]",
        Nothing,
        msgadmin::qscan,
        "Sets the criteria that select messages for qlist, qdeletemsg and the qchange commands: availability time (-t) and expiration time (-e) ranges as YY[MM[DD[HH[MM[SS]]]]] (a single time covers its whole unit: 2511 is November 2025), priority range (-p), message id (-m), correlation id (-i), delivery mode (-d persist|nonpersist). 'none' clears them; without arguments it prints them.",
        [
            (
                "-t time1[-time2]",
                "availability time from time1 to time2, each YY[MM[DD[HH[MM[SS]]]]], years 00-37 meaning 2000-2037 and 70-99 1970-1999; one time covers its whole unit"
            ),
            ("-p priority1[-priority2]", "priority from priority1 to priority2, 1 to 100"),
            ("-m msgid", "this message id (\\xx escapes allowed)"),
            ("-i corrid", "this correlation id, at most 32 bytes (\\xx escapes allowed)"),
            ("-d delivery_mode", "persist or nonpersist"),
            ("-e time1[-time2]", "expiration time from time1 to time2, written like -t"),
            ("none", "clears the criteria: every message of the queue is selected"),
        ],
        "qscan -p 50-100"
    ),
    command!(
        "qset",
        None,
        "",
        1,
        "[queue_name]",
        Queue,
        msgadmin::qset,
        "Sets the queue the message commands act on (it must exist in the open queue space); without an argument prints it.",
        [(
            "queue_name",
            "the queue, which must exist in the open queue space; without it, prints the current one"
        ),],
        "qset ERRQ"
    ),
    command!(
        "qsize",
        None,
        "A:H:C:O:Q:f:n:o:",
        5,
        "[-A actions] [-H handles] [-C cursors] [-O owners] [-Q tmp_queues] [-f filter_memory] [-n nonpersistent_msg_memory[b,B]] [-o overflow_memory] [pages [queues [transactions [processes [messages]]]]]",
        Nothing,
        qspace::qsize,
        "Estimates the daemon memory a queue space of these sizes needs. qm uses no System V semaphores, so their count is always 0.",
        [
            ("-A actions", "accepted for Tuxedo's scripts; not part of the estimate"),
            ("-H handles", "accepted for Tuxedo's scripts, with no effect in qm"),
            ("-C cursors", "accepted for Tuxedo's scripts, with no effect in qm"),
            ("-O owners", "accepted for Tuxedo's scripts, with no effect in qm"),
            ("-Q tmp_queues", "accepted for Tuxedo's scripts, with no effect in qm"),
            ("-f filter_memory", "accepted for Tuxedo's scripts, with no effect in qm"),
            (
                "-n nonpersistent_msg_memory[b,B]",
                "memory for non-persistent messages: N or NB blocks, Nb bytes rounded down to whole pages (default 0)"
            ),
            ("-o overflow_memory", "accepted for Tuxedo's scripts; not part of the estimate"),
            ("pages", "the queue space's size in pages (asked for when left out)"),
            ("queues", "queues, 1 to 65535 (asked for when left out)"),
            ("transactions", "concurrent transactions, 1 to 65535 (asked for when left out)"),
            ("processes", "concurrent processes, 1 to 65535 (asked for when left out)"),
            ("messages", "messages held at once, 1 to 1073741824 (asked for when left out)"),
        ],
        "qsize 5000 10 20 20 10000"
    ),
    command!(
        "qspacechange",
        Some("qspch"),
        "A:H:C:O:Q:f:n:o:",
        8,
        "[-A actions] [-H handles] [-C cursors] [-O owners] [-Q tmp_queues] [-f filter_memory] [-n nonpersistent_msg_memory[b,B]] [-o overflow_memory] [queue_space_name [ipckey [trans [procs [messages [errorq [inityn [blocking]]]]]]]]",
        QueueSpace,
        qspace::qspacechange,
        "Changes a queue space's parameters (not its size or number of queues: see qaddext). Prompts offer the current values as defaults. The queue space must be inactive: your own qopen is closed, others must detach first; its non-persistent messages are lost.",
        [
            (
                "-A actions",
                "waiting dequeues allowed beyond one per process, 0 to 65535 (unchanged when left out)"
            ),
            ("-H handles", "accepted for Tuxedo's scripts, with no effect in qm"),
            ("-C cursors", "accepted for Tuxedo's scripts, with no effect in qm"),
            ("-O owners", "accepted for Tuxedo's scripts, with no effect in qm"),
            ("-Q tmp_queues", "accepted for Tuxedo's scripts, with no effect in qm"),
            ("-f filter_memory", "accepted for Tuxedo's scripts, with no effect in qm"),
            (
                "-n nonpersistent_msg_memory[b,B]",
                "memory for non-persistent messages: N or NB blocks, Nb bytes rounded down to whole pages (unchanged when left out)"
            ),
            (
                "-o overflow_memory",
                "overflow memory in bytes, kept and shown by qspacelist, with no other effect (unchanged when left out)"
            ),
            ("queue_space_name", "the queue space to change (asked for when left out)"),
            (
                "ipckey",
                "32769 to 262143, used by no other queue space (default: the current value)"
            ),
            ("trans", "concurrent transactions, 1 to 65535 (default: the current value)"),
            ("procs", "concurrent processes, 1 to 65535 (default: the current value)"),
            ("messages", "messages held at once, 1 to 1073741824 (default: the current value)"),
            (
                "errorq",
                "the queue that receives messages out of retries; '' for none, then they are dropped (default: the current value)"
            ),
            ("inityn", "y takes now the disk the pages may need (default n)"),
            (
                "blocking",
                "Tuxedo's blocking factor in pages, 1 to 4096 (default: the current value): kept and shown, with no other effect"
            ),
        ],
        "qspacechange QSPACE 62063 40 40 20000 ERRQ n 16"
    ),
    command!(
        "qspacecreate",
        Some("qspc"),
        "A:n:o:",
        10,
        "[-A actions] [-n nonpersistent_msg_memory[b,B]] [-o overflow_memory] [queue_space_name [ipckey [pages [queues [trans [procs [messages [errorq [inityn [blocking]]]]]]]]]]",
        QueueSpace,
        qspace::qspacecreate,
        "Creates a queue space of PAGES pages (rounded down to a multiple of 4) taken first-fit from the device list's free space; it needs one page plus one per queue for itself. IPCKEY is 32769 to 262143 and unique. ERRORQ names the queue that receives messages out of retries (create it with qcreate). INITYN y takes now the disk the pages may need over their life, so a disk too small is refused at creation. -n sets memory for non-persistent messages (blocks, or bytes with b), -A extra waiting dequeues.",
        [
            (
                "-A actions",
                "waiting dequeues allowed beyond one per process, 0 to 65535 (default 0)"
            ),
            (
                "-n nonpersistent_msg_memory[b,B]",
                "memory for non-persistent messages: N or NB blocks, Nb bytes rounded down to whole pages (default 0: non-persistent enqueues are refused)"
            ),
            (
                "-o overflow_memory",
                "overflow memory in bytes, kept and shown by qspacelist, with no other effect (default 0)"
            ),
            (
                "queue_space_name",
                "the new queue space's name, at most 15 characters (asked for when left out)"
            ),
            ("ipckey", "32769 to 262143, used by no other queue space (asked for when left out)"),
            (
                "pages",
                "its size, rounded down to a multiple of 4; at least one page plus one per queue (asked for when left out)"
            ),
            ("queues", "how many queues it may hold, 1 to 65535 (asked for when left out)"),
            ("trans", "concurrent transactions, 1 to 65535 (asked for when left out)"),
            ("procs", "concurrent processes, 1 to 65535 (asked for when left out)"),
            ("messages", "messages held at once, 1 to 1073741824 (asked for when left out)"),
            (
                "errorq",
                "the queue that receives messages out of retries (default none: they are dropped)"
            ),
            (
                "inityn",
                "y takes now the disk the pages may need, so a disk too small is refused at once (default n)"
            ),
            (
                "blocking",
                "Tuxedo's blocking factor in pages, 1 to 4096 (default 16): kept and shown by qspacelist, with no other effect"
            ),
        ],
        "qspacecreate QSPACE 62062 5000 10 20 20 10000 ERRQ y 16"
    ),
    command!(
        "qspacedestroy",
        Some("qspds"),
        "fy",
        1,
        "[-f] [-y] [queue_space_name]",
        QueueSpace,
        qspace::qspacedestroy,
        "Destroys a queue space and its extents. Refuses while it holds messages or others are attached, unless -f is given. Asks for confirmation unless -y is given.",
        [
            ("-f", "destroys it even while it holds messages or others are attached"),
            ("-y", "does not ask for confirmation"),
            ("queue_space_name", "the queue space (asked for when left out)"),
        ],
        "qspacedestroy -y QSPACE"
    ),
    command!(
        "qspacelist",
        Some("qspl"),
        "",
        1,
        "[queue_space_name]",
        QueueSpace,
        qspace::qspacelist,
        "Shows a queue space's parameters, extents and memory (the open one when the answer is empty).",
        [(
            "queue_space_name",
            "the queue space; an empty answer means the open one (asked for when left out)"
        ),],
        "qspacelist QSPACE"
    ),
    command!(
        "quit",
        Some("q"),
        "",
        0,
        "",
        Nothing,
        general::quit,
        "Leaves qmadmin. End of input does the same. A transaction still open is rolled back with a warning and the exit status is 1; at a terminal qmadmin asks first.",
        [],
        "quit"
    ),
    command!(
        "shutdown",
        None,
        "i:q:",
        0,
        "{-i srvid | -q queue_name}",
        Nothing,
        automation::shutdown,
        "Stops a forwarder (-i) or every forwarder of a queue (-q) once it has finished its current message.",
        [
            ("-i srvid", "the forwarder with this server id (give either -i or -q)"),
            ("-q queue_name", "every forwarder of this queue (give either -i or -q)"),
        ],
        "shutdown -q SVCQ"
    ),
    command!(
        "managers",
        None,
        "",
        0,
        "",
        Nothing,
        managers::managers,
        "Lists the queue managers the profiles name (the user's ~/.config/qm/profile.toml, then the host's /etc/qm/profile.toml, and QM_MANAGER), in the order an application that names none tries them: highest priority first. For each: where it is, whether a daemon answers there, and the queue spaces it serves that you may see. Also runs without a daemon as qmadmin managers.",
        [],
        "managers"
    ),
    command!(
        "verbose",
        Some("v"),
        "",
        1,
        "[{off|on}]",
        Nothing,
        general::verbose,
        "Makes commands say more: lidl adds free-space maps, qinfo queue definitions, and long work (qspacecreate, qbackup, qverify, qexport, qimport, changes to many messages) shows progress dots. Without an argument, toggles.",
        [(
            "off|on",
            "turns verbose mode on or off; without it verbose mode toggles (it starts off)"
        ),],
        "verbose on"
    ),
    command!(
        "whoami",
        None,
        "",
        0,
        "",
        Nothing,
        rights::whoami,
        "Shows the principal this session speaks for, as the daemon sees it (unix:USER on the control socket, cert:ID over TLS, anonymous over plain TCP), and the face it came through.",
        [],
        "whoami"
    ),
];

/// Finds a command by full name or abbreviation.
pub fn lookup(name: &str) -> Option<&'static CommandSpec> {
    COMMANDS.iter().find(|c| c.name == name || c.abbrev == Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::{Line, parse_line};

    /// `token` without the brackets and braces that open or close groups around it (those
    /// that belong to it, as in `time1[-time2]`, stay); and whether a group closed after it.
    fn unwrapped(token: &str) -> (&str, bool) {
        let mut t = token.trim_start_matches(['[', '{']);
        let before = t.len();
        let unbalanced = |t: &str, open: char, close: char| {
            t.ends_with(close) && t.matches(close).count() > t.matches(open).count()
        };
        while unbalanced(t, '[', ']') || unbalanced(t, '{', '}') {
            t = &t[..t.len() - 1];
        }
        (t, t.len() < before)
    }

    /// The options and operands a syntax line names, in its order: `-x value` for an option
    /// that takes one, `-x` or `--once` for one that does not, and each operand word.
    fn syntax_items(spec: &CommandSpec) -> Vec<String> {
        let takes_value = |letter: &str| spec.options.contains(&format!("{letter}:"));
        let mut items = Vec::new();
        let mut tokens = spec.syntax.split_whitespace().map(unwrapped);
        while let Some((token, closed)) = tokens.next() {
            if token.is_empty() || token == "|" {
                continue;
            }
            if token.starts_with("--") || !token.starts_with('-') {
                items.push(token.to_string());
                continue;
            }
            for option in token.split('|') {
                if !closed && takes_value(&option[1..]) {
                    let (value, _) = tokens.next().expect("an option's value in the syntax");
                    items.push(format!("{option} {value}"));
                } else {
                    items.push(option.to_string());
                }
            }
        }
        items
    }

    /// Every option and operand of a command's syntax has one list entry, in the syntax's
    /// order, and every option getopt takes is in the syntax.
    #[test]
    fn every_option_and_operand_is_explained() {
        for spec in COMMANDS {
            let named: Vec<&str> = spec.arguments.iter().map(|(name, _)| *name).collect();
            assert_eq!(named, syntax_items(spec), "{}: list and syntax differ", spec.name);
            for letter in spec.options.chars().filter(|&c| c != ':') {
                let option = format!("-{letter}");
                assert!(
                    named.iter().any(|n| n.split(' ').next() == Some(&option)),
                    "{}: {option} is not explained",
                    spec.name
                );
            }
            for (name, meaning) in spec.arguments {
                assert!(!meaning.is_empty() && !meaning.ends_with('.'), "{}: {name}", spec.name);
            }
        }
    }

    /// Every example is a line the shell would run: the grammar reads it as the command it
    /// illustrates, and that command's options and argument count accept it.
    #[test]
    fn every_example_runs_as_its_command() {
        for spec in COMMANDS {
            let Ok(Line::Command { name, args }) = parse_line(spec.example) else {
                panic!("{}: example {:?} is not a command line", spec.name, spec.example);
            };
            match crate::repl::prepare(&name, &args) {
                Ok((run, _)) => assert_eq!(run.name, spec.name, "example {:?}", spec.example),
                Err(why) => panic!("{}: example {:?}: {why}", spec.name, spec.example),
            }
        }
    }

    #[test]
    fn syntax_items_read_groups_and_values() {
        let items = |name| syntax_items(lookup(name).unwrap());
        assert_eq!(items("qwhy"), ["-m", "msgid"]);
        assert_eq!(items("shutdown"), ["-i srvid", "-q queue_name"]);
        assert_eq!(items("qdestroy"), ["-p", "-f", "-y", "queue_name"]);
        assert_eq!(items("qscan")[0], "-t time1[-time2]");
        assert_eq!(items("qscan").last().unwrap(), "none");
        assert_eq!(items("qgrant")[2], "queue_space_name[/queue_name]");
        assert_eq!(items("qstat"), ["--once", "queue_space_name"]);
    }
}
