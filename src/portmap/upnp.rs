//! UPnP-IGD, as much of it as one UDP mapping needs: an SSDP search on the
//! LAN, the gateway's device description (to find its WANIPConnection or
//! WANPPPConnection control URL), and three SOAP actions
//! (GetExternalIPAddress, AddPortMapping, DeletePortMapping) over plain
//! HTTP/1.1. The formats are pure functions; [`Igd`] does the I/O.
//!
//! Only the gateway is ever contacted: a search answer from any other
//! address is ignored, and so is a description or control URL on another
//! host, so a device on the LAN cannot point this client elsewhere.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{timeout, Instant};

use super::machine::UpnpOutcome;

/// SSDP's group and port.
const SSDP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), 1900);
/// How long a search waits for the gateway's answer.
const SEARCH_WAIT: Duration = Duration::from_millis(1500);
/// Largest HTTP response read (a description is a few KiB).
const MAX_HTTP: usize = 256 * 1024;
/// The services that can map ports, most capable first.
const SERVICES: [&str; 3] = [
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
];

/// An M-SEARCH for internet gateway devices.
pub fn search_request() -> Vec<u8> {
    b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\n\
      ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n"
        .to_vec()
}

/// The value of `name` among an HTTP-style message's header lines.
fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Splits `http://a.b.c.d[:port]/path` into address and path; anything
/// else (https, a host name, IPv6) is `None`.
pub fn parse_http_url(url: &str) -> Option<(SocketAddrV4, String)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = match rest.find('/') {
        Some(at) => (&rest[..at], rest[at..].to_string()),
        None => (rest, "/".to_string()),
    };
    let addr = match host.split_once(':') {
        Some((ip, port)) => SocketAddrV4::new(ip.parse().ok()?, port.parse().ok()?),
        None => SocketAddrV4::new(host.parse().ok()?, 80),
    };
    Some((addr, path))
}

/// The description URL of a search answer, if it is on `gateway`.
pub fn location_on(answer: &str, gateway: Ipv4Addr) -> Option<(SocketAddrV4, String)> {
    if !answer.starts_with("HTTP/1.1 200") && !answer.starts_with("HTTP/1.0 200") {
        return None;
    }
    let (addr, path) = parse_http_url(header(answer, "location")?)?;
    (*addr.ip() == gateway).then_some((addr, path))
}

/// The text between the first `<tag>` and its `</tag>` in `xml`.
fn element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(xml[start..end].trim())
}

/// The best port-mapping service in a device description: its type and its
/// control URL's path on `base` (the description's own address).
pub fn control_url(xml: &str, base: SocketAddrV4) -> Option<(String, String)> {
    let services: Vec<&str> = xml.split("<service>").skip(1).collect();
    SERVICES.iter().find_map(|wanted| {
        services.iter().find_map(|service| {
            if element(service, "serviceType")? != *wanted {
                return None;
            }
            let url = element(service, "controlURL")?;
            let path = if url.starts_with('/') {
                url.to_string()
            } else {
                let (addr, path) = parse_http_url(url)?;
                if addr != base {
                    return None;
                }
                path
            };
            Some((wanted.to_string(), path))
        })
    })
}

/// A SOAP request's body and `SOAPAction` for `action` of `service`.
pub fn soap_body(service: &str, action: &str, args: &[(&str, String)]) -> String {
    let mut inner = String::new();
    for (name, value) in args {
        inner += &format!("<{name}>{value}</{name}>");
    }
    format!(
        "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body>\
         <u:{action} xmlns:u=\"{service}\">{inner}</u:{action}></s:Body></s:Envelope>\r\n"
    )
}

/// A UPnP error code in a SOAP fault (`<errorCode>718</errorCode>`).
pub fn fault_code(body: &str) -> Option<u32> {
    element(body, "errorCode")?.parse().ok()
}

