//! Generated gRPC types and services for ringkv's three APIs:
//! `ringkv.v1.KeyValue` (clients), `ringkv.v1.Admin` (operator, CLI) and the
//! internode replica service.

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("ringkv.v1");
}

/// Encoded `FileDescriptorSet` of every ringkv proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ringkv_descriptor.bin"));
