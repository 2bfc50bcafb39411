//! The audit log's hash chain: what makes it tamper-evident, and its verification
//! (`keygate audit verify`).
//!
//! # Record format
//!
//! Every line is one JSON object ending with three members, in this order (after
//! `"replica"`, the name of the keygate replica that wrote it, when it has one):
//! `"seq"` (1, 2, 3, … across the whole chain, rotated files included), `"prev"` (the
//! previous record's `hash`; 64 zeros for the first record of a chain) and `"hash"`:
//!
//! ```text
//! {"time":"…",…,"stripped":[],"seq":42,"prev":"9f2c…","hash":"41ab…"}
//! ```
//!
//! # Hash
//!
//! `hash` is the lowercase hex SHA-256 of the line's *canonical bytes*: the line exactly as
//! written, without its newline and with the final `,"hash":"<64 hex>"` member removed —
//! that is, the bytes `{…,"seq":42,"prev":"9f2c…"}`. Writers serialize the record with
//! `seq` and `prev`, hash those bytes, and splice `,"hash":"…"` before the final `}`;
//! [`parse_line`] strips the same 75 bytes back off. No JSON canonicalization is involved:
//! the bytes on disk are what is hashed, so any change to a record (a value, a key,
//! whitespace) changes its hash, and since each record's hash covers its `prev`, changing
//! a record breaks every link after it.
//!
//! A hash chain proves order and completeness *between* records; it cannot, on its own,
//! show that records were cut off the end, or that the whole chain was rewritten from
//! some record on by someone who knows this format. Keep the last `seq` and `hash` that
//! `verify` prints somewhere else (a ticket, another system) to anchor the chain.

use serde::Deserialize;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The `prev` of a chain's first record: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What precedes the hash value at the end of every line.
const HASH_MEMBER: &[u8] = b",\"hash\":\"";
/// Bytes of `,"hash":"<64 hex>"}` at the end of a line.
const HASH_SUFFIX_LEN: usize = HASH_MEMBER.len() + 64 + 2;

/// The state of a writer's chain: the next record's `seq` and the last record's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub next_seq: u64,
    pub prev: String,
    /// The writer's replica id, written into every record (each replica has a chain of its
    /// own).
    pub replica: Option<String>,
}

impl Default for Chain {
    fn default() -> Self {
        Chain::new()
    }
}

impl Chain {
    /// A new chain: its first record has seq 1 and prev [`GENESIS`].
    pub fn new() -> Chain {
        Chain {
            next_seq: 1,
            prev: GENESIS.to_string(),
            replica: None,
        }
    }

    /// The chain continuing after a record with this `seq` and `hash`.
    pub fn after(seq: u64, hash: String) -> Chain {
        Chain {
            next_seq: seq.saturating_add(1),
            prev: hash,
            replica: None,
        }
    }

    /// The same chain, writing `replica` into every record.
    pub fn with_replica(mut self, replica: Option<&str>) -> Chain {
        self.replica = replica.map(str::to_string);
        self
    }

    /// Appends `object` (one serialized JSON object, such as an `AuditRecord`) to `out` as
    /// a chained line — with `seq`, `prev` and `hash`, and a newline — and advances the
    /// chain. Returns the number of bytes appended.
    pub fn append(&mut self, object: &[u8], out: &mut Vec<u8>) -> Result<usize, String> {
        let body = match object.strip_suffix(b"}") {
            Some(b) if b.first() == Some(&b'{') => b,
            _ => return Err("an audit record must serialize to a JSON object".into()),
        };
        let start = out.len();
        out.extend_from_slice(body);
        if body.len() > 1 {
            out.push(b',');
        }
        if let Some(replica) = &self.replica {
            out.extend_from_slice(b"\"replica\":");
            serde_json::to_writer(&mut *out, replica).map_err(|e| e.to_string())?;
            out.push(b',');
        }
        out.extend_from_slice(b"\"seq\":");
        out.extend_from_slice(self.next_seq.to_string().as_bytes());
        out.extend_from_slice(b",\"prev\":\"");
        out.extend_from_slice(self.prev.as_bytes());
        out.extend_from_slice(b"\"}");
        let hash = sha256_hex(&out[start..]);
        out.pop();
        out.extend_from_slice(HASH_MEMBER);
        out.extend_from_slice(hash.as_bytes());
        out.extend_from_slice(b"\"}\n");
        self.next_seq = self.next_seq.saturating_add(1);
        self.prev = hash;
        Ok(out.len() - start)
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    // aws-lc-rs: assembly SHA-256 on every x86 level (and under valgrind, which hides SHA-NI).
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    const_hex::encode(digest)
}

fn is_hash(s: &[u8]) -> bool {
    s.len() == 64 && s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// One chained line, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub seq: u64,
    pub prev: String,
    /// The hash the line states.
    pub hash: String,
    /// Whether `hash` is the SHA-256 of the line's canonical bytes.
    pub hash_ok: bool,
    /// The SHA-256 of the line's canonical bytes.
    pub computed: String,
}

#[derive(Deserialize)]
struct LinkFields {
    seq: u64,
    prev: String,
}

/// Why a line is not a chained record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// The line does not end with a `"hash"` member (or the hash is not 64 hex digits).
    NoHash,
    /// The line is not the JSON object its hash covers, or lacks `seq`/`prev`.
    Invalid(String),
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::NoHash => f.write_str("it does not end with a \"hash\" member"),
            LineError::Invalid(e) => write!(f, "it is not a chained JSON record ({e})"),
        }
    }
}

