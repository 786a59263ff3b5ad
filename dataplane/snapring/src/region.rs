//! The mapped file: layout, creation, and the writer's and reader's sides.
//!
//! Layout, all integers little-endian 64-bit words at 8-byte aligned offsets:
//!
//! ```text
//! 0          header (4096 bytes): magic, layout version and slot count, slot size,
//!            counters size, then the shared words listed in `word`
//! 4096       counters area: length-prefixed counter totals under a sequence lock
//! 4096 + C   slot 0, slot 1, ... each `slot_size` bytes: a 64-byte slot header
//!            (magic, payload version, generation, sequence, payload length,
//!            checksum, publish time) and the payload
//! ```

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU64, Ordering};

use memmap2::MmapRaw;
use siphasher::sip::SipHasher13;
use thiserror::Error;

/// "SPIKRING", the first word of a region.
const REGION_MAGIC: u64 = u64::from_le_bytes(*b"SPIKRING");
/// Version of the region layout described in the module docs.
const LAYOUT_VERSION: u64 = 1;
/// "SPIKSNAP", the first word of a written slot.
const SLOT_MAGIC: u64 = u64::from_le_bytes(*b"SPIKSNAP");
/// Version of the payload format in [`crate::payload`].
pub const PAYLOAD_VERSION: u64 = 1;

const HEADER_LEN: u64 = 4096;
/// Bytes before a slot's payload.
pub const SLOT_HEADER_LEN: u64 = 64;
const MAX_SLOTS: u32 = 255;
/// At least three slots: one published, one the reader may hold, one to write.
const MIN_SLOTS: u32 = 3;
/// Maximum read attempts when the writer moves while the reader is starting a read.
const READ_ATTEMPTS: u32 = 8;

/// Indices of the header words.
mod word {
    pub const MAGIC: usize = 0;
    /// Layout version in the low 32 bits, slot count in the high 32.
    pub const LAYOUT: usize = 1;
    pub const SLOT_SIZE: usize = 2;
    pub const COUNTERS_SIZE: usize = 3;
    /// `sequence << 8 | slot` of the latest complete snapshot; 0 before the first.
    pub const PUBLISHED: usize = 4;
    /// Slot index + 1 that the reader is copying; 0 when it copies none.
    pub const HAZARD: usize = 5;
    /// Generation of the snapshot the dataplane runs.
    pub const APPLIED_GENERATION: usize = 6;
    /// Number of snapshots the dataplane rejected.
    pub const REJECTED: usize = 7;
    /// Generation of the last rejected snapshot.
    pub const REJECTED_GENERATION: usize = 8;
    pub const DATAPLANE_HEARTBEAT_MS: usize = 9;
    pub const CONTROLPLANE_HEARTBEAT_MS: usize = 10;
    /// Sequence lock of the counters area: odd while the dataplane writes it.
    pub const COUNTERS_SEQUENCE: usize = 11;
    /// Sequence number of the last snapshot the dataplane consumed, applied or rejected.
    pub const CONSUMED_SEQUENCE: usize = 12;
    /// Process id of the reader that holds the reader lock, or 0 before such a reader
    /// opened the ring. Older readers leave it alone, so the layout version stays.
    pub const READER_PID: usize = 13;
}

/// Indices of the slot header words.
mod slot_word {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 1;
    pub const GENERATION: usize = 2;
    pub const SEQUENCE: usize = 3;
    pub const PAYLOAD_LEN: usize = 4;
    pub const CHECKSUM: usize = 5;
    pub const PUBLISHED_UNIX_MS: usize = 6;
}

/// A failure to create, open or write the region.
#[derive(Debug, Error)]
pub enum RingError {
    #[error("cannot {action} snapshot ring {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "{path} is not a Spike snapshot ring of layout version {LAYOUT_VERSION} ({reason}): \
         remove the file so that it is created again"
    )]
    NotARing { path: PathBuf, reason: String },
    #[error("invalid ring geometry: {0}")]
    Geometry(String),
    #[error(
        "snapshot ring {path} already has a writer (another control plane holds its lock): \
         stop it first"
    )]
    Locked { path: PathBuf },
    #[error(
        "snapshot ring {path} already has a reader: spike-dataplane process {pid} holds its \
         reader lock; stop that dataplane first, or give each dataplane its own \
         dpdk.snapshot_ring and control plane"
    )]
    ReaderLocked { path: PathBuf, pid: String },
    #[error(
        "a payload of {len} bytes does not fit a slot of {capacity} payload bytes: \
         raise the ring's slot size"
    )]
    TooLarge { len: usize, capacity: u64 },
}

