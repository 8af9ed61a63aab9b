//! Container logs in the CRI format, with size-based rotation.
//!
//! Each line of `container.log` is `<RFC3339Nano UTC> <stdout|stderr> <F|P> <text>\n`
//! (the format Kubernetes' kubelet and CRI-O write): `F` marks a full line, `P`
//! a partial one (cut because it was too long or because the stream ended
//! without a newline). The text is raw bytes and never contains `\n`.
//!
//! The writer (used by the shim, single-threaded) rotates by renaming
//! `container.log` to `container.log.1` (and `.1` to `.2`, ...) when the next
//! record would pass `max_size`, keeping `max_files` files in all. Readers
//! read the rotated files oldest first, then follow the current file across
//! rotations by noticing that the path names a new inode.
//!
//! The writer never blocks its container on a full disk: a record it cannot
//! write (ENOSPC, EDQUOT, EIO, a failed rotation) is dropped whole (a torn
//! tail is cut off again, so the next record starts on a line of its own)
//! and counted, and the next record tries again, so logging resumes by
//! itself once there is space. The count ([`Dropped`]: bytes and records,
//! over the container's whole life) lives in `log-dropped` ([`DROPPED_FILE`])
//! beside the log: a fixed-width record made when the container is created
//! and then only overwritten in place with `pwrite`, which needs no new
//! blocks (on tmpfs, ext4 or xfs; a copy-on-write filesystem may still
//! refuse), so rsupd can read it while the disk is full.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Size-based rotation of a container's log (part of its spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfig {
    /// Rotate when the current file would grow past this many bytes.
    pub max_size: u64,
    /// Files kept in all, the current one included (at least 1).
    pub max_files: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            max_size: 10 * 1024 * 1024,
            max_files: 3,
        }
    }
}

/// Longest line kept whole; longer ones are cut into partial records.
pub const MAX_LINE: usize = 16 * 1024;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One record of a container's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub time: SystemTime,
    pub stream: Stream,
    pub partial: bool,
    pub line: Vec<u8>,
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats `t` as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
pub fn format_rfc3339_nanos(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (y, mo, da) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{da:02}T{:02}:{:02}:{:02}.{:09}Z",
        s / 3600,
        (s / 60) % 60,
        s % 60,
        d.subsec_nanos()
    )
}

/// Parses what [`format_rfc3339_nanos`] writes (any number of fraction
/// digits, `Z` only).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    let rest = s.get(19..)?;
    let rest = rest.strip_suffix('Z')?;
    let nanos = match rest.strip_prefix('.') {
        None if rest.is_empty() => 0,
        Some(frac)
            if !frac.is_empty() && frac.len() <= 9 && frac.bytes().all(|c| c.is_ascii_digit()) =>
        {
            frac.parse::<u32>().ok()? * 10u32.pow(9 - frac.len() as u32)
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(y), mo, d);
    let secs = days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(se);
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Parses one record (without its trailing newline).
pub fn parse_record(line: &[u8]) -> Option<LogRecord> {
    let mut it = line.splitn(4, |&c| c == b' ');
    let time = parse_rfc3339(std::str::from_utf8(it.next()?).ok()?)?;
    let stream = match it.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match it.next()? {
        b"F" => false,
        b"P" => true,
        _ => return None,
    };
    let text = it.next().unwrap_or_default();
    Some(LogRecord {
        time,
        stream,
        partial,
        line: text.to_vec(),
    })
}

/// The file beside `container.log` that counts what the writer dropped
/// (named in the store's layout).
pub const DROPPED_FILE: &str = crate::store::LOG_DROPPED_FILE;

/// Length of the record in [`DROPPED_FILE`]: `BYTES RECORDS\n`, each number
/// 20 digits wide (zero-padded), so every write has the same length.
const DROPPED_LEN: usize = 42;

/// Log output the writer could not write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Bytes of the dropped records, as they would have been written.
    pub bytes: u64,
    pub records: u64,
}

impl Dropped {
    fn encode(self) -> Vec<u8> {
        format!("{:020} {:020}\n", self.bytes, self.records).into_bytes()
    }

