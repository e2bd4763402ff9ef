//! Reading records for `check`: NDJSON (one record per line) or Avro object container files,
//! from files or standard input, streamed so large inputs need little memory.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read};
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

/// Streams every record of `input` to `sink(line_or_record_number, item)`. `reader_schema` is
/// used for Avro container files when the contract is Avro.
pub fn read_records(input: &Input, reader_schema: Option<&apache_avro::Schema>, sink: impl FnMut(u64, Item)) -> Result<(), InputError> {
    let err = |message: String| InputError { input: input.name(), message };
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
    read_from(reader, size, reader_schema, err, sink)
}

/// Like [`read_records`], from any reader (an HTTP body for `POST /{product}/validate`), so
/// both split lines, skip blank ones and read Avro container files the same way. `size`
/// (when known) sizes a progress bar on a terminal.
pub fn read_from(
    reader: impl Read,
    size: Option<u64>,
    reader_schema: Option<&apache_avro::Schema>,
    err: impl Fn(String) -> InputError,
    mut sink: impl FnMut(u64, Item),
) -> Result<(), InputError> {
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
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let head = reader.fill_buf().map_err(|e| err(format!("cannot read: {e}")))?;
    if head.starts_with(AVRO_MAGIC) {
        // Records are read with the file's own schema and resolved to the contract one by one,
        // so one record that does not resolve does not end the file.
        let avro = apache_avro::Reader::new(reader).map_err(|e| err(format!("not a readable Avro container file: {e}")))?;
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
        return Ok(());
    }
    let mut line_no = 0u64;
    let mut buf = Vec::with_capacity(1024);
    loop {
        buf.clear();
        let read = reader.read_until(b'\n', &mut buf).map_err(|e| err(format!("cannot read: {e}")))?;
        if read == 0 {
            break;
        }
        line_no += 1;
        if let Some(bar) = &progress {
            bar.inc(read as u64);
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            let _ = buf.pop();
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        sink(line_no, Item::Line(std::mem::take(&mut buf)));
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    Ok(())
}
