//! Input limits, checked before anything is written.

use super::error::InvalidInput;

pub const MAX_KEY_BYTES: usize = 1024;
/// 100 years: anything longer is a unit mistake, not a TTL.
pub const MAX_TTL_MS: u64 = 100 * 365 * 86_400_000;

pub fn key(k: &[u8]) -> Result<(), InvalidInput> {
    if k.is_empty() {
        return Err(InvalidInput::EmptyKey);
    }
    if k.len() > MAX_KEY_BYTES {
        return Err(InvalidInput::KeyTooLong {
            len: k.len(),
            max: MAX_KEY_BYTES,
        });
    }
    Ok(())
}

pub fn value(v: &[u8], max: usize) -> Result<(), InvalidInput> {
    if v.len() > max {
        return Err(InvalidInput::ValueTooLarge { len: v.len(), max });
    }
    Ok(())
}

pub fn ttl(ms: u64) -> Result<(), InvalidInput> {
    if ms > MAX_TTL_MS {
        return Err(InvalidInput::Ttl(format!("{ms} ms is more than 100 years")));
    }
    Ok(())
}