/// Parses one line (without its newline). A line whose hash does not match its content
/// is returned with `hash_ok: false` when `seq` and `prev` can still be read; when they
/// cannot but the hash suffix is there, `seq` is 0 and `prev` empty (still `hash_ok:
/// false` unless the content hashes right, in which case it is [`LineError::Invalid`]).
pub fn parse_line(line: &[u8]) -> Result<Link, LineError> {
    if line.len() < HASH_SUFFIX_LEN + 1 {
        return Err(LineError::NoHash);
    }
    let cut = line.len() - HASH_SUFFIX_LEN;
    let (head, tail) = line.split_at(cut);
    let hash = &tail[HASH_MEMBER.len()..HASH_MEMBER.len() + 64];
    if !tail.starts_with(HASH_MEMBER) || !tail.ends_with(b"\"}") || !is_hash(hash) {
        return Err(LineError::NoHash);
    }
    let mut canonical = Vec::with_capacity(cut + 1);
    canonical.extend_from_slice(head);
    canonical.push(b'}');
    let computed = sha256_hex(&canonical);
    let hash = String::from_utf8_lossy(hash).into_owned();
    let hash_ok = computed == hash;
    match serde_json::from_slice::<LinkFields>(&canonical) {
        Ok(l) if is_hash(l.prev.as_bytes()) => Ok(Link {
            seq: l.seq,
            prev: l.prev,
            hash,
            hash_ok,
            computed,
        }),
        Ok(_) if !hash_ok => Ok(Link {
            seq: 0,
            prev: String::new(),
            hash,
            hash_ok,
            computed,
        }),
        Ok(_) => Err(LineError::Invalid("prev is not 64 hex digits".into())),
        Err(_) if !hash_ok => Ok(Link {
            seq: 0,
            prev: String::new(),
            hash,
            hash_ok,
            computed,
        }),
        Err(e) => Err(LineError::Invalid(e.to_string())),
    }
}

// ---------------------------------------------------------------- the end of a file

/// What the end of an existing audit file says about the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// No file, or an empty one: a new chain starts.
    Empty,
    /// The last line is an intact chained record: the chain continues after it.
    Chained { seq: u64, hash: String },
    /// The last line is not an intact chained record (cut short by a crash, edited, or
    /// written by something else). `missing_newline`: the file does not end with one.
    Broken {
        reason: String,
        missing_newline: bool,
    },
}

/// Longest last line [`read_tail`] reads back.
const MAX_TAIL_LINE: u64 = 16 * 1024 * 1024;