/// Reason the reader rejects the contents of a slot.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum SlotError {
    #[error("published word names slot {slot}, but the ring has {slots} slots")]
    SlotOutOfRange { slot: u64, slots: u32 },
    #[error("slot magic is {0:#018x}, expected {SLOT_MAGIC:#018x}")]
    Magic(u64),
    #[error("payload version {0} is not the supported version {PAYLOAD_VERSION}")]
    Version(u64),
    #[error("slot contains sequence {found}, but sequence {expected} was published")]
    Sequence { found: u64, expected: u64 },
    #[error("payload length {len} exceeds the slot's capacity of {capacity} bytes")]
    Length { len: u64, capacity: u64 },
    #[error("payload checksum {found:#018x} does not match the computed {computed:#018x}")]
    Checksum { found: u64, computed: u64 },
}

/// Sizes of a region, fixed when it is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub slots: u32,
    /// Bytes per slot, slot header included; a multiple of 8.
    pub slot_size: u64,
    /// Bytes of the counters area; a multiple of 8.
    pub counters_size: u64,
}

impl Default for Geometry {
    /// Four slots of 16 MiB and 1 MiB of counters. A tmpfs file uses memory only for the
    /// pages that were written.
    fn default() -> Self {
        Geometry {
            slots: 4,
            slot_size: 16 << 20,
            counters_size: 1 << 20,
        }
    }
}

impl Geometry {
    fn check(&self) -> Result<(), RingError> {
        if !(MIN_SLOTS..=MAX_SLOTS).contains(&self.slots) {
            return Err(RingError::Geometry(format!(
                "{} slots; use {MIN_SLOTS} to {MAX_SLOTS}",
                self.slots
            )));
        }
        if self.slot_size <= SLOT_HEADER_LEN || self.slot_size & 7 != 0 {
            return Err(RingError::Geometry(format!(
                "slot size {}; use a multiple of 8 above {SLOT_HEADER_LEN}",
                self.slot_size
            )));
        }
        if self.counters_size < 16 || self.counters_size & 7 != 0 {
            return Err(RingError::Geometry(format!(
                "counters size {}; use a multiple of 8 of at least 16",
                self.counters_size
            )));
        }
        Ok(())
    }

    /// Total file length, or `None` on overflow.
    fn file_len(&self) -> Option<u64> {
        self.slot_size
            .checked_mul(u64::from(self.slots))?
            .checked_add(HEADER_LEN)?
            .checked_add(self.counters_size)
    }

    fn payload_capacity(&self) -> u64 {
        self.slot_size - SLOT_HEADER_LEN
    }
}

/// The mapping and its geometry. Every offset handed to [`Region::words`] is checked
/// against the mapping's length when the region is opened.
struct Region {
    map: MmapRaw,
    file: File,
    path: PathBuf,
    geometry: Geometry,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("path", &self.path)
            .field("geometry", &self.geometry)
            .finish_non_exhaustive()
    }
}

