//! Generated gRPC types and stubs of rsup's API (`rsup.v1`), shared by the
//! daemon, the client library and the tests.

/// Package `rsup.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("rsup.v1");
}

/// Encoded `FileDescriptorSet` of every rsup proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("rsup_descriptor");
