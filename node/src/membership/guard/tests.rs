use super::*;

fn addr() -> SocketAddr {
    "127.0.0.1:7000".parse().unwrap()
}

fn secret(k: &str) -> GossipSecret {
    GossipSecret::from_text(k).unwrap()
}

/// A well-formed chitchat header and some body.
fn chitchat_payload(len: usize) -> Vec<u8> {
    let mut p = CHITCHAT_MAGIC.to_vec();
    p.extend_from_slice(&[0, 2]);
    p.resize(len, 7);
    p
}

const NOW: u64 = 1_800_000_000_000;

#[test]
fn sealed_datagrams_open_once_and_only_with_the_key() {
    let tx = Guard::new(Some(secret("0123456789abcdef0123")));
    let mut rx = Guard::new(Some(secret("0123456789abcdef0123")));
    let payload = chitchat_payload(100);
    let d = tx.seal(&payload, NOW);
    assert_eq!(d.len(), 1);
    assert_eq!(
        rx.open(addr(), &d[0], NOW),
        Opened::Payload(payload.clone())
    );
    assert_eq!(
        rx.open(addr(), &d[0], NOW + 1),
        Opened::Dropped(DropReason::Replayed)
    );
    // Another key, a flipped bit, a raw chitchat payload: unauthenticated.
    let mut other = Guard::new(Some(secret("another-secret-of-16")));
    let d2 = tx.seal(&payload, NOW);
    assert_eq!(
        other.open(addr(), &d2[0], NOW),
        Opened::Dropped(DropReason::Unauthenticated)
    );
    let mut flipped = d2[0].clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert_eq!(
        rx.open(addr(), &flipped, NOW),
        Opened::Dropped(DropReason::Unauthenticated)
    );
    assert_eq!(
        rx.open(addr(), &payload, NOW),
        Opened::Dropped(DropReason::Unauthenticated)
    );
    // Outside the window either way.
    let window = REPLAY_WINDOW.as_millis() as u64;
    let late = tx.seal(&payload, NOW - window - 1);
    assert_eq!(
        rx.open(addr(), &late[0], NOW),
        Opened::Dropped(DropReason::Stale)
    );
    let early = tx.seal(&payload, NOW + window + 1);
    assert_eq!(
        rx.open(addr(), &early[0], NOW),
        Opened::Dropped(DropReason::Stale)
    );
}

#[test]
fn a_second_key_verifies_so_keys_rotate_without_a_partition() {
    let old = Guard::new(Some(secret("old-key-0123456789")));
    let mut both = Guard::new(Some(secret("new-key-0123456789\nold-key-0123456789\n")));
    let p = chitchat_payload(10);
    let d = old.seal(&p, NOW);
    assert_eq!(both.open(addr(), &d[0], NOW), Opened::Payload(p));
    assert!(GossipSecret::from_text("short").is_err());
    assert!(GossipSecret::from_text("# only a comment\n\n").is_err());
}

#[test]
fn a_full_size_payload_travels_as_two_fragments() {
    let tx = Guard::new(Some(secret("0123456789abcdef0123")));
    let mut rx = Guard::new(Some(secret("0123456789abcdef0123")));
    let payload = chitchat_payload(MAX_DATAGRAM);
    let d = tx.seal(&payload, NOW);
    assert_eq!(d.len(), 2);
    assert!(d.iter().all(|x| x.len() <= MAX_DATAGRAM));
    // Either order.
    assert_eq!(rx.open(addr(), &d[1], NOW), Opened::Partial);
    assert_eq!(rx.open(addr(), &d[0], NOW), Opened::Payload(payload));
}

#[test]
fn without_a_secret_payloads_pass_but_garbage_oversize_and_bombs_do_not() {
    let mut rx = Guard::new(None);
    let p = chitchat_payload(40);
    assert_eq!(rx.open(addr(), &p, NOW), Opened::Payload(p));
    assert_eq!(
        rx.open(addr(), b"junk", NOW),
        Opened::Dropped(DropReason::Malformed)
    );
    assert_eq!(
        rx.open(addr(), &vec![0; MAX_DATAGRAM + 1], NOW),
        Opened::Dropped(DropReason::Oversized)
    );
    assert_eq!(
        rx.open(addr(), &bomb(MAX_DATAGRAM), NOW),
        Opened::Dropped(DropReason::DecompressionBomb)
    );
}

/// A chitchat-shaped Ack whose delta is thousands of tiny zstd frames, each
/// inflating to 64 KiB of zeros: the decompression bomb.
pub(crate) fn bomb(len: usize) -> Vec<u8> {
    let zeros = vec![0u8; u16::MAX as usize];
    let mut frame = vec![0u8; 256];
    let n = zstd_safe::compress(&mut frame[..], &zeros, 19).expect("compresses");
    frame.truncate(n);
    let mut p = CHITCHAT_MAGIC.to_vec();
    p.extend_from_slice(&[0, 2]);
    while p.len() + 3 + frame.len() < len {
        p.push(1); // a compressed block
        p.extend_from_slice(&(frame.len() as u16).to_le_bytes());
        p.extend_from_slice(&frame);
    }
    p.push(0);
    p
}

#[test]
fn the_decompression_bound_follows_declared_frame_sizes() {
    assert_eq!(decompression_bound(b""), 0);
    assert_eq!(decompression_bound(&chitchat_payload(1000)), 0);
    let b = bomb(MAX_DATAGRAM);
    assert!(
        decompression_bound(&b) > 100 * MAX_DECOMPRESSED,
        "{}",
        decompression_bound(&b)
    );
    // A real compressed block of 16 KiB of state is fine.
    let data: Vec<u8> = (0..16384u32).map(|i| (i % 251) as u8).collect();
    let mut out = vec![0u8; 20000];
    let n = zstd_safe::compress(&mut out[..], &data, 3).unwrap();
    let mut p = chitchat_payload(4);
    p.extend_from_slice(&out[..n]);
    assert_eq!(decompression_bound(&p), 16384);
}

#[test]
fn end_markers_are_bad_cluster_messages_of_tagged_length() {
    let m = end_marker(9);
    assert_eq!(m.len(), 13);
    assert!(is_bad_cluster(&m));
    assert!(!is_bad_cluster(&chitchat_payload(10)));
    assert_eq!(check_payload(&m), Ok(()));
}
