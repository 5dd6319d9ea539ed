//! The worker protocol: how `qmd` talks to a service started once (`mode = "worker"`) over
//! the worker's standard input and output, and a small helper for writing workers in Rust.
//!
//! The byte layout is documented in `docs/worker-protocol.md`; in short, after the worker's
//! greeting [`GREETING`], every request and every reply is a frame: a 4-byte big-endian
//! length, then that many bytes. A request has a fixed 80-byte header then the body; a reply
//! a fixed 9-byte header then the body.
//!
//! ```no_run
//! use qm_common::worker::{Reply, serve};
//!
//! // An echo service: the reply is the request's body.
//! serve(|request| Reply::success(request.body)).expect("worker protocol");
//! ```

use crate::message::{BODY_MAX, MsgId};
use std::io::{self, Read, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a worker writes first, once ready: protocol version 1.
pub const GREETING: &[u8; 4] = b"QMW1";
/// Bytes of the length in front of every frame.
pub const LENGTH_BYTES: usize = 4;
/// Bytes of a request's header: kind, msgid, corrid, priority, retries, deadline.
pub const REQUEST_HEADER: usize = 80;
/// Bytes of a reply's header: status and user return code.
pub const REPLY_HEADER: usize = 9;
/// The only kind of request of version 1.
pub const KIND_REQUEST: u8 = 1;
/// Longest msgid and corrid (their fields are padded to this).
pub const ID_FIELD: usize = 32;
/// Reply status bytes.
pub const STATUS_SUCCESS: u8 = 0;
pub const STATUS_FAILURE: u8 = 1;

/// Largest request frame payload a worker can be sent.
pub const REQUEST_MAX: usize = REQUEST_HEADER + BODY_MAX;
/// Largest reply frame payload the daemon accepts; a longer one is refused unread.
pub const REPLY_MAX: usize = REPLY_HEADER + BODY_MAX;

/// One message to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub msgid: MsgId,
    /// The correlation identifier (0 to 32 bytes).
    pub corrid: Vec<u8>,
    pub priority: u8,
    /// How many times this message was rolled back before (0 on its first try).
    pub retries: u32,
    /// Milliseconds since the Unix epoch after which the daemon kills the worker.
    pub deadline_ms: u64,
    pub body: Vec<u8>,
}

/// A worker's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Success: the body is the reply. Failure: the message is rolled back (or, with the
    /// forwarder's `-d`, a non-empty body goes to the failure queue).
    pub success: bool,
    /// The user return code the reply carries.
    pub urcode: i64,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn success(body: impl Into<Vec<u8>>) -> Reply {
        Reply { success: true, urcode: 0, body: body.into() }
    }

    pub fn failure(body: impl Into<Vec<u8>>) -> Reply {
        Reply { success: false, urcode: 0, body: body.into() }
    }

    pub fn with_urcode(self, urcode: i64) -> Reply {
        Reply { urcode, ..self }
    }

    /// The whole frame: length, header, body.
    pub fn encode(&self) -> Vec<u8> {
        let mut frame = Vec::with_capacity(LENGTH_BYTES + REPLY_HEADER + self.body.len());
        frame.extend_from_slice(&frame_length(REPLY_HEADER + self.body.len()));
        frame.push(if self.success { STATUS_SUCCESS } else { STATUS_FAILURE });
        frame.extend_from_slice(&self.urcode.to_be_bytes());
        frame.extend_from_slice(&self.body);
        frame
    }

    /// Reads a reply frame's payload (what follows the length).
    pub fn decode(payload: &[u8]) -> Result<Reply, String> {
        if payload.len() < REPLY_HEADER {
            return Err(format!(
                "a reply of {} bytes is shorter than the {REPLY_HEADER}-byte reply header",
                payload.len()
            ));
        }
        let success = match payload[0] {
            STATUS_SUCCESS => true,
            STATUS_FAILURE => false,
            other => {
                return Err(format!(
                    "reply status {other} is neither {STATUS_SUCCESS} (success) nor \
                     {STATUS_FAILURE} (failure)"
                ));
            }
        };
        let urcode = i64::from_be_bytes(payload[1..9].try_into().expect("8 bytes"));
        Ok(Reply { success, urcode, body: payload[REPLY_HEADER..].to_vec() })
    }
}

fn frame_length(len: usize) -> [u8; LENGTH_BYTES] {
    u32::try_from(len).expect("frames are at most a body and a header").to_be_bytes()
}

/// Checks the length in front of a frame against the largest payload allowed.
pub fn payload_length(prefix: [u8; LENGTH_BYTES], max: usize) -> Result<usize, String> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(format!(
            "a frame of {len} bytes exceeds the limit of {max} bytes (a {BODY_MAX}-byte body \
             and its header)"
        ));
    }
    Ok(len)
}

impl Request {
    /// The deadline as a time.
    pub fn deadline(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.deadline_ms)
    }

    /// The whole frame: length, header, body.
    pub fn encode(&self) -> Vec<u8> {
        let mut frame = Vec::with_capacity(LENGTH_BYTES + REQUEST_HEADER + self.body.len());
        frame.extend_from_slice(&frame_length(REQUEST_HEADER + self.body.len()));
        frame.push(KIND_REQUEST);
        push_id(&mut frame, &self.msgid.0);
        push_id(&mut frame, &self.corrid);
        frame.push(self.priority);
        frame.extend_from_slice(&self.retries.to_be_bytes());
        frame.extend_from_slice(&self.deadline_ms.to_be_bytes());
        frame.extend_from_slice(&self.body);
        frame
    }

    /// Reads a request frame's payload (what follows the length).
    pub fn decode(payload: &[u8]) -> Result<Request, String> {
        if payload.len() < REQUEST_HEADER {
            return Err(format!(
                "a request of {} bytes is shorter than the {REQUEST_HEADER}-byte request header",
                payload.len()
            ));
        }
        if payload[0] != KIND_REQUEST {
            return Err(format!("request kind {} is not {KIND_REQUEST}", payload[0]));
        }
        let msgid = MsgId(read_id(&payload[1..34], "msgid")?);
        let corrid = read_id(&payload[34..67], "corrid")?;
        Ok(Request {
            msgid,
            corrid,
            priority: payload[67],
            retries: u32::from_be_bytes(payload[68..72].try_into().expect("4 bytes")),
            deadline_ms: u64::from_be_bytes(payload[72..80].try_into().expect("8 bytes")),
            body: payload[REQUEST_HEADER..].to_vec(),
        })
    }
}