    fn decode(data: &[u8]) -> Option<Dropped> {
        if data.len() != DROPPED_LEN || data[DROPPED_LEN - 1] != b'\n' {
            return None;
        }
        let text = std::str::from_utf8(&data[..DROPPED_LEN - 1]).ok()?;
        let (bytes, records) = text.split_once(' ')?;
        Some(Dropped {
            bytes: bytes.parse().ok()?,
            records: records.parse().ok()?,
        })
    }
}

/// Reads a container's [`DROPPED_FILE`]; missing or unreadable is zero. A
/// read that races the writer's `pwrite` is tried again.
pub fn read_dropped(path: &Path) -> Dropped {
    for _ in 0..3 {
        match std::fs::read(path) {
            Ok(data) => {
                if let Some(d) = Dropped::decode(&data) {
                    return d;
                }
            }
            Err(_) => return Dropped::default(),
        }
    }
    Dropped::default()
}

/// The writer's side of [`DROPPED_FILE`].
pub struct DropCounter {
    /// `None` when the file could not be opened: the count is then kept in
    /// memory only.
    file: Option<File>,
    count: Dropped,
}

fn open_counter(path: &Path, create: bool) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .mode(crate::store::PRIVATE_FILE_MODE)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
}

impl DropCounter {
    /// Makes the file with a zero count, its block allocated, for a new
    /// container: later updates overwrite it in place and need no new
    /// block even on a full device. `fallocate` allocates it without the
    /// journal commit an fsync costs (about a millisecond of every create
    /// here); where the filesystem cannot, the file is synced instead. A
    /// crash before the count reaches the disk leaves zeros, which read as
    /// no drops ([`read_dropped`]).
    pub fn create(path: &Path) -> std::io::Result<()> {
        let f = open_counter(path, true)?;
        f.set_len(0)?;
        let allocated = nix::fcntl::fallocate(
            &f,
            nix::fcntl::FallocateFlags::empty(),
            0,
            DROPPED_LEN as libc::off_t,
        )
        .is_ok();
        f.write_all_at(&Dropped::default().encode(), 0)?;
        if allocated { Ok(()) } else { f.sync_all() }
    }

    /// Opens the counter of a starting container and goes on from its
    /// count; makes the file if missing (a container created by an older
    /// rsupd).
    pub fn open(path: &Path) -> DropCounter {
        let file = open_counter(path, false).or_else(|_| {
            DropCounter::create(path)?;
            open_counter(path, false)
        });
        let file = file.ok();
        let count = file
            .as_ref()
            .and_then(|f| {
                let mut buf = vec![0u8; DROPPED_LEN + 1];
                let n = f.read_at(&mut buf, 0).ok()?;
                Dropped::decode(&buf[..n])
            })
            .unwrap_or_default();
        DropCounter { file, count }
    }

    /// Counts one dropped record of `bytes` and overwrites the file.
    pub fn add(&mut self, bytes: u64) {
        self.count.bytes = self.count.bytes.saturating_add(bytes);
        self.count.records = self.count.records.saturating_add(1);
        if let Some(f) = &self.file {
            // Same length, same offset: no new block is needed.
            let _ = f.write_all_at(&self.count.encode(), 0);
        }
    }

    pub fn count(&self) -> Dropped {
        self.count
    }
}

/// Appends records to `container.log`, rotating by size; see the module
/// documentation for what it does when it cannot write.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    config: LogConfig,
    dropped: Option<DropCounter>,
    /// A rotation renamed the file away but could not open a new one:
    /// open it before the next record.
    reopen: bool,
}

/// Opens the log for appending; a new file is root's alone (0600): a
/// container's output is its own business. Rotated files are renames of it.
fn open_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(crate::store::PRIVATE_FILE_MODE)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
}

