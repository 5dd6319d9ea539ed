//! Framing: each frame is a 4-byte big-endian length and a postcard-encoded value.
//!
//! [`Connection`] turns a byte stream into typed frames and back. A frame whose length is
//! over [`MAX_FRAME`] is refused before anything is allocated; a frame that does not decode
//! is read whole, so the stream stays in step and the peer can be told what went wrong.
//!
//! The announced length is a claim, not a promise: the buffer grows as bytes arrive, so a
//! peer that announces 4 MiB and sends little holds little. A connection can also be given
//! a time limit within which a frame, once begun, must be complete.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::io;
use std::time::Duration;
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter,
};

/// Largest frame either side accepts: room for a 4 MiB message and its control data.
pub const MAX_FRAME: usize = 4 * 1024 * 1024 + 64 * 1024;

/// Room made for a frame before its bytes arrive; beyond this, the buffer doubles with what
/// has arrived.
const FIRST_ROOM: usize = 8 * 1024;

/// How long a connection keeps the buffer of its last frame for the next one: frames that
/// follow each other (a `qimport`'s batches of megabytes) then reuse it instead of growing
/// a new one, copying it at each doubling and faulting in fresh pages, while an idle peer
/// holds nothing past this.
const KEEP_BUFFER: Duration = Duration::from_secs(1);

/// Why a frame could not be read.
#[derive(Debug)]
pub enum FrameError {
    Io(io::Error),
    /// The announced length is over [`MAX_FRAME`]; the stream can no longer be trusted.
    TooLarge(usize),
    /// The frame was read but is not a value of the expected type.
    Decode(String),
    /// A frame was begun but not completed within the connection's time limit; the stream
    /// can no longer be trusted.
    Stalled {
        received: usize,
        announced: Option<usize>,
        limit: Duration,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "i/o error: {e}"),
            FrameError::TooLarge(n) => {
                write!(f, "frame of {n} bytes is over the limit of {MAX_FRAME} bytes")
            }
            FrameError::Decode(e) => write!(f, "malformed frame: {e}"),
            FrameError::Stalled { received, announced, limit } => {
                let of = announced.map_or("its 4-byte length".to_string(), |n| format!("{n}"));
                write!(
                    f,
                    "a frame was not completed within the {} s limit ({received} of {of} bytes \
                     arrived); the connection is closed",
                    limit.as_secs_f64()
                )
            }
        }
    }
}

impl std::error::Error for FrameError {}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

/// Sends and receives frames over a stream.
pub struct Connection<R, W> {
    reader: BufReader<R>,
    writer: BufWriter<W>,
    /// How long a begun frame may take to complete; `None`: as long as it takes.
    frame_limit: Option<Duration>,
    /// The last frame's buffer, kept for a while for the next one (see [`KEEP_BUFFER`]).
    spare: Vec<u8>,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Connection<R, W> {
    pub fn new(reader: R, writer: W) -> Self {
        Connection {
            reader: BufReader::new(reader),
            writer: BufWriter::new(writer),
            frame_limit: None,
            spare: Vec::new(),
        }
    }

    /// Gives every frame read from now on `limit` to complete once its first byte arrived
    /// (the time between frames stays unlimited).
    pub fn set_frame_limit(&mut self, limit: Option<Duration>) {
        self.frame_limit = limit;
    }

    /// Reads the next frame; `Ok(None)` when the peer closed the stream between frames.
    pub async fn read_frame<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        // Waiting for a frame to begin is not limited: an idle peer is no cost, once the
        // buffer kept from its last frame is let go.
        if self.spare.capacity() > FIRST_ROOM {
            match tokio::time::timeout(KEEP_BUFFER, self.reader.fill_buf()).await {
                Ok(filled) => {
                    if filled?.is_empty() {
                        return Ok(None);
                    }
                }
                Err(_) => self.spare = Vec::new(),
            }
        }
        if self.reader.fill_buf().await?.is_empty() {
            return Ok(None);
        }
        let mut buf = std::mem::take(&mut self.spare);
        buf.clear();
        let mut announced = None;
        let read = read_body(&mut self.reader, &mut buf, &mut announced);
        let complete = match self.frame_limit {
            Some(limit) => match tokio::time::timeout(limit, read).await {
                Ok(done) => done,
                Err(_) => {
                    return Err(FrameError::Stalled { received: buf.len(), announced, limit });
                }
            },
            None => read.await,
        };
        match complete {
            Ok(()) => {}
            // The peer went away within the length: as if between frames.
            Err(FrameError::Io(e))
                if e.kind() == io::ErrorKind::UnexpectedEof && announced.is_none() =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        let value = postcard::from_bytes(&buf).map(Some);
        self.spare = buf;
        value.map_err(|e| FrameError::Decode(e.to_string()))
    }

    /// Completes when the peer has closed the stream (or it failed), without consuming
    /// anything: if the peer sends data instead, this never completes.
    pub async fn peer_closed(&mut self) {
        match self.reader.fill_buf().await {
            Ok([]) | Err(_) => {}
            Ok(_) => std::future::pending().await,
        }
    }

    /// Writes one frame and flushes it.
    pub async fn write_frame<T: Serialize>(&mut self, value: &T) -> Result<(), FrameError> {
        let mut bytes = encode_sized(value, 4).map_err(|e| FrameError::Decode(e.to_string()))?;
        let len = bytes.len() - 4;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        bytes[..4].copy_from_slice(&(len as u32).to_be_bytes());
        self.writer.write_all(&bytes).await?;
        self.writer.flush().await?;
        Ok(())
    }
}

/// Encodes `value` with postcard after `prefix` zero bytes (room for a length word, say),
/// into a vector made at its final size at once. Grown by doubling from nothing, the
/// vector of a frame carrying a 1 KiB body was reallocated and copied about eight times.
pub fn encode_sized<T: Serialize + ?Sized>(value: &T, prefix: usize) -> postcard::Result<Vec<u8>> {
    let size = postcard::experimental::serialized_size(value)?;
    let mut out = Vec::with_capacity(prefix + size);
    out.resize(prefix, 0);
    postcard::serialize_with_flavor(value, Presized(out))
}

/// A postcard output into a vector made large enough beforehand (it still grows, should
/// the room given fall short).
pub struct Presized(pub Vec<u8>);

impl postcard::ser_flavors::Flavor for Presized {
    type Output = Vec<u8>;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// Reads one frame's length and body into `buf`, which grows as bytes arrive; `announced`
/// is set once the length is known.
async fn read_body<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    buf: &mut Vec<u8>,
    announced: &mut Option<usize>,
) -> Result<(), FrameError> {
    let len = reader.read_u32().await? as usize;
    *announced = Some(len);
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    buf.reserve_exact(len.min(FIRST_ROOM));
    while buf.len() < len {
        if buf.len() == buf.capacity() {
            buf.reserve_exact(buf.len().min(len - buf.len()));
        }
        let room = (buf.capacity() - buf.len()).min(len - buf.len());
        if (&mut *reader).take(room as u64).read_buf(buf).await? == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{DuplexStream, duplex};

    fn pair() -> (Connection<DuplexStream, DuplexStream>, DuplexStream) {
        let (ours, theirs) = duplex(64 * 1024);
        let (sink, _) = duplex(64);
        (Connection::new(ours, sink), theirs)
    }

    fn frame(value: &Vec<u8>) -> Vec<u8> {
        let body = postcard::to_stdvec(value).unwrap();
        let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
        bytes.extend(body);
        bytes
    }

    /// A frame goes out as its length and postcard bytes, encoded into a vector of its
    /// final size at once, and reads back as sent.
    #[tokio::test]
    async fn a_frame_is_written_from_a_vector_made_at_its_size() {
        let message = (7u64, "queue".to_string(), vec![b'x'; 1024]);
        let bytes = encode_sized(&message, 4).unwrap();
        assert_eq!(bytes.capacity(), bytes.len(), "made at its size, not grown");
        assert_eq!(&bytes[4..], postcard::to_stdvec(&message).unwrap().as_slice());

        let (ours, mut theirs) = duplex(64 * 1024);
        let (source, _) = duplex(64);
        let mut conn = Connection::new(source, ours);
        conn.write_frame(&message).await.unwrap();
        let mut got = vec![0; bytes.len()];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..4], &((bytes.len() - 4) as u32).to_be_bytes());
        assert_eq!(&got[4..], &bytes[4..]);
    }

