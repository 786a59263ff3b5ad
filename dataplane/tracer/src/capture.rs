//! Reading pcap and pcapng captures and writing pcap files.
//!
//! The reader frames each record itself (a pcap record header, a pcapng block's lengths)
//! and hands only whole records to pcap-file's parsers. A capture copied while tcpdump
//! still writes it, or a damaged length field, is then reported with the frame, the field
//! and the byte counts, after every whole frame before it has been traced.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::path::Path;
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::interface_statistics::InterfaceStatisticsOption;
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::{DataLink, Endianness, PcapError, TsResolution};
use thiserror::Error;

/// The path `-`: standard input for `--input`, and rejected for the pcap outputs.
pub const STDIN_PATH: &str = "-";
/// Magic number at the start of a pcapng file (a section header block).
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];
const PCAPNG_SECTION_HEADER: u32 = 0x0a0d_0d0a;
const PCAPNG_INTERFACE_DESCRIPTION: u32 = 1;
const PCAPNG_PACKET: u32 = 2;
const PCAPNG_SIMPLE_PACKET: u32 = 3;
const PCAPNG_NAME_RESOLUTION: u32 = 4;
const PCAPNG_INTERFACE_STATISTICS: u32 = 5;
const PCAPNG_ENHANCED_PACKET: u32 = 6;
/// The section header's byte-order magic as read in big-endian order.
const PCAPNG_BYTE_ORDER_MAGIC: u32 = 0x1a2b_3c4d;
/// Type and total length, the fields every pcapng block starts with.
const PCAPNG_BLOCK_HEADER_LEN: usize = 8;
/// A section header block with no options: header, byte-order magic, versions, section
/// length and the trailing length.
const PCAPNG_MIN_SECTION_HEADER_LEN: usize = 28;
const PCAPNG_MIN_BLOCK_LEN: usize = 12;
const PCAP_HEADER_LEN: usize = 24;
const PCAP_RECORD_HEADER_LEN: usize = 16;

/// Largest pcap record or pcapng block the reader accepts: 64 times the 262144-byte
/// snapshot length limit of tcpdump and Wireshark. Only a damaged length field exceeds it,
/// and it bounds the buffer that such a field makes the reader allocate.
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// Snapshot length of every pcap the tracer writes: the largest one tcpdump and Wireshark
/// accept, so GRO/TSO frames up to 256 KiB are kept whole and every tool can read the
/// file. Longer frames are cut to it and counted.
pub const OUTPUT_SNAPLEN: usize = 262_144;

