//! stickagg: a Global Profiling Engine for HAProxy clusters.
//!
//! It joins the cluster as a peer (HAProxy's peers protocol), sums the stick
//! tables of all load balancers and pushes the cluster totals back.

pub mod cli;
pub mod commands;
pub mod config;
pub mod engine;
pub mod events;
pub mod fdlimit;
pub mod metrics;
pub mod net;
pub mod reload;
pub mod server;
pub mod show;
pub mod state;
pub mod stats;
pub mod tls;
