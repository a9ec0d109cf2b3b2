//! ringkv-node
