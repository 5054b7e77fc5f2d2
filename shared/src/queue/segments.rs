//! The queue's event bodies in an append-only segment log beside sled (queue format 3).
//!
//! Why this exists: sled rewrites whole leaves, keeps what it inserted in memory, and costs
//! about 26–39 µs of CPU per event to insert (issue 12): the bodies, which are written once and
//! read once, do not need a B-tree. Here a group commit is one `write` of every record of the
//! group and one `fdatasync`; sled keeps only what is small and changes on lease, ack and fail.
//!
//! Layout: `<queue>/segments/<n>.seg`, `n` increasing, each file at most [`SEGMENT_BYTES`]
//! (a group is never split). A record is `len u32 LE | crc32 u32 LE | payload`, the CRC over the
//! payload; the payload is `id u64 BE | received_at i64 BE | flags u8 | key_len u16 BE | dedup
//! key | encoded envelope`. A record whose flags say [`FLAG_BLANK`] had its body erased in place
//! (`purge_matching`) and is skipped.
//!
//! Crash safety: the new file's directory entry is synced before its first record is answered
//! for; a torn tail (a short or corrupt last record, from a crash mid-write) is cut off at open,
//! and a write that fails is cut off at once, so a retry never lands behind garbage.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// A segment is closed and a new one started once it is this big.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// The record's body was erased in place.
pub const FLAG_BLANK: u8 = 1;
const HEADER: usize = 8;
const PAYLOAD_FIXED: usize = 8 + 8 + 1 + 2;

/// One record as read back at open.
pub struct Scanned<'a> {
    pub id: u64,
    pub received_at_ms: i64,
    pub dedup_key: Option<&'a str>,
    pub envelope: &'a [u8],
}

/// Where a record is: its id and the offset of its header, whose top bit ([`FORGOTTEN`]) says it
/// is no longer readable. 16 bytes a record, held for as long as its segment lives: the records of
/// a segment are contiguous, so a record's length is where the next starts (or the segment's end).
#[derive(Clone, Copy)]
struct Loc {
    id: u64,
    off: u64,
}

/// The top bit of [`Loc::off`]: the record was forgotten or blanked.
const FORGOTTEN: u64 = 1 << 63;

struct Segment {
    file: Arc<File>,
    /// Every record, blanked and forgotten ones too, in id order (ids only grow).
    records: Vec<Loc>,
    /// Where the last record ends.
    end: u64,
    /// Newest `received_at` in the segment, for the dedup window.
    newest_at_ms: i64,
}

impl Segment {
    fn new(file: Arc<File>) -> Segment {
        Segment {
            file,
            records: Vec::new(),
            end: 0,
            newest_at_ms: i64::MIN,
        }
    }

    /// Adds a record ending at `end`. The list grows by a quarter at a time, not doubling: it
    /// lives as long as the segment (issue 12, receiver memory).
    fn push(&mut self, id: u64, off: u64, end: u64, live: bool) {
        if self.records.len() == self.records.capacity() {
            self.records
                .reserve_exact((self.records.len() / 4).max(256));
        }
        let flag = if live { 0 } else { FORGOTTEN };
        self.records.push(Loc {
            id,
            off: off | flag,
        });
        self.end = end;
    }

    fn first_id(&self) -> Option<u64> {
        self.records.first().map(|r| r.id)
    }

    fn find(&self, id: u64) -> Option<usize> {
        self.records.binary_search_by_key(&id, |r| r.id).ok()
    }

    fn live(&self, i: usize) -> bool {
        self.records[i].off & FORGOTTEN == 0
    }

    /// Record `i`'s offset and length, if it is live.
    fn place(&self, i: usize) -> Option<(u64, usize)> {
        if !self.live(i) {
            return None;
        }
        let off = self.records[i].off;
        let next = self
            .records
            .get(i + 1)
            .map_or(self.end, |r| r.off & !FORGOTTEN);
        Some((off, (next - off) as usize))
    }

    fn forget(&mut self, i: usize) {
        self.records[i].off |= FORGOTTEN;
    }

