//! The record format of a log: a 24-byte header (magic, length, checksum) and the bincode of
//! a [`LogRecord`]; writing one ([`encode_record`]) and reading a log through ([`scan`]).

use std::fs::File;
use std::io::{self, BufReader, Read};

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::dir::Dir;
use crate::store::ResultRecord;
use crate::task::TaskKey;

pub(super) const MAGIC: [u8; 4] = *b"PLR1";
pub(super) const HEADER_LEN: usize = 24;

/// One record of a log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct LogRecord {
    pub key: TaskKey,
    /// The task's name (a function's registered name).
    pub name: String,
    /// Seconds since the Unix epoch when the record was written.
    pub finished: u64,
    pub record: ResultRecord,
    /// A command's program and arguments (records folded from a command's task directory).
    pub argv: Option<Vec<String>>,
    /// A `pitch sweep` point's parameters (its `PITCH_PARAM_*` variables).
    pub params: Vec<(String, String)>,
}

pub(super) fn checksum(payload: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&blake3::hash(payload).as_bytes()[..16]);
    out
}

/// The bytes of one record: header and payload.
pub(crate) fn encode_record(record: &LogRecord) -> Result<Vec<u8>, String> {
    let payload = codec::encode(record)?;
    let len = u32::try_from(payload.len()).map_err(|_| {
        format!(
            "a result of {} bytes is too large for the log",
            payload.len()
        )
    })?;
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.extend_from_slice(&checksum(&payload));
    bytes.extend_from_slice(&payload);
    Ok(bytes)
}

/// What reading one log found besides its records.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    /// Records whose checksum failed (skipped).
    pub corrupt: usize,
    /// Whether the file ends in a record cut short or damaged framing (reading stopped).
    pub torn: bool,
    /// Why the file (or the log folder) was not read at all: a link or something else than
    /// a regular file (a directory) in its place, never followed; an error naming it.
    pub refused: Option<String>,
}

/// Reads the log `name` of the log folder `dir` from its start, calling `each(offset,
/// record)` for every sound record.
pub(super) fn scan(
    dir: &Dir,
    name: &str,
    each: impl FnMut(u64, u32, LogRecord),
) -> io::Result<Damage> {
    scan_from(dir.open_regular(name)?, 0, each).map(|(damage, _)| damage)
}

/// [`scan`] of the open log `opened` (a regular file of the log folder, opened through its
/// handle) from byte `start` (a record's start); also returns where the last whole record
/// read ends (a torn tail, perhaps a record being appended, is left for a later read).
pub(super) fn scan_from(
    mut opened: File,
    start: u64,
    mut each: impl FnMut(u64, u32, LogRecord),
) -> io::Result<(Damage, u64)> {
    std::io::Seek::seek(&mut opened, io::SeekFrom::Start(start))?;
    let mut reader = BufReader::with_capacity(1 << 16, opened);
    let mut damage = Damage::default();
    let mut offset = start;
    let mut header = [0u8; HEADER_LEN];
    let mut payload = Vec::new();
    loop {
        match read_full(&mut reader, &mut header)? {
            0 => return Ok((damage, offset)),
            n if n < HEADER_LEN => {
                damage.torn = true;
                return Ok((damage, offset));
            }
            _ => {}
        }
        let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        if header[0..4] != MAGIC || len as usize > codec::DECODE_LIMIT {
            damage.torn = true;
            return Ok((damage, offset));
        }
        // Read through `take`, so memory grows with the bytes present, never to what a
        // damaged length claims.
        payload.clear();
        (&mut reader)
            .take(u64::from(len))
            .read_to_end(&mut payload)?;
        if payload.len() < len as usize {
            damage.torn = true;
            return Ok((damage, offset));
        }
        let sound = header[8..24] == checksum(&payload);
        match sound
            .then(|| codec::decode::<LogRecord>(&payload).ok())
            .flatten()
        {
            Some(record) => each(offset, len, record),
            None => damage.corrupt += 1,
        }
        offset += (HEADER_LEN + len as usize) as u64;
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
