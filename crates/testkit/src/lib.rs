#![doc = include_str!("../README.md")]

pub mod broker;
pub mod db;
pub mod ports;
pub mod private;
pub mod proxy;
