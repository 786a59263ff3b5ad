//! BIRD 2: the file the control plane writes for it and the client of its control
//! socket.
//!
//! The control plane speaks BIRD's control protocol on the unix socket itself instead
//! of running `birdc`. A reload is then one connection with a time limit that tokio
//! enforces, the numeric code of the reply separates success from failure without parsing
//! human-oriented output, and nodes need no birdc binary or process spawn per change.
//!
//! The protocol (BIRD 2.0, `doc/reply_codes` and `sysdep/unix/main.c`): the server sends
//! a greeting line `0001 BIRD <version> ready.`, then answers each command line with
//! reply lines. A line is `DDDD-text` (code, more lines follow), ` text` (continues the
//! previous code) or `DDDD text` (the last line). Codes 0000-0999 report success,
//! 1000-1999 carry table output, 8000-8999 are run-time errors and 9000-9999 parse
//! errors of the command.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::config::BgpConfig;

/// Longest reply line accepted from BIRD, in bytes.
const MAX_LINE_BYTES: usize = 64 * 1024;

/// Mode of the routes file. BIRD runs as another user (Debian's bird2: bird) and must
/// read it. The file contains no secret, because `[bgp]` has no password key and the
/// router id, neighbours, AS numbers and VIPs are visible on the network anyway. The
/// mode is set explicitly, because the packaged unit's `UMask=0077` would otherwise
/// leave the file readable by the control plane alone.
pub const ROUTES_FILE_MODE: u32 = 0o644;

/// A failure to talk to BIRD or to get a change applied.
#[derive(Debug, Error)]
pub enum BirdError {
    #[error(
        "cannot connect to BIRD's control socket {socket}: {source}; start bird with \
         -s {socket} or set bgp.bird_socket to the socket it uses"
    )]
    Connect {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no permission to connect to BIRD's control socket {socket}: {source}; add the \
         user that runs spike-controlplane to BIRD's group (Debian's bird2: \
         `adduser spike bird`) and restart spike-controlplane"
    )]
    SocketDenied {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("BIRD's control socket {socket} did not answer within {timeout_ms} ms")]
    Timeout { socket: PathBuf, timeout_ms: u128 },
    #[error("reading from BIRD's control socket {socket} failed: {source}")]
    Io {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("BIRD's control socket {socket} sent an unexpected line {line:?}")]
    Protocol { socket: PathBuf, line: String },
    #[error(
        "BIRD rejected `{command}` with code {code}: {message}; fix the file it names \
         (bgp.routes_file is written by spike-controlplane, bird.conf by you)"
    )]
    Rejected {
        command: String,
        code: u16,
        message: String,
    },
    #[error(
        "cannot write {path}: {source}; check that the directory exists and is writable \
         (the packaged spike-controlplane.service writes only below /run/spike-controlplane)"
    )]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One reply line: its code (the previous line's for a ` text` continuation) and text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyLine {
    pub code: u16,
    pub text: String,
}

/// Renders the file that BIRD includes: the router id, one static protocol per address
/// family with a blackhole route per VIP (a /32 or /128), optionally BFD, and one BGP
/// session per neighbour that exports only those routes.
///
/// IPv4 VIPs go to IPv4 neighbours and IPv6 VIPs to IPv6 neighbours, so that each route
/// carries a next hop of the session's own family. The blackhole routes stay inside
/// BIRD: the template has no kernel protocol that would install them. The sessions
/// connect 1 s after a start and retry within seconds after an error (BIRD's defaults
/// are 5 s and 60 s), so that a restarted Spike node carries traffic again quickly.
pub fn render(config: &BgpConfig, vips: &BTreeSet<IpAddr>) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "# Written by spike-controlplane from its [bgp] section and the VIPs the local\n\
         # dataplane serves. Every change is overwritten.\n\n\
         router id {};\n",
        config.router_id
    );
    for (name, channel, is_family, length) in [
        (
            STATIC_IPV4,
            "ipv4",
            IpAddr::is_ipv4 as fn(&IpAddr) -> bool,
            32,
        ),
        (STATIC_IPV6, "ipv6", IpAddr::is_ipv6, 128),
    ] {
        let _ = writeln!(text, "protocol static {name} {{\n    {channel};");
        for vip in vips.iter().filter(|vip| is_family(vip)) {
            let _ = writeln!(text, "    route {vip}/{length} blackhole;");
        }
        text.push_str("}\n\n");
    }
    if config.bfd {
        // BGP sessions with `bfd on` ask this protocol for their BFD sessions.
        text.push_str("protocol bfd spike_bfd {\n}\n\n");
    }
    for neighbor in &config.neighbors {
        let (channel, exported) = match neighbor.address {
            IpAddr::V4(_) => ("ipv4", STATIC_IPV4),
            IpAddr::V6(_) => ("ipv6", STATIC_IPV6),
        };
        let _ = writeln!(
            text,
            "protocol bgp {} {{\n    local as {};\n    neighbor {} as {};\n    \
             hold time {};\n    keepalive time {};\n    bfd {};\n    \
             connect delay time 1;\n    connect retry time 5;\n    \
             error wait time 1, 30;\n    \
             {channel} {{\n        import none;\n        \
             export where proto = \"{exported}\";\n    }};\n}}\n",
            protocol_name(neighbor.address),
            config.asn,
            neighbor.address,
            neighbor.asn,
            config.hold_time_s,
            (config.hold_time_s / 3).max(1),
            if config.bfd { "on" } else { "off" },
        );
    }
    text
}

