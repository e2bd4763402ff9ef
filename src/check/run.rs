//! Checking one input: NDJSON split into chunks of lines judged on several threads, the chunks'
//! reports added to the [`Checker`] in input order, so the report is the one a single thread
//! gives, line numbers, examples and duplicates included.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::mpsc;

use time::OffsetDateTime;

use super::input::{self, Input, InputError, Lines, Opened};
use super::report::{At, Report};
use super::{Checker, Judge, report_at};
use crate::contract::SchemaEngine;
use crate::contract::tape::Tape;

/// What checking one input noticed besides the records' verdicts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Notes {
    /// The contract is Avro but lines of JSON text were given (a likely mistake worth a hint).
    pub json_for_avro: bool,
}

/// How `check` spreads its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Threads that judge NDJSON (1: the calling thread alone).
    pub threads: usize,
    /// Bytes of whole lines per chunk handed to a thread ([`input::CHUNK_BYTES`]); tests make
    /// them small to cut small files into many chunks.
    pub chunk_bytes: usize,
}

impl Plan {
    /// `threads` threads with chunks of the default size.
    pub fn new(threads: usize) -> Self {
        Self { threads, chunk_bytes: input::CHUNK_BYTES }
    }
}

/// What a chunk of lines gives: everything but uniqueness, which depends on earlier chunks.
#[derive(Debug)]
pub(super) struct Judgements {
    /// The chunk's report, lines counted from the chunk's first.
    pub(super) report: Report,
    /// The unique keys of the chunk's valid records, by line, in order.
    pub(super) keys: Vec<(u64, String)>,
    /// Lines in the chunk, blank ones included.
    lines: u64,
    notes: Notes,
}

/// Judges every record of `input` and adds it to `checker` (whose report's `inputs` the caller
/// keeps). NDJSON is judged on `plan.threads` threads (1: on this one); the report depends
/// neither on the threads nor on the chunks. Avro container files are read on this thread.
pub fn check_input(checker: &mut Checker<'_>, input: &Input, now: OffsetDateTime, plan: Plan) -> Result<Notes, InputError> {
    let name = input.name();
    match input::open(input, plan.chunk_bytes)? {
        Opened::Avro(avro) => {
            let reader_schema = match &checker.contract().engine {
                SchemaEngine::Avro(a) => Some(a.schema),
                SchemaEngine::Json(_) => None,
            };
            input::read_avro(avro, reader_schema, |n, item| {
                let _ = checker.add(&report_at(&name, n), item, now);
            })?;
            Ok(Notes::default())
        }
        Opened::Lines(lines) if plan.threads <= 1 => one_thread(checker, lines, now, &name),
        Opened::Lines(lines) => many_threads(checker, lines, now, plan.threads, &name),
    }
}

/// Judges every record of one chunk of lines.
fn judge_chunk(judge: &Judge<'_>, chunk: &[u8], now: OffsetDateTime) -> Judgements {
    let mut report = judge.report();
    let mut keys = Vec::new();
    let mut notes = Notes::default();
    // One tape per chunk, reused from record to record.
    let mut tape = Tape::new();
    let avro = judge.contract.is_avro();
    let lines = input::for_each_line(chunk, |line, bytes| {
        if avro && bytes.first() == Some(&b'{') {
            notes.json_for_avro = true;
        }
        let judged = judge.line(bytes, now, &mut tape, false);
        // The input is named when the chunk is added to the whole report.
        let at = At { input: String::new(), line, key: None };
        report.add_shadows(&at, judged.eval.is_valid(), &judged.shadows);
        report.add(&at, &judged.eval);
        if let Some(key) = judged.key {
            keys.push((line, key));
        }
    });
    Judgements { report, keys, lines, notes }
}

fn one_thread(checker: &mut Checker<'_>, mut lines: Lines<'_>, now: OffsetDateTime, name: &str) -> Result<Notes, InputError> {
    let judge = checker.judge;
    let mut chunk = Vec::new();
    let mut base = 0;
    let mut notes = Notes::default();
    while lines.next_chunk(&mut chunk)? {
        let judged = judge_chunk(&judge, &chunk, now);
        let n = judged.lines;
        notes.json_for_avro |= judged.notes.json_for_avro;
        checker.absorb(name, base, judged, now);
        base += n;
    }
    Ok(notes)
}

/// This thread reads chunks and hands them to `threads` judging threads through a bounded queue
/// (memory stays at a few chunks per thread whatever the input's size); their judgements come
/// back with the chunk's sequence number and are added in that order as soon as the earlier ones
/// are in. Chunk buffers go back to the reader to be refilled.
fn many_threads(
    checker: &mut Checker<'_>,
    mut lines: Lines<'_>,
    now: OffsetDateTime,
    threads: usize,
    name: &str,
) -> Result<Notes, InputError> {
    let judge = checker.judge;
    let (work_tx, work_rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(threads);
    let work_rx = Mutex::new(work_rx);
    let (done_tx, done_rx) = mpsc::channel::<(u64, Vec<u8>, Judgements)>();
    let mut merge = InOrder { checker, name, now, next: 0, base: 0, waiting: BTreeMap::new(), notes: Notes::default(), free: Vec::new() };
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let done_tx = done_tx.clone();
            let work_rx = &work_rx;
            let judge = &judge;
            let _ = scope.spawn(move || {
                loop {
                    // The lock is held only while waiting for the next chunk.
                    let job = match work_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((seq, chunk)) = job else { return };
                    let judged = judge_chunk(judge, &chunk, now);
                    if done_tx.send((seq, chunk, judged)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        let mut seq = 0;
        let read = loop {
            let mut chunk = merge.free.pop().unwrap_or_default();
            match lines.next_chunk(&mut chunk) {
                Ok(true) => {}
                Ok(false) => break Ok(()),
                Err(e) => break Err(e),
            }
            if work_tx.send((seq, chunk)).is_err() {
                break Ok(());
            }
            seq += 1;
            while let Ok(done) = done_rx.try_recv() {
                merge.take(done);
            }
        };
        // No more chunks: the judging threads finish theirs and end.
        drop(work_tx);
        for done in done_rx {
            merge.take(done);
        }
        read?;
        Ok(merge.notes)
    })
}

/// Adds chunk judgements to the checker in sequence order, whatever order they arrive in.
struct InOrder<'a, 'c> {
    checker: &'a mut Checker<'c>,
    name: &'a str,
    now: OffsetDateTime,
    /// The sequence number of the next chunk to add.
    next: u64,
    /// Lines before chunk `next`.
    base: u64,
    /// Chunks judged before an earlier one.
    waiting: BTreeMap<u64, Judgements>,
    notes: Notes,
    /// Buffers of judged chunks, to be refilled.
    free: Vec<Vec<u8>>,
}

impl InOrder<'_, '_> {
    fn take(&mut self, (seq, chunk, judged): (u64, Vec<u8>, Judgements)) {
        self.free.push(chunk);
        let _ = self.waiting.insert(seq, judged);
        while let Some(judged) = self.waiting.remove(&self.next) {
            let n = judged.lines;
            self.notes.json_for_avro |= judged.notes.json_for_avro;
            self.checker.absorb(self.name, self.base, judged, self.now);
            self.base += n;
            self.next += 1;
        }
    }
}
