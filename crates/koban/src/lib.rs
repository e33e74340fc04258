//! The Koban service: command line, HTTP server, background workers and benchmarks.
//!
//! Architecture invariant: this is the only crate that knows HTTP, JSON and the command line;
//! the backend is chosen once, in [`backend::open`], and everything after is generic over
//! [`koban_store::LedgerStore`].

pub mod audit;
pub mod backend;
pub mod bench;
pub mod cli;
pub mod identity;
pub mod serve;
