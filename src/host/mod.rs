//! The host a nightly `snapfs run` backs up: its configuration file
//! ([`config`]) and the accounts it selects ([`accounts`]).

pub mod accounts;
pub mod config;