/// BIRD's name of the static protocol with the IPv4 VIPs.
pub const STATIC_IPV4: &str = "spike_vips4";
/// BIRD's name of the static protocol with the IPv6 VIPs.
pub const STATIC_IPV6: &str = "spike_vips6";

/// A BIRD protocol name for a neighbour, stable while its address stays, so that a
/// reconfiguration keeps its session.
pub fn protocol_name(address: IpAddr) -> String {
    let mut name = String::from("spike_peer_");
    name.extend(
        address
            .to_string()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
    );
    name
}

/// Identity of one version of the routes file. A writer that replaces the file by a
/// rename creates a new inode, and one that rewrites it in place changes its
/// modification time or length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStamp {
    device: u64,
    inode: u64,
    len: u64,
    modified_s: i64,
    modified_ns: i64,
}

impl FileStamp {
    fn of(metadata: &std::fs::Metadata) -> FileStamp {
        FileStamp {
            device: metadata.dev(),
            inode: metadata.ino(),
            len: metadata.len(),
            modified_s: metadata.mtime(),
            modified_ns: metadata.mtime_nsec(),
        }
    }

    /// Reads the stamp of the file at `path`, or returns `None` when it cannot be read.
    pub fn read(path: &Path) -> Option<FileStamp> {
        std::fs::metadata(path)
            .ok()
            .map(|metadata| FileStamp::of(&metadata))
    }
}

/// Returns the stamp of the file at `path` when it contains exactly `text` with mode
/// [`ROUTES_FILE_MODE`], so that an unchanged file need not be written again. A file
/// with another mode is written again, so that BIRD can read it.
pub fn stamp_if_equal(path: &Path, text: &str) -> Option<FileStamp> {
    let mut file = std::fs::File::open(path).ok()?;
    // The stamp comes from the open file, so a rename by another writer between the
    // read and the stamp cannot pass its file off as this one.
    let metadata = file.metadata().ok()?;
    if metadata.permissions().mode() & 0o777 != ROUTES_FILE_MODE {
        return None;
    }
    let stamp = FileStamp::of(&metadata);
    let mut on_disk = String::new();
    file.read_to_string(&mut on_disk).ok()?;
    (on_disk == text).then_some(stamp)
}

/// Replaces `path` with `text` atomically: a reader, BIRD included, sees the old or
/// the new file, never a mix. The new file has mode [`ROUTES_FILE_MODE`] whatever the
/// umask. Returns the stamp of the new file.
///
/// The temporary file's name carries the process id, because the control plane and
/// `spike-controlplane --withdraw` may write the same file at the same moment.
///
/// # Errors
///
/// [`BirdError::Write`] naming the file that could not be written or renamed.
pub fn write_atomically(path: &Path, text: &str) -> Result<FileStamp, BirdError> {
    let error = |source| BirdError::Write {
        path: path.to_owned(),
        source,
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary).map_err(error)?;
    file.set_permissions(std::fs::Permissions::from_mode(ROUTES_FILE_MODE))
        .map_err(error)?;
    file.write_all(text.as_bytes()).map_err(error)?;
    file.sync_all().map_err(error)?;
    // A rename keeps the inode, length and modification time, so this is the stamp of
    // the file at `path` afterwards.
    let stamp = file.metadata().map_err(error)?;
    drop(file);
    if let Err(source) = std::fs::rename(&temporary, path) {
        let _ = std::fs::remove_file(&temporary);
        return Err(error(source));
    }
    Ok(FileStamp::of(&stamp))
}

/// A connection to BIRD's control socket.
#[derive(Debug)]
pub struct BirdClient {
    socket: PathBuf,
    timeout: Duration,
}

