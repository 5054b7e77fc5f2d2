//! The queue's event records on sled (format 2): the events of one group commit packed into one
//! byte stream, cut into chunks small enough that sled never writes a blob file.
//!
//! Why: sled costs ~10-15 µs of CPU per `insert`, and it writes any log record over a quarter of
//! its segment (128 KiB) — one large value, or a consolidated leaf of up to 17 values — to its own
//! file under `blobs/`. Packing a group's events into one stream makes a group of 64 ordinary
//! events ~15 inserts instead of 192, and cutting the stream into [`CHUNK`]-byte values keeps
//! every leaf (at most 17 values) under the blob threshold, whatever the body size.
//!
//! Stream: a sequence of frames `[u32 len of the rest][u64 event id][u16 key len][dedup key]
//! [envelope]` (big-endian). Chunk `n` of the group whose first event id is `g` is stored under
//! the 12-byte key `g ++ n` (both big-endian), so a group's chunks are adjacent and in order.

use crate::queue::QueueError;

/// Bytes per chunk: 17 chunks plus sled's per-entry overhead stay well under 128 KiB.
pub const CHUNK: usize = 6 * 1024;

/// A new group starts once the current one's stream reaches this many bytes, which bounds what
/// reading a group back at open holds in memory.
pub const MAX_GROUP_BYTES: usize = 1 << 20;

/// Bytes of a frame before its dedup key: length, id, key length.
const FRAME_HEAD: usize = 4 + 8 + 2;

pub fn chunk_key(group: u64, n: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&group.to_be_bytes());
    k[8..].copy_from_slice(&n.to_be_bytes());
    k
}

pub fn parse_key(k: &[u8]) -> Option<(u64, u32)> {
    if k.len() != 12 {
        return None;
    }
    Some((
        u64::from_be_bytes(k[..8].try_into().ok()?),
        u32::from_be_bytes(k[8..].try_into().ok()?),
    ))
}

/// Appends one event's frame to `stream`; returns its (offset, length) in the stream.
pub fn push_frame(
    stream: &mut Vec<u8>,
    id: u64,
    dedup_key: Option<&str>,
    envelope: &[u8],
) -> (u32, u32) {
    let key = dedup_key.unwrap_or("").as_bytes();
    let key = &key[..key.len().min(u16::MAX as usize)];
    let off = stream.len();
    let rest = 8 + 2 + key.len() + envelope.len();
    stream.extend_from_slice(&(rest as u32).to_be_bytes());
    stream.extend_from_slice(&id.to_be_bytes());
    stream.extend_from_slice(&(key.len() as u16).to_be_bytes());
    stream.extend_from_slice(key);
    stream.extend_from_slice(envelope);
    (off as u32, (4 + rest) as u32)
}

/// One frame, borrowed from a stream.
pub struct Frame<'a> {
    pub id: u64,
    pub dedup_key: &'a str,
    pub envelope: &'a [u8],
    /// Where the envelope starts, from the frame's start (to blank it in place).
    pub envelope_at: usize,
}

/// Parses the frame that starts `b`; returns it and its total length.
pub fn parse_frame(b: &[u8]) -> Option<(Frame<'_>, usize)> {
    if b.len() < FRAME_HEAD {
        return None;
    }
    let rest = u32::from_be_bytes(b[..4].try_into().ok()?) as usize;
    let total = 4 + rest;
    if b.len() < total || rest < 10 {
        return None;
    }
    let id = u64::from_be_bytes(b[4..12].try_into().ok()?);
    let klen = u16::from_be_bytes(b[12..14].try_into().ok()?) as usize;
    let envelope_at = FRAME_HEAD + klen;
    if envelope_at > total {
        return None;
    }
    let dedup_key = std::str::from_utf8(&b[FRAME_HEAD..envelope_at]).ok()?;
    Some((
        Frame {
            id,
            dedup_key,
            envelope: &b[envelope_at..total],
            envelope_at,
        },
        total,
    ))
}

fn storage(ctx: &'static str) -> impl Fn(sled::Error) -> QueueError {
    move |e| QueueError::storage(ctx, e)
}

/// Inserts a group's stream as chunks. Returns how many chunks.
pub fn write_group(tree: &sled::Tree, group: u64, stream: &[u8]) -> Result<u32, QueueError> {
    let mut n = 0u32;
    for piece in stream.chunks(CHUNK) {
        tree.insert(chunk_key(group, n), piece)
            .map_err(storage("writing events"))?;
        n += 1;
    }
    Ok(n)
}

/// Removes every chunk of a group.
pub fn remove_group(tree: &sled::Tree, group: u64, stream_len: u32) -> Result<(), QueueError> {
    let chunks = (stream_len as usize).div_ceil(CHUNK) as u32;
    for n in 0..chunks.max(1) {
        tree.remove(chunk_key(group, n))
            .map_err(storage("purging events"))?;
    }
    Ok(())
}

