//! Reading records for `check`: NDJSON (one record per line) or Avro object container files,
//! from files or standard input, streamed so large inputs need little memory: NDJSON in chunks
//! of whole lines that several threads can evaluate at once ([`Lines::next_chunk`],
//! [`for_each_line`]), and record by record for callers that judge one record at a time
//! ([`read_records`], [`read_from`]) — both split lines the same way, since one is built on the
//! other.

use std::fs::File;
use std::io::{BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

/// Where records come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Standard input (`-`).
    Stdin,
    /// A file.
    File(PathBuf),
}

impl Input {
    /// From a command-line argument.
    pub fn from_arg(arg: &Path) -> Self {
        if arg == Path::new("-") { Self::Stdin } else { Self::File(arg.to_path_buf()) }
    }

    /// Display name used in reports.
    pub fn name(&self) -> String {
        match self {
            Self::Stdin => "<stdin>".into(),
            Self::File(p) => p.display().to_string(),
        }
    }
}

/// An input that cannot be read at all (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{input}: {message}")]
pub struct InputError {
    /// Which input.
    pub input: String,
    /// What went wrong.
    pub message: String,
}

/// One item read from an input.
#[derive(Debug)]
pub enum Item {
    /// Raw bytes of one NDJSON line.
    Line(Vec<u8>),
    /// A decoded Avro record, converted to its JSON form.
    Avro(Value),
    /// An Avro record that could not be read.
    AvroError(String),
    /// An Avro record that was read but does not resolve to the contract's schema.
    AvroMismatch(String),
}

/// Files larger than this get a progress bar on a terminal.
const PROGRESS_THRESHOLD: u64 = 8 * 1024 * 1024;

const AVRO_MAGIC: &[u8; 4] = b"Obj\x01";

/// Bytes of NDJSON handed out at a time by default ([`Lines::next_chunk`]): large enough that a
/// chunk is thousands of records (the hand-over between threads costs nothing per record), small
/// enough that the few chunks in flight per thread keep memory flat whatever the input's size.
pub const CHUNK_BYTES: usize = 512 * 1024;

/// An opened input: an Avro object container file, or NDJSON read in chunks of whole lines.
#[derive(Debug)]
pub enum Opened<'r> {
    /// An Avro object container file; read it with [`read_avro`].
    Avro(AvroInput<'r>),
    /// NDJSON; read it with [`Lines::next_chunk`].
    Lines(Lines<'r>),
}

/// The bytes sniffed for the magic, then the rest of the input.
type Rejoined<'r> = std::io::Chain<std::io::Cursor<Vec<u8>>, Box<dyn Read + 'r>>;

/// An Avro object container file, its first bytes already read.
pub struct AvroInput<'r> {
    reader: BufReader<Rejoined<'r>>,
    name: String,
}

impl std::fmt::Debug for AvroInput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroInput").field("name", &self.name).finish_non_exhaustive()
    }
}

/// NDJSON handed out in chunks that end at a line end (or at the end of the input).
pub struct Lines<'r> {
    reader: Box<dyn Read + 'r>,
    name: String,
    /// Bytes read after the last line end of the previous chunk.
    carry: Vec<u8>,
    /// The reader has returned 0.
    eof: bool,
    /// On a terminal, for large files.
    progress: Option<ProgressBar>,
    /// The size a chunk reaches before it is cut at its last line end.
    chunk_bytes: usize,
}

impl std::fmt::Debug for Lines<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lines").field("name", &self.name).field("eof", &self.eof).finish_non_exhaustive()
    }
}

/// Opens `input` and tells an Avro container file (by its magic bytes) from NDJSON, to be read in
/// chunks of about `chunk_bytes` (at least 1).
pub fn open(input: &Input, chunk_bytes: usize) -> Result<Opened<'static>, InputError> {
    let name = input.name();
    let err = |message: String| InputError { input: name.clone(), message };
    let (reader, size): (Box<dyn Read>, Option<u64>) = match input {
        Input::Stdin => (Box::new(std::io::stdin().lock()), None),
        Input::File(path) => {
            let file = File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
            let meta = file.metadata().map_err(|e| err(e.to_string()))?;
            if meta.is_dir() {
                return Err(err("is a directory".into()));
            }
            (Box::new(file), Some(meta.len()))
        }
    };
    open_reader(reader, size, name, chunk_bytes)
}

/// Like [`open`], from any reader named `name` (an HTTP body for `POST /{product}/validate`).
/// `size` (when known) sizes a progress bar on a terminal.
pub fn open_reader<'r>(
    mut reader: Box<dyn Read + 'r>,
    size: Option<u64>,
    name: String,
    chunk_bytes: usize,
) -> Result<Opened<'r>, InputError> {
    let progress = match size {
        Some(len) if len > PROGRESS_THRESHOLD && std::io::stderr().is_terminal() => {
            let bar = ProgressBar::new(len);
            if let Ok(style) = ProgressStyle::with_template("{spinner} {bytes}/{total_bytes} {bar:40} {eta}") {
                bar.set_style(style);
            }
            Some(bar)
        }
        _ => None,
    };
    let mut head = Vec::with_capacity(AVRO_MAGIC.len());
    if let Err(e) = (&mut reader).take(AVRO_MAGIC.len() as u64).read_to_end(&mut head) {
        return Err(InputError { input: name, message: format!("cannot read: {e}") });
    }
    if head.as_slice() == AVRO_MAGIC {
        let chained = std::io::Cursor::new(head).chain(reader);
        return Ok(Opened::Avro(AvroInput { reader: BufReader::with_capacity(256 * 1024, chained), name }));
    }
    if let Some(bar) = &progress {
        bar.inc(head.len() as u64);
    }
    Ok(Opened::Lines(Lines { reader, name, carry: head, eof: false, progress, chunk_bytes: chunk_bytes.max(1) }))
}

