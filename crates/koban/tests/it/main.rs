//! Integration tests of the `koban` binary: each starts the real binary as a child process.

mod backup;
mod bench;
mod browser;
mod chaos;
mod config;
mod contract;
mod crash;
mod drill;
mod fuzz;
mod helpers;
mod identity;
mod instances;
mod observability;
mod offline;
mod risk;
mod serve;
mod walkthroughs;
