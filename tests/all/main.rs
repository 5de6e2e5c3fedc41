//! The one end-to-end test binary (like wasmtime's `tests/all`): a module per
//! area, so the workspace links few test binaries.

mod abi;
mod author;
mod cli;
mod corpus;
mod demo;
mod experiment;
mod gateway;
mod native;
mod oci;
mod plugins;
mod relay;
mod soak;
mod support;
mod trust;
mod vectors;