    /// The ids of the live records.
    fn live_ids(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.records.len())
            .filter(|i| self.live(*i))
            .map(|i| self.records[i].id)
    }

    /// Bytes of memory this segment's index holds.
    fn heap_bytes(&self) -> usize {
        self.records.capacity() * std::mem::size_of::<Loc>()
    }
}

/// The writer's side: the active file and its length.
struct Active {
    no: u64,
    file: Arc<File>,
    len: u64,
}

/// The segment log of one queue. Appends are serialised by the caller's group commit; reads run
/// beside them.
pub struct Segments {
    dir: PathBuf,
    writer: Mutex<Option<Active>>,
    segs: RwLock<BTreeMap<u64, Segment>>,
}

/// The records of one group commit, framed into one buffer.
#[derive(Default)]
pub struct Group {
    buf: Vec<u8>,
    /// (id, offset in `buf`, length, received_at).
    recs: Vec<(u64, usize, u32, i64)>,
}

impl Group {
    pub fn clear(&mut self) {
        self.buf.clear();
        self.recs.clear();
    }
    pub fn is_empty(&self) -> bool {
        self.recs.is_empty()
    }
    /// Frames one record whose envelope `envelope` appends to the buffer it is given: the
    /// envelope (and the body in it) is written once, straight into the group's buffer.
    pub fn push(
        &mut self,
        id: u64,
        received_at_ms: i64,
        dedup_key: Option<&str>,
        envelope: impl FnOnce(&mut Vec<u8>),
    ) {
        let key = dedup_key.unwrap_or("").as_bytes();
        let key = &key[..key.len().min(u16::MAX as usize)];
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; HEADER]);
        self.buf.extend_from_slice(&id.to_be_bytes());
        self.buf.extend_from_slice(&received_at_ms.to_be_bytes());
        self.buf.push(0);
        self.buf
            .extend_from_slice(&(key.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(key);
        envelope(&mut self.buf);
        let payload_len = self.buf.len() - start - HEADER;
        let crc = crc32fast::hash(&self.buf[start + HEADER..]);
        self.buf[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
        self.buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        self.recs
            .push((id, start, (HEADER + payload_len) as u32, received_at_ms));
    }
}

fn ctx(what: String) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn seg_path(dir: &Path, no: u64) -> PathBuf {
    dir.join(format!("{no:08}.seg"))
}

/// A payload's parts: id, received_at, flags, dedup key, envelope.
type Parts<'a> = (u64, i64, u8, &'a [u8], &'a [u8]);

/// Parses one payload (after the header) into its parts.
fn parse_payload(p: &[u8]) -> Option<Parts<'_>> {
    if p.len() < PAYLOAD_FIXED {
        return None;
    }
    let id = u64::from_be_bytes(p[0..8].try_into().ok()?);
    let at = i64::from_be_bytes(p[8..16].try_into().ok()?);
    let flags = p[16];
    let klen = u16::from_be_bytes(p[17..19].try_into().ok()?) as usize;
    let key = p.get(PAYLOAD_FIXED..PAYLOAD_FIXED + klen)?;
    let env = p.get(PAYLOAD_FIXED + klen..)?;
    Some((id, at, flags, key, env))
}