/// A length byte, then the identifier padded with zeros to [`ID_FIELD`] bytes.
fn push_id(frame: &mut Vec<u8>, id: &[u8]) {
    let id = &id[..id.len().min(ID_FIELD)];
    frame.push(id.len() as u8);
    frame.extend_from_slice(id);
    frame.resize(frame.len() + ID_FIELD - id.len(), 0);
}

fn read_id(field: &[u8], name: &str) -> Result<Vec<u8>, String> {
    let len = field[0] as usize;
    if len > ID_FIELD {
        return Err(format!("{name} length {len} is over {ID_FIELD}"));
    }
    Ok(field[1..1 + len].to_vec())
}

/// Reads one frame's payload of at most `max` bytes; `None` at end of input before a
/// frame begins.
pub fn read_frame(input: &mut impl Read, max: usize) -> io::Result<Option<Vec<u8>>> {
    let mut prefix = [0u8; LENGTH_BYTES];
    let mut got = 0;
    while got < LENGTH_BYTES {
        match input.read(&mut prefix[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = payload_length(prefix, max).map_err(io::Error::other)?;
    let mut payload = vec![0u8; len];
    input.read_exact(&mut payload)?;
    Ok(Some(payload))
}

/// Serves requests from standard input with `handler` until the daemon closes it (then
/// returns `Ok`): writes the greeting, then one reply per request, in order. A handler
/// reply over the body limit is sent as a failure with an empty body instead, so the
/// daemon does not stop this worker for it.
pub fn serve(handler: impl FnMut(Request) -> Reply) -> io::Result<()> {
    // Standard output is line-buffered: a body with a newline would leave in two writes,
    // and wake the daemon twice.
    let mut output = io::BufWriter::with_capacity(1 << 16, io::stdout().lock());
    serve_on(&mut io::stdin().lock(), &mut output, handler)
}

/// [`serve`] on any input and output.
pub fn serve_on(
    input: &mut impl Read,
    output: &mut impl Write,
    mut handler: impl FnMut(Request) -> Reply,
) -> io::Result<()> {
    output.write_all(GREETING)?;
    output.flush()?;
    while let Some(payload) = read_frame(input, REQUEST_MAX)? {
        let request = Request::decode(&payload).map_err(io::Error::other)?;
        let mut reply = handler(request);
        if reply.body.len() > BODY_MAX {
            reply = Reply::failure(Vec::new()).with_urcode(reply.urcode);
        }
        output.write_all(&reply.encode())?;
        output.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request {
            msgid: MsgId(vec![7; 32]),
            corrid: b"order-1".to_vec(),
            priority: 70,
            retries: 3,
            deadline_ms: 1_700_000_000_123,
            body: b"hello".to_vec(),
        }
    }

    #[test]
    fn request_layout() {
        let frame = request().encode();
        assert_eq!(&frame[..4], &(80u32 + 5).to_be_bytes());
        assert_eq!(frame[4], KIND_REQUEST);
        assert_eq!(frame[5], 32);
        assert_eq!(frame[38], 7, "corrid length");
        assert_eq!(&frame[39..46], b"order-1");
        assert_eq!(frame[71], 70, "priority");
        assert_eq!(&frame[72..76], &3u32.to_be_bytes());
        assert_eq!(&frame[84..], b"hello");
        assert_eq!(Request::decode(&frame[4..]).unwrap(), request());
    }

    #[test]
    fn reply_layout_and_bad_replies() {
        let reply = Reply::failure(b"no".to_vec()).with_urcode(-2);
        let frame = reply.encode();
        assert_eq!(frame, [0, 0, 0, 11, 1, 255, 255, 255, 255, 255, 255, 255, 254, b'n', b'o']);
        assert_eq!(Reply::decode(&frame[4..]).unwrap(), reply);
        assert!(Reply::decode(&[0; 8]).unwrap_err().contains("shorter"));
        assert!(Reply::decode(&[2; 9]).unwrap_err().contains("status 2"));
        let over = ((REPLY_MAX + 1) as u32).to_be_bytes();
        assert!(payload_length(over, REPLY_MAX).unwrap_err().contains("exceeds"));
    }

    #[test]
    fn serve_answers_each_request_then_ends_at_eof() {
        let mut input = Vec::new();
        for body in [b"a".as_slice(), b"bc"] {
            input.extend(Request { body: body.to_vec(), ..request() }.encode());
        }
        let mut output = Vec::new();
        serve_on(&mut input.as_slice(), &mut output, |r| Reply::success(r.body)).unwrap();
        assert_eq!(&output[..4], GREETING);
        let mut rest = &output[4..];
        let first = read_frame(&mut rest, REPLY_MAX).unwrap().unwrap();
        assert_eq!(Reply::decode(&first).unwrap().body, b"a");
        let second = read_frame(&mut rest, REPLY_MAX).unwrap().unwrap();
        assert_eq!(Reply::decode(&second).unwrap().body, b"bc");
        assert!(read_frame(&mut rest, REPLY_MAX).unwrap().is_none());
    }
}