impl BirdClient {
    pub fn new(socket: PathBuf, timeout: Duration) -> BirdClient {
        BirdClient { socket, timeout }
    }

    /// Tells BIRD to read its config again, which includes the routes file. BIRD keeps
    /// the sessions of unchanged protocols and updates the static routes in place.
    ///
    /// # Errors
    ///
    /// [`BirdError`]: BIRD is not reachable, timed out, or rejected the config.
    pub async fn configure(&self) -> Result<Vec<ReplyLine>, BirdError> {
        self.command("configure").await
    }

    /// Asks BIRD for its status: a cheap check that it runs and replies.
    ///
    /// # Errors
    ///
    /// [`BirdError`] when BIRD is not reachable or does not reply in time.
    pub async fn status(&self) -> Result<Vec<ReplyLine>, BirdError> {
        self.command("show status").await
    }

    /// Sends one command and returns its reply lines. A final code of 8000 or above is
    /// an error.
    ///
    /// # Errors
    ///
    /// [`BirdError`] when BIRD is unreachable, times out, replies outside the protocol
    /// or rejects the command.
    pub async fn command(&self, command: &str) -> Result<Vec<ReplyLine>, BirdError> {
        match tokio::time::timeout(self.timeout, self.exchange(command)).await {
            Ok(result) => result,
            Err(_) => Err(BirdError::Timeout {
                socket: self.socket.clone(),
                timeout_ms: self.timeout.as_millis(),
            }),
        }
    }

