//! stockhook-worker: drains the queue, normalizes payloads into facts, keeps inventory state,
//! evaluates alert rules and sends email. The binary (`main.rs`) is a thin CLI over these modules.

pub mod adapters;
pub mod alert;
pub mod backend;
pub mod backtest;
pub mod catalog;
pub mod channels;
pub mod control;
pub mod cover;
pub mod dashboard;
pub mod email;
pub mod facts;
pub mod lowered;
pub mod metrics;
pub mod ops;
pub mod pipeline;
pub mod plausible;
pub mod reload;
pub mod repeats;
pub mod retry;
pub mod rules;
pub mod sender;
pub mod state;
pub mod sync;