impl LogWriter {
    /// Opens (or creates) the log at `path` for appending.
    pub fn open(path: &Path, config: LogConfig) -> std::io::Result<LogWriter> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            config,
            dropped: None,
            reopen: false,
        })
    }

    /// Counts dropped records in `counter`.
    pub fn with_drop_counter(mut self, counter: DropCounter) -> LogWriter {
        self.dropped = Some(counter);
        self
    }

    /// What was dropped so far (zero without a counter).
    pub fn dropped(&self) -> Dropped {
        self.dropped
            .as_ref()
            .map(DropCounter::count)
            .unwrap_or_default()
    }

    /// Writes one record stamped now; a record that cannot be written is
    /// dropped, counted, and its error returned.
    pub fn write(&mut self, stream: Stream, partial: bool, text: &[u8]) -> std::io::Result<()> {
        let mut rec = Vec::with_capacity(text.len() + 48);
        rec.extend_from_slice(format_rfc3339_nanos(SystemTime::now()).as_bytes());
        rec.push(b' ');
        rec.extend_from_slice(stream.as_str().as_bytes());
        rec.extend_from_slice(if partial { b" P " } else { b" F " });
        rec.extend_from_slice(text);
        rec.push(b'\n');
        let r = self.append(&rec);
        if r.is_err()
            && let Some(d) = &mut self.dropped
        {
            d.add(rec.len() as u64);
        }
        r
    }

    fn append(&mut self, rec: &[u8]) -> std::io::Result<()> {
        if self.reopen {
            self.file = open_append(&self.path)?;
            self.size = self.file.metadata()?.len();
            self.reopen = false;
        }
        if self.size > 0 && self.size + rec.len() as u64 > self.config.max_size {
            self.rotate()?;
        }
        if let Err(e) = self.file.write_all(rec) {
            // Part of it may be in: cut it off (a shrink needs no space).
            let _ = self.file.set_len(self.size);
            return Err(e);
        }
        self.size += rec.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let keep = self.config.max_files.max(1);
        let name = |n: u32| rotated_path(&self.path, n);
        if keep == 1 {
            // Appends go to the end: emptying the file is the rotation.
            self.file.set_len(0)?;
        } else {
            for n in (1..keep - 1).rev() {
                let _ = std::fs::rename(name(n), name(n + 1));
            }
            std::fs::rename(&self.path, name(1))?;
            match open_append(&self.path) {
                Ok(f) => self.file = f,
                Err(e) => {
                    self.reopen = true;
                    return Err(e);
                }
            }
        }
        self.size = 0;
        Ok(())
    }
}

/// `container.log.N` next to `container.log`.
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Splits a byte stream into records: full lines, and partial ones when a
/// line grows past [`MAX_LINE`] or the stream ends without a newline.
#[derive(Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    /// Feeds `data`; calls `emit(partial, line)` for each complete record.
    pub fn feed(&mut self, data: &[u8], mut emit: impl FnMut(bool, &[u8])) {
        self.buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|&c| c == b'\n') {
            emit(false, &self.buf[start..start + pos]);
            start += pos + 1;
        }
        while self.buf.len() - start >= MAX_LINE {
            emit(true, &self.buf[start..start + MAX_LINE]);
            start += MAX_LINE;
        }
        self.buf.drain(..start);
    }

    /// Flushes what is left at the end of the stream.
    pub fn finish(&mut self, mut emit: impl FnMut(bool, &[u8])) {
        if !self.buf.is_empty() {
            emit(true, &self.buf);
            self.buf.clear();
        }
    }
}

/// Reads every record of the log at `path` and its rotated files, oldest
/// first; keeps only the last `tail` records when given. Returns the open
/// current file positioned after what was read (for following), if it exists.
/// `current` is the already opened current file, if the caller opened it.
pub fn read_all(
    path: &Path,
    tail: Option<u64>,
    current: Option<File>,
) -> (Vec<LogRecord>, Option<Follower>) {
    let mut records = Vec::new();
    let mut n = 1;
    while rotated_path(path, n).exists() {
        n += 1;
    }
    for i in (1..n).rev() {
        if let Ok(f) = File::open(rotated_path(path, i)) {
            read_records(BufReader::new(f), &mut records);
        }
    }
    let follower = current.or_else(|| File::open(path).ok()).map(|f| {
        let mut fol = Follower {
            path: path.to_path_buf(),
            reader: BufReader::new(f),
            pending: Vec::new(),
        };
        fol.read_new(&mut records);
        fol
    });
    if let Some(t) = tail {
        let t = usize::try_from(t).unwrap_or(usize::MAX);
        if records.len() > t {
            records.drain(..records.len() - t);
        }
    }
    (records, follower)
}

