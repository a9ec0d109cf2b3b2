//! Little-endian fixed integers and LEB128 varints, with bounds-checked
//! decoding: bad bytes give `None`, never a panic.

pub(crate) fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Decode a varint at the front of `src`, advancing it.
pub(crate) fn get_varint(src: &mut &[u8]) -> Option<u64> {
    // Most lengths in blocks are below 128: one byte.
    if let Some((&b, rest)) = src.split_first()
        && b < 0x80
    {
        *src = rest;
        return Some(u64::from(b));
    }
    let mut v: u64 = 0;
    for i in 0..10 {
        let b = *src.get(i)?;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *src = &src[i + 1..];
            return Some(v);
        }
    }
    None
}

pub(crate) fn get_u64(src: &mut &[u8]) -> Option<u64> {
    let (head, rest) = src.split_first_chunk::<8>()?;
    *src = rest;
    Some(u64::from_le_bytes(*head))
}

pub(crate) fn get_u32(src: &mut &[u8]) -> Option<u32> {
    let (head, rest) = src.split_first_chunk::<4>()?;
    *src = rest;
    Some(u32::from_le_bytes(*head))
}

pub(crate) fn get_u8(src: &mut &[u8]) -> Option<u8> {
    let (head, rest) = src.split_first()?;
    *src = rest;
    Some(*head)
}

/// A varint-length-prefixed byte string.
pub(crate) fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_varint(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

pub(crate) fn get_bytes<'a>(src: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(get_varint(src)?).ok()?;
    if src.len() < len {
        return None;
    }
    let (head, rest) = src.split_at(len);
    *src = rest;
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varint_roundtrip(v: u64, tail in proptest::collection::vec(any::<u8>(), 0..4)) {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            buf.extend_from_slice(&tail);
            let mut s = &buf[..];
            prop_assert_eq!(get_varint(&mut s), Some(v));
            prop_assert_eq!(s, &tail[..]);
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
            let mut s = &bytes[..];
            let _ = get_varint(&mut s);
            let _ = get_bytes(&mut s);
            let _ = get_u64(&mut s);
            let _ = get_u32(&mut s);
        }
    }

    #[test]
    fn overlong_varint_is_rejected() {
        let bytes = [0xffu8; 11];
        assert_eq!(get_varint(&mut &bytes[..]), None);
    }
}