impl Region {
    /// Opens the region at `path`, creating it with `geometry` if it does not exist.
    /// An existing region keeps the geometry it was created with.
    fn create_or_open(path: &Path, geometry: Geometry) -> Result<Region, RingError> {
        geometry.check()?;
        match Region::open(path) {
            Err(RingError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            other => return other,
        }
        Region::create(path, geometry)?;
        Region::open(path)
    }

    /// Creates the file under a temporary name and links it into place, so that a
    /// process opening `path` never maps a half-initialized header. When another process
    /// won the race, its file stays and this one is discarded.
    fn create(path: &Path, geometry: Geometry) -> Result<(), RingError> {
        let io_error = |action, source| RingError::Io {
            action,
            path: path.to_owned(),
            source,
        };
        let file_len = geometry
            .file_len()
            .ok_or_else(|| RingError::Geometry(format!("{geometry:?} overflows 64 bits")))?;
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(format!(".{}.tmp", std::process::id()));
        let temporary = PathBuf::from(temporary);

        // Only the owner may read or write: a snapshot carries the flow hash key, and
        // anyone who reads it can steer flows to chosen backends.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(|source| io_error("create", source))?;
        let initialized = file
            .set_len(file_len)
            .map_err(|source| io_error("size", source))
            .and_then(|()| {
                let region = Region::map(file, &temporary, geometry)?;
                region.initialize(geometry);
                Ok(())
            })
            .and_then(|()| match fs::hard_link(&temporary, path) {
                Ok(()) => Ok(()),
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                Err(source) => Err(io_error("link", source)),
            });
        let _ = fs::remove_file(&temporary);
        initialized
    }

    fn open(path: &Path) -> Result<Region, RingError> {
        let io_error = |action, source| RingError::Io {
            action,
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| io_error("open", source))?;
        let len = file
            .metadata()
            .map_err(|source| io_error("inspect", source))?
            .len();
        let not_a_ring = |reason: String| RingError::NotARing {
            path: path.to_owned(),
            reason,
        };
        if len < HEADER_LEN {
            return Err(not_a_ring(format!("only {len} bytes")));
        }

        // Map with an empty geometry first, to read the real one from the header.
        let header_only = Geometry {
            slots: 0,
            slot_size: 0,
            counters_size: 0,
        };
        let probe = Region::map(file, path, header_only)?;
        let magic = probe.word(word::MAGIC).load(Ordering::Acquire);
        if magic != REGION_MAGIC {
            return Err(not_a_ring(format!("magic {magic:#018x}")));
        }
        let layout = probe.word(word::LAYOUT).load(Ordering::Relaxed);
        if layout & 0xffff_ffff != LAYOUT_VERSION {
            return Err(not_a_ring(format!(
                "layout version {}",
                layout & 0xffff_ffff
            )));
        }
        let geometry = Geometry {
            slots: (layout >> 32) as u32,
            slot_size: probe.word(word::SLOT_SIZE).load(Ordering::Relaxed),
            counters_size: probe.word(word::COUNTERS_SIZE).load(Ordering::Relaxed),
        };
        geometry
            .check()
            .map_err(|error| not_a_ring(error.to_string()))?;
        match geometry.file_len() {
            Some(needed) if needed <= len => {}
            _ => {
                return Err(not_a_ring(format!(
                    "{len} bytes are too few for {geometry:?}"
                )))
            }
        }
        Region::map(probe.file, path, geometry)
    }

    /// Maps the whole file; `geometry` must fit its length, which the callers check.
    fn map(file: File, path: &Path, geometry: Geometry) -> Result<Region, RingError> {
        let map = MmapRaw::map_raw(&file).map_err(|source| RingError::Io {
            action: "map",
            path: path.to_owned(),
            source,
        })?;
        Ok(Region {
            map,
            file,
            path: path.to_owned(),
            geometry,
        })
    }

    fn initialize(&self, geometry: Geometry) {
        let layout = LAYOUT_VERSION | u64::from(geometry.slots) << 32;
        self.word(word::LAYOUT).store(layout, Ordering::Relaxed);
        self.word(word::SLOT_SIZE)
            .store(geometry.slot_size, Ordering::Relaxed);
        self.word(word::COUNTERS_SIZE)
            .store(geometry.counters_size, Ordering::Relaxed);
        self.word(word::MAGIC)
            .store(REGION_MAGIC, Ordering::Release);
    }

    /// Returns `count` words starting at byte `offset`.
    ///
    /// # Panics
    ///
    /// If the range lies outside the mapping or `offset` is not a multiple of 8, which
    /// the layout code never requests.
    fn words(&self, offset: u64, count: usize) -> &[AtomicU64] {
        let end = (count as u64)
            .checked_mul(8)
            .and_then(|bytes| bytes.checked_add(offset));
        assert!(
            offset & 7 == 0 && end.is_some_and(|end| end <= self.map.len() as u64),
            "ring access at {offset} for {count} words is outside the mapping"
        );
        // SAFETY: the assertion above keeps the range inside the mapping, and the mapping
        // lives as long as `self`, which the returned borrow cannot outlive. The mapping
        // starts on a page boundary and `offset` is a multiple of 8, so every word is
        // aligned for AtomicU64, which has the size and layout of u64. Every bit pattern
        // is a valid u64. Both processes touch these bytes only through atomic operations
        // of the same size, so concurrent writes by the peer are not data races.
        unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(offset as usize).cast::<AtomicU64>(),
                count,
            )
        }
    }

    fn word(&self, index: usize) -> &AtomicU64 {
        &self.words(index as u64 * 8, 1)[0]
    }

    fn counters_words(&self) -> &[AtomicU64] {
        self.words(HEADER_LEN, (self.geometry.counters_size / 8) as usize)
    }

    fn slot_words(&self, slot: u32) -> &[AtomicU64] {
        let offset =
            HEADER_LEN + self.geometry.counters_size + u64::from(slot) * self.geometry.slot_size;
        self.words(offset, (self.geometry.slot_size / 8) as usize)
    }
}