fn read_records(mut r: impl BufRead, out: &mut Vec<LogRecord>) {
    let mut line = Vec::new();
    while r.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
        if line.last() == Some(&b'\n') {
            line.pop();
            out.extend(parse_record(&line));
        }
        line.clear();
    }
}

/// Follows the current log file across rotations.
pub struct Follower {
    path: PathBuf,
    reader: BufReader<File>,
    /// Bytes of a record whose newline has not been written yet.
    pending: Vec<u8>,
}

impl Follower {
    /// Reads the records written since the last call, switching to the new
    /// file when the log was rotated.
    pub fn read_new(&mut self, out: &mut Vec<LogRecord>) {
        loop {
            self.drain_current(out);
            let current_ino = self.reader.get_ref().metadata().map(|m| m.ino()).ok();
            let path_ino = std::fs::metadata(&self.path).map(|m| m.ino()).ok();
            match (current_ino, path_ino) {
                (Some(a), Some(b)) if a != b => match File::open(&self.path) {
                    Ok(f) => {
                        // The old file may have got more records between our
                        // last read and the rename: drain it first.
                        self.drain_current(out);
                        self.reader = BufReader::new(f);
                        self.pending.clear();
                    }
                    Err(_) => return,
                },
                _ => return,
            }
        }
    }

