//! ringkv-e2e
