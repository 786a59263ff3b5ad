//! `spike-trace`: runs every frame of a pcap or pcapng file through Spike's core with a
//! given config and shows where each one would go.
//!
//! It prints one line per input frame (its flow, the verdict, the chosen backend and
//! why), writes the frames Spike would send (encapsulated forwards, outer fragments and
//! ICMP replies) to an output pcap, and can write the frames handed to the kernel to a
//! second pcap. The decision is the dataplane's own code, so a trace answers "where
//! would this packet go" for the running dataplane with the same config.

mod capture;
mod summary;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use spike_core::config::{locate, ConfigError, Place};
use spike_core::flow::FlowKey;
use spike_core::snapshot::ServiceKey;
use spike_core::wire::MacAddr;
use spike_core::{Config, Counters, DropReason, Output, Snapshot, Verdict, Worker};

use crate::capture::{link_type_name, CaptureReader, CaptureWriter, Record, TraceError};
use crate::summary::PartialFlow;

/// Exit status 3: the capture stops inside a frame or at a damaged record, or the trace
/// skipped frames it cannot decide.
const EXIT_CAPTURE_ENDS_EARLY: u8 = 3;

const EXIT_STATUS_HELP: &str = "Exit status:
  0  every frame was traced; also when standard output closes early (`| head`),
     which ends the trace there unless --output or --kernel-output is written
  2  the config, the capture or an output file cannot be used; the message says why
  3  the capture ends inside a frame (copied while tcpdump still wrote it) or at a
     damaged record: every frame before it was traced and the summary and counters
     printed; the warning names the frame and the bytes present. Also when frames on a
     pcapng interface that is not Ethernet were skipped (each has a `skipped` line naming
     the interface and link type), or records have a captured length above their original
     length (each line ends in `damaged(...)`): every other frame was traced";

/// Runs a capture through Spike's forwarding decision.
#[derive(Parser, Debug)]
#[command(version, about, after_help = EXIT_STATUS_HELP)]
struct Args {
    /// Dataplane config file (TOML).
    #[arg(short, long)]
    config: PathBuf,

    /// Capture to read: pcap or pcapng with Ethernet frames. `-` reads standard input, and
    /// pipes and FIFOs work too, such as `--input <(zcat capture.pcap.gz)`.
    #[arg(short, long)]
    input: PathBuf,

    /// Pcap file for the frames Spike sends out: encapsulated packets and ICMP replies. It
    /// must not be the config, the input or --kernel-output. Standard output carries the
    /// per-frame lines, so `-` and the file or pipe that standard output goes to are
    /// rejected. A pipe works, such as `--output >(tshark -r -)`.
    #[arg(short, long)]
    output: Option<PathBuf>,

    /// Pcap file for the frames Spike hands to the kernel. The path rules of --output apply.
    #[arg(long)]
    kernel_output: Option<PathBuf>,

    /// Print the counters after the last frame.
    #[arg(long)]
    counters: bool,

    /// Trace every frame whatever its destination MAC. Without it, a config with a [dpdk]
    /// section and dpdk.mac_filter on (the default) traces frames as the dataplane
    /// decides them: unicast to a MAC other than node.mac is drop:other_host_mac, and a
    /// broadcast or multicast frame is never forwarded. Give it for a capture taken on
    /// another host or port, where frames carry other MACs. A config without [dpdk]
    /// never filters.
    #[arg(long)]
    no_mac_filter: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(warnings) if warnings.is_empty() => ExitCode::SUCCESS,
        Ok(warnings) => {
            for warning in warnings {
                report(&format!("warning: {warning}"));
            }
            ExitCode::from(EXIT_CAPTURE_ENDS_EARLY)
        }
        Err(error) => {
            report(&error.to_string());
            ExitCode::from(2)
        }
    }
}

/// Writes a message to standard error and ignores a failure. `eprintln!` panics when
/// standard error is a closed pipe (`2>&1 | head`), and the exit status still reports the
/// outcome.
fn report(message: &str) {
    let _ = writeln!(std::io::stderr(), "spike-trace: {message}");
}

/// Standard output that a reader may close (`spike-trace ... | head`): that is no error, so
/// later lines are discarded. The trace then stops early unless it still writes pcap
/// files, which are completed so that they do not depend on how much a reader took.
struct ClosablePipe<W: Write> {
    inner: W,
    closed: bool,
}