/// The body of an HTTP/1.1 response read to its end: de-chunked if it
/// came in chunks. `None` if it is not HTTP.
pub fn http_body(response: &[u8]) -> Option<(u16, Vec<u8>)> {
    let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&response[..split]).ok()?;
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut body = &response[split + 4..];
    let chunked =
        header(head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if !chunked {
        return Some((status, body.to_vec()));
    }
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some((status, out));
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

/// One HTTP/1.1 exchange with `addr` (closed after the response).
async fn http(addr: SocketAddrV4, request: String) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot reach the IGD at {addr}: {e}"))?;
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    (&mut stream)
        .take(MAX_HTTP as u64)
        .read_to_end(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    let (status, body) = http_body(&response).ok_or("the IGD's answer is not HTTP")?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A gateway's port-mapping service, once found.
#[derive(Clone, Debug)]
pub struct Igd {
    addr: SocketAddrV4,
    service: String,
    control: String,
}

impl Igd {
    /// Searches the LAN (TTL 1, from `client`) for the IGD on `gateway`
    /// and reads its description.
    pub async fn find(gateway: Ipv4Addr, client: Ipv4Addr) -> Result<Igd, String> {
        let socket = UdpSocket::bind(SocketAddr::from((client, 0)))
            .await
            .map_err(|e| e.to_string())?;
        socket.set_multicast_ttl_v4(1).map_err(|e| e.to_string())?;
        socket
            .send_to(&search_request(), SSDP)
            .await
            .map_err(|e| format!("cannot send the UPnP search: {e}"))?;
        let deadline = Instant::now() + SEARCH_WAIT;
        let mut buf = vec![0u8; 2048];
        let (addr, path) = loop {
            let received = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await;
            let Ok(Ok((len, from))) = received else {
                return Err("no UPnP gateway answered".into());
            };
            if from.ip() != gateway {
                continue;
            }
            let answer = String::from_utf8_lossy(&buf[..len]);
            if let Some(found) = location_on(&answer, gateway) {
                break found;
            }
        };
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let (status, xml) = http(addr, request).await?;
        if status != 200 {
            return Err(format!("the IGD's description answered HTTP {status}"));
        }
        let (service, control) =
            control_url(&xml, addr).ok_or("the gateway's IGD has no port-mapping service")?;
        Ok(Igd {
            addr,
            service,
            control,
        })
    }

    async fn call(
        &self,
        action: &str,
        args: &[(&str, String)],
    ) -> Result<String, Result<u32, String>> {
        let body = soap_body(&self.service, action, args);
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/xml; charset=\"utf-8\"\r\n\
             SOAPAction: \"{}#{action}\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.control,
            self.addr,
            self.service,
            body.len()
        );
        let (status, body) = http(self.addr, request).await.map_err(Err)?;
        match status {
            200 => Ok(body),
            _ => Err(fault_code(&body).ok_or(format!("{action} answered HTTP {status}"))),
        }
    }

    /// Maps UDP `external_port` to `client:internal_port` for `lease` s.
    pub async fn map(
        &self,
        client: Ipv4Addr,
        internal_port: u16,
        external_port: u16,
        lease: u32,
    ) -> UpnpOutcome {
        let external_ip = match self.call("GetExternalIPAddress", &[]).await {
            Ok(body) => element(&body, "NewExternalIPAddress").and_then(|ip| ip.parse().ok()),
            Err(_) => None,
        };
        let Some(external_ip) = external_ip else {
            return UpnpOutcome::Failed("the IGD did not say its external address".into());
        };
        let args = [
            ("NewRemoteHost", String::new()),
            ("NewExternalPort", external_port.to_string()),
            ("NewProtocol", "UDP".to_string()),
            ("NewInternalPort", internal_port.to_string()),
            ("NewInternalClient", client.to_string()),
            ("NewEnabled", "1".to_string()),
            ("NewPortMappingDescription", "punchgate".to_string()),
            ("NewLeaseDuration", lease.to_string()),
        ];
        match self.call("AddPortMapping", &args).await {
            Ok(_) => UpnpOutcome::Mapped(SocketAddrV4::new(external_ip, external_port)),
            Err(Ok(718)) => UpnpOutcome::Conflict,
            Err(Ok(725)) => UpnpOutcome::OnlyPermanent,
            Err(Ok(code)) => UpnpOutcome::Failed(format!("AddPortMapping: UPnP error {code}")),
            Err(Err(error)) => UpnpOutcome::Failed(error),
        }
    }

    /// Deletes the UDP mapping at `external_port`.
    pub async fn unmap(&self, external_port: u16) -> UpnpOutcome {
        let args = [
            ("NewRemoteHost", String::new()),
            ("NewExternalPort", external_port.to_string()),
            ("NewProtocol", "UDP".to_string()),
        ];
        match timeout(
            super::machine::UPNP_OP_TIMEOUT,
            self.call("DeletePortMapping", &args),
        )
        .await
        {
            Ok(Ok(_)) => UpnpOutcome::Unmapped,
            Ok(Err(Ok(code))) => {
                UpnpOutcome::Failed(format!("DeletePortMapping: UPnP error {code}"))
            }
            Ok(Err(Err(error))) => UpnpOutcome::Failed(error),
            Err(_) => UpnpOutcome::Failed("DeletePortMapping timed out".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);

    #[test]
    fn a_search_answer_is_followed_only_to_the_gateway() {
        let answer = "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\n\
                      LOCATION: http://10.0.1.1:5000/rootDesc.xml\r\nST: x\r\n\r\n";
        assert_eq!(
            location_on(answer, GW),
            Some(("10.0.1.1:5000".parse().unwrap(), "/rootDesc.xml".into()))
        );
        let elsewhere = answer.replace("10.0.1.1", "192.0.2.9");
        assert_eq!(location_on(&elsewhere, GW), None);
        let named = answer.replace("10.0.1.1", "router.example");
        assert_eq!(location_on(&named, GW), None);
        assert_eq!(location_on("NOTIFY * HTTP/1.1\r\n\r\n", GW), None);
    }

    #[test]
    fn the_control_url_of_the_best_service_is_found() {
        let base: SocketAddrV4 = "10.0.1.1:5000".parse().unwrap();
        let xml = "<root><device><serviceList>\
            <service><serviceType>urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1</serviceType>\
            <controlURL>/ctl/CmnIfCfg</controlURL></service>\
            <service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>\
            <controlURL>/ctl/IPConn</controlURL></service>\
            <service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:2</serviceType>\
            <controlURL>http://10.0.1.1:5000/ctl/IPConn2</controlURL></service>\
            </serviceList></device></root>";
        assert_eq!(
            control_url(xml, base),
            Some((SERVICES[0].to_string(), "/ctl/IPConn2".to_string()))
        );
        let elsewhere = xml.replace("http://10.0.1.1:5000/ctl/IPConn2", "http://192.0.2.9/x");
        assert_eq!(
            control_url(&elsewhere, base),
            Some((SERVICES[1].to_string(), "/ctl/IPConn".to_string())),
            "a control URL on another host is not used"
        );
        assert_eq!(control_url("<root/>", base), None);
    }

    #[test]
    fn soap_faults_and_chunked_bodies_are_read() {
        let fault = "<s:Envelope><s:Body><s:Fault><detail><UPnPError>\
                     <errorCode>718</errorCode><errorDescription>ConflictInMappingEntry\
                     </errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>";
        assert_eq!(fault_code(fault), Some(718));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        assert_eq!(http_body(chunked), Some((200, b"hello world".to_vec())));
        let plain = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 2\r\n\r\nno";
        assert_eq!(http_body(plain), Some((500, b"no".to_vec())));
        assert_eq!(http_body(b"garbage"), None);
        assert_eq!(
            http_body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            None
        );
    }

    #[test]
    fn a_soap_request_names_its_action_and_arguments() {
        let body = soap_body(
            SERVICES[1],
            "AddPortMapping",
            &[("NewExternalPort", "4000".into())],
        );
        assert!(body.contains(
            "<u:AddPortMapping xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:1\">"
        ));
        assert!(body.contains("<NewExternalPort>4000</NewExternalPort>"));
    }
}
