#![doc = include_str!("../README.md")]

pub mod catalogue;
pub mod contracts;
pub mod error;
pub mod format;
pub mod ids;
pub mod meta;
pub mod phone;
pub mod topology;

pub use error::{Contract, ContractError, decode};