    /// A large frame dribbled in small pieces is read whole, as the buffer grows past its
    /// first room several times.
    #[tokio::test]
    async fn a_frame_arriving_in_pieces_is_read_whole() {
        let (mut conn, mut peer) = pair();
        let value: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let bytes = frame(&value);
        let writer = tokio::spawn(async move {
            for piece in bytes.chunks(777) {
                peer.write_all(piece).await.unwrap();
            }
            peer
        });
        let got: Vec<u8> = conn.read_frame().await.unwrap().unwrap();
        assert_eq!(got, value);
        drop(writer.await);
    }

    /// Frames that follow each other reuse the last one's buffer: a large frame, a small
    /// one and a middling one each come back as sent, nothing of the one before left in.
    #[tokio::test]
    async fn frames_one_after_another_share_a_buffer() {
        let (mut conn, mut peer) = pair();
        let values: Vec<Vec<u8>> = [60_000usize, 10, 30_000]
            .iter()
            .enumerate()
            .map(|(n, &len)| (0..len).map(|i| (i * 7 + n) as u8).collect())
            .collect();
        let bytes: Vec<u8> = values.iter().flat_map(frame).collect();
        let writer = tokio::spawn(async move {
            peer.write_all(&bytes).await.unwrap();
            peer
        });
        for value in &values {
            let got: Vec<u8> = conn.read_frame().await.unwrap().unwrap();
            assert!(
                got == *value,
                "a frame of {} bytes came back as {} bytes",
                value.len(),
                got.len()
            );
            assert!(conn.spare.capacity() >= 60_000, "the large frame's buffer is kept");
        }
        drop(writer.await);
    }

    /// A frame begun and not finished within the limit is reported with what arrived; a
    /// peer that closes mid-frame is an error, one that closes between frames is not.
    #[tokio::test]
    async fn stalled_and_cut_frames() {
        let (mut conn, mut peer) = pair();
        conn.set_frame_limit(Some(Duration::from_millis(50)));
        peer.write_all(&1000u32.to_be_bytes()).await.unwrap();
        peer.write_all(b"abc").await.unwrap();
        match conn.read_frame::<Vec<u8>>().await {
            Err(FrameError::Stalled { received: 3, announced: Some(1000), .. }) => {}
            other => panic!("expected a stalled frame, got {other:?}"),
        }

        let (mut conn, mut peer) = pair();
        peer.write_all(&1000u32.to_be_bytes()).await.unwrap();
        peer.write_all(b"abc").await.unwrap();
        drop(peer);
        assert!(matches!(conn.read_frame::<Vec<u8>>().await, Err(FrameError::Io(_))));

        let (mut conn, mut peer) = pair();
        peer.write_all(&[0, 0]).await.unwrap();
        drop(peer);
        assert!(matches!(conn.read_frame::<Vec<u8>>().await, Ok(None)));
    }
}