/// Copies `bytes` into `words`, zero-padding the last word.
fn store_bytes(words: &[AtomicU64], bytes: &[u8]) {
    for (word, chunk) in words.iter().zip(bytes.chunks(8)) {
        let mut buffer = [0u8; 8];
        buffer[..chunk.len()].copy_from_slice(chunk);
        word.store(u64::from_le_bytes(buffer), Ordering::Relaxed);
    }
}

/// Copies `len` bytes out of `words`; `words` must hold at least `len` bytes.
fn load_bytes(words: &[AtomicU64], len: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len.div_ceil(8) * 8);
    for word in &words[..len.div_ceil(8)] {
        bytes.extend_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// Computes the payload checksum: SipHash-1-3 with fixed keys. It detects corruption and
/// torn copies, but it is no defence against a writer that forges snapshots on purpose.
pub fn checksum(payload: &[u8]) -> u64 {
    use std::hash::Hasher;

    let mut hasher = SipHasher13::new_with_keys(0x7370_696b_6572_696e, 0x6773_6e61_7073_756d);
    hasher.write(payload);
    hasher.finish()
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Header fields of one slot, as the writer stores them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotHeader {
    pub magic: u64,
    pub version: u64,
    pub generation: u64,
    pub sequence: u64,
    pub payload_len: u64,
    pub checksum: u64,
    pub published_unix_ms: u64,
}

/// The snapshot a region currently publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    pub sequence: u64,
    pub slot: u32,
    pub generation: u64,
    pub checksum: u64,
    pub published_unix_ms: u64,
}

/// The dataplane's latest report through the region.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataplaneStatus {
    pub applied_generation: u64,
    pub rejected: u64,
    pub rejected_generation: u64,
    pub consumed_sequence: u64,
    /// 0 when no dataplane has attached yet.
    pub heartbeat_unix_ms: u64,
}

/// The control plane's side: publishes snapshots and reads the dataplane's counters.
/// It takes an exclusive `flock` on the file, so a second writer is rejected. The
/// kernel releases the lock when the process dies, even by SIGKILL.
#[derive(Debug)]
pub struct Publisher {
    region: Region,
}

impl Publisher {
    /// Opens or creates the region at `path` and takes its writer lock.
    ///
    /// # Errors
    ///
    /// [`RingError`] when the file cannot be created or mapped, is not a ring, or
    /// another writer holds the lock.
    pub fn attach(path: &Path, geometry: Geometry) -> Result<Publisher, RingError> {
        let region = Region::create_or_open(path, geometry)?;
        // SAFETY: flock takes a descriptor that `region.file` keeps open for the call
        // and has no memory-safety preconditions.
        let locked = unsafe { libc::flock(region.file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(RingError::Locked {
                    path: path.to_owned(),
                });
            }
            return Err(RingError::Io {
                action: "lock",
                path: path.to_owned(),
                source: error,
            });
        }
        Ok(Publisher { region })
    }

    pub fn geometry(&self) -> Geometry {
        self.region.geometry
    }

    /// Returns the snapshot that the region's header names as published, if any.
    pub fn published(&self) -> Option<Published> {
        let published = self.region.word(word::PUBLISHED).load(Ordering::SeqCst);
        if published == 0 {
            return None;
        }
        let slot = (published & 0xff) as u32;
        if slot >= self.region.geometry.slots {
            return None;
        }
        let words = self.region.slot_words(slot);
        Some(Published {
            sequence: published >> 8,
            slot,
            generation: words[slot_word::GENERATION].load(Ordering::Relaxed),
            checksum: words[slot_word::CHECKSUM].load(Ordering::Relaxed),
            published_unix_ms: words[slot_word::PUBLISHED_UNIX_MS].load(Ordering::Relaxed),
        })
    }

