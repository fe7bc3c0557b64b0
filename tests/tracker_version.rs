//! A tracker that speaks another protocol version closes the connection
//! saying so; the node tells the user what happened and what to do, not
//! merely that the connection was lost.

mod common;

use common::config;
use punchgate::endpoint;
use punchgate::identity::Identity;
use punchgate::node::{Node, RelayPolicy};
use punchgate::tls::{self, CertifiedIdentity};
use punchgate::wire::CloseCode;

#[tokio::test]
async fn a_tracker_of_another_version_is_named_as_such() {
    let tracker_identity = Identity::generate().unwrap();
    let tracker_id = tracker_identity.peer_id();
    let server = CertifiedIdentity::new(&tracker_identity)
        .unwrap()
        .server(tls::ALPN_TRACKER, tls::allow_any_peer())
        .unwrap();
    let bound = endpoint::bind(common::loopback(), Some(server)).unwrap();
    let tracker_addr = bound.endpoint.local_addr().unwrap();
    let tracker = bound.endpoint.clone();
    // An older tracker: it reads the stream header and closes, as the real
    // one does with a version it does not speak.
    tokio::spawn(async move {
        while let Some(incoming) = tracker.accept().await {
            let Ok(connection) = incoming.await else {
                continue;
            };
            if let Ok((_send, mut recv)) = connection.accept_bi().await {
                let mut header = [0u8; 4];
                let _ = recv.read_exact(&mut header).await;
                connection.close(
                    CloseCode::Protocol.varint(),
                    b"unsupported protocol version 3 (this build speaks version 2)",
                );
            }
        }
    });

    let mut node_config = config("newer", None, "lobby");
    node_config.trackers = vec![format!("{tracker_id}@{tracker_addr}").parse().unwrap()];
    node_config.relay = RelayPolicy::Never;
    let home = tempfile::tempdir().unwrap();
    // Its only tracker refused it at start: the node does not start, and
    // says why in words.
    let Err(error) = Node::start(home.path(), node_config).await else {
        panic!("a node whose only tracker refused it started");
    };
    let message = error.to_string();
    assert!(
        message.contains("unsupported protocol version")
            && message.contains("run the same punchgate version as the tracker"),
        "{message}"
    );
}
