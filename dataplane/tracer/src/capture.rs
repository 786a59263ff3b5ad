//! Reading pcap and pcapng captures and writing pcap files.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::{DataLink, PcapError, TsResolution};
use thiserror::Error;

/// Magic number at the start of a pcapng file (a section header block).
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

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
    #[error("{path} is not a readable pcap or pcapng file: {source}")]
    Format { path: String, source: PcapError },
    #[error("{path} has link type {link:?}; only Ethernet captures can be traced")]
    LinkType { path: String, link: DataLink },
    #[error(
        "{path}: frame {frame} names interface {interface}, but interface {interface} is not \
         defined (the section defines {defined}); the capture is damaged"
    )]
    UndefinedInterface {
        path: String,
        frame: u64,
        interface: u32,
        defined: usize,
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
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: PcapError },
    #[error("cannot write to standard output: {0}")]
    Stdout(std::io::Error),
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

enum Format {
    Pcap(PcapReader<BufReader<File>>),
    PcapNg(PcapNgReader<BufReader<File>>),
}

/// A pcap or pcapng reader, chosen by the file's magic number.
pub struct CaptureReader {
    path: String,
    format: Format,
    frames: u64,
    /// Sum of the drop counts of obsolete pcapng Packet Blocks: packets the capturing
    /// interface lost, which the trace cannot show.
    pub interface_drops: u64,
}

impl CaptureReader {
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        let display = path.display().to_string();
        let open_error = |source| TraceError::Open {
            path: display.clone(),
            source,
        };
        if path.is_dir() {
            return Err(TraceError::Open {
                path: display,
                source: std::io::Error::other("it is a directory, not a capture file"),
            });
        }
        let mut file = File::open(path).map_err(open_error)?;
        if file.metadata().map_err(open_error)?.len() == 0 {
            return Err(TraceError::Open {
                path: display,
                source: std::io::Error::other("the file is empty"),
            });
        }
        let mut magic = [0u8; 4];
        let is_pcapng = file.read_exact(&mut magic).is_ok() && magic == PCAPNG_MAGIC;
        file.seek(SeekFrom::Start(0)).map_err(open_error)?;
        let format_error = |source| TraceError::Format {
            path: display.clone(),
            source,
        };

        let format = if is_pcapng {
            Format::PcapNg(PcapNgReader::new(BufReader::new(file)).map_err(format_error)?)
        } else {
            let reader = PcapReader::new(BufReader::new(file)).map_err(format_error)?;
            let link = reader.header().datalink;
            if link != DataLink::ETHERNET {
                return Err(TraceError::LinkType {
                    path: display,
                    link,
                });
            }
            Format::Pcap(reader)
        };
        Ok(CaptureReader {
            path: display,
            format,
            frames: 0,
            interface_drops: 0,
        })
    }

    /// The next Ethernet frame, or `None` at the end of the file.
    pub fn next_frame(&mut self) -> Result<Option<CapturedFrame<'_>>, TraceError> {
        let path = &self.path;
        let format_error = |source| TraceError::Format {
            path: path.clone(),
            source,
        };
        match &mut self.format {
            // Raw records, because pcap-file 2.0 rejects an original length above the
            // file's snapshot length, which is exactly what `tcpdump -s` writes.
            Format::Pcap(reader) => {
                let nanoseconds = reader.header().ts_resolution == TsResolution::NanoSecond;
                match reader.next_raw_packet() {
                    None => Ok(None),
                    Some(Err(error)) => Err(format_error(error)),
                    Some(Ok(packet)) => {
                        self.frames += 1;
                        let fraction_ns = if nanoseconds {
                            packet.ts_frac
                        } else {
                            packet.ts_frac.saturating_mul(1000)
                        };
                        Ok(Some(CapturedFrame {
                            timestamp: Duration::new(u64::from(packet.ts_sec), 0)
                                + Duration::from_nanos(u64::from(fraction_ns)),
                            original_len: packet.orig_len as usize,
                            data: packet.data,
                        }))
                    }
                }
            }
            Format::PcapNg(reader) => loop {
                let (interface_id, timestamp, original_len, data) = match reader.next_block() {
                    None => return Ok(None),
                    Some(Err(error)) => return Err(format_error(error)),
                    Some(Ok(Block::EnhancedPacket(packet))) => (
                        packet.interface_id,
                        packet.timestamp,
                        packet.original_len as usize,
                        packet.data.into_owned(),
                    ),
                    // Obsolete, but tshark still numbers them as frames; skipping them
                    // would shift every later frame number.
                    Some(Ok(Block::Packet(packet))) => {
                        self.interface_drops += u64::from(packet.drop_count);
                        (
                            u32::from(packet.interface_id),
                            // The same reading pcap-file gives an Enhanced Packet Block's
                            // timestamp, so frames of both kinds stay in order.
                            Duration::from_nanos(packet.timestamp),
                            packet.original_len as usize,
                            packet.data.into_owned(),
                        )
                    }
                    Some(Ok(Block::SimplePacket(packet))) => (
                        0,
                        Duration::ZERO,
                        packet.original_len as usize,
                        packet.data.into_owned(),
                    ),
                    Some(Ok(_)) => continue,
                };
                self.frames += 1;
                let interfaces = reader.interfaces();
                let Some(interface) = interfaces.get(interface_id as usize) else {
                    return Err(TraceError::UndefinedInterface {
                        path: path.clone(),
                        frame: self.frames,
                        interface: interface_id,
                        defined: interfaces.len(),
                    });
                };
                if interface.linktype != DataLink::ETHERNET {
                    return Err(TraceError::LinkType {
                        path: path.clone(),
                        link: interface.linktype,
                    });
                }
                return Ok(Some(CapturedFrame {
                    timestamp,
                    data: Cow::Owned(data),
                    original_len,
                }));
            },
        }
    }
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
        let writer = PcapWriter::with_header(BufWriter::new(file), header).map_err(|source| {
            TraceError::Write {
                path: display.clone(),
                source,
            }
        })?;
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
            .map_err(|source| TraceError::Write {
                path: self.path.clone(),
                source,
            })
    }

    /// Flushes the file; errors that a drop would hide are returned here.
    pub fn finish(self) -> Result<(), TraceError> {
        use std::io::Write;
        let path = self.path;
        self.writer
            .into_writer()
            .flush()
            .map_err(|source| TraceError::Write {
                path,
                source: PcapError::IoError(source),
            })
    }
}