impl<W: Write> ClosablePipe<W> {
    fn new(inner: W) -> Self {
        ClosablePipe {
            inner,
            closed: false,
        }
    }

    fn absorb_closed<T>(&mut self, result: std::io::Result<T>, done: T) -> std::io::Result<T> {
        match result {
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(done)
            }
            other => other,
        }
    }
}

impl<W: Write> Write for ClosablePipe<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.closed {
            return Ok(bytes.len());
        }
        let result = self.inner.write(bytes);
        self.absorb_closed(result, bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.closed {
            return Ok(());
        }
        let result = self.inner.flush();
        self.absorb_closed(result, ())
    }
}

/// Rejects an output path that names the config, the input or the other output. Opening
/// a file the trace reads as an output would truncate it before it is read, and two
/// outputs sharing a file interleave into a corrupt pcap. Also rejects `-` as an output,
/// because standard output carries the per-frame lines. Runs before any file is opened
/// for writing.
fn check_distinct_paths(args: &Args) -> Result<(), TraceError> {
    let mut named: Vec<(&'static str, &Path)> = vec![("config", args.config.as_path())];
    if args.input != Path::new(capture::STDIN_PATH) {
        named.push(("input", args.input.as_path()));
    }
    let outputs = [
        ("output", args.output.as_deref()),
        ("kernel-output", args.kernel_output.as_deref()),
    ];
    for (option, path) in outputs {
        let Some(path) = path else {
            continue;
        };
        if path.as_os_str() == capture::STDIN_PATH {
            return Err(TraceError::OutputDash { option });
        }
        if is_stdout(path) {
            return Err(TraceError::OutputIsStdout {
                option,
                path: path.display().to_string(),
            });
        }
        if let Some((first, _)) = named.iter().find(|(_, named)| same_file(named, path)) {
            return Err(TraceError::SamePath {
                first,
                second: option,
                path: path.display().to_string(),
            });
        }
        named.push((option, path));
    }
    Ok(())
}

/// Checks whether two paths name one file: the same device and inode when both exist
/// (hard links, bind mounts), otherwise the same canonical path.
fn same_file(first: &Path, second: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if let (Ok(a), Ok(b)) = (std::fs::metadata(first), std::fs::metadata(second)) {
        return a.dev() == b.dev() && a.ino() == b.ino();
    }
    canonical(first) == canonical(second)
}

/// Checks whether `path` is the file or pipe that standard output writes to. The shell
/// creates the target of `> file` before the trace starts, so that file exists here. A
/// device such as /dev/null keeps nothing to corrupt, so it may serve as both.
fn is_stdout(path: &Path) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let (Ok(stdout), Ok(output)) = (
        std::fs::metadata("/proc/self/fd/1"),
        std::fs::metadata(path),
    ) else {
        return false;
    };
    let device = output.file_type().is_char_device();
    !device && stdout.dev() == output.dev() && stdout.ino() == output.ino()
}

/// Canonicalises a path that may not exist yet by resolving its parent and appending the
/// file name.
fn canonical(path: &Path) -> PathBuf {
    if let Ok(resolved) = path.canonicalize() {
        return resolved;
    }
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    match (parent.canonicalize(), path.file_name()) {
        (Ok(parent), Some(name)) => parent.join(name),
        _ => path.to_path_buf(),
    }
}

/// Counts of frames the trace could not decide, printed after the last frame.
#[derive(Default)]
struct Summary {
    /// Frames cut short by the capture tool whose verdict depends on the missing bytes.
    truncated: u64,
    /// Drop reasons the core gave those frames, taken out of the printed drop counters.
    truncated_drops: HashMap<DropReason, u64>,
    /// Held fragments dropped because a later fragment took their slot.
    evicted: u64,
    /// Frames on pcapng interfaces that are not Ethernet, by interface id and link type.
    skipped: BTreeMap<(u32, String), u64>,
    /// Numbers of the frames whose record has a captured length above the original
    /// length, which pcap and pcapng do not allow.
    overlong: Vec<u64>,
}

