//! Framing: each frame is a 4-byte big-endian length and a postcard-encoded value.
//!
//! [`Connection`] turns a byte stream into typed frames and back. A frame whose length is
//! over [`MAX_FRAME`] is refused before anything is allocated; a frame that does not decode
//! is read whole, so the stream stays in step and the peer can be told what went wrong.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::io;
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter,
};

/// Largest frame either side accepts: room for a 4 MiB message and its control data.
pub const MAX_FRAME: usize = 4 * 1024 * 1024 + 64 * 1024;

/// Why a frame could not be read.
#[derive(Debug)]
pub enum FrameError {
    Io(io::Error),
    /// The announced length is over [`MAX_FRAME`]; the stream can no longer be trusted.
    TooLarge(usize),
    /// The frame was read but is not a value of the expected type.
    Decode(String),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "i/o error: {e}"),
            FrameError::TooLarge(n) => {
                write!(f, "frame of {n} bytes is over the limit of {MAX_FRAME} bytes")
            }
            FrameError::Decode(e) => write!(f, "malformed frame: {e}"),
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
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Connection<R, W> {
    pub fn new(reader: R, writer: W) -> Self {
        Connection { reader: BufReader::new(reader), writer: BufWriter::new(writer) }
    }

    /// Reads the next frame; `Ok(None)` when the peer closed the stream between frames.
    pub async fn read_frame<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        let len = match self.reader.read_u32().await {
            Ok(len) => len as usize,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        let mut buf = vec![0u8; len];
        self.reader.read_exact(&mut buf).await?;
        postcard::from_bytes(&buf).map(Some).map_err(|e| FrameError::Decode(e.to_string()))
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
        let bytes = postcard::to_stdvec(value).map_err(|e| FrameError::Decode(e.to_string()))?;
        if bytes.len() > MAX_FRAME {
            return Err(FrameError::TooLarge(bytes.len()));
        }
        self.writer.write_u32(bytes.len() as u32).await?;
        self.writer.write_all(&bytes).await?;
        self.writer.flush().await?;
        Ok(())
    }
}
