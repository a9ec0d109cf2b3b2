//! Encoding of one stored version of a key, shared by memtables and SSTables:
//!
//! ```text
//! [1] value                  put, never expires
//! [2] expires_at:u64 value   put, invisible from expires_at (unix ms)
//! [3] deleted_at:u64         tombstone, written at deleted_at (unix ms)
//! ```

use crate::coding::{get_u8, get_u64};

pub(crate) const TAG_PUT: u8 = 1;
pub(crate) const TAG_PUT_EXPIRING: u8 = 2;
pub(crate) const TAG_DELETE: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry<'a> {
    /// `expires_at == 0` means never.
    Put {
        value: &'a [u8],
        expires_at: u64,
    },
    Delete {
        deleted_at: u64,
    },
}

impl<'a> Entry<'a> {
    pub(crate) fn decode(mut b: &'a [u8]) -> Option<Entry<'a>> {
        match get_u8(&mut b)? {
            TAG_PUT => Some(Entry::Put {
                value: b,
                expires_at: 0,
            }),
            TAG_PUT_EXPIRING => {
                let expires_at = get_u64(&mut b)?;
                Some(Entry::Put {
                    value: b,
                    expires_at,
                })
            }
            TAG_DELETE => {
                let deleted_at = get_u64(&mut b)?;
                b.is_empty().then_some(Entry::Delete { deleted_at })
            }
            _ => None,
        }
    }

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        match *self {
            Entry::Put {
                value,
                expires_at: 0,
            } => {
                out.push(TAG_PUT);
                out.extend_from_slice(value);
            }
            Entry::Put { value, expires_at } => {
                out.push(TAG_PUT_EXPIRING);
                out.extend_from_slice(&expires_at.to_le_bytes());
                out.extend_from_slice(value);
            }
            Entry::Delete { deleted_at } => {
                out.push(TAG_DELETE);
                out.extend_from_slice(&deleted_at.to_le_bytes());
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut v);
        v
    }

    pub(crate) fn encoded_len(&self) -> usize {
        match *self {
            Entry::Put {
                value,
                expires_at: 0,
            } => 1 + value.len(),
            Entry::Put { value, .. } => 9 + value.len(),
            Entry::Delete { .. } => 9,
        }
    }

    /// The live value at `now`, if any.
    pub(crate) fn live_value(&self, now: u64) -> Option<&'a [u8]> {
        match *self {
            Entry::Put { value, expires_at } if expires_at == 0 || expires_at > now => Some(value),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_visibility() {
        for e in [
            Entry::Put {
                value: b"v",
                expires_at: 0,
            },
            Entry::Put {
                value: b"",
                expires_at: 10,
            },
            Entry::Delete { deleted_at: 7 },
        ] {
            let enc = e.encode();
            assert_eq!(enc.len(), e.encoded_len());
            assert_eq!(Entry::decode(&enc), Some(e));
        }
        assert_eq!(
            Entry::Put {
                value: b"v",
                expires_at: 10
            }
            .live_value(9),
            Some(&b"v"[..])
        );
        assert_eq!(
            Entry::Put {
                value: b"v",
                expires_at: 10
            }
            .live_value(10),
            None
        );
        assert_eq!(Entry::Delete { deleted_at: 1 }.live_value(0), None);
        assert_eq!(Entry::decode(&[9]), None);
        assert_eq!(Entry::decode(&[TAG_DELETE, 1, 2]), None);
    }
}