/// Bytes `[off, off + len)` of a group's stream. `cache` keeps the last chunk read, so reading
/// the events of one group in order reads each chunk once.
pub fn read_range(
    tree: &sled::Tree,
    group: u64,
    off: u32,
    len: u32,
    cache: &mut Option<(u64, u32, sled::IVec)>,
) -> Result<Option<Vec<u8>>, QueueError> {
    let (off, len) = (off as usize, len as usize);
    let mut out = Vec::with_capacity(len);
    let mut pos = off;
    while pos < off + len {
        let n = (pos / CHUNK) as u32;
        let hit = matches!(cache, Some((g, c, _)) if *g == group && *c == n);
        if !hit {
            match tree
                .get(chunk_key(group, n))
                .map_err(storage("reading events"))?
            {
                Some(v) => *cache = Some((group, n, v)),
                None => return Ok(None),
            }
        }
        let Some((_, _, chunk)) = cache.as_ref() else {
            return Ok(None);
        };
        let start = pos - n as usize * CHUNK;
        let end = (off + len - n as usize * CHUNK).min(chunk.len());
        if start >= end {
            return Ok(None);
        }
        out.extend_from_slice(&chunk[start..end]);
        pos += end - start;
    }
    Ok(Some(out))
}

/// Overwrites `[off, off + len)` of a group's stream with zeros (an eBay account deletion must
/// take the body off the disk even while the rest of its group stays).
pub fn blank_range(tree: &sled::Tree, group: u64, off: u32, len: u32) -> Result<(), QueueError> {
    let (off, len) = (off as usize, len as usize);
    let mut pos = off;
    while pos < off + len {
        let n = (pos / CHUNK) as u32;
        let key = chunk_key(group, n);
        let Some(chunk) = tree.get(key).map_err(storage("reading events"))? else {
            return Ok(());
        };
        let mut chunk = chunk.to_vec();
        let start = pos - n as usize * CHUNK;
        let end = (off + len - n as usize * CHUNK).min(chunk.len());
        if start >= end {
            return Ok(());
        }
        chunk[start..end].fill(0);
        tree.insert(key, chunk)
            .map_err(storage("blanking an event"))?;
        pos += end - start;
    }
    Ok(())
}

/// Calls `f(group, stream)` for every group in order, each stream reassembled from its chunks.
/// A group with a missing chunk is passed as far as it is contiguous.
pub fn for_each_group(
    tree: &sled::Tree,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), QueueError>,
) -> Result<(), QueueError> {
    let mut current: Option<u64> = None;
    let mut next_chunk = 0u32;
    let mut stream = Vec::new();
    for item in tree.iter() {
        let (k, v) = item.map_err(storage("scanning events"))?;
        let Some((group, n)) = parse_key(&k) else {
            continue;
        };
        if current != Some(group) {
            if let Some(g) = current {
                f(g, &stream)?;
            }
            current = Some(group);
            stream.clear();
            next_chunk = 0;
        }
        if n == next_chunk {
            stream.extend_from_slice(&v);
            next_chunk += 1;
        }
    }
    if let Some(g) = current {
        f(g, &stream)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let t = db.open_tree("groups").unwrap();
        let mut stream = Vec::new();
        let big = vec![7u8; 3 * CHUNK + 11];
        let a = push_frame(&mut stream, 5, Some("s\0d1"), b"small");
        let b = push_frame(&mut stream, 6, None, &big);
        let c = push_frame(&mut stream, 7, Some("s\0d3"), b"tail");
        assert_eq!(write_group(&t, 5, &stream).unwrap(), 4);
        let mut cache = None;
        for (off, len) in [a, b, c] {
            let got = read_range(&t, 5, off, len, &mut cache).unwrap().unwrap();
            assert_eq!(got, stream[off as usize..(off + len) as usize]);
        }
        let got = read_range(&t, 5, b.0, b.1, &mut cache).unwrap().unwrap();
        let (f, n) = parse_frame(&got).unwrap();
        assert_eq!(
            (f.id, f.dedup_key, f.envelope.len(), n),
            (6, "", big.len(), b.1 as usize)
        );
        blank_range(&t, 5, b.0 + f.envelope_at as u32, big.len() as u32).unwrap();
        let mut seen = Vec::new();
        for_each_group(&t, |g, s| {
            let mut pos = 0;
            while let Some((f, n)) = parse_frame(&s[pos..]) {
                seen.push((g, f.id, f.dedup_key.to_string(), f.envelope.contains(&7)));
                pos += n;
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (5, 5, "s\0d1".to_string(), false),
                (5, 6, String::new(), false),
                (5, 7, "s\0d3".to_string(), false)
            ]
        );
        remove_group(&t, 5, stream.len() as u32).unwrap();
        assert!(t.is_empty());
    }
}
