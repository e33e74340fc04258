//! API story tests: each runs against SQLite and PostgreSQL (`stories!`), through the real
//! router, with a manual clock.

mod bank_files;
mod cards;
mod helpers;
mod instances;
mod offline;
mod operators;
mod outage;
mod passkeys;
mod payments;
mod privacy;
mod recovery;
mod risk;
mod signin;
mod stepup;
mod throttling;
mod web;
mod webhooks;