impl Lines<'_> {
    /// Replaces `chunk` with the next chunk's worth of whole lines (one longer line whole);
    /// returns `false` at the end of the input.
    pub fn next_chunk(&mut self, chunk: &mut Vec<u8>) -> Result<bool, InputError> {
        chunk.clear();
        chunk.append(&mut self.carry);
        let mut scanned = 0;
        loop {
            if chunk.len() >= self.chunk_bytes || self.eof {
                // Cut after the last line end; keep the rest for the next chunk.
                if let Some(end) = memchr::memrchr(b'\n', &chunk[scanned..]) {
                    self.carry.extend_from_slice(&chunk[scanned + end + 1..]);
                    chunk.truncate(scanned + end + 1);
                    return Ok(true);
                }
                if self.eof {
                    if chunk.is_empty()
                        && let Some(bar) = self.progress.take()
                    {
                        bar.finish_and_clear();
                    }
                    return Ok(!chunk.is_empty());
                }
                // One line longer than a chunk: read on to its end.
                scanned = chunk.len();
            }
            let len = chunk.len();
            // Up to a chunk's size, then on in small steps (a line longer than a chunk).
            let want = if len < self.chunk_bytes { self.chunk_bytes - len } else { self.chunk_bytes.min(64 * 1024) };
            chunk.resize(len + want, 0);
            let read = loop {
                match self.reader.read(&mut chunk[len..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        chunk.truncate(len);
                        return Err(InputError { input: self.name.clone(), message: format!("cannot read: {e}") });
                    }
                }
            };
            chunk.truncate(len + read);
            if let Some(bar) = &self.progress {
                bar.inc(read as u64);
            }
            self.eof = read == 0;
        }
    }
}

/// Calls `each` with every line of a chunk from [`Lines::next_chunk`] that holds a record, and
/// its number counted from the chunk's first line (1); returns how many lines the chunk holds,
/// blank ones included. A line loses its trailing CR/LF; a blank line is skipped but counted.
pub fn for_each_line<'c>(chunk: &'c [u8], mut each: impl FnMut(u64, &'c [u8])) -> u64 {
    let mut line_no = 0;
    let mut start = 0;
    let mut visit = |line_no: u64, mut line: &'c [u8]| {
        while let [rest @ .., b'\n' | b'\r'] = line {
            line = rest;
        }
        if !line.iter().all(u8::is_ascii_whitespace) {
            each(line_no, line);
        }
    };
    for end in memchr::memchr_iter(b'\n', chunk) {
        line_no += 1;
        visit(line_no, &chunk[start..end]);
        start = end + 1;
    }
    if start < chunk.len() {
        line_no += 1;
        visit(line_no, &chunk[start..]);
    }
    line_no
}

/// Streams every record of an Avro container file to `sink(record_number, item)`, resolved to
/// `reader_schema` (the contract's, when it is Avro).
pub fn read_avro(
    input: AvroInput<'_>,
    reader_schema: Option<&apache_avro::Schema>,
    mut sink: impl FnMut(u64, Item),
) -> Result<(), InputError> {
    // Records are read with the file's own schema and resolved to the contract one by one, so
    // one record that does not resolve does not end the file.
    let avro = apache_avro::Reader::new(input.reader)
        .map_err(|e| InputError { input: input.name.clone(), message: format!("not a readable Avro container file: {e}") })?;
    for (i, value) in avro.enumerate() {
        let n = i as u64 + 1;
        let value = match value {
            Ok(v) => v,
            Err(e) => {
                sink(n, Item::AvroError(e.to_string()));
                continue;
            }
        };
        let resolved = match reader_schema {
            Some(schema) => match value.resolve(schema) {
                Ok(v) => v,
                Err(e) => {
                    sink(n, Item::AvroMismatch(e.to_string()));
                    continue;
                }
            },
            None => value,
        };
        match Value::try_from(resolved) {
            Ok(json) => sink(n, Item::Avro(json)),
            Err(e) => sink(n, Item::AvroError(e.to_string())),
        }
    }
    Ok(())
}

/// Streams every record of `input` to `sink(line_or_record_number, item)`, one at a time.
/// `reader_schema` is used for Avro container files when the contract is Avro.
pub fn read_records(input: &Input, reader_schema: Option<&apache_avro::Schema>, sink: impl FnMut(u64, Item)) -> Result<(), InputError> {
    read_opened(open(input, CHUNK_BYTES)?, reader_schema, sink)
}

/// Like [`read_records`], from any reader named `name` (an HTTP body for
/// `POST /{product}/validate`), so both split lines, skip blank ones and read Avro container
/// files the same way as `check`.
pub fn read_from<'r>(
    reader: impl Read + 'r,
    name: &str,
    reader_schema: Option<&apache_avro::Schema>,
    sink: impl FnMut(u64, Item),
) -> Result<(), InputError> {
    read_opened(open_reader(Box::new(reader), None, name.to_owned(), CHUNK_BYTES)?, reader_schema, sink)
}

fn read_opened(opened: Opened<'_>, reader_schema: Option<&apache_avro::Schema>, mut sink: impl FnMut(u64, Item)) -> Result<(), InputError> {
    match opened {
        Opened::Avro(avro) => read_avro(avro, reader_schema, sink),
        Opened::Lines(mut lines) => {
            let mut chunk = Vec::new();
            let mut base = 0;
            while lines.next_chunk(&mut chunk)? {
                let lines = for_each_line(&chunk, |line, bytes| sink(base + line, Item::Line(bytes.to_vec())));
                base += lines;
            }
            Ok(())
        }
    }
}
