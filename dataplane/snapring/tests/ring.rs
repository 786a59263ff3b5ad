//! Ring behaviour with a publisher and a subscriber in one process, on a file in a
//! temporary directory.

use std::time::{Duration, Instant};

use spike_snapring::{checksum, Geometry, Publisher, Received, SlotError, SlotHeader, Subscriber};

fn small() -> Geometry {
    Geometry {
        slots: 3,
        slot_size: 4096,
        counters_size: 256,
    }
}

fn pair() -> (tempfile::TempDir, Publisher, Subscriber) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ring");
    let publisher = Publisher::attach(&path, small()).unwrap();
    let subscriber = Subscriber::attach(&path, small()).unwrap();
    (dir, publisher, subscriber)
}

fn delivered(received: Received) -> (u64, Vec<u8>) {
    match received {
        Received::Snapshot(delivery) => (delivery.generation, delivery.payload),
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

#[test]
fn snapshot_is_delivered_once() {
    let (_dir, mut publisher, mut subscriber) = pair();
    assert_eq!(subscriber.poll(), Received::Nothing);

    publisher.publish(1, b"first").unwrap();
    assert_eq!(delivered(subscriber.poll()), (1, b"first".to_vec()));
    assert_eq!(subscriber.poll(), Received::Nothing);

    publisher.publish(2, b"second").unwrap();
    publisher.publish(3, b"third").unwrap();
    assert_eq!(delivered(subscriber.poll()), (3, b"third".to_vec()));
}

#[test]
fn ring_file_is_private() {
    use std::os::unix::fs::PermissionsExt;

    let (dir, _publisher, _subscriber) = pair();
    let mode = std::fs::metadata(dir.path().join("ring"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "snapshots carry the flow hash key");
}

#[test]
fn corrupted_snapshots_are_rejected() {
    let (_dir, mut publisher, mut subscriber) = pair();
    let valid = SlotHeader {
        magic: u64::from_le_bytes(*b"SPIKSNAP"),
        version: 1,
        generation: 9,
        payload_len: 4,
        checksum: checksum(b"data"),
        ..SlotHeader::default()
    };
    publisher.publish_unchecked(valid, b"data").unwrap();
    assert_eq!(delivered(subscriber.poll()), (9, b"data".to_vec()));

    let cases: [(&str, SlotHeader); 4] = [
        ("bad magic", SlotHeader { magic: 1, ..valid }),
        (
            "bad version",
            SlotHeader {
                version: 99,
                ..valid
            },
        ),
        (
            "bad checksum",
            SlotHeader {
                checksum: valid.checksum ^ 1,
                ..valid
            },
        ),
        (
            "length past the slot",
            SlotHeader {
                payload_len: 1 << 20,
                ..valid
            },
        ),
    ];
    for (case, header) in cases {
        publisher.publish_unchecked(header, b"data").unwrap();
        match subscriber.poll() {
            Received::Invalid {
                generation, error, ..
            } => {
                assert_eq!(generation, 9, "{case}");
                let expected_kind = match case {
                    "bad magic" => matches!(error, SlotError::Magic(1)),
                    "bad version" => matches!(error, SlotError::Version(99)),
                    "bad checksum" => matches!(error, SlotError::Checksum { .. }),
                    _ => matches!(error, SlotError::Length { .. }),
                };
                assert!(expected_kind, "{case}: {error}");
            }
            other => panic!("{case} was not rejected: {other:?}"),
        }
        assert_eq!(subscriber.poll(), Received::Nothing, "{case} offered twice");
    }
}

#[test]
fn writer_never_waits_for_a_stalled_reader() {
    let (dir, mut publisher, _subscriber) = pair();
    publisher.publish(0, b"zero").unwrap();
    // A reader that stopped mid-copy (or died there) leaves its hazard set.
    let held = publisher.published().unwrap().slot;
    write_word(&dir.path().join("ring"), HAZARD_OFFSET, u64::from(held) + 1);

    let start = Instant::now();
    for generation in 1..10_000u64 {
        publisher
            .publish(generation, &generation.to_le_bytes())
            .unwrap();
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "10000 publications took {:?}",
        start.elapsed()
    );
    assert_eq!(publisher.published().unwrap().generation, 9_999);
}

#[test]
fn held_slot_is_not_reused() {
    let (dir, mut publisher, _subscriber) = pair();
    publisher.publish(1, b"one").unwrap();
    let held = publisher.published().unwrap().slot;

    // A reader stores its hazard before it copies. Hold the published slot by writing
    // the hazard word through the file, as a reader stuck mid-copy would leave it.
    write_word(&dir.path().join("ring"), HAZARD_OFFSET, u64::from(held) + 1);

    let mut used = Vec::new();
    for generation in 2..50 {
        used.push(publisher.publish(generation, b"next").unwrap().slot);
    }
    assert!(!used.contains(&held), "slot {held} was reused: {used:?}");
    // The two other slots alternate.
    assert!(used.windows(2).all(|pair| pair[0] != pair[1]), "{used:?}");

    write_word(&dir.path().join("ring"), HAZARD_OFFSET, 0);
    let reused: Vec<u32> = (50..54)
        .map(|generation| publisher.publish(generation, b"x").unwrap().slot)
        .collect();
    assert!(
        reused.contains(&held),
        "released slot never reused: {reused:?}"
    );
}

/// Byte offset of the header word that names the slot a reader is copying.
const HAZARD_OFFSET: u64 = 5 * 8;

fn write_word(path: &std::path::Path, offset: u64, value: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&value.to_le_bytes(), offset).unwrap();
}

#[test]
fn restarted_publisher_continues_the_sequence() {
    let (dir, mut publisher, mut subscriber) = pair();
    publisher.publish(5, b"five").unwrap();
    assert_eq!(delivered(subscriber.poll()), (5, b"five".to_vec()));
    let sequence = publisher.published().unwrap().sequence;
    drop(publisher);

    let mut restarted = Publisher::attach(&dir.path().join("ring"), small()).unwrap();
    assert_eq!(restarted.published().unwrap().generation, 5);
    assert_eq!(subscriber.poll(), Received::Nothing);
    let next = restarted.publish(6, b"six").unwrap();
    assert_eq!(next.sequence, sequence + 1);
    assert_eq!(delivered(subscriber.poll()), (6, b"six".to_vec()));
}

#[test]
fn second_publisher_is_locked_out() {
    let (dir, _publisher, _subscriber) = pair();
    let error = Publisher::attach(&dir.path().join("ring"), small()).unwrap_err();
    assert!(
        error.to_string().contains("already has a writer"),
        "{error}"
    );
}

#[test]
fn second_reader_is_locked_out() {
    let (dir, _publisher, subscriber) = pair();
    let path = dir.path().join("ring");
    let error = Subscriber::attach(&path, small()).unwrap_err().to_string();
    assert!(error.contains(&path.display().to_string()), "{error}");
    assert!(
        error.contains(&format!("process {} holds", std::process::id())),
        "{error}"
    );

    // The lock goes with the reader: a new one attaches once the first is gone.
    drop(subscriber);
    Subscriber::attach(&path, small()).unwrap();
}

#[test]
fn counters_round_trip() {
    let (_dir, publisher, subscriber) = pair();
    assert_eq!(publisher.read_counters(), None);
    subscriber.write_counters(b"{\"rx_packets\":1}").unwrap();
    assert_eq!(publisher.read_counters().unwrap(), b"{\"rx_packets\":1}");
    assert!(subscriber.write_counters(&[0; 256]).is_err());
}

#[test]
fn status_reports_applied_and_rejected() {
    let (_dir, publisher, subscriber) = pair();
    subscriber.report_applied(4);
    subscriber.report_rejected(5);
    subscriber.report_rejected(6);
    subscriber.heartbeat();
    let status = publisher.dataplane();
    assert_eq!(status.applied_generation, 4);
    assert_eq!(status.rejected, 2);
    assert_eq!(status.rejected_generation, 6);
    assert!(status.heartbeat_unix_ms > 0);
}

#[test]
fn non_ring_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ring");
    std::fs::write(&path, vec![7u8; 8192]).unwrap();
    let error = Subscriber::attach(&path, small()).unwrap_err();
    assert!(
        error.to_string().contains("is not a Spike snapshot ring"),
        "{error}"
    );
}