#[derive(Debug, Error)]
pub enum TraceError {
    #[error(transparent)]
    Config(#[from] spike_core::config::ConfigError),
    #[error(transparent)]
    Snapshot(#[from] spike_core::snapshot::SnapshotError),
    #[error(transparent)]
    Worker(#[from] spike_core::worker::WorkerError),
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read {path}: read error: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a readable pcap or pcapng file: {source}")]
    Format { path: String, source: PcapError },
    #[error("{path} is not a capture: its file header ends after {present} of {expected} bytes")]
    HeaderCut {
        path: String,
        present: usize,
        expected: usize,
    },
    /// A pcapng file whose first section header block has a length or magic field that no
    /// capture tool writes, so no frame can be read.
    #[error("{path} is not a readable capture: its file header has {field} {value}, expected {expected}")]
    HeaderDamaged {
        path: String,
        field: &'static str,
        value: u64,
        expected: String,
    },
    /// The file ends inside a record, as when it is copied while the capture tool still
    /// writes it. Every whole frame before the record was traced.
    #[error(
        "{path}: capture ends inside {part} ({present} of {expected} bytes present); the \
         frames before it were traced, and a copy taken after the capture tool stops contains \
         the rest"
    )]
    Cut {
        path: String,
        part: String,
        present: usize,
        expected: usize,
    },
    /// A length or magic field that no capture tool writes, so the file cannot be read
    /// past it.
    #[error(
        "{path}: {part} has {field} {value}, expected {expected}; the file is damaged there \
         and the frames before it were traced"
    )]
    Damaged {
        path: String,
        part: String,
        field: &'static str,
        value: u64,
        expected: String,
    },
    #[error(
        "{path}: {part} cannot be decoded ({source}); the file is damaged there and the \
         frames before it were traced"
    )]
    BadBlock {
        path: String,
        part: String,
        source: PcapError,
    },
    #[error("{path} has link type {link:?}; only Ethernet captures can be traced")]
    LinkType { path: String, link: DataLink },
    #[error(
        "{path}: frame {frame} names interface {interface}, but interface {interface} is not \
         defined (the section defines {defined}); the file is damaged there and the frames \
         before it were traced"
    )]
    UndefinedInterface {
        path: String,
        frame: u64,
        interface: u32,
        defined: usize,
    },
    /// Records whose captured length exceeds the frame's original length. Their captured
    /// bytes were traced, but one of the two lengths is wrong.
    #[error(
        "{path}: {count} records have a captured length above their original length, \
         first frame {first}; the file is damaged there, and those frames were traced with \
         the bytes captured"
    )]
    CapturedOverOriginal {
        path: String,
        count: usize,
        first: u64,
    },
    /// Frames on pcapng interfaces that are not Ethernet, each shown as `skipped`.
    #[error(
        "{path}: {count} frames on interfaces that are not Ethernet were skipped \
         ({interfaces}); every Ethernet frame was traced"
    )]
    SkippedFrames {
        path: String,
        count: u64,
        interfaces: String,
    },
    #[error(
        "--{first} and --{second} both name {path}; give each its own file, or the trace \
         overwrites what it reads or writes"
    )]
    SamePath {
        first: &'static str,
        second: &'static str,
        path: String,
    },
    /// `-` given as a pcap output. Standard output carries the per-frame lines, so `-`
    /// would otherwise create a file named `-`.
    #[error(
        "--{option} -: standard output carries the per-frame lines, so the pcap needs a file \
         or a pipe; give a path such as out.pcap (./- for a file named -), or a process \
         substitution such as `--{option} >(tshark -r -)`"
    )]
    OutputDash { option: &'static str },
    /// A pcap output that is the file or pipe standard output already writes to, as with
    /// `--output out.pcap > out.pcap` or `--output /dev/stdout`.
    #[error(
        "--{option} {path} is where standard output goes, and standard output carries the          per-frame lines, so the two would mix into one corrupt file; send the lines or the          pcap elsewhere"
    )]
    OutputIsStdout { option: &'static str, path: String },
    #[error("cannot write {path}: write error: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write to standard output: {0}")]
    Stdout(std::io::Error),
}

impl TraceError {
    /// Returns true when the capture stops at a cut or damaged record. The frames before
    /// it were read, so the trace still prints its summary.
    pub fn ends_capture_early(&self) -> bool {
        matches!(
            self,
            TraceError::Cut { .. }
                | TraceError::Damaged { .. }
                | TraceError::BadBlock { .. }
                | TraceError::UndefinedInterface { .. }
        )
    }
}

/// One frame read from a capture.
pub struct CapturedFrame<'a> {
    pub timestamp: Duration,
    pub data: Cow<'a, [u8]>,
    /// Length of the frame on the wire, more than `data` holds when the capture tool cut
    /// it short (a snapshot length such as `tcpdump -s`).
    pub original_len: usize,
}

impl CapturedFrame<'_> {
    /// Returns true when the capture tool stored fewer bytes than the frame had on the wire.
    pub fn is_cut(&self) -> bool {
        self.original_len > self.data.len()
    }
}

/// One packet record of a capture.
pub enum Record<'a> {
    /// An Ethernet frame, which the core can decide.
    Frame(CapturedFrame<'a>),
    /// A frame on a pcapng interface of another link type, such as Linux cooked capture
    /// (`tcpdump -i any`). It has no Ethernet header, so it cannot be decided.
    OtherLink { interface: u32, link: DataLink },
}

/// Formats a link type as its pcap-file name and LINKTYPE_ number, such as
/// `LINUX_SLL (113)`.
pub fn link_type_name(link: DataLink) -> String {
    match link {
        DataLink::Unknown(number) => format!("{number}"),
        known => format!("{known:?} ({})", u32::from(known)),
    }
}

/// Packet losses that pcapng Interface Statistics Blocks report. A count is `None` when no
/// block has its option.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatisticsDrops {
    /// `isb_ifdrop`: dropped by the network interface.
    pub interface: Option<u64>,
    /// `isb_osdrop`: dropped by the operating system.
    pub os: Option<u64>,
}