/// Traces the capture and returns warnings for an incomplete trace: frames it skipped,
/// and the error that stopped it early at a cut or damaged record. The summary and
/// counters are printed in every case.
fn run(args: &Args) -> Result<Vec<TraceError>, TraceError> {
    check_distinct_paths(args)?;
    let config = load_config(&args.config)?;
    let snapshot = Snapshot::build(&config, 1)?;
    // A backend without a slot explains a trace in which it never appears, so this
    // warning is printed here too, unlike the warnings about running the dataplane.
    for unslotted in snapshot.unslotted_backends() {
        report(&format!("{}: warning: {unslotted}", args.config.display()));
    }
    let mut worker = Worker::new(&config)?;
    worker.set_mac_filter(mac_filter(&config, args.no_mac_filter));
    let mut reader = CaptureReader::open(&args.input)?;
    let mut output = args
        .output
        .as_deref()
        .map(CaptureWriter::create)
        .transpose()?;
    let mut kernel_output = args
        .kernel_output
        .as_deref()
        .map(CaptureWriter::create)
        .transpose()?;

    let mut stdout = ClosablePipe::new(std::io::stdout().lock());
    let writes_files = output.is_some() || kernel_output.is_some();
    let mut out = Output::default();
    let mut scratch = vec![0u8; usize::from(config.node.mtu) + 64];
    let mut number = 0u64;
    let mut summary = Summary::default();
    let mut stop = None;
    loop {
        let frame = match reader.next_frame() {
            Ok(Some(Record::Frame(frame))) => frame,
            Ok(Some(Record::OtherLink { interface, link })) => {
                number += 1;
                *summary
                    .skipped
                    .entry((interface, link_type_name(link)))
                    .or_default() += 1;
                let line = format!(
                    "{number:>6} {:<32} interface {interface} has link type {}, not Ethernet",
                    "skipped",
                    link_type_name(link)
                );
                writeln!(stdout, "{line}").map_err(TraceError::Stdout)?;
                continue;
            }
            Ok(None) => break,
            Err(error) if error.ends_capture_early() => {
                stop = Some(error);
                break;
            }
            Err(error) => return Err(error),
        };
        number += 1;
        let now_ns = duration_ns(frame.timestamp);
        // The core reports a held fragment it dropped to hold this frame only in its
        // counters, so the difference marks the frame's line.
        let held_dropped = worker.counters().held_dropped;
        let verdict = worker.process(&snapshot, &frame.data, now_ns, &mut out);
        let evicted = worker.counters().held_dropped - held_dropped;
        summary.evicted += evicted;
        // In a cut frame the header lengths point past the captured bytes, so the core
        // drops it for bytes the capture tool removed. The dataplane receives the whole frame
        // and might forward it, so such a verdict is unknown, not a drop.
        let cut_drop = match verdict {
            Verdict::Drop(reason) if frame.is_cut() => Some(reason),
            _ => None,
        };
        let mut line = if let Some(reason) = cut_drop {
            summary.truncated += 1;
            *summary.truncated_drops.entry(reason).or_default() += 1;
            describe_truncated(number, &frame.data)
        } else {
            describe(number, &snapshot, &frame.data, verdict, &out)
        };
        if frame.is_cut() {
            line.push_str(&format!(
                " capture-truncated({} of {} bytes)",
                frame.data.len(),
                frame.original_len
            ));
        }
        if frame.data.len() > frame.original_len {
            summary.overlong.push(number);
            line.push_str(&format!(
                " damaged(captured length {} above original length {})",
                frame.data.len(),
                frame.original_len
            ));
        }
        if evicted > 0 {
            line.push_str(&format!(
                " store-full(took the slot of {evicted} earlier held fragment, now dropped)"
            ));
        }
        writeln!(stdout, "{line}").map_err(TraceError::Stdout)?;
        if stdout.closed && !writes_files {
            return Ok(Vec::new());
        }

        match verdict {
            Verdict::Forward => {
                if let Some(writer) = output.as_mut() {
                    write_forward(writer, &frame.data, frame.timestamp, &out, &mut scratch)?;
                }
            }
            Verdict::Reply => {
                if let Some(writer) = output.as_mut() {
                    writer.write(frame.timestamp, out.reply())?;
                }
            }
            Verdict::Kernel(_) => {
                if let Some(writer) = kernel_output.as_mut() {
                    writer.write_captured(frame.timestamp, &frame.data, frame.original_len)?;
                }
            }
            Verdict::Drop(_) | Verdict::Held => {}
        }
        while let Some((verdict, held)) = worker.next_released(&snapshot, now_ns, &mut out) {
            let line = describe(number, &snapshot, held, verdict, &out);
            writeln!(stdout, "{line} released").map_err(TraceError::Stdout)?;
            if let (Verdict::Forward, Some(writer)) = (verdict, output.as_mut()) {
                write_forward(writer, held, frame.timestamp, &out, &mut scratch)?;
            }
        }
    }

    for (option, writer) in [("output", &output), ("kernel-output", &kernel_output)] {
        if let Some(writer) = writer.as_ref().filter(|writer| writer.cut_frames > 0) {
            writeln!(
                stdout,
                "summary: frames cut to {} bytes in --{option}: {}",
                capture::OUTPUT_SNAPLEN,
                writer.cut_frames
            )
            .map_err(TraceError::Stdout)?;
        }
    }
    if let Some(writer) = output {
        writer.finish()?;
    }
    if let Some(writer) = kernel_output {
        writer.finish()?;
    }
    print_summary(&mut stdout, number, &summary, &reader, worker.counters())
        .map_err(TraceError::Stdout)?;
    if args.counters {
        print_counters(&mut stdout, worker.counters(), &summary).map_err(TraceError::Stdout)?;
    }
    let mut warnings = Vec::new();
    if !summary.skipped.is_empty() {
        warnings.push(TraceError::SkippedFrames {
            path: args.input.display().to_string(),
            count: summary.skipped.values().sum(),
            interfaces: skipped_interfaces(&summary),
        });
    }
    if let Some(&first) = summary.overlong.first() {
        warnings.push(TraceError::CapturedOverOriginal {
            path: args.input.display().to_string(),
            count: summary.overlong.len(),
            first,
        });
    }
    warnings.extend(stop);
    Ok(warnings)
}

