//! The router to ask: the gateway of the IPv4 default route, read from
//! `/proc/net/route` (Linux). No DNS, no packets: only the kernel's table.

use std::net::Ipv4Addr;

const RTF_UP: u32 = 0x1;
const RTF_GATEWAY: u32 = 0x2;

/// The default route's gateway in a `/proc/net/route` table, the one of
/// lowest metric if there are several.
pub fn default_gateway_in(table: &str) -> Option<Ipv4Addr> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let hex = |i: usize| fields.get(i).and_then(|f| u32::from_str_radix(f, 16).ok());
            let (destination, gateway, flags) = (hex(1)?, hex(2)?, hex(3)?);
            let metric: u32 = fields.get(6)?.parse().ok()?;
            let mask = hex(7)?;
            let default = destination == 0 && mask == 0;
            let usable = flags & (RTF_UP | RTF_GATEWAY) == RTF_UP | RTF_GATEWAY && gateway != 0;
            // The kernel prints the address as it lies in memory: network
            // byte order read as a native integer.
            (default && usable).then(|| (metric, Ipv4Addr::from(gateway.to_ne_bytes())))
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, gateway)| gateway)
}

/// This host's default gateway, if it has an IPv4 default route.
pub fn default_gateway() -> Option<Ipv4Addr> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    default_gateway_in(&table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(ip: Ipv4Addr) -> String {
        format!("{:08X}", u32::from_ne_bytes(ip.octets()))
    }

    #[test]
    fn the_default_route_of_lowest_metric_wins() {
        let table = format!(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             eth0\t{net}\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
             wlan0\t00000000\t{slow}\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
             eth0\t00000000\t{fast}\t0003\t0\t0\t100\t00000000\t0\t0\t0\n",
            net = hex(Ipv4Addr::new(10, 0, 1, 0)),
            slow = hex(Ipv4Addr::new(192, 168, 1, 1)),
            fast = hex(Ipv4Addr::new(10, 0, 1, 1)),
        );
        assert_eq!(default_gateway_in(&table), Some(Ipv4Addr::new(10, 0, 1, 1)));
    }

    #[test]
    fn no_default_route_or_a_down_one_is_none() {
        let header = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n";
        let down = format!(
            "{header}eth0\t00000000\t{}\t0002\t0\t0\t0\t00000000\n",
            hex(Ipv4Addr::new(10, 0, 1, 1))
        );
        assert_eq!(default_gateway_in(&down), None);
        assert_eq!(default_gateway_in(header), None);
        assert_eq!(default_gateway_in("garbage\n\u{0}\tzz"), None);
    }
}