    /// Writes `payload` as `generation` into a free slot and publishes it. Never waits,
    /// because with at least 3 slots (which `Geometry` enforces) one slot is neither
    /// published nor held by the reader.
    ///
    /// # Errors
    ///
    /// [`RingError::TooLarge`] when the payload does not fit a slot.
    pub fn publish(&mut self, generation: u64, payload: &[u8]) -> Result<Published, RingError> {
        let header = SlotHeader {
            magic: SLOT_MAGIC,
            version: PAYLOAD_VERSION,
            generation,
            sequence: 0,
            payload_len: payload.len() as u64,
            checksum: checksum(payload),
            published_unix_ms: now_unix_ms(),
        };
        self.publish_unchecked(header, payload)
    }

    /// Writes `header` and `payload` as they are, except for `header.sequence`, which is
    /// set to the next sequence number. Tests use it to publish corrupted snapshots.
    ///
    /// # Errors
    ///
    /// [`RingError::TooLarge`] when the payload does not fit a slot.
    pub fn publish_unchecked(
        &mut self,
        mut header: SlotHeader,
        payload: &[u8],
    ) -> Result<Published, RingError> {
        let capacity = self.region.geometry.payload_capacity();
        if payload.len() as u64 > capacity {
            return Err(RingError::TooLarge {
                len: payload.len(),
                capacity,
            });
        }
        let previous = self.region.word(word::PUBLISHED).load(Ordering::SeqCst);
        let sequence = (previous >> 8) + 1;
        header.sequence = sequence;
        let slot = self.free_slot(previous);

        let words = self.region.slot_words(slot);
        let (head, body) = words.split_at((SLOT_HEADER_LEN / 8) as usize);
        store_bytes(body, payload);
        let fields = [
            (slot_word::MAGIC, header.magic),
            (slot_word::VERSION, header.version),
            (slot_word::GENERATION, header.generation),
            (slot_word::SEQUENCE, header.sequence),
            (slot_word::PAYLOAD_LEN, header.payload_len),
            (slot_word::CHECKSUM, header.checksum),
            (slot_word::PUBLISHED_UNIX_MS, header.published_unix_ms),
        ];
        for (index, value) in fields {
            head[index].store(value, Ordering::Relaxed);
        }
        // SeqCst orders the slot writes before the publication and pairs with the
        // reader's hazard store (see `free_slot`).
        self.region
            .word(word::PUBLISHED)
            .store(sequence << 8 | u64::from(slot), Ordering::SeqCst);
        Ok(Published {
            sequence,
            slot,
            generation: header.generation,
            checksum: header.checksum,
            published_unix_ms: header.published_unix_ms,
        })
    }

    /// Picks the lowest slot that is neither published nor held by the reader.
    ///
    /// The reader stores its hazard and then re-reads `published`, all SeqCst. If its
    /// re-read still saw slot `s` published, its hazard store came before any later
    /// publication, and this function runs after the writer's latest publication, so
    /// it loads that hazard and avoids `s`.
    fn free_slot(&self, published: u64) -> u32 {
        let current = (published != 0).then_some((published & 0xff) as u32);
        let hazard = self.region.word(word::HAZARD).load(Ordering::SeqCst);
        let held = hazard.checked_sub(1).map(|slot| slot as u32);
        (0..self.region.geometry.slots)
            .find(|&slot| Some(slot) != current && Some(slot) != held)
            .unwrap_or(0)
    }

    /// Returns what the dataplane last reported.
    pub fn dataplane(&self) -> DataplaneStatus {
        let load = |index| self.region.word(index).load(Ordering::Acquire);
        DataplaneStatus {
            applied_generation: load(word::APPLIED_GENERATION),
            rejected: load(word::REJECTED),
            rejected_generation: load(word::REJECTED_GENERATION),
            consumed_sequence: load(word::CONSUMED_SEQUENCE),
            heartbeat_unix_ms: load(word::DATAPLANE_HEARTBEAT_MS),
        }
    }

    /// Records that the control plane is alive.
    pub fn heartbeat(&self) {
        self.region
            .word(word::CONTROLPLANE_HEARTBEAT_MS)
            .store(now_unix_ms(), Ordering::Release);
    }

