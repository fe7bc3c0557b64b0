//! The web page (`--web`): its guard over plain HTTP (no secret, a foreign
//! `Host`, a change from a foreign `Origin` are refused), the CLI's `web`
//! event, and end to end in a real headless Chromium driven through
//! chromedriver: chat both ways, files both ways, a password room, and a
//! `<script>` message shown as text. `PUNCHGATE_SCREENSHOT=docs/web.png`
//! writes README's picture.

mod common;

use common::web::*;
use common::*;
use punchgate::node::Event;
use serde_json::{json, Value};

/// Headers of a request made as the page would make it.
fn as_page<'a>(node: &'a WebNode, cookie: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![("Host", &node.host), ("Cookie", cookie)]
}

fn cookie_of(node: &WebNode) -> String {
    let port = node.web.local_addr().port();
    format!("punchgate_{port}={}", node.secret)
}

#[tokio::test]
async fn requests_without_the_secret_are_refused() {
    let node = start_web_node(config("alice", None, "lobby")).await;
    for path in [
        "/",
        "/api/state",
        "/api/events",
        "/app.js",
        "/api/history?room=lobby",
    ] {
        let answer = request(&node.host, "GET", path, &[("Host", &node.host)], b"").await;
        assert_eq!(answer.status, 403, "{path}");
        let policy = answer.header("content-security-policy").unwrap_or("");
        assert!(policy.contains("default-src 'none'"), "{path}: {policy}");
    }
    // A wrong secret, in each place one may come.
    let wrong = format!(
        "punchgate_{}=00{}",
        node.web.local_addr().port(),
        &node.secret[2..]
    );
    let answer = request(
        &node.host,
        "GET",
        "/api/state",
        &as_page(&node, &wrong),
        b"",
    )
    .await;
    assert_eq!(answer.status, 403);
    let path = format!("/?token=x{}", &node.secret[1..]);
    let answer = request(&node.host, "GET", &path, &[("Host", &node.host)], b"").await;
    assert_eq!(answer.status, 403);

    // The secret in the URL becomes the cookie; the cookie opens the rest.
    let path = format!("/?token={}", node.secret);
    let answer = request(&node.host, "GET", &path, &[("Host", &node.host)], b"").await;
    assert_eq!(answer.status, 303);
    let set = answer.header("set-cookie").unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    let answer = request(
        &node.host,
        "GET",
        "/api/state",
        &as_page(&node, &cookie),
        b"",
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["peer_id"], node.node.peer_id().to_string());
    // ...but the URL's secret is taken on the page only.
    let path = format!("/api/state?token={}", node.secret);
    let answer = request(&node.host, "GET", &path, &[("Host", &node.host)], b"").await;
    assert_eq!(answer.status, 403);
}