/// Reads the last line of `path` (reading backwards, not the whole file).
pub fn read_tail(path: &Path) -> std::io::Result<Tail> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Tail::Empty),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(Tail::Empty);
    }
    // Read backwards, in chunks, until the newline before the last line.
    let mut tail: Vec<u8> = Vec::new();
    let mut pos = len;
    let line_start = loop {
        let search_from = if tail.len() > 1 { tail.len() - 1 } else { 0 };
        if let Some(i) = tail[..search_from].iter().rposition(|&c| c == b'\n') {
            break i + 1;
        }
        if pos == 0 {
            break 0;
        }
        if len - pos >= MAX_TAIL_LINE {
            return Ok(Tail::Broken {
                reason: format!("its last line is longer than {MAX_TAIL_LINE} bytes"),
                missing_newline: tail.last() != Some(&b'\n'),
            });
        }
        let n = pos.min(64 * 1024);
        pos -= n;
        f.seek(SeekFrom::Start(pos))?;
        let mut chunk = vec![0u8; usize::try_from(n).unwrap_or(64 * 1024)];
        f.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&tail);
        tail = chunk;
    };
    let line = &tail[line_start..];
    let Some(line) = line.strip_suffix(b"\n") else {
        return Ok(Tail::Broken {
            reason: "its last line is incomplete (no newline at the end): a write was cut short"
                .into(),
            missing_newline: true,
        });
    };
    let reason = match parse_line(line) {
        Ok(l) if l.hash_ok => {
            return Ok(Tail::Chained {
                seq: l.seq,
                hash: l.hash,
            })
        }
        Ok(_) => "its last line's hash does not match its content".to_string(),
        Err(e) => format!("its last line is not a chained audit record: {e}"),
    };
    Ok(Tail::Broken {
        reason,
        missing_newline: false,
    })
}

// ---------------------------------------------------------------- verification

/// The kinds of problem `verify` tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// A record's content (or its hash) was changed, or a record was replaced.
    Edited,
    /// Records are missing: a gap in `seq`.
    Deleted,
    /// A record that does not belong to the chain: a copy, or a second record with a seq.
    Inserted,
    /// Records are all there, in the wrong order.
    Reordered,
    /// The last line of a file is cut short.
    Truncated,
    /// A line that is not a chained audit record at all.
    Malformed,
    /// A new chain (seq 1, prev = zeros) starts in the middle of the log.
    Restarted,
    /// A file could not be read.
    Unreadable,
}