    async fn exchange(&self, command: &str) -> Result<Vec<ReplyLine>, BirdError> {
        let stream = UnixStream::connect(&self.socket).await.map_err(|source| {
            let socket = self.socket.clone();
            if source.kind() == std::io::ErrorKind::PermissionDenied {
                BirdError::SocketDenied { socket, source }
            } else {
                BirdError::Connect { socket, source }
            }
        })?;
        let (reader, mut writer) = stream.into_split();
        let mut reader = BufReader::new(reader);
        let greeting = self.read_reply(&mut reader).await?;
        if greeting.last().map(|line| line.code) != Some(1) {
            return Err(self.protocol_error(format!("{greeting:?}")));
        }
        writer
            .write_all(format!("{command}\n").as_bytes())
            .await
            .map_err(|source| self.io_error(source))?;
        let reply = self.read_reply(&mut reader).await?;
        let last = reply.last().cloned().unwrap_or(ReplyLine {
            code: 0,
            text: String::new(),
        });
        if last.code >= 8000 {
            let message = reply
                .iter()
                .filter(|line| line.code == last.code)
                .map(|line| line.text.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            return Err(BirdError::Rejected {
                command: command.to_owned(),
                code: last.code,
                message,
            });
        }
        Ok(reply)
    }

    /// Reads reply lines up to and including the one that ends the reply.
    async fn read_reply<R: AsyncBufRead + Unpin>(
        &self,
        reader: &mut R,
    ) -> Result<Vec<ReplyLine>, BirdError> {
        let mut lines = Vec::new();
        loop {
            let mut raw = Vec::new();
            let read = (&mut *reader)
                .take(MAX_LINE_BYTES as u64)
                .read_until(b'\n', &mut raw)
                .await
                .map_err(|source| self.io_error(source))?;
            if read == 0 || raw.last() != Some(&b'\n') {
                return Err(self.protocol_error(String::from_utf8_lossy(&raw).into_owned()));
            }
            let line = String::from_utf8_lossy(&raw[..raw.len() - 1]).into_owned();
            let previous = lines.last().map(|line: &ReplyLine| line.code);
            let (parsed, last) =
                parse_line(&line, previous).ok_or_else(|| self.protocol_error(line.clone()))?;
            lines.push(parsed);
            if last {
                return Ok(lines);
            }
        }
    }

    fn io_error(&self, source: std::io::Error) -> BirdError {
        BirdError::Io {
            socket: self.socket.clone(),
            source,
        }
    }

    fn protocol_error(&self, line: String) -> BirdError {
        BirdError::Protocol {
            socket: self.socket.clone(),
            line,
        }
    }
}

/// Parses one reply line. Returns the line and whether it ends the reply, or `None`
/// for a line outside the protocol. `previous` is the code of the line before, which a
/// ` text` continuation line keeps.
pub fn parse_line(line: &str, previous: Option<u16>) -> Option<(ReplyLine, bool)> {
    if let Some(text) = line.strip_prefix(' ') {
        let code = previous?;
        return Some((
            ReplyLine {
                code,
                text: text.to_owned(),
            },
            false,
        ));
    }
    let digits = line.get(..4)?;
    if !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let code = digits.parse().ok()?;
    let last = match line.as_bytes().get(4) {
        Some(b' ') | None => true,
        Some(b'-') => false,
        Some(_) => return None,
    };
    let text = line.get(5..).unwrap_or("").to_owned();
    Some((ReplyLine { code, text }, last))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::process::{Child, Command, Stdio};

    use super::*;
    use crate::bgp::config::Neighbor;

    fn config(bfd: bool) -> BgpConfig {
        BgpConfig {
            asn: 65001,
            router_id: Ipv4Addr::new(192, 0, 2, 1),
            neighbors: vec![
                Neighbor {
                    address: "192.0.2.254".parse().unwrap(),
                    asn: 65000,
                },
                Neighbor {
                    address: "2001:db8::fe".parse().unwrap(),
                    asn: 65000,
                },
            ],
            hold_time_s: 3,
            bfd,
            bird_socket: PathBuf::from("/run/bird/bird.ctl"),
            routes_file: PathBuf::from("/run/spike-controlplane/bird-routes.conf"),
            drain: Duration::from_secs(1),
            dataplane_timeout: Duration::from_secs(1),
        }
    }

    fn vips() -> BTreeSet<IpAddr> {
        ["203.0.113.80", "203.0.113.81", "2001:db8:80::1"]
            .iter()
            .map(|vip| vip.parse().unwrap())
            .collect()
    }

    #[test]
    fn render_lists_each_vip_in_its_family() {
        let text = render(&config(false), &vips());
        assert!(text.contains("router id 192.0.2.1;"), "{text}");
        assert!(text.contains("route 203.0.113.80/32 blackhole;"), "{text}");
        assert!(text.contains("route 203.0.113.81/32 blackhole;"), "{text}");
        assert!(
            text.contains("route 2001:db8:80::1/128 blackhole;"),
            "{text}"
        );
        assert!(
            text.contains("protocol bgp spike_peer_192_0_2_254 {"),
            "{text}"
        );
        assert!(text.contains("neighbor 2001:db8::fe as 65000;"), "{text}");
        assert!(text.contains("keepalive time 1;"), "{text}");
        assert!(!text.contains("protocol bfd"), "{text}");
        assert!(text.contains("bfd off;"), "{text}");
    }

    #[test]
    fn render_with_bfd_adds_the_protocol() {
        let text = render(&config(true), &vips());
        assert!(text.contains("protocol bfd spike_bfd"), "{text}");
        assert!(text.contains("bfd on;"), "{text}");
    }

    #[test]
    fn parse_line_reads_codes_and_continuations() {
        assert_eq!(
            parse_line("0001 BIRD 2.0.12 ready.", None),
            Some((
                ReplyLine {
                    code: 1,
                    text: "BIRD 2.0.12 ready.".into()
                },
                true
            ))
        );
        assert_eq!(
            parse_line("0002-Reading configuration from /x", None)
                .map(|(line, last)| (line.code, last)),
            Some((2, false))
        );
        assert_eq!(
            parse_line(" more", Some(1002)).map(|(line, last)| (line.code, last)),
            Some((1002, false))
        );
        assert_eq!(parse_line(" more", None), None);
        assert_eq!(parse_line("BIRD", None), None);
        assert_eq!(parse_line("00a1 x", None), None);
        assert_eq!(parse_line("0001+x", None), None);
    }

    #[test]
    fn write_atomically_replaces_the_file() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("routes.conf");
        write_atomically(&path, "one\n").unwrap();
        write_atomically(&path, "two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        let names: Vec<_> = std::fs::read_dir(directory.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("routes.conf")]);
    }

    #[test]
    fn write_atomically_sets_readable_mode() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("routes.conf");
        std::fs::write(&path, "one\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        // A file BIRD cannot read counts as changed, even with the same text.
        assert_eq!(stamp_if_equal(&path, "one\n"), None);

        write_atomically(&path, "one\n").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, ROUTES_FILE_MODE, "{mode:o}");
        assert!(stamp_if_equal(&path, "one\n").is_some());
    }