enum Format {
    Pcap(PcapHeader),
    PcapNg(Box<PcapNgParser>),
}

/// The capture file and the buffer for its current record.
struct Input {
    path: String,
    file: BufReader<Box<dyn Read>>,
    /// The current record, reused so that reading allocates only for a longer one.
    record: Vec<u8>,
}

impl Input {
    /// Reads up to `len` bytes into `record[at..]` and returns how many the file had.
    fn fill(&mut self, at: usize, len: usize) -> Result<usize, TraceError> {
        self.record.resize(at + len, 0);
        let mut filled = 0;
        while filled < len {
            match self.file.read(&mut self.record[at + filled..]) {
                Ok(0) => break,
                Ok(read) => filled += read,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(TraceError::Read {
                        path: self.path.clone(),
                        source,
                    })
                }
            }
        }
        self.record.truncate(at + filled);
        Ok(filled)
    }

    fn cut(&self, part: String, present: usize, expected: usize) -> TraceError {
        TraceError::Cut {
            path: self.path.clone(),
            part,
            present,
            expected,
        }
    }

    fn damaged(
        &self,
        part: String,
        field: &'static str,
        value: u64,
        expected: String,
    ) -> TraceError {
        TraceError::Damaged {
            path: self.path.clone(),
            part,
            field,
            value,
            expected,
        }
    }

    fn u32_at(&self, at: usize, endianness: Endianness) -> u32 {
        let bytes = [
            self.record[at],
            self.record[at + 1],
            self.record[at + 2],
            self.record[at + 3],
        ];
        match endianness {
            Endianness::Big => u32::from_be_bytes(bytes),
            Endianness::Little => u32::from_le_bytes(bytes),
        }
    }

    /// Reads the next pcapng block whole into `record` and returns its type, or `None` at
    /// the end of the file. `endianness` is the current section's byte order, which a
    /// section header block replaces with its own.
    fn read_block(
        &mut self,
        endianness: Endianness,
        frames: u64,
    ) -> Result<Option<u32>, TraceError> {
        let present = self.fill(0, PCAPNG_BLOCK_HEADER_LEN)?;
        if present == 0 {
            return Ok(None);
        }
        if present < 4 {
            let part = format!("the block header {}", after_frame(frames));
            return Err(self.cut(part, present, PCAPNG_BLOCK_HEADER_LEN));
        }
        // A section header's type reads the same in both byte orders.
        let kind = self.u32_at(0, endianness);
        let part = block_part(kind, frames);
        if present < PCAPNG_BLOCK_HEADER_LEN {
            return Err(self.cut(part, present, PCAPNG_BLOCK_HEADER_LEN));
        }

        let mut endianness = endianness;
        let mut minimum = PCAPNG_MIN_BLOCK_LEN;
        if kind == PCAPNG_SECTION_HEADER {
            let more = self.fill(PCAPNG_BLOCK_HEADER_LEN, 4)?;
            if more < 4 {
                return Err(self.cut(part, PCAPNG_BLOCK_HEADER_LEN + more, 12));
            }
            endianness = match self.u32_at(PCAPNG_BLOCK_HEADER_LEN, Endianness::Big) {
                PCAPNG_BYTE_ORDER_MAGIC => Endianness::Big,
                magic if magic.swap_bytes() == PCAPNG_BYTE_ORDER_MAGIC => Endianness::Little,
                magic => {
                    let expected = "0x1a2b3c4d in either byte order".to_owned();
                    return Err(self.damaged(part, "byte-order magic", magic.into(), expected));
                }
            };
            minimum = PCAPNG_MIN_SECTION_HEADER_LEN;
        }

        let length = self.u32_at(4, endianness) as usize;
        if length < minimum || !length.is_multiple_of(4) || length > MAX_RECORD_BYTES {
            let expected = format!("a multiple of 4 from {minimum} to {MAX_RECORD_BYTES} bytes");
            return Err(self.damaged(part, "block length", length as u64, expected));
        }
        let have = self.record.len();
        let present = self.fill(have, length - have)?;
        if have + present < length {
            return Err(self.cut(part, have + present, length));
        }
        let trailer = self.u32_at(length - 4, endianness);
        if trailer as usize != length {
            let expected = format!("{length}, the length at the block's start");
            return Err(self.damaged(part, "trailing block length", trailer.into(), expected));
        }
        Ok(Some(kind))
    }
}

