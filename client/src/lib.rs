//! ringkv-client