/// Lists the interfaces of skipped frames with their link type and frame count.
fn skipped_interfaces(summary: &Summary) -> String {
    let parts: Vec<String> = summary
        .skipped
        .iter()
        .map(|((interface, link), count)| {
            format!("interface {interface}, link type {link}: {count}")
        })
        .collect();
    parts.join("; ")
}

/// Reads the dataplane config, and rejects the control plane's file, recognised by its
/// `[controlplane]` table, with a message that names the right file.
fn load_config(path: &Path) -> Result<Config, ConfigError> {
    let text = spike_core::config::read_file(path)?;
    if let Some(position) = locate::position_of_key(&text, "controlplane") {
        return Err(ConfigError::At {
            place: Place {
                path: Some(path.display().to_string()),
                position: Some(position),
            },
            error: Box::new(ConfigError::Syntax(
                "controlplane: this looks like a spike-controlplane config (it has \
                 [controlplane]); spike-trace reads the dataplane's file, such as \
                 configs/spike.toml of the source tree: pass that file with --config"
                    .to_owned(),
            )),
        });
    }
    text.parse()
        .map_err(|error: ConfigError| error.in_file(path))
}

/// Returns the MAC the dataplane would filter by. The dataplane uses its port's MAC and
/// warns when that differs from node.mac, but a trace has no port, so it uses node.mac.
fn mac_filter(config: &Config, turned_off: bool) -> Option<MacAddr> {
    let filters = config.dpdk.as_ref().is_some_and(|dpdk| dpdk.mac_filter);
    (filters && !turned_off).then_some(config.node.mac)
}