/// Names a pcapng block in messages: a packet block by its frame number, any other by its
/// type and the frame before it.
fn block_part(kind: u32, frames: u64) -> String {
    let name = match kind {
        PCAPNG_ENHANCED_PACKET | PCAPNG_PACKET | PCAPNG_SIMPLE_PACKET => {
            return format!("frame {}", frames + 1)
        }
        PCAPNG_SECTION_HEADER => "the section header block".to_owned(),
        PCAPNG_INTERFACE_DESCRIPTION => "the interface description block".to_owned(),
        PCAPNG_NAME_RESOLUTION => "the name resolution block".to_owned(),
        PCAPNG_INTERFACE_STATISTICS => "the interface statistics block".to_owned(),
        other => format!("a block of type 0x{other:08x}"),
    };
    format!("{name} {}", after_frame(frames))
}

fn after_frame(frames: u64) -> String {
    if frames == 0 {
        "before the first frame".to_owned()
    } else {
        format!("after frame {frames}")
    }
}

/// Converts a pcapng timestamp, counted in units of the interface's `if_tsresol`
/// (microseconds when the option is absent) from its `if_tsoffset` seconds, into time
/// since the epoch.
fn interface_time(interface: &InterfaceDescriptionBlock, units: u64) -> Duration {
    let mut resolution = 6u8;
    let mut offset_s = 0u64;
    for option in &interface.options {
        match option {
            InterfaceDescriptionOption::IfTsResol(value) => resolution = *value,
            InterfaceDescriptionOption::IfTsOffset(value) => offset_s = *value,
            _ => {}
        }
    }
    let units = u128::from(units);
    // The high bit selects a negative power of 2 instead of 10.
    let exponent = u32::from(resolution & 0x7f);
    let nanos = if resolution & 0x80 != 0 {
        (units * 1_000_000_000) >> exponent
    } else if exponent <= 9 {
        units * 10u128.pow(9 - exponent)
    } else {
        10u128
            .checked_pow(exponent - 9)
            .map_or(0, |divisor| units / divisor)
    };
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
        .saturating_add(Duration::from_secs(offset_s))
}

/// A pcap or pcapng reader, chosen by the file's magic number.
pub struct CaptureReader {
    input: Input,
    format: Format,
    frames: u64,
    /// Sum of the drop counts of obsolete pcapng Packet Blocks and of Enhanced Packet
    /// Blocks' `epb_dropcount`: packets lost between two captured ones, which the trace
    /// cannot show. The sum saturates at `u64::MAX`.
    pub interface_drops: u64,
    /// The latest Interface Statistics Block counts per section and interface. Each block
    /// gives totals since the capture started, so a later one replaces an earlier one.
    statistics: HashMap<(u32, u32), StatisticsDrops>,
    section: u32,
}

