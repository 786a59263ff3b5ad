//! net_pcap: receive every frame of a capture, prepend 8 bytes in the
//! headroom, transmit to a pcap file and compare it with the input.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use spike_dpdk::{
    Eal, MbufBurst, Mempool, Port, DEFAULT_DATA_ROOM, PKTMBUF_HEADROOM, SOCKET_ID_ANY,
};

const INPUT_PCAP: &str = "/work/shared/pcaps/suricata-tcp-handshake-data-rst.pcap";
const INPUT_FRAMES: usize = 34;
const TAG: [u8; 8] = [0xab; 8];
const MAX_POLLS: usize = 10_000;

#[test]
fn pcap_prepend_round_trip() {
    let input_frames = common::read_pcap_frames(Path::new(INPUT_PCAP));
    assert_eq!(input_frames.len(), INPUT_FRAMES);

    let dir = common::TempDir::new("pcap-prepend");
    let output_pcap = dir.path().join("out.pcap");
    let vdev = format!(
        "net_pcap0,rx_pcap={INPUT_PCAP},tx_pcap={}",
        output_pcap.display()
    );
    let args = common::eal_args("pcap-prepend", &dir, &["-l", "0", "--vdev", &vdev]);
    let eal = Eal::init(&args).expect("EAL init with a net_pcap vdev");

    let pool = Mempool::new(&eal, "pcap_pool", 1023, 0, DEFAULT_DATA_ROOM, SOCKET_ID_ANY)
        .expect("mempool of 1023 mbufs");
    let mut port = Port::by_name(&eal, "net_pcap0").expect("net_pcap0 exists");
    assert_eq!(port.dev_info().unwrap().driver_name, "net_pcap");
    assert_eq!(
        port.configure(1, 1, true).unwrap(),
        0,
        "net_pcap has no RSS"
    );
    port.setup_rx_queue(0, 256, &pool).unwrap();
    port.setup_tx_queue(0, 256).unwrap();
    port.start().unwrap();

    let forwarded = prepend_and_echo(&mut port);
    assert_eq!(forwarded, INPUT_FRAMES);

    let input_bytes: usize = input_frames.iter().map(Vec::len).sum();
    let stats = port.stats().unwrap();
    assert_eq!(stats.ipackets, INPUT_FRAMES as u64);
    assert_eq!(stats.opackets, INPUT_FRAMES as u64);
    assert_eq!(stats.ibytes, input_bytes as u64);
    assert_eq!(
        stats.obytes,
        (input_bytes + INPUT_FRAMES * TAG.len()) as u64
    );

    // net_pcap in DPDK 22.11 flushes the dump file after every tx burst,
    // so the file is complete before close; close only ends the dump.
    let size_before_close = fs::metadata(&output_pcap).unwrap().len();
    port.close().expect("close net_pcap0");
    let size_after_close = fs::metadata(&output_pcap).unwrap().len();
    assert_eq!(size_before_close, size_after_close);

    let output_frames = common::read_pcap_frames(&output_pcap);
    assert_eq!(output_frames.len(), INPUT_FRAMES);
    for (index, (output, input)) in output_frames.iter().zip(&input_frames).enumerate() {
        assert_eq!(output[..TAG.len()], TAG, "frame {index} tag");
        assert_eq!(output[TAG.len()..], input[..], "frame {index} payload");
    }

    drop(pool);
    eal.cleanup().expect("EAL cleanup");
}

/// Receives until the capture is exhausted, prepends TAG to each frame
/// and transmits it on the same port. Returns the number of frames sent.
fn prepend_and_echo(port: &mut Port<'_>) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut burst = MbufBurst::new();
    let mut forwarded = 0;

    for _ in 0..MAX_POLLS {
        assert!(Instant::now() < deadline, "receiving the capture timed out");
        if port.rx_burst(0, &mut burst) == 0 {
            // The capture has a fixed number of frames, and net_pcap
            // returns them in the first polls.
            if forwarded == INPUT_FRAMES {
                break;
            }
            continue;
        }

        for mbuf in burst.iter_mut() {
            assert_eq!(mbuf.headroom(), PKTMBUF_HEADROOM);
            assert_eq!(mbuf.nb_segs(), 1);
            let original_len = mbuf.data_len();

            let tag = mbuf
                .prepend(TAG.len() as u16)
                .expect("headroom for the tag");
            tag.copy_from_slice(&TAG);

            assert_eq!(mbuf.data_len(), original_len + TAG.len() as u16);
            assert_eq!(mbuf.headroom(), PKTMBUF_HEADROOM - TAG.len() as u16);
        }

        let received = burst.len();
        let sent = port.tx_burst(0, &mut burst);
        assert_eq!(sent, received, "net_pcap writes every frame");
        forwarded += sent;
    }
    forwarded
}