    #[test]
    fn stamps_tell_a_replaced_file() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("routes.conf");
        let stamp = write_atomically(&path, "one\n").unwrap();
        assert_eq!(FileStamp::read(&path), Some(stamp.clone()));
        assert_eq!(stamp_if_equal(&path, "one\n"), Some(stamp.clone()));
        assert_eq!(stamp_if_equal(&path, "two\n"), None);
        // Another writer's file differs even with the same text.
        let again = write_atomically(&path, "one\n").unwrap();
        assert_ne!(again, stamp);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(FileStamp::read(&path), None);
    }

    #[test]
    fn write_atomically_names_a_missing_directory() {
        let error = write_atomically(Path::new("/nonexistent-spike-dir/routes.conf"), "x")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("/nonexistent-spike-dir/routes.conf"),
            "{error}"
        );
    }

    /// A real BIRD 2 daemon in the foreground on a private control socket. Its config
    /// has no BGP session, so it opens no network socket.
    struct Bird {
        child: Child,
        directory: tempfile::TempDir,
    }

    impl Bird {
        fn start(routes: &str) -> Bird {
            let directory = tempfile::tempdir().unwrap();
            let routes_path = directory.path().join("routes.conf");
            std::fs::write(&routes_path, routes).unwrap();
            let config = directory.path().join("bird.conf");
            std::fs::write(&config, format!("include \"{}\";\n", routes_path.display())).unwrap();
            let socket = directory.path().join("bird.ctl");
            let child = Command::new("bird")
                .arg("-f")
                .arg("-c")
                .arg(&config)
                .arg("-s")
                .arg(&socket)
                .arg("-P")
                .arg(directory.path().join("bird.pid"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("bird not found: install Debian's bird2 (scripts/install-deps.sh)");
            let bird = Bird { child, directory };
            // BIRD listens on its socket before it reads its config and replies only
            // once it has, so a reply to `show status` means the config was read and a
            // test may now change the routes file. 10 s bounds the wait.
            let runtime = runtime();
            for _ in 0..200 {
                if runtime.block_on(bird.client().status()).is_ok() {
                    return bird;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            panic!("BIRD did not respond on {} within 10 s", socket.display());
        }

        fn client(&self) -> BirdClient {
            BirdClient::new(
                self.directory.path().join("bird.ctl"),
                Duration::from_secs(5),
            )
        }

        fn routes_path(&self) -> PathBuf {
            self.directory.path().join("routes.conf")
        }
    }

    impl Drop for Bird {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// The rendered file without its BGP sessions, which BIRD would try to connect.
    fn local_part(vips: &BTreeSet<IpAddr>) -> String {
        let text = render(&config(true), vips);
        text.split("protocol bgp").next().unwrap().to_owned()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn bird_parses_the_rendered_file() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("bird.conf");
        std::fs::write(&path, render(&config(true), &vips())).unwrap();
        // -p parses the config and exits without opening any socket.
        let output = Command::new("bird")
            .arg("-p")
            .arg("-c")
            .arg(&path)
            .output()
            .expect("bird not found: install Debian's bird2 (scripts/install-deps.sh)");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    #[test]
    fn configure_applies_changed_routes() {
        let bird = Bird::start(&local_part(&BTreeSet::new()));
        let runtime = runtime();
        let status = runtime.block_on(bird.client().status()).unwrap();
        assert_eq!(status.last().unwrap().code, 13, "{status:?}");

        write_atomically(&bird.routes_path(), &local_part(&vips())).unwrap();
        let reply = runtime.block_on(bird.client().configure()).unwrap();
        assert_eq!(reply.last().unwrap().code, 3, "{reply:?}");
        let routes = runtime
            .block_on(bird.client().command("show route protocol spike_vips4"))
            .unwrap();
        let text: String = routes.iter().map(|line| line.text.clone() + "\n").collect();
        assert!(text.contains("203.0.113.80/32"), "{text}");
        assert!(text.contains("203.0.113.81/32"), "{text}");
    }

    #[test]
    fn configure_reports_a_broken_file() {
        let bird = Bird::start(&local_part(&vips()));
        std::fs::write(bird.routes_path(), "protocol static {\n").unwrap();
        let error = runtime().block_on(bird.client().configure()).unwrap_err();
        let BirdError::Rejected { code, message, .. } = &error else {
            panic!("expected a rejection, got {error}");
        };
        assert!(*code >= 8000, "{error}");
        assert!(message.contains("syntax error"), "{error}");
    }

    #[test]
    fn unreachable_socket_names_the_path() {
        let client = BirdClient::new(
            PathBuf::from("/nonexistent-spike-dir/bird.ctl"),
            Duration::from_secs(1),
        );
        let error = runtime().block_on(client.status()).unwrap_err().to_string();
        assert!(error.contains("/nonexistent-spike-dir/bird.ctl"), "{error}");
        assert!(error.contains("bgp.bird_socket"), "{error}");
    }
}