impl CaptureReader {
    /// Opens a capture file, or standard input for `-`. The file is read once from start
    /// to end, so pipes, FIFOs and `/dev/stdin` work as well as regular files.
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        let display = path.display().to_string();
        let open_error = |source| TraceError::Open {
            path: display.clone(),
            source,
        };
        let mut file: Box<dyn Read> = if path == Path::new(STDIN_PATH) {
            Box::new(std::io::stdin().lock())
        } else {
            if path.is_dir() {
                return Err(open_error(std::io::Error::other(
                    "it is a directory, not a capture file",
                )));
            }
            Box::new(File::open(path).map_err(open_error)?)
        };
        // The magic number is read ahead and put back in front of the stream, because a
        // pipe cannot seek back to the start.
        let mut magic = Vec::with_capacity(PCAPNG_MAGIC.len());
        (&mut file)
            .take(PCAPNG_MAGIC.len() as u64)
            .read_to_end(&mut magic)
            .map_err(|source| TraceError::Read {
                path: display.clone(),
                source,
            })?;
        if magic.is_empty() {
            return Err(open_error(std::io::Error::other("the file is empty")));
        }
        let is_pcapng = magic == PCAPNG_MAGIC;
        let mut input = Input {
            path: display,
            file: BufReader::new(Box::new(std::io::Cursor::new(magic).chain(file))),
            record: Vec::new(),
        };
        let format = if is_pcapng {
            Format::PcapNg(Box::new(open_pcapng(&mut input)?))
        } else {
            Format::Pcap(open_pcap(&mut input)?)
        };
        Ok(CaptureReader {
            input,
            format,
            frames: 0,
            interface_drops: 0,
            statistics: HashMap::new(),
            section: 0,
        })
    }

    /// Drops reported by Interface Statistics Blocks, summed over interfaces. The sums
    /// saturate at `u64::MAX`.
    pub fn statistics_drops(&self) -> StatisticsDrops {
        let sum = |counts: Vec<u64>| {
            let total = counts
                .iter()
                .fold(0u64, |total, count| total.saturating_add(*count));
            (!counts.is_empty()).then_some(total)
        };
        StatisticsDrops {
            interface: sum(self
                .statistics
                .values()
                .filter_map(|s| s.interface)
                .collect()),
            os: sum(self.statistics.values().filter_map(|s| s.os).collect()),
        }
    }

    /// Reads the next packet record, or returns `None` at the end of the file.
    ///
    /// # Errors
    ///
    /// Besides unreadable files, a record cut short by the end of the file or with a
    /// damaged length gives an error for which [`TraceError::ends_capture_early`] holds.
    pub fn next_frame(&mut self) -> Result<Option<Record<'_>>, TraceError> {
        match &self.format {
            Format::Pcap(header) => {
                let header = *header;
                self.next_pcap(header)
            }
            Format::PcapNg(_) => self.next_pcapng(),
        }
    }

    fn next_pcap(&mut self, header: PcapHeader) -> Result<Option<Record<'_>>, TraceError> {
        let frame = self.frames + 1;
        let input = &mut self.input;
        let present = input.fill(0, PCAP_RECORD_HEADER_LEN)?;
        if present == 0 {
            return Ok(None);
        }
        if present < PCAP_RECORD_HEADER_LEN {
            let part = format!("the record header of frame {frame}");
            return Err(input.cut(part, present, PCAP_RECORD_HEADER_LEN));
        }
        let field = |index: usize| input.u32_at(index * 4, header.endianness);
        let (seconds, fraction, captured, original) = (field(0), field(1), field(2), field(3));
        let captured = captured as usize;
        let limit = record_limit(header.snaplen);
        if captured > limit {
            let part = format!("the record header of frame {frame}");
            let expected = if limit < MAX_RECORD_BYTES {
                format!("at most {limit} bytes, the file header's snapshot length")
            } else {
                format!("at most {MAX_RECORD_BYTES} bytes")
            };
            return Err(input.damaged(part, "captured length", captured as u64, expected));
        }

        let present = input.fill(0, captured)?;
        if present < captured {
            return Err(input.cut(format!("frame {frame}"), present, captured));
        }
        self.frames = frame;
        let fraction_ns = if header.ts_resolution == TsResolution::NanoSecond {
            fraction
        } else {
            fraction.saturating_mul(1000)
        };
        Ok(Some(Record::Frame(CapturedFrame {
            timestamp: Duration::new(u64::from(seconds), 0)
                + Duration::from_nanos(u64::from(fraction_ns)),
            original_len: original as usize,
            data: Cow::Borrowed(&self.input.record),
        })))
    }

    fn next_pcapng(&mut self) -> Result<Option<Record<'_>>, TraceError> {
        let Format::PcapNg(parser) = &mut self.format else {
            return Ok(None);
        };
        let input = &mut self.input;
        loop {
            let endianness = parser.section().endianness;
            let Some(kind) = input.read_block(endianness, self.frames)? else {
                return Ok(None);
            };
            let bad_block = |source| TraceError::BadBlock {
                path: input.path.clone(),
                part: block_part(kind, self.frames),
                source,
            };
            let (_, block) = parser.next_block(&input.record).map_err(bad_block)?;
            let simple = matches!(block, Block::SimplePacket(_));
            // Timestamps stay in the interface's units until the interface is known.
            let (interface_id, units, original_len, mut data) = match block {
                Block::EnhancedPacket(packet) => {
                    for option in &packet.options {
                        if let EnhancedPacketOption::DropCount(count) = option {
                            self.interface_drops = self.interface_drops.saturating_add(*count);
                        }
                    }
                    (
                        packet.interface_id,
                        // pcap-file stores the raw count as nanoseconds, whatever its unit.
                        Some(u64::try_from(packet.timestamp.as_nanos()).unwrap_or(u64::MAX)),
                        packet.original_len as usize,
                        packet.data.into_owned(),
                    )
                }
                // Obsolete, but tshark still numbers them as frames; skipping them
                // would shift every later frame number.
                Block::Packet(packet) => {
                    let count = u64::from(packet.drop_count);
                    self.interface_drops = self.interface_drops.saturating_add(count);
                    (
                        u32::from(packet.interface_id),
                        Some(packet.timestamp),
                        packet.original_len as usize,
                        packet.data.into_owned(),
                    )
                }
                Block::SimplePacket(packet) => (
                    0,
                    None,
                    packet.original_len as usize,
                    packet.data.into_owned(),
                ),
                Block::InterfaceStatistics(statistics) => {
                    let key = (self.section, statistics.interface_id);
                    let drops = self.statistics.entry(key).or_default();
                    for option in &statistics.options {
                        match option {
                            InterfaceStatisticsOption::IsbIfDrop(count) => {
                                drops.interface = Some(*count)
                            }
                            InterfaceStatisticsOption::IsbOsDrop(count) => drops.os = Some(*count),
                            _ => {}
                        }
                    }
                    continue;
                }
                Block::SectionHeader(_) => {
                    self.section += 1;
                    continue;
                }
                _ => continue,
            };
            self.frames += 1;
            let interfaces = parser.interfaces();
            let Some(interface) = interfaces.get(interface_id as usize) else {
                return Err(TraceError::UndefinedInterface {
                    path: input.path.clone(),
                    frame: self.frames,
                    interface: interface_id,
                    defined: interfaces.len(),
                });
            };
            if simple {
                let captured = simple_packet_captured_len(original_len, interface.snaplen);
                if captured > data.len() {
                    let expected = simple_packet_expected(data.len(), interface.snaplen);
                    let part = format!("frame {}", self.frames);
                    let value = original_len as u64;
                    return Err(input.damaged(part, "original length", value, expected));
                }
                // The rest of the block's data is padding to a multiple of 4 bytes.
                data.truncate(captured);
            }
            if interface.linktype != DataLink::ETHERNET {
                return Ok(Some(Record::OtherLink {
                    interface: interface_id,
                    link: interface.linktype,
                }));
            }
            return Ok(Some(Record::Frame(CapturedFrame {
                timestamp: units.map_or(Duration::ZERO, |units| interface_time(interface, units)),
                data: Cow::Owned(data),
                original_len,
            })));
        }
    }
}

