//! Durability: a region's replicated state in one checksummed file, replaced atomically.
//!
//! File layout: `b"PVPSNAP1"`, payload length (`u64` LE), CRC-32 of the payload (`u32` LE),
//! then the postcard-encoded [`Snapshot`]. [`SnapshotStore::save`] writes a temporary file,
//! fsyncs it, renames it over the old one and fsyncs the directory, so a crash leaves either
//! the old or the new snapshot. A torn or corrupted file is reported as
//! [`SnapshotError::Corrupt`]; the region then starts with
//! [`CrossRegionSync::recover_from_peers`](super::CrossRegionSync::recover_from_peers).
//!
//! Saving every `snapshot_interval` (the driver's default is 500 ms) bounds the loss of a
//! region's own writes at a crash to that interval, minus what already reached a peer (peers
//! send it back through anti-entropy).

use super::{CrossRegionSync, Key, Value};
use crate::leaderboard::{GameMode, ScoreOperator};
use pvp_core::RegionId;
use pvp_core::hlc::HlcStamp;
use serde::ser::{SerializeSeq, SerializeStruct};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"PVPSNAP1";
const HEADER: usize = 8 + 8 + 4;

/// A region's replicated state at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The region.
    pub region: RegionId,
    /// The incarnation that wrote it.
    pub incarnation: u64,
    /// Its clock's last stamp.
    pub hlc_last: HlcStamp,
    /// Leaderboard modes and their operators.
    pub modes: Vec<(GameMode, ScoreOperator)>,
    /// Every key and value.
    pub entries: Vec<(Key, Value)>,
}

/// Why a snapshot could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// File-system error.
    #[error("snapshot I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The file is torn, truncated or corrupted.
    #[error("snapshot is corrupt: {0}")]
    Corrupt(&'static str),
    /// Encoding failed.
    #[error("snapshot encoding failed")]
    Encode,
    /// The snapshot belongs to another region.
    #[error("snapshot belongs to region {0}")]
    WrongRegion(RegionId),
}

/// Snapshot files of one region in one directory.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
    region: RegionId,
}

impl SnapshotStore {
    /// Snapshots of `region` under `dir` (created if missing).
    pub fn new(dir: impl AsRef<Path>, region: RegionId) -> Result<Self, SnapshotError> {
        fs::create_dir_all(dir.as_ref())?;
        Ok(Self { dir: dir.as_ref().to_path_buf(), region })
    }

    /// The snapshot file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.snap", self.region))
    }

    /// Writes `snap` durably and atomically; returns the bytes written.
    pub fn save(&self, snap: &Snapshot) -> Result<usize, SnapshotError> {
        let payload = postcard::to_stdvec(snap).map_err(|_| SnapshotError::Encode)?;
        self.write_payload(&payload)
    }

    /// Snapshots `node` straight from its state (no intermediate copy, unlike
    /// `save(&node.snapshot())`); same file format. Returns the bytes written.
    pub fn save_node(&self, node: &CrossRegionSync) -> Result<usize, SnapshotError> {
        let view = SnapshotView { node };
        let payload = postcard::to_stdvec(&view).map_err(|_| SnapshotError::Encode)?;
        self.write_payload(&payload)
    }

    fn write_payload(&self, payload: &[u8]) -> Result<usize, SnapshotError> {
        let mut bytes = Vec::with_capacity(HEADER + payload.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        bytes.extend_from_slice(payload);
        let tmp = self.dir.join(format!("{}.snap.tmp", self.region));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, self.path())?;
        File::open(&self.dir)?.sync_all()?;
        Ok(bytes.len())
    }

    /// Reads the snapshot: `Ok(None)` if there is none, [`SnapshotError::Corrupt`] if it is torn
    /// or damaged.
    pub fn load(&self) -> Result<Option<Snapshot>, SnapshotError> {
        let mut f = match File::open(self.path()) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        let snap = decode(&bytes)?;
        if snap.region != self.region {
            return Err(SnapshotError::WrongRegion(snap.region));
        }
        Ok(Some(snap))
    }
}

/// Checks and decodes snapshot file bytes.
pub fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(SnapshotError::Corrupt("bad header"));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[8..16]);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[16..20]);
    let payload = &bytes[HEADER..];
    if u64::try_from(payload.len()).ok() != Some(u64::from_le_bytes(len)) {
        return Err(SnapshotError::Corrupt("length mismatch (torn write)"));
    }
    if crc32fast::hash(payload) != u32::from_le_bytes(crc) {
        return Err(SnapshotError::Corrupt("checksum mismatch"));
    }
    postcard::from_bytes(payload).map_err(|_| SnapshotError::Corrupt("undecodable payload"))
}

/// Serializes a node exactly like its [`Snapshot`], borrowing instead of copying.
struct SnapshotView<'a> {
    node: &'a CrossRegionSync,
}

struct EntriesView<'a>(&'a CrossRegionSync);

impl Serialize for EntriesView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for e in self.0.iter() {
            seq.serialize_element(&e)?;
        }
        seq.end()
    }
}

impl Serialize for SnapshotView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = self.node;
        let modes: Vec<(GameMode, ScoreOperator)> = n.leaderboards().modes().collect();
        let mut st = s.serialize_struct("Snapshot", 5)?;
        st.serialize_field("region", &n.region())?;
        st.serialize_field("incarnation", &n.actor().incarnation)?;
        st.serialize_field("hlc_last", &n.hlc_last())?;
        st.serialize_field("modes", &modes)?;
        st.serialize_field("entries", &EntriesView(n))?;
        st.end()
    }
}
