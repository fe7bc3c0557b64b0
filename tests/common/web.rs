//! For the web page's tests: a node with its page served in this process,
//! a minimal HTTP/1.1 client (one request per connection, headers as
//! given, so tests can send a foreign `Host` or `Origin`), and a minimal
//! WebDriver client for a real headless Chromium through chromedriver.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{start_node, TestNode, WAIT};
use punchgate::node::NodeConfig;
use punchgate::web::{Web, WebConfig};

/// A node serving its page; the node's events go to the page and stay
/// readable by the test (`node.events` keeps receiving copies through
/// `seen`).
pub struct WebNode {
    pub web: Web,
    pub url: String,
    pub base: String,
    pub secret: String,
    pub host: String,
    /// Every event the node emitted, as JSON lines, in order.
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    pub node: punchgate::node::Node,
    pub home: tempfile::TempDir,
}

/// Starts a node with `config` and serves its page on 127.0.0.1:0.
pub async fn start_web_node(config: NodeConfig) -> WebNode {
    let TestNode {
        node,
        mut events,
        home,
        ..
    } = start_node(config).await;
    let secret = punchgate::web::new_secret().unwrap();
    let web = Web::start(
        node.clone(),
        WebConfig {
            listen: punchgate::web::DEFAULT_LISTEN,
            secret: secret.clone(),
            uploads: home.path().join("uploads"),
        },
    )
    .await
    .unwrap();
    let hub = web.hub();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            hub.publish(&event);
            let value: Value = serde_json::from_str(&event.to_json()).unwrap();
            log.lock().unwrap().push(value);
        }
    });
    let host = web.local_addr().to_string();
    WebNode {
        url: web.url().to_string(),
        base: format!("http://{host}"),
        secret,
        host,
        web,
        seen,
        node,
        home,
    }
}

impl WebNode {
    /// Waits (with a deadline) for an event of the node that `pick` takes.
    pub async fn sees<T>(&self, what: &str, pick: impl Fn(&Value) -> Option<T>) -> T {
        let start = Instant::now();
        let mut checked = 0;
        loop {
            {
                let seen = self.seen.lock().unwrap();
                for event in &seen[checked..] {
                    if let Some(found) = pick(event) {
                        return found;
                    }
                }
                checked = seen.len();
            }
            assert!(start.elapsed() < WAIT, "waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// An answer: status, headers (lower-case names), body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// One HTTP/1.1 request to `addr` with exactly `headers` (plus
/// Content-Length and Connection: close); reads the answer to its end
/// (Content-Length bodies only: not for event streams).
pub async fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    // The head, then as many body bytes as Content-Length says (or all
    // until the peer closes).
    let read = async {
        loop {
            if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
                let length = head
                    .split("\r\n")
                    .filter_map(|l| l.strip_prefix("content-length:"))
                    .find_map(|v| v.trim().parse::<usize>().ok());
                if length.is_some_and(|length| raw.len() >= split + 4 + length) {
                    return;
                }
            }
            let n = stream.read(&mut buffer).await.unwrap();
            if n == 0 {
                return;
            }
            raw.extend_from_slice(&buffer[..n]);
        }
    };
    // Starting a browser session on a loaded machine takes a while.
    tokio::time::timeout(3 * WAIT, read)
        .await
        .expect("the answer took too long");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an answer has a head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

// ------------------------------------------------------------ WebDriver --

/// Chromium and chromedriver from Debian's packages, or why not.
pub fn browser_binaries() -> Result<(String, String), String> {
    let find = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("/usr/bin/{n}"))
            .find(|p| std::path::Path::new(p).exists())
    };
    let chromium = find(&["chromium", "chromium-browser"]);
    let driver = find(&["chromedriver"]);
    match (chromium, driver) {
        (Some(c), Some(d)) => Ok((c, d)),
        _ => {
            Err("needs chromium and chromedriver: apt-get install chromium chromium-driver".into())
        }
    }
}

/// A chromedriver process and one browser session in it.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

/// The `element-6066-...` key of WebDriver element references.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium
    /// session with a fresh profile.
    pub async fn start(chromium: &str, driver: &str, width: u32, height: u32) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("127.0.0.1:{port}");
        let profile = tempfile::tempdir().unwrap();
        let start = Instant::now();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--window-size={width},{height}"),
                ]
            }
        }}});
        let session = loop {
            // chromedriver answers once it listens.
            if let Ok(mut stream) = tokio::net::TcpStream::connect(&base).await {
                let _ = stream.shutdown().await;
                let answer = call(&base, "POST", "/session", Some(&capabilities)).await;
                break answer["value"]["sessionId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no session: {answer}"))
                    .to_string();
            }
            assert!(start.elapsed() < WAIT, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Browser {
            driver: child,
            base,
            session,
            _profile: profile,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let answer = call(&self.base, method, &path, body).await;
        if let Some(error) = answer["value"]["error"].as_str() {
            panic!(
                "webdriver {method} {path}: {error}: {}",
                answer["value"]["message"]
            );
        }
        answer["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(&json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub async fn run(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Waits until `script` returns something other than null/false/"".
    pub async fn until(&self, what: &str, script: &str, args: Value) -> Value {
        let start = Instant::now();
        loop {
            let value = self.run(script, args.clone()).await;
            let done = !(value.is_null() || value == json!(false) || value == json!(""));
            if done {
                return value;
            }
            assert!(start.elapsed() < WAIT, "waiting in the page for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The element `css` selects (waiting for it to exist).
    pub async fn find(&self, css: &str) -> String {
        self.until(
            &format!("element {css}"),
            "return document.querySelector(arguments[0]) !== null",
            json!([css]),
        )
        .await;
        let found = self
            .call(
                "POST",
                "/element",
                Some(&json!({"using": "css selector", "value": css})),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element in {found}"))
            .to_string()
    }

    /// Types `text` into the element `css` selects (`\u{E007}` is Enter).
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            Some(&json!({ "text": text })),
        )
        .await;
    }

    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call("POST", &format!("/element/{id}/click"), Some(&json!({})))
            .await;
    }

    /// The accessible name of the element `css` selects.
    pub async fn label(&self, css: &str) -> String {
        let id = self.find(css).await;
        let label = self
            .call("GET", &format!("/element/{id}/computedlabel"), None)
            .await;
        label.as_str().unwrap_or_default().to_string()
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let shot = self.call("GET", "/screenshot", None).await;
        data_encoding::BASE64
            .decode(shot.as_str().unwrap().as_bytes())
            .unwrap()
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.call(
            "POST",
            "/window/rect",
            Some(&json!({ "width": width, "height": height })),
        )
        .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the browser with the session; then the driver.
        let base = self.base.clone();
        let path = format!("/session/{}", self.session);
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let _ = tokio::time::timeout(WAIT, call(&base, "DELETE", &path, None)).await;
            });
        })
        .join();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// One WebDriver call: JSON in, JSON out.
async fn call(base: &str, method: &str, path: &str, body: Option<&Value>) -> Value {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let host = base.to_string();
    let answer = request(
        base,
        method,
        path,
        &[
            ("Host", &host),
            ("Content-Type", "application/json; charset=utf-8"),
        ],
        body.as_bytes(),
    )
    .await;
    serde_json::from_slice(&answer.body).unwrap_or_else(|_| {
        panic!(
            "webdriver answered {}",
            String::from_utf8_lossy(&answer.body)
        )
    })
}

/// The address part of `http://host:port`.
pub fn addr_of(base: &str) -> SocketAddr {
    base.trim_start_matches("http://").parse().unwrap()
}