/// Returns the captured length of a Simple Packet Block's frame. The block has no field
/// for it, so it is the original length cut to the snapshot length of interface 0 (0 for
/// none). Any block data after it is padding.
fn simple_packet_captured_len(original_len: usize, snaplen: u32) -> usize {
    match usize::try_from(snaplen) {
        Ok(0) | Err(_) => original_len,
        Ok(snaplen) => original_len.min(snaplen),
    }
}

/// Describes the original lengths a Simple Packet Block with `data_len` bytes of data
/// allows, for the message about one whose frame does not fit.
fn simple_packet_expected(data_len: usize, snaplen: u32) -> String {
    let limit = format!("at most {data_len} bytes, the packet data in the simple packet block");
    if snaplen == 0 {
        format!("{limit}, because interface 0 sets no snapshot length")
    } else {
        format!("{limit}, because interface 0's snapshot length is {snaplen}")
    }
}

/// Reads a pcapng file's first section header block and returns a parser for the rest.
/// That block is the file header, so a cut or damage in it leaves no frame to trace. It is
/// reported like a cut pcap file header.
fn open_pcapng(input: &mut Input) -> Result<PcapNgParser, TraceError> {
    match input.read_block(Endianness::Big, 0) {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Err(TraceError::HeaderCut {
                path: input.path.clone(),
                present: 0,
                expected: PCAPNG_MIN_SECTION_HEADER_LEN,
            })
        }
        Err(TraceError::Cut {
            path,
            present,
            expected,
            ..
        }) => {
            return Err(TraceError::HeaderCut {
                path,
                present,
                expected,
            })
        }
        Err(TraceError::Damaged {
            path,
            field,
            value,
            expected,
            ..
        }) => {
            return Err(TraceError::HeaderDamaged {
                path,
                field,
                value,
                expected,
            })
        }
        Err(error) => return Err(error),
    }
    let (_, parser) = PcapNgParser::new(&input.record).map_err(|source| TraceError::Format {
        path: input.path.clone(),
        source,
    })?;
    Ok(parser)
}

