//! One peer cannot starve others of a sender's uploads (issue 12 row 6): a
//! peer that opens chunk streams, asks for chunks and never reads them holds
//! only its own share of the sender's disk-read permits, and each of its
//! stalled streams is reset after the write deadline.

mod common;

use std::time::{Duration, Instant};

use common::*;
use punchgate::protocol::{ChunkRequest, StreamKind, SyncFrame};
use punchgate::wire::{self, CloseCode, FrameReader, FrameWriter};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_completes_while_another_peer_stalls_twenty_chunk_streams() {
    let sender = start_node(config("sender", None, "lobby")).await;
    let source = tempfile::tempdir().unwrap();
    let file = source.path().join("big.bin");
    let bytes = pattern(64 << 20, 13);
    std::fs::write(&file, &bytes).unwrap();
    let share = sender.node.share(vec![file]).await.unwrap();
    let (content, chunks) = (share.layout.id, share.layout.total_chunks);

    // The staller asks for chunks on 20 streams and never reads an answer.
    // It shares no room with the sender (a content id is all it needs), and
    // answers the sender's history sync (of their private room), since a
    // sync left unanswered for 30 s closes the whole connection, which
    // would race the 20 s resets of the stalled streams this test waits for.
    let staller = raw_peer(&sender, "staller", "elsewhere").await;
    tokio::spawn(answer_syncs(staller.connection.clone()));
    let mut stalled = Vec::new();
    for stream in 0..20u64 {
        let (send, recv) = staller.connection.open_bi().await.unwrap();
        let mut writer = FrameWriter::open(send, StreamKind::Chunks).await.unwrap();
        for ask in 0..8 {
            let index = (stream * 8 + ask) % chunks;
            writer
                .send(&ChunkRequest {
                    content,
                    index,
                    count: 1,
                })
                .await
                .unwrap();
        }
        stalled.push((writer, recv));
    }
    // Once 8 MiB have arrived, at least two of its streams have filled
    // their 4 MiB windows and stall the sender's writes; the rest follow as
    // its connection window (16 MiB) fills.
    let deadline = Instant::now() + WAIT;
    while staller.connection.stats().udp_rx.bytes < 8 << 20 {
        assert!(
            Instant::now() < deadline,
            "the sender never served the staller: {} bytes, {:?}",
            staller.connection.stats().udp_rx.bytes,
            staller.connection.close_reason()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut getter = start_node(config("getter", None, "lobby")).await;
    getter
        .node
        .connect_by_text(&sender.node.target().unwrap())
        .await
        .unwrap();
    getter.connected_to(&sender).await;
    let target = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let fetch = getter.node.fetch(punchgate::node::FetchRequest {
        content,
        sources: vec![sender.node.peer_id()],
        target: target.path().to_path_buf(),
        force: false,
    });
    let report = tokio::time::timeout(Duration::from_secs(180), fetch)
        .await
        .expect("the get starved behind the stalled streams")
        .unwrap();
    println!(
        "64 MiB fetched in {:.2} s beside 20 stalled chunk streams",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(report.bytes, bytes.len() as u64);
    assert_eq!(std::fs::read(target.path().join("big.bin")).unwrap(), bytes);

    // Each stalled stream is reset, which frees what it held.
    let (_, recv) = &mut stalled[0];
    let reset = tokio::time::timeout(Duration::from_secs(120), recv.received_reset())
        .await
        .expect("a stalled chunk stream was never reset")
        .unwrap();
    assert_eq!(reset, Some(CloseCode::Refused.varint()));
}

/// Answers every history sync the peer opens with "nothing here".
async fn answer_syncs(connection: quinn::Connection) {
    while let Ok((send, mut recv)) = connection.accept_bi().await {
        let Ok(StreamKind::Sync) = wire::read_header::<StreamKind>(&mut recv).await else {
            continue;
        };
        tokio::spawn(async move {
            let mut reader = FrameReader::new(recv, StreamKind::Sync);
            let mut writer = FrameWriter::answering(send, StreamKind::Sync);
            while let Ok(Some(SyncFrame::Request { room, .. })) = reader.recv::<SyncFrame>().await {
                if writer.send(&SyncFrame::Done { room }).await.is_err() {
                    return;
                }
            }
        });
    }
}