impl Problem {
    pub fn as_str(self) -> &'static str {
        match self {
            Problem::Edited => "edited",
            Problem::Deleted => "deleted",
            Problem::Inserted => "inserted",
            Problem::Reordered => "reordered",
            Problem::Truncated => "truncated",
            Problem::Malformed => "malformed",
            Problem::Restarted => "restarted",
            Problem::Unreadable => "unreadable",
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first problem `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: Problem,
    pub file: PathBuf,
    /// 1-based line number in `file` (0 when the file could not be read).
    pub line: u64,
    /// The seq of the offending record, when it could be read.
    pub seq: Option<u64>,
    pub detail: String,
    /// Records verified intact before the problem.
    pub verified: u64,
    /// The last intact record before the problem.
    pub last_good_seq: Option<u64>,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.file.display())?;
        if self.line > 0 {
            write!(f, " line {}", self.line)?;
        }
        if let Some(s) = self.seq {
            write!(f, " (seq {s})")?;
        }
        write!(f, ": {}", self.detail)?;
        match self.last_good_seq {
            Some(s) => write!(
                f,
                " [{} record(s) intact before it, up to seq {s}]",
                self.verified
            ),
            None => f.write_str(" [no intact record before it]"),
        }
    }
}

/// What `verify` found when the chain is intact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    pub files: usize,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub last_hash: Option<String>,
    /// The first record's prev, when it is not [`GENESIS`]: the files start in the middle
    /// of a chain whose earlier records were not given, and verification starts there.
    pub continues_from: Option<String>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (Some(first), Some(last), Some(hash)) =
            (self.first_seq, self.last_seq, &self.last_hash)
        else {
            return write!(f, "0 records in {} file(s): nothing to verify", self.files);
        };
        write!(
            f,
            "{} records in {} file(s), chain intact, first seq {first}, last seq {last}, last hash {hash}",
            self.records, self.files
        )?;
        if let Some(prev) = &self.continues_from {
            write!(
                f,
                "\nnote: seq {first} is not the start of the chain (its prev {prev} is in none of \
                 these files; give the rotated files before it to check them too): verified \
                 from seq {first} on"
            )?;
        }
        Ok(())
    }
}

/// One line of the files, in order.
struct Line {
    file: usize,
    line: u64,
    bytes: Vec<u8>,
    /// False when the file ends without a newline after it.
    complete: bool,
}

/// The lines of several files, in order.
struct Lines<'a> {
    paths: &'a [PathBuf],
    file: usize,
    reader: Option<BufReader<std::fs::File>>,
    line: u64,
}

impl<'a> Lines<'a> {
    fn new(paths: &'a [PathBuf]) -> Lines<'a> {
        Lines {
            paths,
            file: 0,
            reader: None,
            line: 0,
        }
    }

    fn next_line(&mut self) -> Option<Result<Line, Finding>> {
        loop {
            let paths = self.paths;
            let path = paths.get(self.file)?;
            let reader = match &mut self.reader {
                Some(r) => r,
                None => match std::fs::File::open(path) {
                    Ok(f) => {
                        self.line = 0;
                        self.reader.insert(BufReader::with_capacity(256 * 1024, f))
                    }
                    Err(e) => return Some(Err(unreadable(path, &e))),
                },
            };
            let mut bytes = Vec::new();
            match reader.read_until(b'\n', &mut bytes) {
                Ok(0) => {
                    self.reader = None;
                    self.file += 1;
                }
                Ok(_) => {
                    self.line += 1;
                    let complete = bytes.last() == Some(&b'\n');
                    if complete {
                        bytes.pop();
                    }
                    return Some(Ok(Line {
                        file: self.file,
                        line: self.line,
                        bytes,
                        complete,
                    }));
                }
                Err(e) => return Some(Err(unreadable(path, &e))),
            }
        }
    }

    /// The next line that parses as an intact chained record.
    fn next_link(&mut self) -> Option<(Line, Link)> {
        loop {
            let l = self.next_line()?.ok()?;
            if let Ok(link) = parse_line(&l.bytes) {
                if link.hash_ok {
                    return Some((l, link));
                }
            }
        }
    }
}

fn unreadable(path: &Path, e: &std::io::Error) -> Finding {
    Finding {
        kind: Problem::Unreadable,
        file: path.to_path_buf(),
        line: 0,
        seq: None,
        detail: format!("cannot read the file: {e}"),
        verified: 0,
        last_good_seq: None,
    }
}

/// An intact record seen.
struct Seen {
    file: usize,
    line: u64,
    seq: u64,
    hash: String,
}

/// One replica's chain, as [`verify_replicas`] found it.
pub struct ReplicaChain {
    /// The replica its records name (`None`: records that name none, written before
    /// replicas were named).
    pub replica: Option<String>,
    pub files: Vec<PathBuf>,
    pub result: Result<Summary, Finding>,
}

/// Verifies the audit logs of several replicas, each of which writes a chain of its own.
/// The files (each replica's rotated files oldest first, then its current file) are put
/// together into chains: a file joins the chain whose last record its first record
/// continues (so a chain that spans an upgrade, or a replica renamed between restarts,
/// stays one chain); a file that continues none joins the chain of the replica its first
/// record names, if there is one (records are missing between them, or the replica
/// started its chain over, and verification says so); otherwise it starts a chain. Each chain is verified as [`verify_files`] does,
/// and is named by the replica its records name.
pub fn verify_replicas<P: AsRef<Path>>(paths: &[P]) -> Vec<ReplicaChain> {
    #[derive(Deserialize)]
    struct First {
        replica: Option<String>,
    }
    struct Group {
        replica: Option<String>,
        files: Vec<PathBuf>,
        last: Option<(u64, String)>,
    }
    let mut groups: Vec<Group> = Vec::new();
    for p in paths {
        let p = p.as_ref().to_path_buf();
        let first_line = std::fs::File::open(&p).ok().and_then(|f| {
            let mut line = Vec::new();
            BufReader::new(f).read_until(b'\n', &mut line).ok()?;
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            Some(line)
        });
        let replica = first_line.as_ref().and_then(|l| {
            serde_json::from_slice::<First>(l)
                .ok()
                .and_then(|f| f.replica)
        });
        let first = first_line.and_then(|l| parse_line(&l).ok());
        let last = match read_tail(&p) {
            Ok(Tail::Chained { seq, hash }) => Some((seq, hash)),
            _ => None,
        };
        let continues = |g: &Group| match (&g.last, &first) {
            (Some((seq, hash)), Some(f)) => f.seq == seq.saturating_add(1) && &f.prev == hash,
            _ => false,
        };
        let at = groups
            .iter()
            .position(continues)
            .or_else(|| groups.iter().position(|g| g.replica == replica));
        match at {
            Some(i) => {
                let g = &mut groups[i];
                g.files.push(p);
                g.last = last;
                if g.replica.is_none() {
                    g.replica = replica;
                }
            }
            None => groups.push(Group {
                replica,
                files: vec![p],
                last,
            }),
        }
    }
    groups
        .into_iter()
        .map(|g| ReplicaChain {
            result: verify_files(&g.files),
            replica: g.replica,
            files: g.files,
        })
        .collect()
}

/// Verifies the chain across `paths`, in the order given (rotated files oldest first, then
/// the current file). Returns the first problem found.
pub fn verify_files<P: AsRef<Path>>(paths: &[P]) -> Result<Summary, Finding> {
    let paths: Vec<PathBuf> = paths.iter().map(|p| p.as_ref().to_path_buf()).collect();
    let mut lines = Lines::new(&paths);
    let mut summary = Summary {
        records: 0,
        files: paths.len(),
        first_seq: None,
        last_seq: None,
        last_hash: None,
        continues_from: None,
    };
    let mut last: Option<Seen> = None;
    while let Some(item) = lines.next_line() {
        let l = item.map_err(|mut f| {
            f.verified = summary.records;
            f.last_good_seq = summary.last_seq;
            f
        })?;
        let finding = |kind: Problem, l: &Line, seq: Option<u64>, detail: String| Finding {
            kind,
            file: paths[l.file].clone(),
            line: l.line,
            seq,
            detail,
            verified: summary.records,
            last_good_seq: summary.last_seq,
        };
        let parsed = parse_line(&l.bytes);
        if !l.complete {
            let detail = match &parsed {
                Ok(p) if p.hash_ok => "the file ends without a newline after this record: the \
                                       file was truncated (or a write was cut short)"
                    .to_string(),
                _ => "the last line is cut short: the file was truncated (or a write was cut \
                      short)"
                    .to_string(),
            };
            let seq = parsed.ok().filter(|p| p.hash_ok).map(|p| p.seq);
            return Err(finding(Problem::Truncated, &l, seq, detail));
        }
        let r = match parsed {
            Err(e) => {
                let detail = if l.bytes.is_empty() {
                    "an empty line".to_string()
                } else {
                    format!("not a chained audit record: {e}")
                };
                return Err(finding(Problem::Malformed, &l, None, detail));
            }
            Ok(r) => r,
        };
        if !r.hash_ok {
            let seq = (!r.prev.is_empty()).then_some(r.seq);
            let detail = format!(
                "hash mismatch: the record was changed after it was written (its hash says {}, \
                 its content hashes to {})",
                r.hash, r.computed
            );
            return Err(finding(Problem::Edited, &l, seq, detail));
        }
        let seq = Some(r.seq);
        match &last {
            None => {
                if r.prev == GENESIS {
                    if r.seq != 1 {
                        return Err(finding(
                            Problem::Malformed,
                            &l,
                            seq,
                            "a chain start (prev = 64 zeros) must have seq 1".into(),
                        ));
                    }
                } else {
                    summary.continues_from = Some(r.prev.clone());
                }
                summary.first_seq = Some(r.seq);
            }
            Some(p) => {
                let expected = p.seq.saturating_add(1);
                let at = |s: &Seen| format!("line {} of {}", s.line, paths[s.file].display());
                if r.prev == GENESIS && r.seq == 1 {
                    let detail = format!(
                        "a new chain starts here (seq 1, prev = zeros) after seq {} at {}: the \
                         log was restarted on a broken file, or the records before were \
                         replaced",
                        p.seq,
                        at(p)
                    );
                    return Err(finding(Problem::Restarted, &l, seq, detail));
                }
                if r.seq == expected && r.prev == p.hash {
                    // The link holds.
                } else if r.seq == expected {
                    let next = lines.next_link();
                    let (kind, detail) = match next {
                        Some((_, n)) if n.seq == r.seq && n.prev == p.hash => (
                            Problem::Inserted,
                            format!(
                                "this record does not link to seq {} ({}) but the next one \
                                 does: a record was inserted",
                                p.seq,
                                at(p)
                            ),
                        ),
                        _ => (
                            Problem::Edited,
                            format!(
                                "prev does not match the hash of seq {} ({}): that record or \
                                 this one was replaced (edited and re-hashed)",
                                p.seq,
                                at(p)
                            ),
                        ),
                    };
                    return Err(finding(kind, &l, seq, detail));
                } else if r.seq > expected {
                    return Err(gap(&mut lines, &paths, p, &l, &r, expected, finding));
                } else {
                    let detail = if r.seq == p.seq && r.hash == p.hash {
                        format!("a copy of the record before it ({}) was inserted", at(p))
                    } else {
                        match earlier(&paths, r.seq, (l.file, l.line)) {
                            Some(e) if e.hash == r.hash => {
                                format!("a copy of seq {} ({}) was inserted", r.seq, at(&e))
                            }
                            Some(e) => format!(
                                "a second record with seq {} (the first is at {}) was \
                                 inserted after seq {}",
                                r.seq,
                                at(&e),
                                p.seq
                            ),
                            None => {
                                let detail = format!(
                                    "seq {} comes after seq {} ({}): records are out of order",
                                    r.seq,
                                    p.seq,
                                    at(p)
                                );
                                return Err(finding(Problem::Reordered, &l, seq, detail));
                            }
                        }
                    };
                    return Err(finding(Problem::Inserted, &l, seq, detail));
                }
            }
        }
        summary.records += 1;
        summary.last_seq = Some(r.seq);
        summary.last_hash = Some(r.hash.clone());
        last = Some(Seen {
            file: l.file,
            line: l.line,
            seq: r.seq,
            hash: r.hash,
        });
    }
    Ok(summary)
}

/// Classifies a forward gap in `seq` at `r` (expected `expected`): deleted, reordered, or
/// an inserted record.
fn gap(
    lines: &mut Lines<'_>,
    paths: &[PathBuf],
    p: &Seen,
    l: &Line,
    r: &Link,
    expected: u64,
    finding: impl Fn(Problem, &Line, Option<u64>, String) -> Finding,
) -> Finding {
    let seq = Some(r.seq);
    let mut first_after = true;
    while let Some((n_line, n)) = lines.next_link() {
        if n.seq == expected {
            let place = format!("line {} of {}", n_line.line, paths[n_line.file].display());
            if first_after && n.prev == p.hash && r.prev != n.hash {
                let detail = format!(
                    "this record does not belong here: the next record (seq {expected}) \
                     continues the chain from seq {}; a record was inserted",
                    p.seq
                );
                return finding(Problem::Inserted, l, seq, detail);
            }
            let detail = format!(
                "expected seq {expected}, found seq {}; seq {expected} comes later, at {place}: \
                 records were reordered",
                r.seq
            );
            return finding(Problem::Reordered, l, seq, detail);
        }
        first_after = false;
    }
    let missing = r.seq - expected;
    let mut detail = format!(
        "seq gap: expected seq {expected}, found seq {}: {missing} record(s) deleted (seq \
         {expected}{})",
        r.seq,
        if missing > 1 {
            format!("..{}", r.seq - 1)
        } else {
            String::new()
        }
    );
    if l.line == 1 && l.file > 0 {
        detail.push_str(&format!(
            "; this is the first record of {}: a rotated file before it may be missing",
            paths[l.file].display()
        ));
    }
    finding(Problem::Deleted, l, seq, detail)
}

/// The first intact record with `seq` before position `before` (file, line).
fn earlier(paths: &[PathBuf], seq: u64, before: (usize, u64)) -> Option<Seen> {
    let mut lines = Lines::new(paths);
    while let Some((l, link)) = lines.next_link() {
        if (l.file, l.line) >= before {
            return None;
        }
        if link.seq == seq {
            return Some(Seen {
                file: l.file,
                line: l.line,
                seq,
                hash: link.hash,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn chain_lines(n: u64) -> Vec<Vec<u8>> {
        let mut c = Chain::new();
        (1..=n)
            .map(|i| {
                let mut out = Vec::new();
                let obj = format!("{{\"n\":{i},\"v\":\"x{i}\"}}");
                c.append(obj.as_bytes(), &mut out).unwrap();
                out
            })
            .collect()
    }

    fn write(dir: &Path, name: &str, lines: &[Vec<u8>]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, lines.concat()).unwrap();
        p
    }

    /// `n` records of one writer: the first `unnamed` name no replica (written before
    /// replicas were named), the rest name `replica`.
    fn replica_lines(replica: &str, n: u64, unnamed: u64) -> Vec<Vec<u8>> {
        let mut c = Chain::new();
        (1..=n)
            .map(|i| {
                if i == unnamed + 1 {
                    c.replica = Some(replica.to_string());
                }
                let mut out = Vec::new();
                c.append(format!("{{\"n\":{i}}}").as_bytes(), &mut out)
                    .unwrap();
                out
            })
            .collect()
    }

    #[test]
    fn replicas_are_verified_chain_by_chain() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let a = replica_lines("kg-a", 6, 0);
        let b = replica_lines("kg-b", 4, 0);
        assert!(std::str::from_utf8(&a[0])
            .unwrap()
            .contains(r#""n":1,"replica":"kg-a","seq":1,"#));
        // Interleaved, each replica's rotated file before its current one.
        let files = [
            write(d, "a.1", &a[..3]),
            write(d, "b.1", &b[..2]),
            write(d, "a", &a[3..]),
            write(d, "b", &b[2..]),
        ];
        let chains = verify_replicas(&files);
        let got: Vec<_> = chains
            .iter()
            .map(|c| {
                (
                    c.replica.as_deref(),
                    c.files.len(),
                    c.result.as_ref().map(|s| s.records).ok(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [(Some("kg-a"), 2, Some(6)), (Some("kg-b"), 2, Some(4))]
        );

        // A chain that spans an upgrade (records naming no replica, then records naming
        // one) is one chain.
        let u = replica_lines("kg-a", 5, 3);
        let files = [write(d, "u.1", &u[..3]), write(d, "u", &u[3..])];
        let chains = verify_replicas(&files);
        assert_eq!(chains.len(), 1);
        assert_eq!(chains[0].replica.as_deref(), Some("kg-a"));
        assert_eq!(chains[0].result.as_ref().unwrap().records, 5);

        // Records cut from the head of a replica's later file: its chain is broken there,
        // not verified as a chain of its own that continues from somewhere.
        let files = [
            write(d, "c.1", &a[..3]),
            write(d, "c", &a[4..]),
            write(d, "bb", &b),
        ];
        let chains = verify_replicas(&files);
        assert_eq!(chains.len(), 2);
        let broken = chains[0].result.as_ref().expect_err("the gap is reported");
        assert_eq!(broken.kind, Problem::Deleted);
        assert!(chains[1].result.is_ok());
    }

    #[test]
    fn append_splices_and_hashes_the_canonical_bytes() {
        let mut c = Chain::new();
        let mut out = Vec::new();
        let n = c.append(br#"{"a":1}"#, &mut out).unwrap();
        assert_eq!(n, out.len());
        let line = std::str::from_utf8(&out).unwrap();
        let canonical = format!("{{\"a\":1,\"seq\":1,\"prev\":\"{GENESIS}\"}}");
        let h = sha256_hex(canonical.as_bytes());
        assert_eq!(
            line,
            format!("{},\"hash\":\"{h}\"}}\n", &canonical[..canonical.len() - 1])
        );
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["seq"], 1);
        assert_eq!(v["hash"], h.as_str());
        assert_eq!(c, Chain::after(1, h.clone()));
        let p = parse_line(&out[..out.len() - 1]).unwrap();
        assert!(p.hash_ok);
        assert_eq!((p.seq, p.prev.as_str(), p.hash), (1, GENESIS, h));
        // An empty object, and something that is not an object.
        let mut out = Vec::new();
        c.append(b"{}", &mut out).unwrap();
        assert!(out.starts_with(b"{\"seq\":2,"));
        assert!(c.append(b"[1]", &mut out).is_err());
    }

    #[test]
    fn sha256_hex_known_value() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn intact_chain_and_each_kind_of_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let good = chain_lines(6);
        let p = write(dir.path(), "ok", &good);
        let s = verify_files(&[&p]).unwrap();
        assert_eq!((s.records, s.first_seq, s.last_seq), (6, Some(1), Some(6)));
        assert!(s.continues_from.is_none());
        assert!(s.to_string().contains("chain intact"), "{s}");

        let check = |name: &str, lines: Vec<Vec<u8>>, kind: Problem, line: u64| {
            let p = write(dir.path(), name, &lines);
            let f = verify_files(&[&p]).unwrap_err();
            assert_eq!((f.kind, f.line), (kind, line), "{name}: {f}");
            f
        };
        let mut edited = good.clone();
        edited[2] = String::from_utf8(edited[2].clone())
            .unwrap()
            .replace("x3", "y3")
            .into_bytes();
        let f = check("edited", edited, Problem::Edited, 3);
        assert_eq!(f.seq, Some(3));

        let mut deleted = good.clone();
        deleted.remove(2);
        let f = check("deleted", deleted, Problem::Deleted, 3);
        assert!(f.detail.contains("expected seq 3, found seq 4"), "{f}");

        let mut dup = good.clone();
        dup.insert(4, good[1].clone());
        let f = check("copied", dup, Problem::Inserted, 5);
        assert!(f.detail.contains("a copy of seq 2"), "{f}");

        let mut dup_next = good.clone();
        dup_next.insert(3, good[2].clone());
        check("copied-next", dup_next, Problem::Inserted, 4);

        let mut swapped = good.clone();
        swapped.swap(1, 2);
        check("swapped", swapped, Problem::Reordered, 2);

        let mut moved = good.clone();
        let m = moved.remove(1);
        moved.insert(4, m);
        check("moved", moved, Problem::Reordered, 2);

        let mut truncated = good.clone();
        let last = truncated.last_mut().unwrap();
        last.truncate(last.len() - 20);
        check("truncated", truncated, Problem::Truncated, 6);

        let mut hash_edited = good.clone();
        let l = &mut hash_edited[3];
        let i = l.len() - 4;
        l[i] = if l[i] == b'0' { b'1' } else { b'0' };
        check("hash-edited", hash_edited, Problem::Edited, 4);

        let mut garbage = good.clone();
        garbage.insert(2, b"not json\n".to_vec());
        check("garbage", garbage, Problem::Malformed, 3);

        // A forged record with the next seq and a wrong prev, before the real one.
        let mut forged = good.clone();
        let mut c = Chain::after(2, "ab".repeat(32));
        let mut fake = Vec::new();
        c.append(br#"{"n":99}"#, &mut fake).unwrap();
        forged.insert(2, fake);
        check("forged", forged, Problem::Inserted, 3);

        // A record replaced (edited and re-hashed): the next link breaks.
        let mut replaced = good.clone();
        let mut c = Chain::after(2, parse_line(&good[1][..good[1].len() - 1]).unwrap().hash);
        let mut fake = Vec::new();
        c.append(br#"{"n":3,"v":"forged"}"#, &mut fake).unwrap();
        replaced[2] = fake;
        check("replaced", replaced, Problem::Edited, 4);

        // A second chain appended.
        let mut restarted = good.clone();
        restarted.extend(chain_lines(2));
        check("restarted", restarted, Problem::Restarted, 7);
    }

    #[test]
    fn several_files_and_a_later_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let all = chain_lines(9);
        let a = write(dir.path(), "a", &all[..3]);
        let b = write(dir.path(), "b", &all[3..6]);
        let c = write(dir.path(), "c", &all[6..]);
        let s = verify_files(&[&a, &b, &c]).unwrap();
        assert_eq!((s.records, s.files, s.last_seq), (9, 3, Some(9)));
        let s = verify_files(&[&b, &c]).unwrap();
        assert_eq!((s.records, s.first_seq), (6, Some(4)));
        assert!(s.continues_from.is_some());
        assert!(s.to_string().contains("verified from seq 4"), "{s}");
        let f = verify_files(&[&a, &c]).unwrap_err();
        assert_eq!((f.kind, f.line, f.seq), (Problem::Deleted, 1, Some(7)));
        assert!(f.detail.contains("rotated file"), "{f}");
        let f = verify_files(&[&c, &b]).unwrap_err();
        assert_eq!(f.kind, Problem::Reordered, "{f}");
        let f = verify_files(&[&b, &a]).unwrap_err();
        assert_eq!(f.kind, Problem::Restarted, "{f}");
        let f = verify_files(&[&a, &dir.path().join("missing")]).unwrap_err();
        assert_eq!(f.kind, Problem::Unreadable);
    }

    #[test]
    fn tail_of_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        assert_eq!(read_tail(&p).unwrap(), Tail::Empty);
        std::fs::write(&p, "").unwrap();
        assert_eq!(read_tail(&p).unwrap(), Tail::Empty);
        let lines = chain_lines(3);
        std::fs::write(&p, lines.concat()).unwrap();
        let last = parse_line(&lines[2][..lines[2].len() - 1]).unwrap();
        assert_eq!(
            read_tail(&p).unwrap(),
            Tail::Chained {
                seq: 3,
                hash: last.hash
            }
        );
        // A long file: the last line is found reading backwards.
        let many = chain_lines(2000);
        std::fs::write(&p, many.concat()).unwrap();
        assert!(matches!(
            read_tail(&p).unwrap(),
            Tail::Chained { seq: 2000, .. }
        ));
        std::fs::write(&p, b"{\"old\":1}\n").unwrap();
        assert!(matches!(
            read_tail(&p).unwrap(),
            Tail::Broken {
                missing_newline: false,
                ..
            }
        ));
        let mut cut = lines.concat();
        cut.truncate(cut.len() - 5);
        std::fs::write(&p, cut).unwrap();
        assert!(matches!(
            read_tail(&p).unwrap(),
            Tail::Broken {
                missing_newline: true,
                ..
            }
        ));
    }
}