impl Segments {
    /// Opens (or creates) `dir`, cuts a torn tail off the last segment, and calls `visit` for
    /// every live record in id order (to rebuild the in-memory indexes).
    pub fn open(dir: &Path, mut visit: impl FnMut(Scanned<'_>)) -> io::Result<Segments> {
        crate::durable::create_dir_all(dir)?;
        let mut nos = Vec::new();
        for e in std::fs::read_dir(dir).map_err(ctx(format!("listing {}", dir.display())))? {
            let e = e.map_err(ctx(format!("listing {}", dir.display())))?;
            let name = e.file_name();
            let Some(no) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            nos.push(no);
        }
        nos.sort_unstable();
        let mut segs = BTreeMap::new();
        let mut last: Option<Active> = None;
        for no in nos {
            let path = seg_path(dir, no);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(ctx(format!("opening {}", path.display())))?;
            let size = file
                .metadata()
                .map_err(ctx(format!("reading {}", path.display())))?
                .len() as usize;
            let file = Arc::new(file);
            let mut seg = Segment::new(file.clone());
            // Streamed, one record at a time: a 64 MiB segment never sits in memory whole.
            let mut reader = io::BufReader::with_capacity(256 << 10, &*file);
            let mut payload = Vec::new();
            let mut off = 0usize;
            while off + HEADER <= size {
                let mut head = [0u8; HEADER];
                if reader.read_exact(&mut head).is_err() {
                    break;
                }
                let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
                let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
                if off + HEADER + len > size {
                    break;
                }
                payload.resize(len, 0);
                if reader.read_exact(&mut payload).is_err() || crc32fast::hash(&payload) != crc {
                    break;
                }
                let Some((id, at, flags, key, env)) = parse_payload(&payload) else {
                    break;
                };
                seg.newest_at_ms = seg.newest_at_ms.max(at);
                let live = flags & FLAG_BLANK == 0;
                seg.push(id, off as u64, (off + HEADER + len) as u64, live);
                if live {
                    visit(Scanned {
                        id,
                        received_at_ms: at,
                        dedup_key: std::str::from_utf8(key).ok().filter(|k| !k.is_empty()),
                        envelope: env,
                    });
                }
                off += HEADER + len;
            }
            drop(reader);
            if off < size {
                // A torn or corrupt tail: what a crash mid-write leaves. Nothing after it was
                // ever answered for (each group is synced before its 200s), so cut it off.
                tracing::warn!(
                    segment = %path.display(),
                    kept = off,
                    dropped = size - off,
                    "queue segment: cutting off a torn tail"
                );
                file.set_len(off as u64)
                    .and_then(|()| file.sync_all())
                    .map_err(ctx(format!("truncating {}", path.display())))?;
            }
            last = Some(Active {
                no,
                file,
                len: off as u64,
            });
            segs.insert(no, seg);
        }
        Ok(Segments {
            dir: dir.to_path_buf(),
            writer: Mutex::new(last),
            segs: RwLock::new(segs),
        })
    }

    fn segs_read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, Segment>> {
        self.segs.read().unwrap_or_else(|p| p.into_inner())
    }

    fn segs_write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u64, Segment>> {
        self.segs.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates segment `no` and syncs its directory entry.
    fn create(&self, no: u64) -> io::Result<Active> {
        let path = seg_path(&self.dir, no);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(ctx(format!("creating {}", path.display())))?;
        crate::durable::sync_dir(&self.dir)?;
        let file = Arc::new(file);
        self.segs_write().insert(no, Segment::new(file.clone()));
        Ok(Active { no, file, len: 0 })
    }

    /// Writes the group with one `write` and one `fdatasync`. On error nothing of the group is
    /// readable and the file is cut back to where it was.
    pub fn append(&self, group: &Group) -> io::Result<()> {
        if group.is_empty() {
            return Ok(());
        }
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let need_new = match &*w {
            None => true,
            Some(a) => a.len > 0 && a.len + group.buf.len() as u64 > SEGMENT_BYTES,
        };
        if need_new {
            let no = w.as_ref().map_or(1, |a| a.no + 1);
            *w = Some(self.create(no)?);
        }
        let Some(active) = w.as_mut() else {
            return Err(io::Error::other("no active segment"));
        };
        let path = seg_path(&self.dir, active.no);
        let written = active
            .file
            .write_all_at(&group.buf, active.len)
            .and_then(|()| active.file.sync_data());
        if let Err(e) = written {
            // Best effort: the disk may be failing. The caller refuses later appends anyway.
            let _ = active.file.set_len(active.len);
            return Err(io::Error::new(
                e.kind(),
                format!("writing {}: {e}", path.display()),
            ));
        }
        let base = active.len;
        active.len += group.buf.len() as u64;
        let mut segs = self.segs_write();
        if let Some(seg) = segs.get_mut(&active.no) {
            for &(id, off, len, at) in &group.recs {
                let off = base + off as u64;
                seg.push(id, off, off + len as u64, true);
                seg.newest_at_ms = seg.newest_at_ms.max(at);
            }
        }
        Ok(())
    }

    /// The segment holding `id` and the record's place, if any.
    fn locate(&self, id: u64) -> Option<(u64, Arc<File>, u64, usize)> {
        let segs = self.segs_read();
        // Segments hold increasing id ranges: the last one whose first id is <= id.
        for (no, seg) in segs.iter().rev() {
            if seg.first_id().is_none_or(|first| first > id) {
                continue;
            }
            let (off, len) = seg.place(seg.find(id)?)?;
            return Some((*no, seg.file.clone(), off, len));
        }
        None
    }

    /// Every live record's id, in order.
    pub fn ids(&self) -> Vec<u64> {
        self.segs_read()
            .values()
            .flat_map(Segment::live_ids)
            .collect()
    }

    /// Makes `id` unreadable here (removed from the queue; its bytes stay until the segment is
    /// deleted, which still counts it).
    pub fn forget(&self, id: u64) {
        let mut segs = self.segs_write();
        for seg in segs.values_mut().rev() {
            if seg.first_id().is_some_and(|first| first <= id) {
                if let Some(i) = seg.find(id) {
                    seg.forget(i);
                }
                return;
            }
        }
    }

    /// Whether `id` is stored here.
    pub fn contains(&self, id: u64) -> bool {
        self.locate(id).is_some()
    }

    /// The encoded envelope of `id`, checked against its CRC; None if not stored here.
    pub fn read(&self, id: u64) -> io::Result<Option<Vec<u8>>> {
        let Some((no, file, off, len)) = self.locate(id) else {
            return Ok(None);
        };
        let mut rec = vec![0u8; len];
        file.read_exact_at(&mut rec, off).map_err(ctx(format!(
            "reading event {id} from {}",
            seg_path(&self.dir, no).display()
        )))?;
        let crc = u32::from_le_bytes(rec[4..8].try_into().unwrap_or_default());
        if crc32fast::hash(&rec[HEADER..]) != crc {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "event {id} in {}: checksum mismatch",
                    seg_path(&self.dir, no).display()
                ),
            ));
        }
        let Some((_, _, _, _, env)) = parse_payload(&rec[HEADER..]) else {
            return Ok(None);
        };
        // The envelope is the record's tail: drop the framing without a second copy.
        let start = rec.len() - env.len();
        rec.drain(..start);
        Ok(Some(rec))
    }

    /// Erases `id`'s body in place (the record stays, flagged blank, with a new CRC), synced.
    /// Returns whether it was here.
    pub fn blank(&self, id: u64) -> io::Result<bool> {
        let Some((no, file, off, len)) = self.locate(id) else {
            return Ok(false);
        };
        let path = seg_path(&self.dir, no);
        let mut rec = vec![0u8; len];
        file.read_exact_at(&mut rec, off)
            .map_err(ctx(format!("reading {}", path.display())))?;
        rec[HEADER + 16] |= FLAG_BLANK;
        let klen = u16::from_be_bytes([rec[HEADER + 17], rec[HEADER + 18]]) as usize;
        // The dedup key stays (it is not customer data, and keeps the window honest).
        for b in &mut rec[(HEADER + PAYLOAD_FIXED + klen).min(len)..] {
            *b = 0;
        }
        let crc = crc32fast::hash(&rec[HEADER..]);
        rec[4..8].copy_from_slice(&crc.to_le_bytes());
        file.write_all_at(&rec, off)
            .and_then(|()| file.sync_data())
            .map_err(ctx(format!("erasing event {id} in {}", path.display())))?;
        if let Some(seg) = self.segs_write().get_mut(&no) {
            if let Some(i) = seg.find(id) {
                seg.forget(i);
            }
        }
        Ok(true)
    }

    /// Deletes every closed segment (never the one being written) whose records all pass
    /// `done` (or were forgotten) and whose newest record is older than `before_ms` (the dedup window). Returns
    /// the ids of the records deleted, so their state can go too.
    pub fn delete_done(
        &self,
        before_ms: i64,
        mut done: impl FnMut(u64) -> bool,
    ) -> io::Result<Vec<u64>> {
        let active = self
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|a| a.no);
        let victims: Vec<(u64, Vec<u64>)> = self
            .segs_read()
            .iter()
            .filter(|(no, seg)| {
                Some(**no) != active
                    && seg.newest_at_ms < before_ms
                    && seg.live_ids().all(&mut done)
            })
            .map(|(no, seg)| (*no, seg.records.iter().map(|r| r.id).collect()))
            .collect();
        let mut ids = Vec::new();
        for (no, recs) in victims {
            let path = seg_path(&self.dir, no);
            std::fs::remove_file(&path).map_err(ctx(format!("deleting {}", path.display())))?;
            self.segs_write().remove(&no);
            ids.extend(recs);
        }
        if !ids.is_empty() {
            crate::durable::sync_dir(&self.dir)?;
        }
        Ok(ids)
    }

    /// Bytes of memory the segments' record index holds, and how many records it lists.
    pub fn index_bytes(&self) -> (usize, usize) {
        let segs = self.segs_read();
        (
            segs.values().map(Segment::heap_bytes).sum(),
            segs.values().map(|s| s.records.len()).sum(),
        )
    }

    /// Copies every segment file into `to` (for `compact`), synced.
    pub fn copy_to(&self, to: &Path) -> io::Result<()> {
        crate::durable::create_dir_all(to)?;
        for no in self.segs_read().keys() {
            let (from, dst) = (seg_path(&self.dir, *no), seg_path(to, *no));
            std::fs::copy(&from, &dst).map_err(ctx(format!("copying {}", from.display())))?;
            File::open(&dst)
                .and_then(|f| f.sync_all())
                .map_err(ctx(format!("fsync {}", dst.display())))?;
        }
        crate::durable::sync_dir(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(ids: &[(u64, &str)]) -> Group {
        let mut g = Group::default();
        for (id, body) in ids {
            g.push(*id, *id as i64 * 10, Some(&format!("k{id}")), |b| {
                b.extend_from_slice(body.as_bytes())
            });
        }
        g
    }

    type Seen = Vec<(u64, i64, Option<String>, Vec<u8>)>;

    fn reopen(dir: &Path) -> (Segments, Seen) {
        let mut seen = Vec::new();
        let s = Segments::open(dir, |r| {
            seen.push((
                r.id,
                r.received_at_ms,
                r.dedup_key.map(str::to_string),
                r.envelope.to_vec(),
            ))
        })
        .unwrap();
        (s, seen)
    }

    #[test]
    fn records_read_back_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (s, seen) = reopen(dir.path());
        assert!(seen.is_empty());
        s.append(&group(&[(1, "one"), (2, "two")])).unwrap();
        s.append(&group(&[(5, "five")])).unwrap();
        assert_eq!(s.read(2).unwrap().unwrap(), b"two");
        assert_eq!(s.read(5).unwrap().unwrap(), b"five");
        assert!(s.read(3).unwrap().is_none());
        drop(s);
        let (s, seen) = reopen(dir.path());
        assert_eq!(seen.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2, 5]);
        assert_eq!(seen[2].1, 50);
        assert_eq!(seen[2].2.as_deref(), Some("k5"));
        s.append(&group(&[(6, "six")])).unwrap();
        assert_eq!(s.read(6).unwrap().unwrap(), b"six");
        assert_eq!(s.read(1).unwrap().unwrap(), b"one");
    }

    #[test]
    fn a_torn_tail_is_cut_off_at_open_and_appends_continue_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = reopen(dir.path());
        s.append(&group(&[(1, "one"), (2, "two")])).unwrap();
        drop(s);
        let path = seg_path(dir.path(), 1);
        let full = std::fs::metadata(&path).unwrap().len();
        // A crash mid-write: half of a third record.
        let mut g = group(&[(3, "three")]);
        g.buf.truncate(g.buf.len() / 2);
        use std::io::Write as _;
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&g.buf).unwrap();
        drop(f);
        let (s, seen) = reopen(dir.path());
        assert_eq!(seen.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), full);
        s.append(&group(&[(3, "three")])).unwrap();
        drop(s);
        let (_, seen) = reopen(dir.path());
        assert_eq!(seen.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    #[test]
    fn a_corrupt_record_is_not_read_as_an_event() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = reopen(dir.path());
        s.append(&group(&[(1, "one"), (2, "two")])).unwrap();
        let path = seg_path(dir.path(), 1);
        let mut data = std::fs::read(&path).unwrap();
        let n = data.len();
        data[n - 1] ^= 0xff;
        std::fs::write(&path, &data).unwrap();
        assert!(s.read(2).is_err(), "a flipped bit is a checksum error");
        drop(s);
        let (_, seen) = reopen(dir.path());
        assert_eq!(seen.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn blanked_bodies_are_gone_and_done_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = reopen(dir.path());
        s.append(&group(&[(1, "secret-user-42"), (2, "two")]))
            .unwrap();
        assert!(s.blank(1).unwrap());
        assert!(s.read(1).unwrap().is_none());
        let raw = std::fs::read(seg_path(dir.path(), 1)).unwrap();
        assert!(!raw.windows(14).any(|w| w == b"secret-user-42"));
        // Force a second segment so the first is closed.
        {
            let mut w = s.writer.lock().unwrap();
            *w = Some(s.create(2).unwrap());
        }
        s.append(&group(&[(3, "three")])).unwrap();
        assert!(s.delete_done(1000, |id| id != 2).unwrap().is_empty());
        assert_eq!(
            s.delete_done(1000, |_| true).unwrap(),
            vec![1, 2],
            "the blanked record's id too, so its tombstone can go"
        );
        assert!(!seg_path(dir.path(), 1).exists());
        assert!(seg_path(dir.path(), 2).exists(), "the active segment stays");
        drop(s);
        let (_, seen) = reopen(dir.path());
        assert_eq!(seen.iter().map(|r| r.0).collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn a_blanked_record_keeps_its_neighbours_readable_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = reopen(dir.path());
        s.append(&group(&[(1, "one"), (2, "two-two"), (3, "three")]))
            .unwrap();
        assert!(s.blank(2).unwrap());
        drop(s);
        let (s, seen) = reopen(dir.path());
        assert_eq!(seen.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(s.read(1).unwrap().unwrap(), b"one");
        assert!(s.read(2).unwrap().is_none());
        assert_eq!(s.read(3).unwrap().unwrap(), b"three");
        assert_eq!(s.ids(), vec![1, 3]);
        s.append(&group(&[(4, "four")])).unwrap();
        assert_eq!(
            s.read(3).unwrap().unwrap(),
            b"three",
            "the last record's end moved"
        );
        assert_eq!(s.read(4).unwrap().unwrap(), b"four");
        s.forget(3);
        assert!(s.read(3).unwrap().is_none());
        assert_eq!(s.read(4).unwrap().unwrap(), b"four");
    }

    /// The record index costs 16 B a record, growing by a quarter at a time: at most 20 B a
    /// record past the first few hundred (a doubling `Vec` of the former 24-byte tuples held up
    /// to 48). Prints the figure for PERFORMANCE.md.
    #[test]
    fn the_record_index_holds_about_16_bytes_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = reopen(dir.path());
        let mut worst = 0f64;
        for g in 0..400u64 {
            let ids: Vec<(u64, &str)> = (g * 100..g * 100 + 100).map(|id| (id, "x")).collect();
            s.append(&group(&ids)).unwrap();
            let (bytes, n) = s.index_bytes();
            if n >= 1000 {
                worst = worst.max(bytes as f64 / n as f64);
            }
        }
        println!("segment record index: worst {worst:.1} B/record over 1k..40k records");
        assert!(worst <= 20.0, "{worst:.1} B a record");
        assert_eq!(s.read(39_999).unwrap().unwrap(), b"x");
    }
}
