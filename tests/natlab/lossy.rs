//! The lab's broadband path (rate-limited, queued, delayed links) and a
//! transfer across it under random loss. The measurements are
//! benches/lossy_path.rs; these only check that the path is what the bench
//! assumes and that a transfer over a lossy path completes intact.

use super::*;
use lab::Links;

#[test]
fn the_broadband_path_is_shaped_and_its_delay_lines_keep_up() {
    let Some(_) = lab_or_skip("shaped path") else {
        return;
    };
    let mut lab = Lab::with_links(Links::BROADBAND);
    let server = lab.add_site(1, Nat::None, 1, false);
    let client = lab.add_site(2, Nat::PortRestricted, 1, false);
    let _serving = flows::Flow::serve(&server.hosts[0].netns, 5001);
    let wanted = 8u64 << 20;
    let server_ip = server.public_ip.to_string();
    let from = flows::Download {
        netns: &client.hosts[0].netns,
        server: &server_ip,
        port: 5001,
        congestion: None,
    };
    let (got, secs) = flows::download(from, wanted, WAIT);
    let link = Links::BROADBAND.rate.unwrap().bytes_per_s();
    eprintln!(
        "NATLAB-SELFTEST | TCP download of 8 MiB over the broadband path | {:.2} MiB/s of a {:.2} MiB/s link",
        got as f64 / secs / f64::from(1 << 20),
        link / f64::from(1 << 20)
    );
    assert_eq!(got, wanted, "the download did not complete");
    // Not a speed test: faster than the link would mean it is not shaped.
    assert!(got as f64 / secs <= link, "{got} bytes in {secs} s");
    // A frame lost now and then when the (userspace) line is descheduled is
    // noise; more than one in a thousand would bias every lab measurement.
    let frames = wanted / 1448;
    let drops = lab.delay_line_drops();
    assert!(
        drops * 1000 <= frames,
        "the delay lines fell behind: {drops} frames lost"
    );
}

#[test]
fn four_mib_cross_a_lossy_broadband_path_byte_identical() {
    let Some(_) = lab_or_skip("lossy transfer") else {
        return;
    };
    let mut lab = Lab::with_links(Links::BROADBAND);
    let sender_site = lab.add_site(1, Nat::None, 1, false);
    let receiver_site = lab.add_site(2, Nat::PortRestricted, 1, false);
    lab.set_loss(receiver_site.router.as_deref().unwrap(), 1.0);
    let (_tracker, target) = start_tracker(&lab);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("four.bin");
    let bytes: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8)
        .collect();
    std::fs::write(&file, &bytes).unwrap();
    let bind = format!("0.0.0.0:{HOST_PORT}");
    // The default controller on both sides, as users get it.
    let sender = Proc::start_in(
        Some(&sender_site.hosts[0].netns),
        &[
            "send",
            file.to_str().unwrap(),
            "--tracker",
            &target,
            "--bind",
            &bind,
        ],
    );
    let ticket = sender.expect("ticket", |_| true)["ticket"]
        .as_str()
        .unwrap()
        .to_string();
    let out = work.path().join("out");
    let getter = Proc::start_in(
        Some(&receiver_site.hosts[0].netns),
        &[
            "get",
            &ticket,
            "-o",
            out.to_str().unwrap(),
            "--bind",
            &bind,
            "--punch-timeout",
            PUNCH_TIMEOUT_SECS,
        ],
    );
    let connected = getter.expect("connected", |_| true);
    assert_eq!(connected["path"], "direct", "{connected}");
    let done = getter.expect("transfer_done", |_| true);
    assert_eq!(done["bytes"].as_u64(), Some(4 << 20));
    assert_eq!(std::fs::read(out.join("four.bin")).unwrap(), bytes);
    getter.finish();
}