    fn drain_current(&mut self, out: &mut Vec<LogRecord>) {
        let mut buf = Vec::new();
        if self.reader.read_to_end(&mut buf).is_err() {
            return;
        }
        self.pending.extend_from_slice(&buf);
        let mut start = 0;
        while let Some(pos) = self.pending[start..].iter().position(|&c| c == b'\n') {
            out.extend(parse_record(&self.pending[start..start + pos]));
            start += pos + 1;
        }
        self.pending.drain(..start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_roundtrip() {
        for secs in [0u64, 951_782_400, 1_700_000_000, 4_102_444_800] {
            let t = UNIX_EPOCH + Duration::new(secs, 123_456_789);
            let s = format_rfc3339_nanos(t);
            assert_eq!(parse_rfc3339(&s), Some(t), "{s}");
        }
        assert_eq!(
            format_rfc3339_nanos(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000000000Z"
        );
        assert_eq!(
            parse_rfc3339("2000-02-29T00:00:00Z"),
            Some(UNIX_EPOCH + Duration::from_secs(951_782_400))
        );
        assert_eq!(parse_rfc3339("2000-02-29 00:00:00Z"), None);
    }

    #[test]
    fn splitter_cuts_long_and_unterminated_lines() {
        let mut s = LineSplitter::default();
        let mut got = Vec::new();
        s.feed(b"a\nb", |p, l| got.push((p, l.to_vec())));
        s.feed(b"c\n", |p, l| got.push((p, l.to_vec())));
        s.feed(&vec![b'x'; MAX_LINE + 5], |p, l| {
            got.push((p, l.len().to_string().into_bytes()))
        });
        s.finish(|p, l| got.push((p, l.to_vec())));
        assert_eq!(
            got,
            vec![
                (false, b"a".to_vec()),
                (false, b"bc".to_vec()),
                (true, MAX_LINE.to_string().into_bytes()),
                (true, b"xxxxx".to_vec())
            ]
        );
    }

    #[test]
    fn dropped_count_roundtrips_in_a_fixed_width() {
        let d = Dropped {
            bytes: u64::MAX,
            records: 7,
        };
        assert_eq!(d.encode().len(), DROPPED_LEN);
        assert_eq!(Dropped::default().encode().len(), DROPPED_LEN);
        assert_eq!(Dropped::decode(&d.encode()), Some(d));
        assert_eq!(Dropped::decode(b"12 3\n"), None);
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join(DROPPED_FILE);
        assert_eq!(read_dropped(&p), Dropped::default());
        DropCounter::create(&p).expect("create");
        let mut c = DropCounter::open(&p);
        c.add(100);
        c.add(5);
        assert_eq!(
            read_dropped(&p),
            Dropped {
                bytes: 105,
                records: 2
            }
        );
        // A new run goes on from the count.
        let mut c = DropCounter::open(&p);
        c.add(1);
        assert_eq!(read_dropped(&p).records, 3);
        assert_eq!(
            std::fs::metadata(&p).expect("meta").len(),
            DROPPED_LEN as u64
        );
        // Missing (an older container): made at the first open.
        let q = dir.path().join("other");
        DropCounter::open(&q).add(9);
        assert_eq!(read_dropped(&q).bytes, 9);
    }

    /// /dev/full fails every write with ENOSPC, as a full disk does.
    #[test]
    fn a_full_disk_drops_and_counts_then_writing_resumes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("container.log");
        let cfg = LogConfig {
            max_size: 1 << 20,
            max_files: 2,
        };
        let counter = dir.path().join(DROPPED_FILE);
        DropCounter::create(&counter).expect("counter");
        let mut w = LogWriter::open(&path, cfg)
            .expect("open")
            .with_drop_counter(DropCounter::open(&counter));
        w.write(Stream::Stdout, false, b"before").expect("write");
        let good = std::mem::replace(
            &mut w.file,
            OpenOptions::new()
                .append(true)
                .open("/dev/full")
                .expect("/dev/full"),
        );
        for _ in 0..3 {
            let e = w.write(Stream::Stderr, false, b"lost").expect_err("full");
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        }
        let d = read_dropped(&counter);
        assert_eq!(d.records, 3);
        assert_eq!(d, w.dropped());
        assert!(d.bytes > 3 * 4);
        // Space is back.
        w.file = good;
        w.write(Stream::Stdout, false, b"after").expect("write");
        let (all, _) = read_all(&path, None, None);
        let lines: Vec<&[u8]> = all.iter().map(|r| r.line.as_slice()).collect();
        assert_eq!(lines, [b"before".as_slice(), b"after"]);
    }

    #[test]
    fn a_failed_rotation_reopens_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("container.log");
        let cfg = LogConfig {
            max_size: 100,
            max_files: 2,
        };
        let mut w = LogWriter::open(&path, cfg).expect("open");
        w.write(Stream::Stdout, false, &[b'a'; 60]).expect("write");
        // As a rotation leaves it when it renamed the log away but could
        // not make a new one.
        std::fs::rename(&path, rotated_path(&path, 1)).expect("rename");
        w.reopen = true;
        w.write(Stream::Stdout, false, b"resumed").expect("write");
        assert!(!w.reopen);
        let (all, _) = read_all(&path, None, None);
        let lines: Vec<Vec<u8>> = all.into_iter().map(|r| r.line).collect();
        assert_eq!(lines, [vec![b'a'; 60], b"resumed".to_vec()]);
    }

    #[test]
    fn rotation_keeps_max_files_and_reader_sees_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("container.log");
        let cfg = LogConfig {
            max_size: 1024,
            max_files: 3,
        };
        let mut w = LogWriter::open(&path, cfg).expect("open");
        let (_, mut follower) = read_all(&path, None, None);
        let follower = follower.as_mut().expect("exists");
        let mut followed = Vec::new();
        for i in 0..200 {
            w.write(Stream::Stdout, false, format!("line {i:04}").as_bytes())
                .expect("write");
            if i % 7 == 0 {
                follower.read_new(&mut followed);
            }
        }
        follower.read_new(&mut followed);
        assert!(
            path.exists() && rotated_path(&path, 1).exists() && rotated_path(&path, 2).exists()
        );
        assert!(!rotated_path(&path, 3).exists());
        for n in [0, 1, 2] {
            let p = if n == 0 {
                path.clone()
            } else {
                rotated_path(&path, n)
            };
            assert!(std::fs::metadata(&p).expect("meta").len() <= 1024);
        }
        let (all, _) = read_all(&path, None, None);
        let nums: Vec<u32> = all
            .iter()
            .map(|r| String::from_utf8_lossy(&r.line)[5..].parse().expect("num"))
            .collect();
        assert_eq!(*nums.last().expect("some"), 199);
        assert!(
            nums.windows(2).all(|w| w[1] == w[0] + 1),
            "contiguous and ordered"
        );
        // The follower saw every line exactly once, across the rotations.
        assert_eq!(followed.len(), 200);
        let (tail, _) = read_all(&path, Some(2), None);
        assert_eq!(tail.len(), 2);
        assert_eq!(tail[1].line, b"line 0199");
    }
}
