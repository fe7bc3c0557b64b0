//! Packet captures in the lab: tcpdump on one interface of a namespace,
//! and what the tests look for in the packets (bytes to a port, a
//! plaintext that must never cross the wire).

use std::process::{Command, Stdio};

/// A packet capture (tcpdump) of UDP on one interface of a namespace.
pub struct Capture {
    child: std::process::Child,
    file: std::path::PathBuf,
}

impl Capture {
    /// Starts capturing whole UDP packets on `dev` in `netns` into `file`;
    /// returns once tcpdump is listening.
    pub fn start(netns: &str, dev: &str, file: &std::path::Path) -> Capture {
        let mut child = Command::new("ip")
            .args([
                "netns", "exec", netns, "tcpdump", "-i", dev, "-n", "-U", "-s", "0",
            ])
            // Without it libpcap hands packets over in blocks, up to a
            // second late, and a short test stops the capture before its
            // packets reach the file.
            .arg("--immediate-mode")
            .args(["-Z", "root", "-w"])
            .arg(file)
            .arg("udp")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::BufRead;
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("listening on") {
            line.clear();
            let read = stderr.read_line(&mut line).unwrap();
            assert!(read > 0, "tcpdump did not start");
        }
        Capture {
            child,
            file: file.to_path_buf(),
        }
    }

    /// Stops the capture; returns the captured packets (Ethernet frames).
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: signalling our own child; SIGTERM lets tcpdump flush its file.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        self.child.wait().unwrap();
        parse_pcap(&std::fs::read(&self.file).unwrap())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The packets of a classic little-endian pcap file.
fn parse_pcap(bytes: &[u8]) -> Vec<Vec<u8>> {
    assert!(bytes.len() >= 24, "no pcap header");
    assert_eq!(
        &bytes[..4],
        &[0xd4, 0xc3, 0xb2, 0xa1],
        "not a little-endian pcap file"
    );
    let mut packets = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        let start = at + 16;
        let end = (start + len).min(bytes.len());
        packets.push(bytes[start..end].to_vec());
        at = start + len;
    }
    packets
}

/// UDP payload bytes of captured IPv4-over-Ethernet packets from or to `port`.
pub fn udp_bytes_on_port(packets: &[Vec<u8>], port: u16) -> usize {
    packets
        .iter()
        .filter_map(|frame| {
            let ip = frame.get(14..)?;
            if frame.get(12..14)? != [0x08, 0x00] || ip.first()? >> 4 != 4 || *ip.get(9)? != 17 {
                return None;
            }
            let udp = ip.get(usize::from(ip[0] & 0x0f) * 4..)?;
            let src = u16::from_be_bytes([*udp.first()?, *udp.get(1)?]);
            let dst = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
            (src == port || dst == port).then(|| udp.len().saturating_sub(8))
        })
        .sum()
}

/// Whether any captured packet contains `needle`.
pub fn contains(packets: &[Vec<u8>], needle: &[u8]) -> bool {
    packets
        .iter()
        .any(|packet| packet.windows(needle.len()).any(|w| w == needle))
}