    /// Copies the dataplane's latest counters, or `None` when it has written none or was
    /// writing during every attempt.
    pub fn read_counters(&self) -> Option<Vec<u8>> {
        let sequence = self.region.word(word::COUNTERS_SEQUENCE);
        let area = self.region.counters_words();
        for _ in 0..READ_ATTEMPTS {
            let before = sequence.load(Ordering::Acquire);
            if before == 0 {
                return None;
            }
            if before % 2 == 1 {
                std::thread::yield_now();
                continue;
            }
            let len = area[0].load(Ordering::Relaxed);
            let capacity = (area.len() as u64 - 1) * 8;
            let bytes = (len <= capacity).then(|| load_bytes(&area[1..], len as usize));
            fence(Ordering::Acquire);
            if sequence.load(Ordering::Relaxed) == before {
                return bytes;
            }
        }
        None
    }
}

/// A snapshot copied out of its slot, checksum verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub sequence: u64,
    pub generation: u64,
    pub published_unix_ms: u64,
    pub payload: Vec<u8>,
}

/// The result of one [`Subscriber::poll`].
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// No snapshot newer than the last one consumed.
    Nothing,
    Snapshot(Delivery),
    /// The newest snapshot failed validation; it is consumed and not offered again.
    Invalid {
        sequence: u64,
        generation: u64,
        error: SlotError,
    },
}

/// The dataplane's side: takes new snapshots and writes counters. It takes an
/// exclusive open file description lock on the file's first byte, which does not
/// conflict with the writer's `flock`. A second reader, whose heartbeats and counters
/// would mix with the first one's, is rejected. The kernel releases the lock when the
/// process dies, even by SIGKILL.
#[derive(Debug)]
pub struct Subscriber {
    region: Region,
    last_sequence: u64,
}