#[tokio::test]
async fn a_foreign_host_is_refused_even_with_the_secret() {
    let node = start_web_node(config("alice", None, "lobby")).await;
    let cookie = cookie_of(&node);
    let port = node.web.local_addr().port();
    let rebinding = format!("attacker.example:{port}");
    for host in [rebinding.as_str(), "127.0.0.1:1", "localhost"] {
        let answer = request(
            &node.host,
            "GET",
            "/api/state",
            &[("Host", host), ("Cookie", &cookie)],
            b"",
        )
        .await;
        assert_eq!(answer.status, 403, "{host}");
    }
    let localhost = format!("localhost:{port}");
    let answer = request(
        &node.host,
        "GET",
        "/api/state",
        &[("Host", &localhost), ("Cookie", &cookie)],
        b"",
    )
    .await;
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn a_change_from_a_foreign_origin_is_refused_and_changes_nothing() {
    let node = start_web_node(config("alice", None, "lobby")).await;
    let cookie = cookie_of(&node);
    let join = json!({ "room": "elsewhere" }).to_string();
    let own = node.base.clone();
    for origin in [Some("http://attacker.example"), Some("null"), None] {
        let mut headers = as_page(&node, &cookie);
        headers.push(("Content-Type", "application/json"));
        if let Some(origin) = origin {
            headers.push(("Origin", origin));
        }
        let answer = request(&node.host, "POST", "/api/join", &headers, join.as_bytes()).await;
        assert_eq!(answer.status, 403, "{origin:?}");
    }
    assert_eq!(node.node.rooms(), vec!["lobby".to_string()]);
    let mut headers = as_page(&node, &cookie);
    headers.push(("Content-Type", "application/json"));
    headers.push(("Origin", &own));
    let answer = request(&node.host, "POST", "/api/join", &headers, join.as_bytes()).await;
    assert_eq!(
        answer.status,
        204,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(
        node.node.rooms(),
        vec!["lobby".to_string(), "elsewhere".into()]
    );
}

/// Sends `line` as the page does, for the page's `room`.
async fn page_command(node: &WebNode, line: &str, room: &str) {
    let (cookie, own) = (cookie_of(node), node.base.clone());
    let mut headers = as_page(node, &cookie);
    headers.push(("Content-Type", "application/json"));
    headers.push(("Origin", &own));
    let command = json!({ "line": line, "room": room }).to_string();
    let answer = request(
        &node.host,
        "POST",
        "/api/command",
        &headers,
        command.as_bytes(),
    )
    .await;
    // A command's outcome, refusals included, comes as events.
    assert_eq!(
        answer.status,
        204,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
}

/// The room of the `sent` event of `text`.
async fn sent_to(node: &WebNode, text: &str) -> Value {
    node.sees(text, |event| {
        (event["event"] == "sent" && event["text"] == text).then(|| event["room"].clone())
    })
    .await
}

#[tokio::test]
async fn a_command_from_the_page_acts_on_its_room_and_leaves_the_current_room_alone() {
    let node = start_web_node(config("alice", None, "lobby")).await;
    node.node.join("side").await.unwrap();
    page_command(&node, "for the lobby", "lobby").await;
    assert_eq!(sent_to(&node, "for the lobby").await, "lobby");
    // The terminal's current room is still the one joined last.
    assert_eq!(node.node.rooms(), vec!["lobby".to_string(), "side".into()]);
    node.node.say("for the current room").await.unwrap();
    assert_eq!(sent_to(&node, "for the current room").await, "side");
    // A room the node has not joined is refused, and nothing is sent.
    page_command(&node, "lost", "nowhere").await;
    let error = node
        .sees("the refusal", |event| {
            (event["event"] == "error").then(|| event["message"].clone())
        })
        .await;
    assert!(
        error.to_string().contains("#nowhere is not joined"),
        "{error}"
    );
}

#[test]
fn the_web_command_and_chat_web_print_the_address_with_the_secret() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for args in [
        &["web", "--bind", "127.0.0.1:0", "--room", "lobby"][..],
        &["chat", "--bind", "127.0.0.1:0", "--room", "lobby", "--web"][..],
    ] {
        let proc = process::Proc::start(args);
        let event = proc.expect("web", |_| true);
        let url = event["url"].as_str().unwrap().to_string();
        let rest = url.strip_prefix("http://127.0.0.1:").unwrap();
        let (port, token) = rest.split_once("/?token=").unwrap();
        assert!(token.len() >= 64, "{url}");
        let host = format!("127.0.0.1:{port}");
        let path = format!("/?token={token}");
        let answer = runtime.block_on(request(&host, "GET", &path, &[("Host", &host)], b""));
        assert_eq!(answer.status, 303, "{args:?}");
        let bare = runtime.block_on(request(&host, "GET", "/", &[("Host", &host)], b""));
        assert_eq!(bare.status, 403, "{args:?}");
        proc.kill();
    }
}

#[cfg(target_os = "linux")]
#[test]
fn open_hands_the_browser_a_page_of_the_owner_not_the_secret() {
    use std::os::unix::fs::PermissionsExt;
    // A stand-in for the desktop's opener that notes what it was given.
    let bin = tempfile::tempdir().unwrap();
    let noted = bin.path().join("opened");
    let opener = bin.path().join("xdg-open");
    std::fs::write(
        &opener,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{0}.part' && mv '{0}.part' '{0}'\n",
            noted.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&opener, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    let home = tempfile::tempdir().unwrap();
    let proc = process::Proc::start_with_home_env(
        home.path(),
        &["web", "--bind", "127.0.0.1:0", "--room", "lobby", "--open"],
        &[("PATH", &path)],
    );
    let url = proc.expect("web", |_| true)["url"]
        .as_str()
        .unwrap()
        .to_string();
    // The opener runs beside the node; it has no event of its own.
    let deadline = std::time::Instant::now() + WAIT;
    while !noted.exists() {
        assert!(std::time::Instant::now() < deadline, "the opener never ran");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let given = std::fs::read_to_string(&noted).unwrap();
    let (_, token) = url.split_once("token=").unwrap();
    assert!(
        !given.contains(token),
        "the secret reached a command line: {given}"
    );
    let page = std::path::PathBuf::from(given.trim_end());
    assert!(page.starts_with(home.path()), "{}", page.display());
    let mode = std::fs::metadata(&page).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let forwards = std::fs::read_to_string(&page).unwrap();
    assert!(
        forwards.contains(&format!("content=\"0;url={url}\"")),
        "{forwards}"
    );
    proc.kill();
}

// ----------------------------------------------------------- the browser --

/// Chromium and its driver, or `None` to skip; under CI a missing browser
/// fails the test.
fn browser_or_skip() -> Option<(String, String)> {
    match browser_binaries() {
        Ok(found) => Some(found),
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("{why}"),
        Err(why) => {
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// The texts of the messages the page shows, and whether any message
/// holds an element (it must hold text only).
const MESSAGES: &str = "return [...document.querySelectorAll('#messages li .text')]\
    .map(e => e.textContent)";

async fn page_shows(browser: &Browser, text: &str) {
    browser
        .until(
            &format!("message {text:?}"),
            "return [...document.querySelectorAll('#messages li .text')]\
             .some(e => e.textContent === arguments[0])",
            json!([text]),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_chats_shares_files_and_joins_a_password_room() {
    let Some((chromium, driver)) = browser_or_skip() else {
        return;
    };
    let tracker = start_tracker();
    let downloads = tempfile::tempdir().unwrap();
    let mut alice_config = config("alice", Some(&tracker), "lobby");
    alice_config.transfer.downloads = downloads.path().to_path_buf();
    let alice = start_web_node(alice_config).await;
    let mut bob = start_node(config("bob", Some(&tracker), "lobby")).await;
    let browser = Browser::start(&chromium, &driver, 1280, 900).await;
    browser.goto(&alice.url).await;
    browser
        .until(
            "the page to show the node's id",
            "return document.getElementById('my-id').textContent === arguments[0]",
            json!([alice.node.peer_id().to_string()]),
        )
        .await;
    // The secret left the address bar for the cookie.
    let location = browser.run("return location.href", json!([])).await;
    assert!(!location.as_str().unwrap().contains("token"), "{location}");
    bob.sees("alice connected", |e| match e {
        Event::Connected { name, .. } if name == "alice" => Some(()),
        _ => None,
    })
    .await;
    browser
        .until(
            "bob in the peers list",
            "return [...document.querySelectorAll('#peers .name')].some(e => e.textContent === 'bob')",
            json!([]),
        )
        .await;

    // A message typed in the page (Enter sends) reaches bob, and is marked
    // delivered once bob has it on disk.
    assert_eq!(browser.label("#message").await, "Message");
    browser
        .type_into("#message", "hello from the page\u{E007}")
        .await;
    let (from, _) = bob.receives("hello from the page").await;
    assert_eq!(from, alice.node.peer_id().to_string());
    browser
        .until(
            "the own message marked delivered",
            "return [...document.querySelectorAll('#messages li.own .state')]\
             .some(e => e.textContent.startsWith('delivered'))",
            json!([]),
        )
        .await;

    // A reply shows in the page, markup and all, as text.
    let hostile = "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned=2\"> reply";
    bob.node.say(hostile).await.unwrap();
    page_shows(&browser, hostile).await;
    let elements = browser
        .run(
            "return document.querySelectorAll('#messages script, #messages img').length \
             + (window.pwned === undefined ? 0 : 100)",
            json!([]),
        )
        .await;
    assert_eq!(elements, json!(0));

    // A file offered from the page (the file picker) is fetched by bob,
    // byte-identical.
    let files = tempfile::tempdir().unwrap();
    let offered = files.path().join("from the page.bin");
    let content = pattern(3 * 1024 * 1024 + 17, 7);
    std::fs::write(&offered, &content).unwrap();
    browser
        .type_into("#file-input", &offered.display().to_string())
        .await;
    let hash = bob
        .sees("the page's offer", |e| match e {
            Event::FileOffered { name, hash, .. } if name == "from the page.bin" => {
                Some(hash.clone())
            }
            _ => None,
        })
        .await;
    let into = tempfile::tempdir().unwrap();
    bob.node
        .get_offered(&hash, into.path().to_path_buf(), false)
        .unwrap();
    bob.sees("bob's download", |e| match e {
        Event::TransferDone { report, .. } if report.hash == hash => Some(()),
        Event::Error { message } => panic!("{message}"),
        _ => None,
    })
    .await;
    assert!(std::fs::read(into.path().join("from the page.bin")).unwrap() == content);

    // A file dropped on the chat is offered too.
    browser
        .run(
            "const data = new DataTransfer();\
             data.items.add(new File([arguments[0]], 'dropped.txt'));\
             document.getElementById('chat').dispatchEvent(\
               new DragEvent('drop', { dataTransfer: data, bubbles: true, cancelable: true }));",
            json!(["dropped on the page"]),
        )
        .await;
    let hash = bob
        .sees("the dropped file's offer", |e| match e {
            Event::FileOffered { name, hash, .. } if name == "dropped.txt" => Some(hash.clone()),
            _ => None,
        })
        .await;
    bob.node
        .get_offered(&hash, into.path().to_path_buf(), false)
        .unwrap();
    bob.sees("bob's download of the dropped file", |e| match e {
        Event::TransferDone { report, .. } if report.hash == hash => Some(()),
        Event::Error { message } => panic!("{message}"),
        _ => None,
    })
    .await;
    assert_eq!(
        std::fs::read(into.path().join("dropped.txt")).unwrap(),
        b"dropped on the page"
    );

    // A file bob offers is downloaded from the page, with progress, and
    // handed over by the page's link byte-identical.
    let theirs = files.path().join("bob's.bin");
    let content = pattern(8 * 1024 * 1024 + 5, 9);
    std::fs::write(&theirs, &content).unwrap();
    bob.node.send_files(vec![theirs.clone()]).await.unwrap();
    browser
        .click("#offers button[aria-label=\"Download bob's.bin\"]")
        .await;
    alice
        .sees("progress of the download", |e| {
            (e["event"] == "transfer_progress" && e["name"] == "bob's.bin").then_some(())
        })
        .await;
    browser
        .until(
            "a progress bar",
            "return document.querySelector('#offers progress') !== null",
            json!([]),
        )
        .await;
    let link = browser
        .until(
            "the finished download's link",
            "const a = [...document.querySelectorAll('#downloads a')]\
             .find(a => a.textContent === \"bob's.bin\"); return a ? a.href : null",
            json!([]),
        )
        .await;
    assert!(link.as_str().unwrap().contains("/api/download/"), "{link}");
    let fetched = fetch_in_page(&browser, link.as_str().unwrap()).await;
    let expected = data_encoding::HEXLOWER
        .encode(ring::digest::digest(&ring::digest::SHA256, &content).as_ref());
    assert_eq!(fetched, json!([content.len(), expected]));

    // A password room: the page asks for the password, then joins; bob,
    // who holds it, shares the room.
    let secret = punchgate::pake::Secret::new("correct horse");
    bob.node.join_with_password("vault", secret).await.unwrap();
    browser.type_into("#join-room", "vault").await;
    browser.click("#join-locked").await;
    browser.click("#join-button").await;
    browser
        .until(
            "the password prompt",
            "return document.getElementById('password-dialog').open",
            json!([]),
        )
        .await;
    browser
        .type_into("#password-input", "correct horse\u{E007}")
        .await;
    browser
        .until(
            "#vault open and locked",
            "return document.getElementById('room-title').textContent === '#vault' \
             && !document.getElementById('room-lock').hidden",
            json!([]),
        )
        .await;
    bob.sees("the proof with alice", |e| match e {
        Event::Info { message } if message.contains("password of #vault") => Some(()),
        _ => None,
    })
    .await;
    bob.node.say("inside the vault").await.unwrap();
    page_shows(&browser, "inside the vault").await;

    // A private message from bob: a conversation of its own, unread.
    bob.node
        .direct_message("alice", "just for you")
        .await
        .unwrap();
    browser
        .until(
            "the private conversation with an unread count",
            "return [...document.querySelectorAll('#dms button')]\
             .some(b => b.textContent.includes('@bob') && b.querySelector('.unread'))",
            json!([]),
        )
        .await;

    // The picture for README.md: back in the lobby.
    browser.click("#rooms button[data-room=lobby]").await;
    page_shows(&browser, "hello from the page").await;
    let texts = browser.run(MESSAGES, json!([])).await;
    assert!(texts.as_array().is_some_and(|t| !t.is_empty()), "{texts}");
    let shot = browser.screenshot().await;
    assert!(shot.starts_with(b"\x89PNG"), "the screenshot is a PNG");
    // Only when asked: every run would otherwise change a tracked file.
    if let Some(path) = std::env::var_os("PUNCHGATE_SCREENSHOT") {
        std::fs::write(path, shot).unwrap();
    }

    // Readable at phone width: nothing wider than the window.
    browser.resize(400, 800).await;
    browser
        .until(
            "a layout as narrow as a phone",
            "return window.innerWidth <= 400 \
             && document.documentElement.scrollWidth <= window.innerWidth",
            json!([]),
        )
        .await;
    drop(browser);
    alice.web.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_reconnects_when_the_server_comes_back() {
    let Some((chromium, driver)) = browser_or_skip() else {
        return;
    };
    let WebNode {
        web,
        url,
        secret,
        node,
        home,
        ..
    } = start_web_node(config("alice", None, "lobby")).await;
    let browser = Browser::start(&chromium, &driver, 1024, 768).await;
    browser.goto(&url).await;
    let badge = "return document.getElementById('link-state').textContent === arguments[0]";
    browser.until("the page live", badge, json!(["live"])).await;
    let addr = web.local_addr();
    web.stop().await;
    browser
        .until("the page to notice", badge, json!(["reconnecting…"]))
        .await;
    node.say("said while the page was away").await.unwrap();
    // The same address and secret, as a node restarted with its data
    // directory has (the secret is kept there).
    let again = punchgate::web::Web::start(
        node.clone(),
        punchgate::web::WebConfig {
            listen: addr,
            secret,
            uploads: home.path().join("uploads"),
        },
    )
    .await
    .unwrap();
    browser
        .until("the page live again", badge, json!(["live"]))
        .await;
    page_shows(&browser, "said while the page was away").await;
    drop(browser);
    again.stop().await;
}

/// Fetches `url` in the page; returns `[length, sha256 hex]`.
async fn fetch_in_page(browser: &Browser, url: &str) -> Value {
    browser
        .run(
            "window.fetched = null; fetch(arguments[0]).then(r => r.arrayBuffer())\
             .then(b => crypto.subtle.digest('SHA-256', b).then(d => { window.fetched = [b.byteLength,\
             [...new Uint8Array(d)].map(x => x.toString(16).padStart(2, '0')).join('')]; }));",
            json!([url]),
        )
        .await;
    browser
        .until("the fetch", "return window.fetched", json!([]))
        .await
}
