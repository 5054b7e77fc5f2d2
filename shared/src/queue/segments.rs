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

/// Where a record is: (id, offset of its header, total length; 0 once forgotten).
type Loc = (u64, u64, u32);

struct Segment {
    file: Arc<File>,
    /// Records in id order (ids only grow).
    records: Vec<Loc>,
    /// Newest `received_at` in the segment, for the dedup window.
    newest_at_ms: i64,
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
            // Streamed, one record at a time: a 64 MiB segment never sits in memory whole.
            let mut reader = io::BufReader::with_capacity(256 << 10, &file);
            let mut payload = Vec::new();
            let mut off = 0usize;
            let mut records = Vec::new();
            let mut newest = i64::MIN;
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
                newest = newest.max(at);
                if flags & FLAG_BLANK == 0 {
                    records.push((id, off as u64, (HEADER + len) as u32));
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
            let file = Arc::new(file);
            last = Some(Active {
                no,
                file: file.clone(),
                len: off as u64,
            });
            segs.insert(
                no,
                Segment {
                    file,
                    records,
                    newest_at_ms: newest,
                },
            );
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
        self.segs_write().insert(
            no,
            Segment {
                file: file.clone(),
                records: Vec::new(),
                newest_at_ms: i64::MIN,
            },
        );
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
                seg.records.push((id, base + off as u64, len));
                seg.newest_at_ms = seg.newest_at_ms.max(at);
            }
        }
        Ok(())
    }

    /// The segment holding `id` and the record's place, if any.
    fn locate(&self, id: u64) -> Option<(u64, Arc<File>, u64, u32)> {
        let segs = self.segs_read();
        // Segments hold increasing id ranges: the last one whose first id is <= id.
        for (no, seg) in segs.iter().rev() {
            let Some(first) = seg.records.first() else {
                continue;
            };
            if first.0 > id {
                continue;
            }
            let i = seg.records.binary_search_by_key(&id, |r| r.0).ok()?;
            let (_, off, len) = seg.records[i];
            return (len > 0).then(|| (*no, seg.file.clone(), off, len));
        }
        None
    }

    /// Every live record's id, in order.
    pub fn ids(&self) -> Vec<u64> {
        self.segs_read()
            .values()
            .flat_map(|s| s.records.iter().filter(|r| r.2 > 0).map(|r| r.0))
            .collect()
    }

    /// Makes `id` unreadable here (removed from the queue; its bytes stay until the segment is
    /// deleted, which still counts it).
    pub fn forget(&self, id: u64) {
        let mut segs = self.segs_write();
        for seg in segs.values_mut().rev() {
            if seg.records.first().is_some_and(|r| r.0 <= id) {
                if let Ok(i) = seg.records.binary_search_by_key(&id, |r| r.0) {
                    seg.records[i].2 = 0;
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
        let mut rec = vec![0u8; len as usize];
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
        let mut rec = vec![0u8; len as usize];
        file.read_exact_at(&mut rec, off)
            .map_err(ctx(format!("reading {}", path.display())))?;
        rec[HEADER + 16] |= FLAG_BLANK;
        let klen = u16::from_be_bytes([rec[HEADER + 17], rec[HEADER + 18]]) as usize;
        // The dedup key stays (it is not customer data, and keeps the window honest).
        for b in &mut rec[(HEADER + PAYLOAD_FIXED + klen).min(len as usize)..] {
            *b = 0;
        }
        let crc = crc32fast::hash(&rec[HEADER..]);
        rec[4..8].copy_from_slice(&crc.to_le_bytes());
        file.write_all_at(&rec, off)
            .and_then(|()| file.sync_data())
            .map_err(ctx(format!("erasing event {id} in {}", path.display())))?;
        if let Some(seg) = self.segs_write().get_mut(&no) {
            if let Ok(i) = seg.records.binary_search_by_key(&id, |r| r.0) {
                seg.records[i].2 = 0;
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
                    && seg.records.iter().all(|r| r.2 == 0 || done(r.0))
            })
            .map(|(no, seg)| (*no, seg.records.iter().map(|r| r.0).collect()))
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
}