/// Prints the `summary:` lines after the last frame. `records` counts the packet records
/// read, including skipped ones.
fn print_summary(
    output: &mut impl Write,
    records: u64,
    summary: &Summary,
    reader: &CaptureReader,
    counters: &Counters,
) -> std::io::Result<()> {
    if records == 0 {
        // Without this line, a capture with no frames would print nothing at all.
        writeln!(
            output,
            "summary: frames read: 0 (the capture contains no whole frame)"
        )?;
    }
    if !summary.skipped.is_empty() {
        writeln!(
            output,
            "summary: frames skipped on interfaces that are not Ethernet: {} ({})",
            summary.skipped.values().sum::<u64>(),
            skipped_interfaces(summary)
        )?;
    }
    if summary.truncated > 0 {
        writeln!(
            output,
            "summary: frames truncated by the capture tool, verdict unknown: {} (capture \
             with `tcpdump -s 0` to trace them)",
            summary.truncated
        )?;
    }
    let never_released = counters
        .held
        .saturating_sub(counters.held_released + counters.held_dropped);
    if never_released > 0 {
        writeln!(
            output,
            "summary: fragments held and never released: {never_released} (their first \
             fragment is not in the capture)"
        )?;
    }
    if summary.evicted > 0 {
        writeln!(
            output,
            "summary: held fragments dropped to free a slot for a later one: {} (the store \
             was full and their first fragment did not come in time)",
            summary.evicted
        )?;
    }
    if reader.interface_drops > 0 {
        writeln!(
            output,
            "summary: packets dropped by the capturing interface: {} (not in the capture)",
            format_drop_count(reader.interface_drops)
        )?;
    }
    let statistics = reader.statistics_drops();
    let parts: Vec<String> = [
        (statistics.interface, "by the interface"),
        (statistics.os, "by the operating system"),
    ]
    .into_iter()
    .filter_map(|(count, place)| Some(format!("{} {place}", format_drop_count(count?))))
    .collect();
    if statistics.interface.unwrap_or(0) > 0 || statistics.os.unwrap_or(0) > 0 {
        writeln!(
            output,
            "summary: packets dropped according to the interface statistics: {} (not in the \
             capture)",
            parts.join(", ")
        )?;
    }
    Ok(())
}

/// Formats a drop count that the reader summed with saturation. `u64::MAX` means the true
/// sum may be larger, so it reads `at least`.
fn format_drop_count(count: u64) -> String {
    if count == u64::MAX {
        format!("at least {count}")
    } else {
        count.to_string()
    }
}

fn write_forward(
    writer: &mut CaptureWriter,
    frame: &[u8],
    timestamp: Duration,
    out: &Output,
    scratch: &mut [u8],
) -> Result<(), TraceError> {
    let inner = &frame[out.inner.clone()];
    if !out.fragment {
        let mut whole = Vec::with_capacity(out.header_len + inner.len());
        whole.extend_from_slice(out.header());
        whole.extend_from_slice(inner);
        return writer.write(timestamp, &whole);
    }
    let mut result = Ok(());
    out.write_fragments(frame, scratch, |fragment| {
        if result.is_ok() {
            result = writer.write(timestamp, fragment);
        }
    });
    result
}

fn duration_ns(timestamp: Duration) -> u64 {
    u64::try_from(timestamp.as_nanos()).unwrap_or(u64::MAX)
}

fn describe_flow(flow: &FlowKey) -> String {
    describe_partial_flow(&PartialFlow::from(flow))
}

/// Formats a flow as `protocol source -> destination`, with `-` for each part that is
/// not known, and ports only for TCP and UDP.
fn describe_partial_flow(flow: &PartialFlow) -> String {
    let protocol = match flow.protocol {
        Some(1) => "icmp".to_owned(),
        Some(6) => "tcp".to_owned(),
        Some(17) => "udp".to_owned(),
        Some(58) => "icmpv6".to_owned(),
        Some(other) => format!("proto-{other}"),
        None => "-".to_owned(),
    };
    let has_ports = matches!(flow.protocol, Some(6 | 17));
    let known = |value: Option<String>| value.unwrap_or_else(|| "-".to_owned());
    let address = |ip: Option<IpAddr>, port: Option<u16>| {
        let text = match ip {
            Some(IpAddr::V6(v6)) if has_ports => format!("[{v6}]"),
            ip => known(ip.map(|ip| ip.to_string())),
        };
        if has_ports {
            format!("{text}:{}", known(port.map(|port| port.to_string())))
        } else {
            text
        }
    };
    format!(
        "{protocol} {} -> {}",
        address(flow.src, flow.src_port),
        address(flow.dst, flow.dst_port)
    )
}

/// Formats the line of a frame whose verdict depends on bytes the capture tool removed.
fn describe_truncated(number: u64, frame: &[u8]) -> String {
    let mut line = format!("{number:>6} {:<32}", "truncated");
    let text = summary::cut_frame_flow(frame)
        .map(|flow| describe_partial_flow(&flow))
        .or_else(|| summary::frame_kind(frame));
    if let Some(text) = text {
        line.push(' ');
        line.push_str(&text);
    }
    line
}

