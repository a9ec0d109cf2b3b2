//! ringkv-operator
