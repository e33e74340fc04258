//! The Koban service: command line, server start-up, background workers and benchmarks.
//!
//! Architecture invariant: this is the only crate that knows the command line; the HTTP API
//! lives in `koban-api`. The backend is chosen once, in [`backend::open`], and everything
//! after is generic over [`koban_store::LedgerStore`].

pub mod audit;
pub mod backend;
pub mod backup;
pub mod bench;
pub mod bench_all;
pub mod bench_api;
pub mod bench_cards;
pub mod bench_chaos;
pub mod bench_login;
pub mod bench_meter;
pub mod bench_offline;
pub mod bench_pages;
pub mod card_network;
pub mod cli;
pub mod config;
pub mod drill;
pub mod identity;
pub mod keys;
pub mod risk;
pub mod serve;
pub mod workers;