impl Subscriber {
    /// Opens or creates the region at `path`. A new subscriber offers the snapshot the
    /// region publishes now on its first poll.
    ///
    /// # Errors
    ///
    /// [`RingError`] when the file cannot be created or mapped or is not a ring, and
    /// [`RingError::ReaderLocked`] when another reader holds the reader lock.
    pub fn attach(path: &Path, geometry: Geometry) -> Result<Subscriber, RingError> {
        let region = Region::create_or_open(path, geometry)?;
        let lock = libc::flock {
            l_type: libc::F_WRLCK as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 0,
            l_len: 1,
            // Open file description locks require 0 here.
            l_pid: 0,
        };
        // SAFETY: fcntl takes a descriptor that `region.file` keeps open for the call and
        // a pointer to a `flock` that lives on this stack frame for the call; F_OFD_SETLK
        // only reads it.
        let locked = unsafe { libc::fcntl(region.file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
        if locked != 0 {
            let error = io::Error::last_os_error();
            if matches!(error.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) {
                let pid = region.word(word::READER_PID).load(Ordering::SeqCst);
                return Err(RingError::ReaderLocked {
                    path: path.to_owned(),
                    pid: if pid == 0 {
                        "(unknown)".to_owned()
                    } else {
                        pid.to_string()
                    },
                });
            }
            return Err(RingError::Io {
                action: "lock",
                path: path.to_owned(),
                source: error,
            });
        }
        region
            .word(word::READER_PID)
            .store(u64::from(std::process::id()), Ordering::SeqCst);
        Ok(Subscriber {
            region,
            last_sequence: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.region.path
    }

    /// Copies and validates the newest snapshot if it was not consumed yet. Never
    /// waits: when the writer keeps moving during the bounded attempts, it returns
    /// `Nothing` and the next poll tries again.
    pub fn poll(&mut self) -> Received {
        let published_word = self.region.word(word::PUBLISHED);
        let hazard = self.region.word(word::HAZARD);
        for _ in 0..READ_ATTEMPTS {
            let published = published_word.load(Ordering::SeqCst);
            let sequence = published >> 8;
            if published == 0 || sequence == self.last_sequence {
                return Received::Nothing;
            }
            let slot = published & 0xff;
            if slot >= u64::from(self.region.geometry.slots) {
                return self.consume_invalid(
                    sequence,
                    0,
                    SlotError::SlotOutOfRange {
                        slot,
                        slots: self.region.geometry.slots,
                    },
                );
            }
            hazard.store(slot + 1, Ordering::SeqCst);
            if published_word.load(Ordering::SeqCst) != published {
                continue;
            }
            let copied = self.copy_slot(slot as u32, sequence);
            hazard.store(0, Ordering::SeqCst);
            return match copied {
                Ok(delivery) => {
                    self.consume(sequence);
                    Received::Snapshot(delivery)
                }
                Err((generation, error)) => self.consume_invalid(sequence, generation, error),
            };
        }
        hazard.store(0, Ordering::SeqCst);
        Received::Nothing
    }

    fn copy_slot(&self, slot: u32, sequence: u64) -> Result<Delivery, (u64, SlotError)> {
        let words = self.region.slot_words(slot);
        let (head, body) = words.split_at((SLOT_HEADER_LEN / 8) as usize);
        let load = |index: usize| head[index].load(Ordering::Relaxed);
        let generation = load(slot_word::GENERATION);
        let fail = |error| Err((generation, error));

        let magic = load(slot_word::MAGIC);
        if magic != SLOT_MAGIC {
            return fail(SlotError::Magic(magic));
        }
        let version = load(slot_word::VERSION);
        if version != PAYLOAD_VERSION {
            return fail(SlotError::Version(version));
        }
        let found = load(slot_word::SEQUENCE);
        if found != sequence {
            return fail(SlotError::Sequence {
                found,
                expected: sequence,
            });
        }
        let len = load(slot_word::PAYLOAD_LEN);
        let capacity = self.region.geometry.payload_capacity();
        if len > capacity {
            return fail(SlotError::Length { len, capacity });
        }
        let payload = load_bytes(body, len as usize);
        let computed = checksum(&payload);
        let found = load(slot_word::CHECKSUM);
        if computed != found {
            return fail(SlotError::Checksum { found, computed });
        }
        Ok(Delivery {
            sequence,
            generation,
            published_unix_ms: load(slot_word::PUBLISHED_UNIX_MS),
            payload,
        })
    }

    fn consume(&mut self, sequence: u64) {
        self.last_sequence = sequence;
        self.region
            .word(word::CONSUMED_SEQUENCE)
            .store(sequence, Ordering::Release);
    }

    fn consume_invalid(&mut self, sequence: u64, generation: u64, error: SlotError) -> Received {
        self.consume(sequence);
        Received::Invalid {
            sequence,
            generation,
            error,
        }
    }

    /// Records that the dataplane now runs `generation`.
    pub fn report_applied(&self, generation: u64) {
        self.region
            .word(word::APPLIED_GENERATION)
            .store(generation, Ordering::Release);
    }

    /// Counts a rejected snapshot of `generation`, including one whose payload passed
    /// the checksum but failed decoding.
    pub fn report_rejected(&self, generation: u64) {
        self.region
            .word(word::REJECTED_GENERATION)
            .store(generation, Ordering::Release);
        self.region
            .word(word::REJECTED)
            .fetch_add(1, Ordering::AcqRel);
    }

    /// Records that the dataplane is alive.
    pub fn heartbeat(&self) {
        self.region
            .word(word::DATAPLANE_HEARTBEAT_MS)
            .store(now_unix_ms(), Ordering::Release);
    }

    /// Returns the time of the control plane's last heartbeat, 0 if none.
    pub fn controlplane_heartbeat_unix_ms(&self) -> u64 {
        self.region
            .word(word::CONTROLPLANE_HEARTBEAT_MS)
            .load(Ordering::Acquire)
    }

    /// Replaces the counters area with `bytes` under the sequence lock.
    ///
    /// # Errors
    ///
    /// [`RingError::TooLarge`] when `bytes` does not fit the counters area.
    pub fn write_counters(&self, bytes: &[u8]) -> Result<(), RingError> {
        let area = self.region.counters_words();
        let capacity = (area.len() as u64 - 1) * 8;
        if bytes.len() as u64 > capacity {
            return Err(RingError::TooLarge {
                len: bytes.len(),
                capacity,
            });
        }
        let sequence = self.region.word(word::COUNTERS_SEQUENCE);
        let odd = sequence.load(Ordering::Relaxed) | 1;
        sequence.store(odd, Ordering::Relaxed);
        fence(Ordering::Release);
        area[0].store(bytes.len() as u64, Ordering::Relaxed);
        store_bytes(&area[1..], bytes);
        sequence.store(odd + 1, Ordering::Release);
        Ok(())
    }
}