/// Returns the largest captured length of a pcap record: the file header's snapshot length,
/// or [`MAX_RECORD_BYTES`] when the header gives 0 or more than that.
fn record_limit(snaplen: u32) -> usize {
    match usize::try_from(snaplen) {
        Ok(0) | Err(_) => MAX_RECORD_BYTES,
        Ok(snaplen) => snaplen.min(MAX_RECORD_BYTES),
    }
}

/// Reads a pcap file header and checks that the capture contains Ethernet frames.
fn open_pcap(input: &mut Input) -> Result<PcapHeader, TraceError> {
    let present = input.fill(0, PCAP_HEADER_LEN)?;
    if present < PCAP_HEADER_LEN {
        return Err(TraceError::HeaderCut {
            path: input.path.clone(),
            present,
            expected: PCAP_HEADER_LEN,
        });
    }
    let (_, header) =
        PcapHeader::from_slice(&input.record).map_err(|source| TraceError::Format {
            path: input.path.clone(),
            source,
        })?;
    if header.datalink != DataLink::ETHERNET {
        return Err(TraceError::LinkType {
            path: input.path.clone(),
            link: header.datalink,
        });
    }
    Ok(header)
}

/// A pcap writer for Ethernet frames.
pub struct CaptureWriter {
    path: String,
    writer: PcapWriter<BufWriter<File>>,
    /// Count of frames longer than [`OUTPUT_SNAPLEN`], written cut to that length.
    pub cut_frames: u64,
}

impl CaptureWriter {
    pub fn create(path: &Path) -> Result<Self, TraceError> {
        let display = path.display().to_string();
        let file = File::create(path).map_err(|source| TraceError::Open {
            path: display.clone(),
            source,
        })?;
        let header = PcapHeader {
            snaplen: OUTPUT_SNAPLEN as u32,
            ..PcapHeader::default()
        };
        let writer = PcapWriter::with_header(BufWriter::new(file), header)
            .map_err(|source| write_error(&display, source))?;
        Ok(CaptureWriter {
            path: display,
            writer,
            cut_frames: 0,
        })
    }

    pub fn write(&mut self, timestamp: Duration, frame: &[u8]) -> Result<(), TraceError> {
        self.write_captured(timestamp, frame, frame.len())
    }

    /// Writes a frame that may already be cut short, keeping its length on the wire.
    pub fn write_captured(
        &mut self,
        timestamp: Duration,
        data: &[u8],
        original_len: usize,
    ) -> Result<(), TraceError> {
        let stored = &data[..data.len().min(OUTPUT_SNAPLEN)];
        if stored.len() < data.len() {
            self.cut_frames += 1;
        }
        let original_len = u32::try_from(original_len.max(data.len())).unwrap_or(u32::MAX);
        let packet = PcapPacket::new(timestamp, original_len, stored);
        self.writer
            .write_packet(&packet)
            .map(|_| ())
            .map_err(|source| write_error(&self.path, source))
    }

    /// Flushes the file; errors that a drop would hide are returned here.
    pub fn finish(self) -> Result<(), TraceError> {
        use std::io::Write;
        let path = self.path;
        self.writer
            .into_writer()
            .flush()
            .map_err(|source| TraceError::Write { path, source })
    }
}

/// Keeps the OS reason of a failed write, which pcap-file's own message hides.
fn write_error(path: &str, error: PcapError) -> TraceError {
    let source = match error {
        PcapError::IoError(source) => source,
        other => std::io::Error::other(other),
    };
    TraceError::Write {
        path: path.to_owned(),
        source,
    }
}