/// Formats one line per frame: number, verdict, flow, then service, backend and selection.
fn describe(
    number: u64,
    snapshot: &Snapshot,
    frame: &[u8],
    verdict: Verdict,
    out: &Output,
) -> String {
    let verdict_text = match verdict {
        Verdict::Forward => "forward".to_owned(),
        Verdict::Reply => "reply".to_owned(),
        Verdict::Held => "held".to_owned(),
        Verdict::Kernel(reason) => format!("kernel:{reason}"),
        Verdict::Drop(reason) => format!("drop:{reason}"),
    };
    let mut line = format!("{number:>6} {verdict_text:<32}");
    let flow = out.flow.or_else(|| summary::frame_flow(frame));
    match flow {
        Some(flow) => {
            line.push(' ');
            line.push_str(&describe_flow(&flow));
        }
        None => {
            if let Some(text) = summary::frame_kind(frame) {
                line.push(' ');
                line.push_str(&text);
            }
        }
    }
    // The core clears the service of a reply, which no backend receives.
    let service_index = match (out.service, verdict, flow) {
        (None, Verdict::Reply, Some(flow)) => reply_service(snapshot, &flow),
        (service, _, _) => service,
    };
    if let Some(service) = service_index.and_then(|index| snapshot.services.get(index as usize)) {
        line.push_str(&format!(" service={}", service.name));
        let backend = out
            .backend
            .and_then(|index| service.backends.get(index as usize));
        if let Some(backend) = backend {
            line.push_str(&format!(
                " backend={} ({}, vtep {})",
                backend.name, backend.address, backend.vtep_mac
            ));
        }
    }
    let peer = out
        .redirect
        .and_then(|index| snapshot.cluster.as_ref()?.peers.get(index as usize));
    if let Some(peer) = peer {
        line.push_str(&format!(" node={}", peer.address));
    }
    if let Some(selection) = out.selection {
        line.push_str(&format!(" why={selection}"));
    }
    if out.fragment && out.split_inner {
        line.push_str(" inner-split");
    } else if out.fragment {
        line.push_str(" outer-fragmented");
    }
    line
}

/// Finds the service an ICMP too-big reply is about: the one on the flow's destination,
/// protocol and port, or for a non-first fragment the one that hashes without ports.
fn reply_service(snapshot: &Snapshot, flow: &FlowKey) -> Option<u32> {
    let key = ServiceKey::new(flow.dst_addr(), flow.protocol, flow.dst_port);
    snapshot
        .service(&key)
        .or_else(|| snapshot.portless_service(&key.vip, flow.protocol))
}

fn print_counters(
    output: &mut impl Write,
    counters: &Counters,
    summary: &Summary,
) -> std::io::Result<()> {
    writeln!(output, "counters:")?;
    writeln!(output, "  rx_packets {}", counters.rx_packets)?;
    writeln!(output, "  forwarded {}", counters.forwarded)?;
    writeln!(output, "  replies {}", counters.replies)?;
    for (name, count) in [
        ("held", counters.held),
        ("held_released", counters.held_released),
        ("held_dropped", counters.held_dropped),
    ] {
        if count > 0 {
            writeln!(output, "  {name} {count}")?;
        }
    }
    if counters.redirected_in > 0 {
        writeln!(output, "  redirected_in {}", counters.redirected_in)?;
    }
    for reason in spike_core::KernelReason::ALL {
        let count = counters.kernel_count(*reason);
        if count > 0 {
            writeln!(output, "  kernel.{reason} {count}")?;
        }
    }
    if summary.truncated > 0 {
        writeln!(output, "  truncated {}", summary.truncated)?;
    }
    let skipped: u64 = summary.skipped.values().sum();
    if skipped > 0 {
        writeln!(output, "  skipped {skipped}")?;
    }
    for reason in DropReason::ALL {
        let truncated = summary.truncated_drops.get(reason).copied().unwrap_or(0);
        let count = counters.drop_count(*reason) - truncated;
        if count > 0 {
            writeln!(output, "  drop.{reason} {count}")?;
        }
    }
    for selection in spike_core::Selection::ALL {
        let count = counters.selection_count(*selection);
        if count > 0 {
            writeln!(output, "  selection.{selection} {count}")?;
        }
    }
    for service in &counters.services {
        writeln!(
            output,
            "  service.{} packets {} bytes {}",
            service.name, service.traffic.packets, service.traffic.bytes
        )?;
    }
    Ok(())
}
