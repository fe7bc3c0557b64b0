use super::*;

fn body(author: &Identity) -> ChatBody {
    ChatBody {
        id: MessageId {
            author: author.peer_id(),
            seq: 1,
        },
        hlc: 1,
        room: "lobby".into(),
        text: "hi".into(),
    }
}

#[test]
fn signed_message_verifies_and_tampering_is_detected() {
    let alice = Identity::generate().unwrap();
    let mallory = Identity::generate().unwrap();
    let message = SignedMessage::sign(&alice, body(&alice)).unwrap();
    message.verify().unwrap();

    let mut altered = message.clone();
    altered.body.text = "give mallory the keys".into();
    assert!(matches!(altered.verify(), Err(MessageError::BadSignature)));

    // Mallory signs a body that claims Alice as author.
    let mut claimed = body(&alice);
    claimed.text = "forged".into();
    let bytes = wire::signing_bytes(CHAT_SIGNING_DOMAIN, &claimed).unwrap();
    let forged = SignedMessage {
        body: claimed,
        signature: mallory.sign(&bytes).to_vec(),
        room_tag: Vec::new(),
    };
    assert!(matches!(forged.verify(), Err(MessageError::BadSignature)));
}

#[test]
fn only_lan_addresses_are_candidates() {
    for lan in [
        "10.1.2.3:5",
        "192.168.0.9:5",
        "172.16.0.1:5",
        "100.64.0.1:5",
        "127.0.0.1:5",
        "[fd00::1]:5",
    ] {
        assert!(is_lan_candidate(&lan.parse().unwrap()), "{lan}");
    }
    for other in [
        "8.8.8.8:53",
        "203.0.113.1:5",
        "10.0.0.1:0",
        "[2001:db8::1]:5",
        "224.0.0.1:5",
    ] {
        assert!(!is_lan_candidate(&other.parse().unwrap()), "{other}");
    }
}

#[test]
fn global_ipv6_addresses_are_candidates_too() {
    for global in ["[2001:db8::1]:5", "[2a01:4f8::2]:4000", "[fd00::1]:5"] {
        assert!(is_candidate(&global.parse().unwrap()), "{global}");
    }
    for other in [
        "[2002:c000:201::1]:5",
        "[2001:0:4136:e378::1]:5",
        "[2001:db8::1]:0",
        "[ff02::1]:5",
        "[::ffff:8.8.8.8]:53",
        "8.8.8.8:53",
    ] {
        assert!(!is_candidate(&other.parse().unwrap()), "{other}");
    }
}

#[test]
fn labels_are_checked() {
    assert!(validate_label("name", "al\u{202e}ice", MAX_NAME_LEN).is_err());
    assert!(validate_label("name", "ali\u{200b}ce", MAX_NAME_LEN).is_err());
    assert!(validate_label("name", " alice", MAX_NAME_LEN).is_err());
    assert!(validate_label("name", "Zoë ☕", MAX_NAME_LEN).is_ok());
    assert!(validate_label("name", "alice", MAX_NAME_LEN).is_ok());
    assert!(validate_label("name", "", MAX_NAME_LEN).is_err());
    assert!(validate_label("name", "a\u{1b}[2J", MAX_NAME_LEN).is_err());
    assert!(validate_label("name", &"a".repeat(65), MAX_NAME_LEN).is_err());
}
