//! Reading pcap and pcapng captures and writing pcap files.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::{DataLink, PcapError, TsResolution};
use thiserror::Error;

/// Magic number at the start of a pcapng file (a section header block).
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

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

enum Format {
    Pcap(PcapReader<BufReader<File>>),
    PcapNg(PcapNgReader<BufReader<File>>),
}

/// A pcap or pcapng reader, chosen by the file's magic number.
pub struct CaptureReader {
    path: String,
    format: Format,
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
                        Some(packet.interface_id),
                        packet.timestamp,
                        packet.original_len as usize,
                        packet.data.into_owned(),
                    ),
                    Some(Ok(Block::SimplePacket(packet))) => (
                        Some(0),
                        Duration::ZERO,
                        packet.original_len as usize,
                        packet.data.into_owned(),
                    ),
                    Some(Ok(_)) => continue,
                };
                let link = interface_id
                    .and_then(|id| reader.interfaces().get(id as usize))
                    .map(|interface| interface.linktype);
                if link != Some(DataLink::ETHERNET) {
                    return Err(TraceError::LinkType {
                        path: path.clone(),
                        link: link.unwrap_or(DataLink::NULL),
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
}

impl CaptureWriter {
    pub fn create(path: &Path) -> Result<Self, TraceError> {
        let display = path.display().to_string();
        let file = File::create(path).map_err(|source| TraceError::Open {
            path: display.clone(),
            source,
        })?;
        let writer = PcapWriter::new(BufWriter::new(file)).map_err(|source| TraceError::Write {
            path: display.clone(),
            source,
        })?;
        Ok(CaptureWriter {
            path: display,
            writer,
        })
    }

    pub fn write(&mut self, timestamp: Duration, frame: &[u8]) -> Result<(), TraceError> {
        let packet = PcapPacket::new(timestamp, frame.len() as u32, frame);
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
